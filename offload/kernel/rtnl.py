"""rtnetlink: one RTM_GETLINK dump -> plain link records (decoded by `nlraw`, see why there)."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

from offload.kernel import nlraw

IFF_UP = 0x1
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
RTM_GETLINK = 18
_IFINFO = struct.Struct("=BxHiII")   # struct ifinfomsg: family, type, index, flags, change

# include/uapi/linux/if_link.h: the IFLA_* attributes the probe reads, and nothing else
IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER, IFLA_OPERSTATE, IFLA_LINKINFO = 3, 4, 5, 10, 16, 18
IFLA_EXT_MASK, IFLA_NUM_TX_QUEUES, IFLA_NUM_RX_QUEUES, IFLA_LINK_NETNSID, IFLA_XDP = 29, 31, 32, 37, 43
IFLA_MIN_MTU, IFLA_MAX_MTU, IFLA_PARENT_DEV_NAME, IFLA_PARENT_DEV_BUS_NAME = 50, 51, 56, 57
IFLA_INFO_KIND = 1
IFLA_XDP_ATTACHED, IFLA_XDP_PROG_ID = 2, 4
RTEXT_FILTER_SKIP_STATS = 1 << 3     # no counters in the dump: smaller messages, nothing the probe reads
OPER_STATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")  # IF_OPER_*

# IFLA_XDP per-mode attributes -> our mode names.
XDP_MODE_ATTRS = {"hw": 7, "native": 5, "generic": 6}   # IFLA_XDP_{HW,DRV,SKB}_PROG_ID
# IFLA_XDP_ATTACHED values (include/uapi/linux/if_link.h) for a single attached mode.
_XDP_ATTACHED_MODE = {1: "native", 2: "generic", 3: "hw"}


@dataclass
class Link:
    name: str
    ifindex: int
    kind: str | None              # IFLA_INFO_KIND (veth, vlan, bond, ...); None for physical/loopback
    link_type: int                # ARPHRD_*
    admin_up: bool
    oper_state: str
    mtu: int
    min_mtu: int | None
    max_mtu: int | None
    num_rx_queues: int | None
    num_tx_queues: int | None
    peer_ifindex: int | None      # IFLA_LINK: veth peer / vlan lower device
    peer_netnsid: int | None      # IFLA_LINK_NETNSID: the peer lives in another namespace
    parent_bus: str | None        # IFLA_PARENT_DEV_BUS_NAME (pci, virtio, netdevsim, ...)
    parent_dev: str | None        # IFLA_PARENT_DEV_NAME (0000:00:03.0, virtio2, ...)
    master_ifindex: int | None
    xdp_prog_ids: dict[str, int] = field(default_factory=dict)  # mode -> prog id


_LINK_ATTRS = frozenset((
    IFLA_IFNAME, IFLA_LINKINFO, IFLA_OPERSTATE, IFLA_MTU, IFLA_MIN_MTU, IFLA_MAX_MTU, IFLA_NUM_RX_QUEUES,
    IFLA_NUM_TX_QUEUES, IFLA_LINK, IFLA_LINK_NETNSID, IFLA_PARENT_DEV_BUS_NAME, IFLA_PARENT_DEV_NAME, IFLA_MASTER,
    IFLA_XDP))


_NO_PROG = nlraw.nla(IFLA_XDP_ATTACHED, b"\0")   # IFLA_XDP of a link without programs: XDP_ATTACHED_NONE


def _xdp_ids(raw: bytes | None) -> dict[str, int]:
    if not raw or raw == _NO_PROG:
        return {}
    xdp = nlraw.attrs(raw)
    ids = {mode: nlraw.get_u32(xdp, attr) for mode, attr in XDP_MODE_ATTRS.items()}
    ids = {m: i for m, i in ids.items() if i}
    if not ids:  # older kernels report only IFLA_XDP_PROG_ID with the single attached mode
        mode = _XDP_ATTACHED_MODE.get(nlraw.get_u8(xdp, IFLA_XDP_ATTACHED) or 0)
        prog = nlraw.get_u32(xdp, IFLA_XDP_PROG_ID)
        if mode and prog:
            ids[mode] = prog
    return ids


def _info_kind(info: bytes | None) -> str | None:
    if not info:
        return None
    kind = nlraw.first(info, IFLA_INFO_KIND)   # rtnl_link_info_fill puts the kind first: read it there
    return nlraw.cstr(kind[0]) if kind else nlraw.get_str(nlraw.attrs(info), IFLA_INFO_KIND)


def link_from_buffer(buf: bytes, start: int, end: int) -> Link:
    """One RTM_NEWLINK message's payload (ifinfomsg + attributes) -> Link."""
    _, link_type, index, flags, _ = _IFINFO.unpack_from(buf, start)
    a = nlraw.attrs(buf, start + _IFINFO.size, end, _LINK_ATTRS)
    oper = nlraw.get_u8(a, IFLA_OPERSTATE)
    return Link(
        name=nlraw.get_str(a, IFLA_IFNAME),
        ifindex=index,
        kind=_info_kind(a.get(IFLA_LINKINFO)),
        link_type=link_type,
        admin_up=bool(flags & IFF_UP),
        oper_state=OPER_STATES[oper] if oper is not None and oper < len(OPER_STATES) else "UNKNOWN",
        mtu=nlraw.get_u32(a, IFLA_MTU),
        min_mtu=nlraw.get_u32(a, IFLA_MIN_MTU),
        max_mtu=nlraw.get_u32(a, IFLA_MAX_MTU),
        num_rx_queues=nlraw.get_u32(a, IFLA_NUM_RX_QUEUES),
        num_tx_queues=nlraw.get_u32(a, IFLA_NUM_TX_QUEUES),
        peer_ifindex=nlraw.get_u32(a, IFLA_LINK),
        peer_netnsid=nlraw.get_s32(a, IFLA_LINK_NETNSID),
        parent_bus=nlraw.get_str(a, IFLA_PARENT_DEV_BUS_NAME),
        parent_dev=nlraw.get_str(a, IFLA_PARENT_DEV_NAME),
        master_ifindex=nlraw.get_u32(a, IFLA_MASTER),
        xdp_prog_ids=_xdp_ids(a.get(IFLA_XDP)),
    )


def _request(ifindex: int = 0) -> bytes:
    return _IFINFO.pack(socket.AF_UNSPEC, 0, ifindex, 0, 0) + nlraw.nla(IFLA_EXT_MASK,
                                                                         nlraw.u32(RTEXT_FILTER_SKIP_STATS))


def _name(buf: bytes, start: int, end: int) -> str | None:
    """A link message's name without walking it: rtnl_fill_ifinfo puts IFLA_IFNAME first (None
    when it is not there: the caller then decodes the whole message)."""
    name = nlraw.first(buf, IFLA_IFNAME, start + _IFINFO.size, end)
    return nlraw.cstr(name[0]) if name else None


def dump_links(sock: nlraw.Socket | None = None, names: set[str] | None = None) -> list[Link]:
    """All links of the current network namespace, in one dump; with `names`, only those links
    and the links they name as IFLA_LINK (a veth's peer, a vlan's lower device) are decoded and
    returned, in the dump's order: a look at a few links among thousands costs the dump, not the
    decoding of every link."""
    if sock is None:
        with nlraw.Socket(nlraw.NETLINK_ROUTE) as own:
            return dump_links(own, names)
    replies = sock.request(RTM_GETLINK, _request(), dump=True)
    if names is None:
        return [link_from_buffer(*m) for m in replies]
    order: list[int] = []
    raw: dict[int, tuple[bytes, int, int]] = {}
    got: dict[int, Link] = {}
    for buf, start, end in replies:
        index = _IFINFO.unpack_from(buf, start)[2]
        order.append(index)
        name = _name(buf, start, end)
        if name is None or name in names:
            got[index] = link_from_buffer(buf, start, end)
        else:
            raw[index] = (buf, start, end)
    for link in list(got.values()):
        if link.peer_ifindex in raw and link.peer_netnsid is None:
            got[link.peer_ifindex] = link_from_buffer(*raw[link.peer_ifindex])
    return [got[i] for i in order if i in got]


def link_names(sock: nlraw.Socket | None = None) -> set[str]:
    """The names of every link of the current network namespace: one dump, each message read up
    to its first attribute."""
    if sock is None:
        with nlraw.Socket(nlraw.NETLINK_ROUTE) as own:
            return link_names(own)
    out = set()
    for buf, start, end in sock.request(RTM_GETLINK, _request(), dump=True):
        name = _name(buf, start, end)
        out.add(name if name is not None else link_from_buffer(buf, start, end).name)
    return out


def get_link(ifindex: int) -> Link:
    """One link by index (ENODEV as nlraw.NetlinkError when it is gone)."""
    with nlraw.Socket(nlraw.NETLINK_ROUTE) as sock:
        (link,) = [link_from_buffer(*m) for m in sock.request(RTM_GETLINK, _request(ifindex))]
    return link


def xdp_prog_ids(ifindex: int) -> dict[str, int]:
    """mode -> program id attached on one link, its IFLA_XDP alone decoded (an attach reads it
    back for every interface it changes)."""
    with nlraw.Socket(nlraw.NETLINK_ROUTE) as sock:
        (ids,) = [_xdp_ids(nlraw.attrs(buf, start + _IFINFO.size, end, _XDP_ONLY).get(IFLA_XDP))
                  for buf, start, end in sock.request(RTM_GETLINK, _request(ifindex))]
    return ids


_XDP_ONLY = frozenset((IFLA_XDP,))


# Routes and addresses, for the guard (include/uapi/linux/rtnetlink.h, if_addr.h)
RTM_GETADDR, RTM_GETROUTE = 22, 26
RTA_DST, RTA_OIF, RTA_MULTIPATH = 1, 4, 9
IFA_ADDRESS = 1
_RTMSG = struct.Struct("=BBBBBBBBI")   # struct rtmsg
_IFADDR = struct.Struct("=BBBBI")      # struct ifaddrmsg
_RTNH = struct.Struct("=HBBi")         # struct rtnexthop


def default_route_oifs(family: int) -> list[int]:
    """Output interfaces of the default routes (no RTA_DST) of `family`, any table; multipath
    routes give each hop's interface."""
    out = []
    with nlraw.Socket(nlraw.NETLINK_ROUTE) as sock:
        for buf, s, e in sock.request(RTM_GETROUTE, _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0), dump=True):
            a = nlraw.attrs(buf, s + _RTMSG.size, e, frozenset((RTA_DST, RTA_OIF, RTA_MULTIPATH)))
            if RTA_DST in a:
                continue
            oif = nlraw.get_u32(a, RTA_OIF)
            if oif:
                out.append(oif)
            hops, off = a.get(RTA_MULTIPATH, b""), 0
            while off + _RTNH.size <= len(hops):
                ln, _, _, ifindex = _RTNH.unpack_from(hops, off)
                if ln < _RTNH.size:
                    break
                if ifindex:
                    out.append(ifindex)
                off += (ln + 3) & -4
    return out


def addresses() -> list[tuple[int, bytes]]:
    """(ifindex, address bytes) of every IPv4 and IPv6 address (IFA_ADDRESS)."""
    out = []
    with nlraw.Socket(nlraw.NETLINK_ROUTE) as sock:
        for buf, s, e in sock.request(RTM_GETADDR, _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0), dump=True):
            index = _IFADDR.unpack_from(buf, s)[4]
            addr = nlraw.attrs(buf, s + _IFADDR.size, e, frozenset((IFA_ADDRESS,))).get(IFA_ADDRESS)
            if addr:
                out.append((index, addr))
    return out
