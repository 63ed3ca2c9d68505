"""bpf(2) through libbpf's C API (the libbpf bcc itself links): program info, pins, map access
and BPF_PROG_RUN.

bcc compiles and loads programs, but it cannot reopen pinned maps in a later process (`offload
stats`, `offload filter`) nor run BPF_PROG_RUN; these thin wrappers do, and importing them does
not pay bcc's start-up cost.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from dataclasses import dataclass
from functools import lru_cache

from offload.errors import EnvironmentProblem

# struct bpf_prog_info (include/uapi/linux/bpf.h): only the head is asked for; the kernel copies
# min(len, sizeof) so older and newer kernels both answer.
_PROG_INFO_LEN = 208
_NAME_OFF = 64
_TAG_OFF = 8
_JITED_LEN_OFF, _XLATED_LEN_OFF, _LOAD_TIME_OFF = 16, 20, 40
_NR_MAP_IDS_OFF, _MAP_IDS_OFF = 52, 56
_BTF_ID_OFF = 128
_RUN_TIME_OFF, _RUN_CNT_OFF = 192, 200     # since Linux 5.1; zero unless kernel.bpf_stats_enabled
BPF_PROG_TYPE_XDP = 6
BPF_PROG_TYPE_EXT = 28   # freplace: an extension replacing a function of a loaded program


class BpfError(OSError):
    pass


@dataclass
class LoadedProg:
    """What the kernel says of a program it holds (bpf_prog_info): not to be confused with
    bpfobj.ElfProgram, a program an ELF object declares, before it is loaded."""

    id: int
    name: str
    tag: str
    type: int
    run_time_ns: int = 0
    run_cnt: int = 0
    jited_len: int = 0        # bytes of native code; 0: not JIT-compiled (interpreted)
    xlated_len: int = 0       # bytes of the verifier's rewritten BPF instructions
    load_time_ns: int = 0     # CLOCK_BOOTTIME when loaded (kernel/clock.from_boottime_ns)
    btf_id: int = 0           # 0: loaded without BTF
    map_ids: tuple[int, ...] = ()


class _test_run_opts(ctypes.Structure):  # struct bpf_test_run_opts (libbpf >= 0.7)
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


LIBBPF_HINT = "install it: apt-get install libbpf1 (Debian, Ubuntu); dnf install libbpf (Fedora, RHEL)"


@lru_cache(maxsize=1)
def libbpf() -> ctypes.CDLL:
    try:  # the soname first: find_library() runs ldconfig in a subprocess (~20 ms)
        lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    except OSError:
        from ctypes.util import find_library

        try:
            lib = ctypes.CDLL(find_library("bpf") or "libbpf.so.1", use_errno=True)
        except OSError as e:   # a host without it: the install's gap, said as such (exit 4)
            raise EnvironmentProblem(f"libbpf.so.1 cannot be loaded ({e}): offload handles BPF objects through "
                                     "libbpf 1.x, the C library", hint=LIBBPF_HINT) from None
    vp, i, u32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32
    lib.bpf_prog_get_fd_by_id.argtypes = [u32]
    lib.bpf_map_get_fd_by_id.argtypes = [u32]
    lib.bpf_obj_get_info_by_fd.argtypes = [i, vp, ctypes.POINTER(u32)]
    lib.bpf_obj_pin.argtypes = [i, ctypes.c_char_p]
    lib.bpf_obj_get.argtypes = [ctypes.c_char_p]
    lib.bpf_map_lookup_elem.argtypes = [i, vp, vp]
    lib.bpf_map_update_elem.argtypes = [i, vp, vp, ctypes.c_uint64]
    lib.bpf_map_delete_elem.argtypes = [i, vp]
    lib.bpf_map_get_next_key.argtypes = [i, vp, vp]
    lib.bpf_prog_test_run_opts.argtypes = [i, ctypes.POINTER(_test_run_opts)]
    lib.libbpf_num_possible_cpus.argtypes = []
    return lib


LIBBPF_ERRNO_START = 4000   # __LIBBPF_ERRNO__START: libbpf's own error numbers (LIBBPF_ERRNO__*) from here


def strerror(code: int) -> str:
    """An error number in words: the C library's, or for libbpf's own numbers (4000 and up, which
    strerror() calls "Unknown error 4003") libbpf's, from libbpf_strerror()."""
    code = abs(code)
    if code < LIBBPF_ERRNO_START:
        return os.strerror(code)
    try:
        lib = libbpf()
    except OSError:   # no libbpf to ask: the number, named as libbpf's
        return f"libbpf error {code}"
    lib.libbpf_strerror.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
    buf = ctypes.create_string_buffer(128)
    lib.libbpf_strerror(code, buf, len(buf))
    return buf.value.decode(errors="replace") or f"libbpf error {code}"


def stats_enabled() -> bool:
    """kernel.bpf_stats_enabled: whether the kernel counts every program's runs and run time."""
    try:
        with open("/proc/sys/kernel/bpf_stats_enabled") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def _check(ret: int, what: str) -> int:
    if ret < 0:
        code = ctypes.get_errno() or -ret
        raise BpfError(code, f"{what}: {strerror(code)}")
    return ret


def possible_cpus() -> int:
    return _check(libbpf().libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")


def prog_fd_by_id(prog_id: int) -> int:
    return _check(libbpf().bpf_prog_get_fd_by_id(prog_id), f"BPF_PROG_GET_FD_BY_ID {prog_id}")


def obj_info_id(fd: int) -> int:
    buf = ctypes.create_string_buffer(_PROG_INFO_LEN)
    n = ctypes.c_uint32(_PROG_INFO_LEN)
    _check(libbpf().bpf_obj_get_info_by_fd(fd, buf, ctypes.byref(n)), "BPF_OBJ_GET_INFO_BY_FD")
    return int.from_bytes(buf.raw[4:8], sys.byteorder)  # prog and map info both start type, id


def prog_info(prog_id: int) -> LoadedProg | None:
    """Name, tag, type, sizes, load time, BTF and map ids of a loaded program; None if it is gone
    or we may not look."""
    lib = libbpf()
    fd = lib.bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        return None
    try:
        return prog_info_fd(fd, prog_id)
    finally:
        os.close(fd)


def _u32(raw: bytes, off: int) -> int:
    return int.from_bytes(raw[off:off + 4], sys.byteorder)


def _u64(raw: bytes, off: int) -> int:
    return int.from_bytes(raw[off:off + 8], sys.byteorder)


def prog_info_fd(fd: int, prog_id: int | None = None) -> LoadedProg | None:
    lib = libbpf()
    buf = ctypes.create_string_buffer(_PROG_INFO_LEN)
    n = ctypes.c_uint32(_PROG_INFO_LEN)
    if lib.bpf_obj_get_info_by_fd(fd, buf, ctypes.byref(n)) != 0:
        return None
    raw = buf.raw
    nr_maps = _u32(raw, _NR_MAP_IDS_OFF)
    map_ids: tuple[int, ...] = ()
    if nr_maps:   # a second call, asking only for the map ids (every other array length zero)
        ids = (ctypes.c_uint32 * nr_maps)()
        req = ctypes.create_string_buffer(_PROG_INFO_LEN)
        ctypes.memmove(ctypes.addressof(req) + _NR_MAP_IDS_OFF, ctypes.byref(ctypes.c_uint32(nr_maps)), 4)
        ctypes.memmove(ctypes.addressof(req) + _MAP_IDS_OFF, ctypes.byref(ctypes.c_uint64(ctypes.addressof(ids))), 8)
        m = ctypes.c_uint32(_PROG_INFO_LEN)
        if lib.bpf_obj_get_info_by_fd(fd, req, ctypes.byref(m)) == 0:
            map_ids = tuple(ids[: min(nr_maps, _u32(req.raw, _NR_MAP_IDS_OFF))])
    full = n.value >= 208
    return LoadedProg(
        id=prog_id if prog_id is not None else _u32(raw, 4),
        name=raw[_NAME_OFF:_NAME_OFF + BPF_OBJ_NAME_LEN].split(b"\0", 1)[0].decode(errors="replace"),
        tag=raw[_TAG_OFF:_TAG_OFF + 8].hex(),
        type=_u32(raw, 0),
        run_time_ns=_u64(raw, _RUN_TIME_OFF) if full else 0,
        run_cnt=_u64(raw, _RUN_CNT_OFF) if full else 0,
        jited_len=_u32(raw, _JITED_LEN_OFF),
        xlated_len=_u32(raw, _XLATED_LEN_OFF),
        load_time_ns=_u64(raw, _LOAD_TIME_OFF),
        btf_id=_u32(raw, _BTF_ID_OFF) if n.value > _BTF_ID_OFF else 0,
        map_ids=map_ids,
    )


@dataclass
class MapInfo:
    id: int
    type: int
    name: str
    key_size: int
    value_size: int
    max_entries: int


def map_info_by_id(map_id: int) -> tuple[int, MapInfo] | None:
    """(an fd the caller closes, the map's info) for a map id; None if it is gone."""
    fd = libbpf().bpf_map_get_fd_by_id(map_id)
    if fd < 0:
        return None
    info = map_info_fd(fd)
    if info is None:
        os.close(fd)
        return None
    return fd, info


def map_info_fd(fd: int) -> MapInfo | None:
    """The info of the map `fd` holds (None if the kernel will not say)."""
    buf = ctypes.create_string_buffer(88)   # struct bpf_map_info's head
    n = ctypes.c_uint32(88)
    if libbpf().bpf_obj_get_info_by_fd(fd, buf, ctypes.byref(n)) != 0:
        return None
    raw = buf.raw
    return MapInfo(id=_u32(raw, 4), type=_u32(raw, 0), key_size=_u32(raw, 8), value_size=_u32(raw, 12),
                   max_entries=_u32(raw, 16), name=raw[24:40].split(b"\0", 1)[0].decode(errors="replace"))


BPF_OBJ_NAME_LEN = 16        # include/uapi/linux/bpf.h: a program's or map's name, its NUL included
BPF_LINK_TYPE_TRACING = 2    # enum bpf_link_type: freplace (an extension's link) among them
BPF_LINK_TYPE_XDP = 6
_LINK_INFO_LEN = 64          # struct bpf_link_info's head: type, id, prog_id, the union at 16


@dataclass(frozen=True)
class LinkInfo:
    """What the kernel says of a link: its type, id and program, and the union's fields its type
    has (0 for the rest). An XDP link's prog_id and ifindex are 0 once it is defunct (detached, or
    its device gone)."""

    id: int
    type: int
    prog_id: int
    ifindex: int = 0         # XDP links: the device, in the link's namespace
    target_obj_id: int = 0   # tracing links: the program whose function is replaced
    target_btf_id: int = 0

    @property
    def defunct(self) -> bool:
        return self.ifindex == 0


def link_info(fd: int) -> LinkInfo:
    """struct bpf_link_info of a link fd: type, id, prog_id, then the union at offset 16 (XDP:
    ifindex; tracing: attach_type, target_obj_id, target_btf_id)."""
    buf = ctypes.create_string_buffer(_LINK_INFO_LEN)
    n = ctypes.c_uint32(_LINK_INFO_LEN)
    _check(libbpf().bpf_obj_get_info_by_fd(fd, buf, ctypes.byref(n)), "BPF_OBJ_GET_INFO_BY_FD (link)")
    raw = buf.raw
    kind = _u32(raw, 0)
    union = {"ifindex": _u32(raw, 16)} if kind == BPF_LINK_TYPE_XDP else \
        {"target_obj_id": _u32(raw, 20), "target_btf_id": _u32(raw, 24)} if kind == BPF_LINK_TYPE_TRACING else {}
    return LinkInfo(id=_u32(raw, 4), type=kind, prog_id=_u32(raw, 8), **union)


def obj_pin(fd: int, path: str) -> None:
    _check(libbpf().bpf_obj_pin(fd, path.encode()), f"pinning at {path}")


def obj_get(path: str) -> int:
    """An fd for the object pinned at `path` (the caller closes it)."""
    return _check(libbpf().bpf_obj_get(path.encode()), f"opening pin {path}")


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    val = ctypes.create_string_buffer(value_size)
    k = ctypes.create_string_buffer(key, len(key))
    if libbpf().bpf_map_lookup_elem(fd, k, val) < 0:
        if ctypes.get_errno() == errno.ENOENT:
            return None
        _check(-1, "map lookup")
    return val.raw


def map_update(fd: int, key: bytes, value: bytes, flags: int = 0) -> None:
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value, len(value))
    _check(libbpf().bpf_map_update_elem(fd, k, v, flags), "map update")


def map_delete(fd: int, key: bytes) -> bool:
    k = ctypes.create_string_buffer(key, len(key))
    if libbpf().bpf_map_delete_elem(fd, k) < 0:
        if ctypes.get_errno() == errno.ENOENT:
            return False
        _check(-1, "map delete")
    return True


def map_keys(fd: int, key_size: int) -> list[bytes]:
    lib, keys = libbpf(), []
    cur, nxt = None, ctypes.create_string_buffer(key_size)
    while lib.bpf_map_get_next_key(fd, cur, nxt) == 0:
        keys.append(nxt.raw)
        cur = ctypes.create_string_buffer(nxt.raw, key_size)
    return keys


@dataclass
class TestRun:
    retval: int
    data_out: bytes
    duration_ns: int


def prog_test_run(fd: int, data: bytes, repeat: int = 1, out_size: int | None = None, flags: int = 0,
                  batch_size: int = 0, ctx: bytes | None = None) -> TestRun:
    """BPF_PROG_RUN: run the program on `data` in the kernel, return verdict and output frame.
    out_size=0 asks for no output (live-frames mode refuses an output buffer). `ctx`: the
    program's context in (XDP: a struct xdp_md, e.g. to run as received on another ifindex)."""
    size = max(len(data) + 256, 256) if out_size is None else out_size
    out = ctypes.create_string_buffer(max(size, 1))
    inp = ctypes.create_string_buffer(data, len(data))
    cin = ctypes.create_string_buffer(ctx, len(ctx)) if ctx else None
    opts = _test_run_opts(sz=ctypes.sizeof(_test_run_opts), data_in=ctypes.addressof(inp),
                          data_out=ctypes.addressof(out) if size else None, data_size_in=len(data),
                          data_size_out=size, repeat=repeat, flags=flags, batch_size=batch_size,
                          ctx_in=ctypes.addressof(cin) if cin else None, ctx_size_in=len(ctx) if ctx else 0)
    _check(libbpf().bpf_prog_test_run_opts(fd, ctypes.byref(opts)), "BPF_PROG_RUN")
    return TestRun(opts.retval, out.raw[: opts.data_size_out], opts.duration)
