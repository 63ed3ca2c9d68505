"""One batch of changes to offload's state (an apply, a watch reconcile), set up in one place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from offload.kernel import durable
from offload.load import loader, pins


@contextmanager
def batch(lock_timeout: float | None = None, hint: str = "wait for it, or set OFFLOAD_LOCK_TIMEOUT"
          ) -> Iterator[durable.Group]:
    """Under the state lock (one change at a time), durable together (group commit: one syncfs
    per file system), the verified state directories opened once (pins.held_dirs), each shareable
    program loaded once (loader.sharing). On the way out, the batch's programs are let go (their
    pins hold them), then its writes are made durable, then the lock is released. A batch inside
    a batch joins it."""
    with pins.state_lock(lock_timeout, hint), durable.group() as group, pins.held_dirs(), loader.sharing():
        yield group
