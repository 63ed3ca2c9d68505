"""bcc's table enumerators through ctypes: a loaded bcc module's maps by name, without touching
bcc's `tables` (which it fills only on access). bcc itself is imported only when called."""

from __future__ import annotations

import ctypes
import functools


@functools.cache
def _lib() -> ctypes.CDLL:
    from bcc.libbcc import lib

    # bcc_common.h's enumerators, which bcc's Python bindings do not declare.
    lib.bpf_num_tables.restype, lib.bpf_num_tables.argtypes = ctypes.c_size_t, [ctypes.c_void_p]
    lib.bpf_table_name.restype, lib.bpf_table_name.argtypes = ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_size_t]
    lib.bpf_table_fd_id.restype, lib.bpf_table_fd_id.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_size_t]
    return lib


def table_fds(module: int | ctypes.c_void_p) -> dict[str, int]:
    """map name -> fd for every table of a loaded bcc module (`bcc.BPF.module`)."""
    lib = _lib()
    return {lib.bpf_table_name(module, i).decode(): lib.bpf_table_fd_id(module, i)
            for i in range(lib.bpf_num_tables(module))}
