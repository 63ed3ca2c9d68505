"""Which CPU the calling thread runs on (sched_getcpu(3); Python's os module has no binding)."""

from __future__ import annotations

import ctypes
import functools


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def current_cpu() -> int | None:
    cpu = _libc().sched_getcpu()
    return cpu if cpu >= 0 else None
