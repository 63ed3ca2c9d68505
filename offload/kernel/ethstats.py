"""A device's driver statistics (`ethtool -S`): names through ethtool netlink, values through the
ETHTOOL_GSTATS ioctl (netlink carries only standard statistics, not the driver's own, such as
veth's per-queue `tx_queue_N_xdp_xmit_errors`)."""

from __future__ import annotations

import array
import ctypes
import errno
import fcntl
import re
import socket
import struct
from dataclasses import dataclass

from offload.kernel import genl
from offload.kernel.nlraw import NetlinkError

SIOCETHTOOL = 0x8946
ETHTOOL_GSTATS = 0x0000001D
# The kernel writes as many values as the driver counts *now*, whatever n_stats we pass, so the
# buffer has room for a set that grew since the names were read; a size change means re-read.
_SLACK = 1024

# Per-queue names in the spellings drivers use: veth, virtio_net, ice, ixgbe `rx_queue_0_packets`;
# mlx5 `rx0_packets`; i40e `rx-0.packets`.
_QUEUE_RE = (re.compile(r"^(rx|tx)_queue_(\d+)_(.+)$"), re.compile(r"^(rx|tx)(\d+)_(.+)$"),
             re.compile(r"^(rx|tx)-(\d+)\.(.+)$"))


class _ifreq(ctypes.Structure):
    _fields_ = [("ifr_name", ctypes.c_char * 16), ("ifr_data", ctypes.c_void_p), ("pad", ctypes.c_char * 16)]


@dataclass
class QueueStats:
    """Driver statistics split by queue: {'rx'|'tx': {queue: {stat: value}}}, and the rest."""

    queues: dict[str, dict[int, dict[str, int]]]
    other: dict[str, int]


def split_queues(stats: dict[str, int]) -> QueueStats:
    queues: dict[str, dict[int, dict[str, int]]] = {"rx": {}, "tx": {}}
    other = {}
    for name, value in stats.items():
        for rx in _QUEUE_RE:
            if m := rx.match(name):
                queues[m[1]].setdefault(int(m[2]), {})[m[3]] = value
                break
        else:
            other[name] = value
    return QueueStats(queues, other)


def unpack_gstats(buf: bytes, names: list[str]) -> dict[str, int] | None:
    """struct ethtool_stats {u32 cmd; u32 n_stats; u64 data[]}: None when the driver's count is
    no longer the number of names (the set changed between the two reads)."""
    _, n = struct.unpack_from("=II", buf)
    if n != len(names):
        return None
    return dict(zip(names, array.array("Q", buf[8: 8 + 8 * n])))


class EthStats:
    """Reads driver statistics of devices in the current network namespace; one netlink socket
    and one ioctl socket for every read."""

    def __init__(self) -> None:
        try:
            self.eth: genl.Ethtool | None = genl.Ethtool()
        except NetlinkError:   # kernel < 5.6: no ethtool netlink, so no names to read values by
            self.eth = None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.names: dict[int, list[str]] = {}

    def read(self, ifname: str) -> dict[str, int]:
        """{stat name: value}; {} for a device whose driver keeps no statistics of its own (or a
        kernel without ethtool netlink)."""
        ifindex = socket.if_nametoindex(ifname)
        if self.eth is None:
            return {}
        for _ in range(3):
            names = self.names.get(ifindex)
            if names is None:
                try:
                    names = self.names[ifindex] = self.eth.stat_names(ifindex)
                except NetlinkError as e:
                    if e.code != errno.EOPNOTSUPP:
                        raise
                    names = self.names[ifindex] = []
            if not names:
                return {}
            buf = ctypes.create_string_buffer(8 + 8 * (len(names) + _SLACK))
            struct.pack_into("=II", buf, 0, ETHTOOL_GSTATS, len(names))
            req = _ifreq(ifr_name=ifname.encode(), ifr_data=ctypes.addressof(buf))
            try:
                fcntl.ioctl(self.sock.fileno(), SIOCETHTOOL, req)
            except OSError as e:
                if e.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
                    return {}
                raise
            got = unpack_gstats(buf.raw, names)
            if got is not None:
                return got
            del self.names[ifindex]
        raise OSError(errno.EAGAIN, f"{ifname}: its driver's statistics kept changing size while being read")

    def close(self) -> None:
        self.sock.close()
        if self.eth is not None:
            self.eth.close()

    def __enter__(self) -> "EthStats":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
