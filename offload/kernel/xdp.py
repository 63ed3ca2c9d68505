"""Attach and detach XDP programs through rtnetlink (pyroute2), so the kernel's extended ack
comes back as text, and read back what is attached."""

from __future__ import annotations

import errno
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from offload.kernel import rtnl

# include/uapi/linux/if_link.h
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_HW_MODE = 1 << 3
XDP_FLAGS_REPLACE = 1 << 4
MODE_FLAGS = {"hw": XDP_FLAGS_HW_MODE, "native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}


@dataclass
class KernelRefusal(Exception):
    """The kernel said no: its errno and, when it gave one, its extack message."""

    code: int
    message: str

    def __str__(self) -> str:
        return f"{self.message} ({errno.errorcode.get(self.code, self.code)})" if self.message else \
            f"{errno.errorcode.get(self.code, self.code)}: the kernel gave no message"


def _set(ifindex: int, attrs: list) -> None:
    try:
        with IPRoute(ext_ack=True) as ipr:  # the kernel's reason in words (NETLINK_EXT_ACK)
            ipr.link("set", index=ifindex, xdp={"attrs": attrs})
    except NetlinkError as e:
        msg = e.args[1] if len(e.args) > 1 and isinstance(e.args[1], str) else ""
        raise KernelRefusal(e.code, msg) from None


def set_prog(ifindex: int, fd: int, mode: str, expected_fd: int | None = None, no_replace: bool = False) -> None:
    """Put program `fd` on `ifindex` in `mode`. With `expected_fd`, atomically replace exactly that program."""
    flags = MODE_FLAGS[mode]
    attrs = [("IFLA_XDP_FD", fd)]
    if expected_fd is not None:
        flags |= XDP_FLAGS_REPLACE
        attrs.append(("IFLA_XDP_EXPECTED_FD", expected_fd))
    elif no_replace:
        flags |= XDP_FLAGS_UPDATE_IF_NOEXIST
    attrs.append(("IFLA_XDP_FLAGS", flags))
    _set(ifindex, attrs)


def clear_prog(ifindex: int, mode: str, expected_fd: int | None = None) -> None:
    """Take the program in `mode` off `ifindex` (with `expected_fd`: only if it is that one)."""
    attrs = [("IFLA_XDP_FD", -1)]
    flags = MODE_FLAGS[mode]
    if expected_fd is not None:
        flags |= XDP_FLAGS_REPLACE
        attrs.append(("IFLA_XDP_EXPECTED_FD", expected_fd))
    attrs.append(("IFLA_XDP_FLAGS", flags))
    _set(ifindex, attrs)


def attached_progs(ifindex: int) -> dict[str, int]:
    """mode -> program id now attached on `ifindex`, as rtnetlink reports it."""
    with IPRoute() as ipr:
        (msg,) = ipr.get_links(ifindex)
    return rtnl.link_from_msg(msg).xdp_prog_ids
