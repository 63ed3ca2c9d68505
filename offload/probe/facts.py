"""Gather what the kernel says about every interface into plain, JSON-ready records.

Cost is fixed: one rtnetlink dump, three ethtool dumps (and the feature names), one netdev dump,
one devlink port dump (instance details only where ports exist), one ioctl per device for driver
identity, a sysfs read per PCI-backed device, a bpf() look-up per distinct attached program. No
processes, no per-device netlink round trips; the dumps are decoded straight from the receive
buffers (`kernel.nlraw`), attributes the report does not use are never decoded.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field

from offload.kernel import devlink, genl, nlraw, rtnl
from offload.kernel.drvinfo import DrvInfoReader
from offload.kernel.identity import pci_ids
from offload.kernel.version import parse_version

# ethtool features that decide or affect XDP and offload (kernel's netdev_features_strings).
RELEVANT_FEATURES = (
    "large-receive-offload",
    "rx-gro-hw",
    "rx-gro",
    "rx-gro-list",
    "hw-tc-offload",
    "rx-ntuple-filter",
    "rx-hashing",
    "rx-checksum",
    "rx-vlan-hw-parse",
    "tx-vlan-hw-insert",
    "rx-vlan-filter",
    "tx-scatter-gather",
    "tx-tcp-segmentation",
)


@dataclass
class HostFacts:
    kernel: str                    # "6.18.44-..." as uname -r
    netdev_family: bool            # the kernel answers the `netdev` genl family (Linux >= 6.3)
    cpus: int

    @property
    def kernel_version(self) -> tuple[int, int]:
        return parse_version(self.kernel)


@dataclass
class DeviceFacts:
    """Everything the decisions need about one interface; recorded as fixtures for tests."""

    name: str
    ifindex: int
    kind: str
    driver: str | None = None
    driver_version: str | None = None
    firmware_version: str | None = None
    bus_info: str | None = None
    pci: dict | None = None
    devlink: dict | None = None
    admin_up: bool = True
    oper_state: str = "UNKNOWN"
    mtu: int = 1500
    min_mtu: int | None = None
    max_mtu: int | None = None
    peer: dict | None = None          # {"ifindex", "name", "mtu", "netnsid"} for veth and stacked devices
    num_rx_queues: int | None = None
    num_tx_queues: int | None = None
    channels: dict | None = None
    rings: dict | None = None
    features_active: list[str] = field(default_factory=list)
    features_fixed: list[str] = field(default_factory=list)
    xdp_features: list[str] | None = None   # None: the kernel has no netdev family
    xdp_zc_max_segs: int | None = None
    attached: list[dict] = field(default_factory=list)  # [{"mode", "prog_id", "name"}]

    @classmethod
    def from_dict(cls, d: dict) -> "DeviceFacts":
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)




_NO_FEATURES: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())


def _kind(link: rtnl.Link) -> str:
    if link.link_type == rtnl.ARPHRD_LOOPBACK:
        return "loopback"
    if link.kind:
        return link.kind
    return "physical" if link.parent_bus else "virtual"


def gather(names: list[str] | None = None) -> tuple[HostFacts, list[DeviceFacts]]:
    """Facts for the named interfaces (all when None) of the current network namespace."""
    want = set(names) if names is not None else None
    with nlraw.Socket(nlraw.NETLINK_ROUTE) as sock:
        links = rtnl.dump_links(sock, want)   # named: those and their peers decoded, no others
    by_index = {link.ifindex: link for link in links}
    if want is not None:
        links = [link for link in links if link.name in want]
    features, channels, rings, xdp, dl = _genl_dumps()
    prog_names: dict[int, str | None] = {}   # one bpf() look-up per program, however many links run it
    ordered: dict[frozenset[str], list[str]] = {}   # feature sets are shared by a driver's devices: sorted once

    def by_name(names: frozenset[str]) -> list[str]:
        if names not in ordered:
            ordered[names] = sorted(names)
        return list(ordered[names])
    host = HostFacts(kernel=platform.release(), netdev_family=xdp is not None, cpus=os.cpu_count() or 1)

    out: list[DeviceFacts] = []
    with DrvInfoReader() as drv:
        for link in links:
            info = drv.read(link.name)
            active, fixed = features.get(link.ifindex, _NO_FEATURES)
            f = DeviceFacts(
                name=link.name,
                ifindex=link.ifindex,
                kind=_kind(link),
                driver=info.driver if info else None,
                driver_version=info.version if info else None,
                firmware_version=info.firmware if info else None,
                bus_info=(info.bus_info if info else None) or link.parent_dev,
                admin_up=link.admin_up,
                oper_state=link.oper_state,
                mtu=link.mtu,
                min_mtu=link.min_mtu,
                max_mtu=link.max_mtu,
                num_rx_queues=link.num_rx_queues,
                num_tx_queues=link.num_tx_queues,
                # vars(), not asdict(): flat records of ints, and asdict's deep copy costs ~0.1 ms each
                channels=dict(vars(channels[link.ifindex])) if link.ifindex in channels else None,
                rings=dict(vars(rings[link.ifindex])) if link.ifindex in rings else None,
                features_active=by_name(active),
                features_fixed=by_name(fixed),
            )
            if link.peer_ifindex and link.peer_ifindex != link.ifindex:
                same_ns = link.peer_netnsid is None
                peer = by_index.get(link.peer_ifindex) if same_ns else None
                f.peer = {"ifindex": link.peer_ifindex, "netnsid": link.peer_netnsid,
                          "name": peer.name if peer else None, "mtu": peer.mtu if peer else None,
                          "num_tx_queues": peer.num_tx_queues if peer else None}
            if xdp is not None:
                x = xdp.get(link.ifindex)
                f.xdp_features = list(x.features) if x else []   # the dump's list is shared
                f.xdp_zc_max_segs = x.zc_max_segs if x else None
            if link.parent_bus:  # PCI ids sit above virtio, SR-IOV VFs, auxiliary devices
                ids = pci_ids(link.name)
                f.pci = asdict(ids) if ids else None
            if link.ifindex in dl:
                f.devlink = asdict(dl[link.ifindex])
                f.firmware_version = f.firmware_version or _devlink_fw(f.devlink)
            for mode, prog_id in link.xdp_prog_ids.items():
                if prog_id not in prog_names:
                    from offload.kernel import bpfsys  # here: ~8 ms of imports a probe without programs skips

                    p = bpfsys.prog_info(prog_id)
                    prog_names[prog_id] = p.name if p else None
                f.attached.append({"mode": mode, "prog_id": prog_id, "name": prog_names[prog_id]})
            out.append(f)
    return host, out


def _genl_dumps() -> tuple:
    try:
        with genl.Ethtool() as eth:
            features, channels, rings = eth.features(), eth.channels(), eth.rings()
    except nlraw.NetlinkError:  # kernel < 5.6: no ethtool netlink; the rest still stands
        features, channels, rings = {}, {}, {}
    return features, channels, rings, genl.netdev_xdp(), devlink.devlink_by_ifindex()


def _devlink_fw(dl: dict) -> str | None:
    versions = dl.get("versions") or {}
    for key in ("fw", "fw.mgmt", "fw.app", "fw.bundle_id"):
        if key in versions:
            return versions[key]
    return None
