"""XDP bpf_links through libbpf's C API: create, update (atomically, the old program expected),
detach, read back, find. Opt-in (`attach --via link`): BPF_LINK_CREATE attaches without
RTM_SETLINK's NETDEV_CHANGE, whose IPv6 answer is linear in the namespace's interfaces
(docs/benchmarks.md, "What grows"). A link lives while an fd or a pin holds it, and netlink
cannot replace or clear a link-held program (EBUSY).

bpf() carries no extended ack: the kernel gives its reason only to the
`xdp:bpf_xdp_link_attach_failed` tracepoint, which reading would need a BPF program or tracefs of
our own per attach. A refusal here is the errno alone (`LinkRefusal`), said as such."""

from __future__ import annotations

import ctypes
import os

from offload.kernel import bpfsys, xdp

BPF_XDP = 37                 # enum bpf_attach_type
BPF_F_REPLACE = 1 << 2       # link update: only if the old program is the one expected


class _create_opts(ctypes.Structure):   # struct bpf_link_create_opts' head (libbpf 1.x)
    _fields_ = [("sz", ctypes.c_size_t), ("flags", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


class _update_opts(ctypes.Structure):   # struct bpf_link_update_opts
    _fields_ = [("sz", ctypes.c_size_t), ("flags", ctypes.c_uint32), ("old_prog_fd", ctypes.c_uint32),
                ("old_map_fd", ctypes.c_uint32)]


class LinkRefusal(xdp.KernelRefusal):
    """The kernel refused a link operation: its errno only (bpf() has no extack)."""

    def __str__(self) -> str:
        return f"{self.message}: {bpfsys.strerror(self.code)} (the kernel's own words are given only to " \
               "netlink attaches; bpf() returns the errno alone)"


XdpLink = bpfsys.LinkInfo   # an XDP link's info: read by bpfsys.link_info, the one reader


def _lib() -> ctypes.CDLL:
    lib = bpfsys.libbpf()
    i, vp = ctypes.c_int, ctypes.c_void_p
    lib.bpf_link_create.argtypes = [i, i, i, vp]
    lib.bpf_link_update.argtypes = [i, i, vp]
    lib.bpf_link_detach.argtypes = [i]
    lib.bpf_link_get_next_id.argtypes = [ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32)]
    lib.bpf_link_get_fd_by_id.argtypes = [ctypes.c_uint32]
    return lib


def _refuse(ret: int, what: str) -> None:
    if ret < 0:
        raise LinkRefusal(ctypes.get_errno() or -ret, what)


def create(prog_fd: int, ifindex: int, mode: str) -> int:
    """Attach `prog_fd` to `ifindex` in `mode` through a new link: its fd (the caller pins or
    closes it; closed unpinned, the link detaches)."""
    opts = _create_opts(sz=ctypes.sizeof(_create_opts), flags=xdp.MODE_FLAGS[mode])
    fd = _lib().bpf_link_create(prog_fd, ifindex, BPF_XDP, ctypes.byref(opts))
    _refuse(fd, f"BPF_LINK_CREATE (XDP, {mode}) on ifindex {ifindex}")
    return fd


def update(link_fd: int, prog_fd: int, expected_fd: int) -> None:
    """Put `prog_fd` in the link in place of `expected_fd`, atomically, only if that is the one there."""
    opts = _update_opts(sz=ctypes.sizeof(_update_opts), flags=BPF_F_REPLACE, old_prog_fd=expected_fd)
    _refuse(_lib().bpf_link_update(link_fd, prog_fd, ctypes.byref(opts)), "BPF_LINK_UPDATE")


def detach(link_fd: int) -> None:
    """Take the link's program off its device (the link stays, defunct, while pinned or open)."""
    _refuse(_lib().bpf_link_detach(link_fd), "BPF_LINK_DETACH")


def info(link_fd: int) -> XdpLink | None:
    """The link's id, program and device; None when `link_fd` is not an XDP link."""
    try:
        link = bpfsys.link_info(link_fd)
    except bpfsys.BpfError:
        return None
    return link if link.type == bpfsys.BPF_LINK_TYPE_XDP else None


def pinned(path: str) -> XdpLink | None:
    """The XDP link pinned at `path` (None if there is none, or it is no XDP link)."""
    try:
        fd = bpfsys.obj_get(path)
    except OSError:
        return None
    try:
        return info(fd)
    finally:
        os.close(fd)


def all_links() -> list[XdpLink]:
    """Every XDP link the kernel holds (all namespaces: an ifindex is only meaningful with the
    namespace, which the link's info does not give)."""
    lib, out, cur = _lib(), [], ctypes.c_uint32(0)
    while lib.bpf_link_get_next_id(cur.value, ctypes.byref(cur)) == 0:
        fd = lib.bpf_link_get_fd_by_id(cur.value)
        if fd < 0:
            continue   # gone between the two calls
        try:
            link = info(fd)
        finally:
            os.close(fd)
        if link is not None:
            out.append(link)
    return out
