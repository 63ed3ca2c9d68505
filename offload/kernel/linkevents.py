"""Link notifications: a NETLINK_ROUTE socket subscribed to RTMGRP_LINK, each RTM_NEWLINK and
RTM_DELLINK decoded by the probe's own walk (`rtnl.link_from_buffer`, over `nlraw`).

A socket of our own, not pyroute2's IPRoute: that one buffers notifications inside its event
loop, out of select()'s sight."""

from __future__ import annotations

import enum
import errno
import select
from dataclasses import dataclass

from offload.kernel import nlraw, rtnl

# include/uapi/linux/rtnetlink.h
RTM_NEWLINK, RTM_DELLINK = 16, 17
RTMGRP_LINK = 0x1

_RCVBUF = 4 << 20   # a burst of links (a lab coming up) in the buffer: fewer overflows
_RECV = 1 << 16


class Kind(enum.Enum):
    NEW = "new"
    DEL = "del"
    OVERFLOW = "overflow"   # ENOBUFS: the kernel dropped notifications; what changed is unknown


@dataclass(frozen=True)
class LinkEvent:
    kind: Kind
    name: str = ""          # empty for OVERFLOW
    ifindex: int = 0


OVERFLOW = LinkEvent(Kind.OVERFLOW)
_KINDS = {RTM_NEWLINK: Kind.NEW, RTM_DELLINK: Kind.DEL}


def decode(data: bytes) -> list[LinkEvent]:
    """The link events in one receive buffer; other messages, and links without a name, are skipped."""
    out = []
    for typ, _, _, start, end in nlraw.messages(data):
        kind = _KINDS.get(typ)
        if kind is None:
            continue
        link = rtnl.link_from_buffer(data, start, end)
        if link.name:
            out.append(LinkEvent(kind, link.name, link.ifindex))
    return out


class LinkEvents:
    """Link events of the current network namespace (the one the socket is opened in), from now on."""

    def __init__(self, rcvbuf: int = _RCVBUF) -> None:
        self._nl = nlraw.Socket(nlraw.NETLINK_ROUTE, groups=RTMGRP_LINK, rcvbuf=rcvbuf)

    def read(self, timeout: float) -> list[LinkEvent]:
        """Every event waiting after up to `timeout` seconds ([] when none came). An overflow ends
        the list with OVERFLOW: the events before it happened, but others were lost."""
        sock, out = self._nl.sock, []
        ready, _, _ = select.select([sock], [], [], timeout)
        while ready:
            try:
                data = sock.recv(_RECV)
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                out.append(OVERFLOW)
                return out
            out += decode(data)
            ready, _, _ = select.select([sock], [], [], 0)
        return out

    def close(self) -> None:
        self._nl.close()

    def __enter__(self) -> LinkEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
