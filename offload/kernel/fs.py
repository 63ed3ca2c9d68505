"""File-system calls the standard library lacks: renameat2(RENAME_EXCHANGE)."""

from __future__ import annotations

import ctypes
import os
from functools import lru_cache

AT_FDCWD = -100
RENAME_EXCHANGE = 1 << 1


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    # the C library this process already runs on (find_library() would run ldconfig: ~20 ms)
    return ctypes.CDLL(None, use_errno=True)


def exchange(a: str | os.PathLike, b: str | os.PathLike, dir_fd: int | None = None) -> None:
    """Swap two paths atomically (both must exist; relative to `dir_fd` when given): a reader sees
    one or the other, never neither. bpffs supports it (simple_rename); raises OSError (EINVAL)
    where a file system does not."""
    fn = _libc().renameat2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at = AT_FDCWD if dir_fd is None else dir_fd
    if fn(at, os.fsencode(a), at, os.fsencode(b), RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"renameat2({a}, {b}, RENAME_EXCHANGE): {os.strerror(code)}")
