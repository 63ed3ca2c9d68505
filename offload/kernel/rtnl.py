"""rtnetlink: one RTM_GETLINK dump -> plain link records."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyroute2 import IPRoute

IFF_UP = 0x1
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772

# IFLA_XDP per-mode attributes -> our mode names.
XDP_MODE_ATTRS = {
    "hw": "IFLA_XDP_HW_PROG_ID",
    "native": "IFLA_XDP_DRV_PROG_ID",
    "generic": "IFLA_XDP_SKB_PROG_ID",
}
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


def attr_map(msg, wanted: frozenset[str]) -> dict:
    """name -> value of the wanted attributes only. pyroute2 decodes an attribute when its value
    is read, so skipping the rest (stats, AF_SPEC, ...) is most of a probe's speed; get_attr()
    would also rescan the list on every call."""
    return {slot.name: slot.value for slot in msg["attrs"] if slot.name in wanted}


_LINK_ATTRS = frozenset((
    "IFLA_IFNAME", "IFLA_LINKINFO", "IFLA_OPERSTATE", "IFLA_MTU", "IFLA_MIN_MTU", "IFLA_MAX_MTU",
    "IFLA_NUM_RX_QUEUES", "IFLA_NUM_TX_QUEUES", "IFLA_LINK", "IFLA_LINK_NETNSID", "IFLA_PARENT_DEV_BUS_NAME",
    "IFLA_PARENT_DEV_NAME", "IFLA_MASTER", "IFLA_XDP"))


def _xdp_ids(a: dict) -> dict[str, int]:
    xdp = a.get("IFLA_XDP")
    if not xdp:
        return {}
    ids = {mode: xdp.get_attr(attr) for mode, attr in XDP_MODE_ATTRS.items()}
    ids = {m: i for m, i in ids.items() if i}
    if not ids:  # older kernels report only IFLA_XDP_PROG_ID with the single attached mode
        mode = _XDP_ATTACHED_MODE.get(xdp.get_attr("IFLA_XDP_ATTACHED") or 0)
        prog = xdp.get_attr("IFLA_XDP_PROG_ID")
        if mode and prog:
            ids[mode] = prog
    return ids


def link_from_msg(msg) -> Link:
    a = attr_map(msg, _LINK_ATTRS)
    info = a.get("IFLA_LINKINFO")
    return Link(
        name=a.get("IFLA_IFNAME"),
        ifindex=msg["index"],
        kind=info.get_attr("IFLA_INFO_KIND") if info else None,
        link_type=msg["ifi_type"],
        admin_up=bool(msg["flags"] & IFF_UP),
        oper_state=a.get("IFLA_OPERSTATE") or "UNKNOWN",
        mtu=a.get("IFLA_MTU"),
        min_mtu=a.get("IFLA_MIN_MTU"),
        max_mtu=a.get("IFLA_MAX_MTU"),
        num_rx_queues=a.get("IFLA_NUM_RX_QUEUES"),
        num_tx_queues=a.get("IFLA_NUM_TX_QUEUES"),
        peer_ifindex=a.get("IFLA_LINK"),
        peer_netnsid=a.get("IFLA_LINK_NETNSID"),
        parent_bus=a.get("IFLA_PARENT_DEV_BUS_NAME"),
        parent_dev=a.get("IFLA_PARENT_DEV_NAME"),
        master_ifindex=a.get("IFLA_MASTER"),
        xdp_prog_ids=_xdp_ids(a),
    )


def dump_links(ipr: IPRoute | None = None) -> list[Link]:
    """All links of the current network namespace, in one dump."""
    if ipr is not None:
        return [link_from_msg(m) for m in ipr.get_links()]
    with IPRoute() as own:
        return [link_from_msg(m) for m in own.get_links()]
