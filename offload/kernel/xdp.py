"""Attach and detach XDP programs through rtnetlink, so the kernel's extended ack comes back as
text, and read back what is attached. One RTM_SETLINK through `nlraw`: pyroute2's IPRoute costs
~0.1 s to import, a third of an attach's budget (docs/benchmarks.md)."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from offload.kernel import nlraw, rtnl

# include/uapi/linux/if_link.h
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_HW_MODE = 1 << 3
XDP_FLAGS_REPLACE = 1 << 4
IFLA_XDP_FD, IFLA_XDP_FLAGS, IFLA_XDP_EXPECTED_FD = 1, 3, 8
RTM_SETLINK = 19
MODE_FLAGS = {"hw": XDP_FLAGS_HW_MODE, "native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}


@dataclass
class KernelRefusal(Exception):
    """The kernel said no: its errno and, when it gave one, its extack message."""

    code: int
    message: str

    def __str__(self) -> str:
        return f"{self.message} ({errno.errorcode.get(self.code, self.code)})" if self.message else \
            f"{errno.errorcode.get(self.code, self.code)}: the kernel gave no message"


def _set(ifindex: int, attrs: list[bytes]) -> None:
    body = rtnl._IFINFO.pack(socket.AF_UNSPEC, 0, ifindex, 0, 0) + nlraw.nest(rtnl.IFLA_XDP, *attrs)
    try:
        with nlraw.Socket(nlraw.NETLINK_ROUTE) as sock:  # extended ack on: the kernel's reason in words
            for _ in sock.request(RTM_SETLINK, body):
                pass
    except nlraw.NetlinkError as e:
        raise KernelRefusal(e.code, e.extack) from None


def set_prog(ifindex: int, fd: int, mode: str, expected_fd: int | None = None, no_replace: bool = False) -> None:
    """Put program `fd` on `ifindex` in `mode`. With `expected_fd`, atomically replace exactly that program."""
    flags = MODE_FLAGS[mode]
    attrs = [nlraw.nla(IFLA_XDP_FD, nlraw.s32(fd))]
    if expected_fd is not None:
        flags |= XDP_FLAGS_REPLACE
        attrs.append(nlraw.nla(IFLA_XDP_EXPECTED_FD, nlraw.s32(expected_fd)))
    elif no_replace:
        flags |= XDP_FLAGS_UPDATE_IF_NOEXIST
    attrs.append(nlraw.nla(IFLA_XDP_FLAGS, nlraw.u32(flags)))
    _set(ifindex, attrs)


def clear_prog(ifindex: int, mode: str, expected_fd: int | None = None) -> None:
    """Take the program in `mode` off `ifindex` (with `expected_fd`: only if it is that one)."""
    attrs = [nlraw.nla(IFLA_XDP_FD, nlraw.s32(-1))]
    flags = MODE_FLAGS[mode]
    if expected_fd is not None:
        flags |= XDP_FLAGS_REPLACE
        attrs.append(nlraw.nla(IFLA_XDP_EXPECTED_FD, nlraw.s32(expected_fd)))
    attrs.append(nlraw.nla(IFLA_XDP_FLAGS, nlraw.u32(flags)))
    _set(ifindex, attrs)


def attached_progs(ifindex: int) -> dict[str, int]:
    """mode -> program id now attached on `ifindex`, as rtnetlink reports it."""
    return rtnl.xdp_prog_ids(ifindex)
