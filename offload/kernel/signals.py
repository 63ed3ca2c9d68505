"""Process signals around work that must not be cut short: SIGTERM taken as Ctrl-C, and both
held until a block (a put-back, a clean-up) is done. Python runs signal handlers in the main
thread only, and only it may set them: elsewhere these do nothing."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# SIGINT/SIGTERM taken by these handlers in this process. Code that catches KeyboardInterrupt and
# reports it (the bench's partial results) may say so in words another caller does not expect:
# the count is how the caller knows, whatever became of the exception.
_received = 0


def _note(signum: int, frame: object) -> None:
    global _received
    _received += 1


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def sigterm_as_interrupt() -> Iterator[Callable[[], bool]]:
    """SIGTERM ends the work like Ctrl-C (KeyboardInterrupt): stop, clean up, report. Yields
    `interrupted()`: whether either signal came during the block, even if something caught it."""
    start = _received

    def interrupted() -> bool:
        return _received > start

    if not _main_thread():
        yield interrupted
        return

    def _raise(signum: int, frame: object) -> None:
        _note(signum, frame)
        raise KeyboardInterrupt

    old = {sig: signal.signal(sig, _raise) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield interrupted
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block is done, then interrupt (KeyboardInterrupt)."""
    if not _main_thread():
        yield
        return
    start = _received
    old = {sig: signal.signal(sig, _note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if _received > start:
        raise KeyboardInterrupt
