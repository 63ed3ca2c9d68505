"""Durability, one fsync at a time or grouped: group commit, as databases do it.

Outside a group, `sync(fd)` is an fsync. Inside `group()`, it only notes the file system `fd`
lives on, and the group makes everything written there durable at once when it commits: one
syncfs(2) per file system, however many records and journal lines the batch wrote. Order on
disk does not change (the renames are where they were); what a SIGKILL sees does not either (the
page cache survives a killed process). Only a power loss before the commit may lose the batch's
records, which are caches of what the kernel holds (and /run, where they live, is gone then too);
the caller commits before it writes the line that says the batch ended."""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

_local = threading.local()   # a group belongs to the thread that opened it (watch's metrics thread has none)


@lru_cache(maxsize=1)
def _syncfs():
    fn = ctypes.CDLL(None, use_errno=True).syncfs
    fn.argtypes = [ctypes.c_int]
    return fn


class Group:
    """The file systems written to since the last commit, each by one fd of its own."""

    def __init__(self) -> None:
        self._fds: dict[int, int] = {}   # st_dev -> a dup of an fd on it
        self.commits = 0                 # syncfs calls made (what the tests and benchmarks count)

    def note(self, fd: int) -> None:
        dev = os.fstat(fd).st_dev
        if dev not in self._fds:
            self._fds[dev] = os.dup(fd)

    def commit(self) -> None:
        """Everything written to the noted file systems is on disk when this returns (OSError
        when the kernel reports a write-back error: the batch is not durable)."""
        fds, self._fds = self._fds, {}
        try:
            for fd in fds.values():
                if _syncfs()(fd) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, f"syncfs: {os.strerror(code)}")
                self.commits += 1
        finally:
            for fd in fds.values():
                os.close(fd)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}


def current() -> Group | None:
    return getattr(_local, "group", None)


def sync(fd: int) -> None:
    """Make what was written through `fd` (a file or a directory) durable: now, or at the commit
    of the group in progress."""
    g = current()
    if g is None:
        os.fsync(fd)
    else:
        g.note(fd)


@contextmanager
def group() -> Iterator[Group]:
    """A batch whose writes are made durable together: at its end (also when it fails: what was
    written is made as durable as it would have been), or earlier by `commit()`. Nested groups
    join the outer one."""
    outer = current()
    if outer is not None:
        yield outer
        return
    g = _local.group = Group()
    try:
        yield g
    except BaseException:
        _local.group = None
        try:
            g.commit()
        except OSError:
            pass   # the batch's own error says more
        raise
    else:
        _local.group = None
        g.commit()
    finally:
        _local.group = None
        g.close()
