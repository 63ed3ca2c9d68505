"""Process signals around work that must not be cut short: SIGTERM taken as Ctrl-C, and both
held until a block (a put-back, a clean-up) is done. Python runs signal handlers in the main
thread only, and only it may set them: elsewhere these do nothing."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the work like Ctrl-C (KeyboardInterrupt): stop, clean up, report."""
    if not _main_thread():
        yield
        return

    def _raise(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block is done, then interrupt (KeyboardInterrupt)."""
    if not _main_thread():
        yield
        return
    got: list[int] = []
    old = {sig: signal.signal(sig, lambda signum, frame: got.append(signum)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if got:
        raise KeyboardInterrupt
