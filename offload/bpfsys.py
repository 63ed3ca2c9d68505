"""The bpf(2) calls the probe needs (program name and type by id), through libbpf's C API.

bcc links the same libbpf; importing bcc itself costs ~100 ms and is not needed to name a program.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass
from functools import lru_cache

# struct bpf_prog_info (include/uapi/linux/bpf.h): only the head is asked for; the kernel copies
# min(len, sizeof) so older and newer kernels both answer.
_PROG_INFO_LEN = 80
_NAME_OFF = 64
_TAG_OFF = 8
_PROG_TYPES = {6: "xdp"}


@dataclass
class ProgInfo:
    id: int
    name: str
    tag: str
    type: int


@lru_cache(maxsize=1)
def _libbpf() -> ctypes.CDLL:
    lib = ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)
    lib.bpf_prog_get_fd_by_id.argtypes = [ctypes.c_uint32]
    lib.bpf_obj_get_info_by_fd.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
    return lib


def prog_info(prog_id: int) -> ProgInfo | None:
    """Name, tag and type of a loaded program; None if it is gone or we may not look."""
    lib = _libbpf()
    fd = lib.bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        return None
    try:
        buf = ctypes.create_string_buffer(_PROG_INFO_LEN)
        n = ctypes.c_uint32(_PROG_INFO_LEN)
        if lib.bpf_obj_get_info_by_fd(fd, buf, ctypes.byref(n)) != 0:
            return None
        raw = buf.raw
        return ProgInfo(
            id=prog_id,
            name=raw[_NAME_OFF:_NAME_OFF + 16].split(b"\0", 1)[0].decode(errors="replace"),
            tag=raw[_TAG_OFF:_TAG_OFF + 8].hex(),
            type=int.from_bytes(raw[0:4], sys.byteorder),
        )
    finally:
        os.close(fd)
