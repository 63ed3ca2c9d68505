"""devlink generic netlink: which netdev belongs to which devlink instance, its firmware
versions and eswitch mode. Dumps for ports and info; eswitch is asked per instance (few).

The port dump goes through `nlraw` (most hosts have no devlink port with a netdev, and then
pyroute2 is never imported); instance details go through pyroute2's DevlinkSocket."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from offload.kernel import nlraw

DEVLINK_CMD_PORT_GET = 5
DEVLINK_ATTR_PORT_NETDEV_IFINDEX = 6

ESWITCH_MODES = {0: "legacy", 1: "switchdev"}


@dataclass
class DevlinkInstance:
    handle: str                                   # "bus/dev", e.g. "pci/0000:03:00.0"
    driver: str | None = None
    versions: dict[str, str] = field(default_factory=dict)   # running + fixed versions
    eswitch_mode: str | None = None


def _versions(msg) -> dict[str, str]:
    out = {}
    for kind in ("DEVLINK_ATTR_INFO_VERSION_FIXED", "DEVLINK_ATTR_INFO_VERSION_RUNNING"):
        for v in msg.get_attrs(kind):
            out[v.get_attr("DEVLINK_ATTR_INFO_VERSION_NAME")] = v.get_attr("DEVLINK_ATTR_INFO_VERSION_VALUE")
    return out


def _req(cmd: str, attrs: list | None = None):
    from pyroute2.netlink.devlink import DEVLINK_NAMES, devlinkcmd

    msg = devlinkcmd()
    msg["cmd"] = DEVLINK_NAMES[cmd]
    msg["version"] = 1
    for a in attrs or []:
        msg["attrs"].append(a)
    return msg


def devlink_by_ifindex() -> dict[int, DevlinkInstance]:
    """netdev ifindex -> its devlink instance; empty when the kernel has no devlink family."""
    try:
        with nlraw.Genl("devlink") as raw:
            if not any(nlraw.get_u32(a, DEVLINK_ATTR_PORT_NETDEV_IFINDEX)
                       for a in raw.genl(DEVLINK_CMD_PORT_GET, dump=True)):
                return {}
    except nlraw.NetlinkError as e:
        if e.code in (errno.ENOENT, errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    return _instances()


def _instances() -> dict[int, DevlinkInstance]:
    from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST
    from pyroute2.netlink.devlink import DevlinkSocket
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        sock = DevlinkSocket()
        sock.bind()
    except NetlinkError as e:
        if e.code in (errno.ENOENT, errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    with sock:
        dump = lambda cmd: list(sock.nlm_request(  # noqa: E731
            _req(cmd), msg_type=sock.prid, msg_flags=NLM_F_REQUEST | NLM_F_DUMP))
        handle = lambda m: f"{m.get_attr('DEVLINK_ATTR_BUS_NAME')}/{m.get_attr('DEVLINK_ATTR_DEV_NAME')}"  # noqa: E731
        ports = [m for m in dump("DEVLINK_CMD_PORT_GET") if m.get_attr("DEVLINK_ATTR_PORT_NETDEV_IFINDEX")]
        if not ports:
            return {}
        instances: dict[str, DevlinkInstance] = {}
        try:
            for m in dump("DEVLINK_CMD_INFO_GET"):
                instances[handle(m)] = DevlinkInstance(handle(m), m.get_attr("DEVLINK_ATTR_INFO_DRIVER_NAME"),
                                                       _versions(m))
        except NetlinkError:
            pass  # a driver without info_get: identity still comes from ethtool
        for m in ports:
            h = handle(m)
            inst = instances.setdefault(h, DevlinkInstance(h))
            if inst.eswitch_mode is None:
                bus, dev = h.split("/", 1)
                try:
                    (r,) = sock.nlm_request(
                        _req("DEVLINK_CMD_ESWITCH_GET", [("DEVLINK_ATTR_BUS_NAME", bus), ("DEVLINK_ATTR_DEV_NAME", dev)]),
                        msg_type=sock.prid, msg_flags=NLM_F_REQUEST)
                    inst.eswitch_mode = ESWITCH_MODES.get(r.get_attr("DEVLINK_ATTR_ESWITCH_MODE"), "unknown")
                except NetlinkError:
                    inst.eswitch_mode = None  # no eswitch on this device
        return {m.get_attr("DEVLINK_ATTR_PORT_NETDEV_IFINDEX"): instances[handle(m)] for m in ports}
