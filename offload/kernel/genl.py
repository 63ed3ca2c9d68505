"""Generic netlink adapters: the ethtool family (features, channels, rings) and the `netdev`
family (XDP features), each read with one dump for every device of the namespace.

pyroute2's NlEthtool asks per device and re-resolves the family on every call, and decoding a
thousand replies into its message objects is most of a probe's time; the dumps here go through
`nlraw` (why, with numbers: its docstring and docs/benchmarks.md). Devices of one driver send the
same bytes after the part naming the device (`by_device`): those are decoded once per dump.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from offload.kernel import nlraw
from offload.kernel.nlraw import NetlinkError, get_str, get_u32, nest, nla

# include/uapi/linux/ethtool_netlink.h (and the _generated header of newer kernels)
ETHTOOL_MSG_STRSET_GET = 1
ETHTOOL_MSG_FEATURES_GET = 11
ETHTOOL_MSG_FEATURES_SET = 12
ETHTOOL_MSG_RINGS_GET = 15
ETHTOOL_MSG_CHANNELS_GET = 17
ETHTOOL_FLAG_COMPACT_BITSETS = 1 << 0
ETH_SS_STATS = 1       # the driver's own statistics (`ethtool -S`)
ETH_SS_FEATURES = 4
HEADER = 1                                   # ETHTOOL_A_*_HEADER is attribute 1 of every message
A_HEADER_DEV_INDEX, A_HEADER_FLAGS = 1, 3
A_BITSET_BITS, A_BITSET_VALUE = 3, 4
A_BITSET_BITS_BIT, A_BITSET_BIT_NAME, A_BITSET_BIT_VALUE = 1, 2, 3
A_FEATURES_HW, A_FEATURES_WANTED, A_FEATURES_ACTIVE, A_FEATURES_NOCHANGE = 2, 3, 4, 5
A_STRSET_STRINGSETS, A_STRINGSETS_STRINGSET, A_STRINGSET_ID, A_STRINGSET_STRINGS = 2, 1, 1, 3
A_STRINGS_STRING, A_STRING_INDEX, A_STRING_VALUE = 1, 1, 2
# ETHTOOL_A_CHANNELS_*: RX_MAX, TX_MAX, OTHER_MAX, COMBINED_MAX, RX_COUNT, TX_COUNT, OTHER_COUNT, COMBINED_COUNT
A_CHANNELS = range(2, 10)
A_RINGS_RX_MAX, A_RINGS_TX_MAX, A_RINGS_RX, A_RINGS_TX = 2, 5, 6, 9

# include/uapi/linux/netdev.h: enum netdev_xdp_act, in the kernel's spelling.
NETDEV_CMD_DEV_GET = 1
NETDEV_A_DEV_IFINDEX, NETDEV_A_DEV_XDP_FEATURES, NETDEV_A_DEV_XDP_ZC_MAX_SEGS = 1, 3, 4
XDP_ACT_NAMES = (
    (1 << 0, "basic"),
    (1 << 1, "redirect"),
    (1 << 2, "ndo-xmit"),
    (1 << 3, "xsk-zerocopy"),
    (1 << 4, "hw-offload"),
    (1 << 5, "rx-sg"),
    (1 << 6, "ndo-xmit-sg"),
)


@dataclass
class Channels:
    rx: int | None
    tx: int | None
    other: int | None
    combined: int | None
    rx_max: int | None
    tx_max: int | None
    other_max: int | None
    combined_max: int | None


@dataclass
class Rings:
    rx: int | None
    tx: int | None
    rx_max: int | None
    tx_max: int | None


@dataclass
class NetdevXdp:
    features: list[str]
    zc_max_segs: int | None


def xdp_feature_names(mask: int) -> list[str]:
    return [name for bit, name in XDP_ACT_NAMES if mask & bit]


def bitset_mask(raw: bytes | None) -> int:
    """An ethtool compact bitset (host-order u32 words, word 0 first) as one integer."""
    if not raw:
        return 0
    n = len(raw) // 4
    mask = 0
    for w, word in enumerate(struct.unpack(f"={n}I", raw[: n * 4])):
        mask |= word << (32 * w)
    return mask


def mask_bits(mask: int) -> set[int]:
    bits = set()
    while mask:
        low = mask & -mask
        bits.add(low.bit_length() - 1)
        mask ^= low
    return bits


def bitset_bits(raw: bytes | None) -> set[int]:
    return mask_bits(bitset_mask(raw))


T = TypeVar("T")
_U32 = struct.Struct("=I")


def by_device(replies: Iterator[tuple[bytes, int, int]], ident: int, ifindex: Callable[[bytes], int | None],
              decode: Callable[[dict[int, bytes]], T]) -> dict[int, T]:
    """ifindex -> decode(attributes) of each reply of a dump (generic netlink: the genlmsghdr
    skipped). The kernel puts the attribute naming the device (type `ident`, its index read from
    the payload by `ifindex`) first; the bytes after it are the device's state, the same for
    devices of one driver in the same state, so equal bytes are decoded once and their value
    shared (read-only). A reply not led by `ident` is decoded on its own."""
    out: dict[int, T] = {}
    seen: dict[bytes, T] = {}
    for buf, start, end in replies:
        led = nlraw.first(buf, ident, start + 4, end)
        if led is None:
            a = nlraw.attrs(buf, start + 4, end)
            index = ifindex(a[ident]) if ident in a else None
            if index is not None:
                out[index] = decode(a)
            continue
        rest = buf[led[1]:end]
        if rest not in seen:
            seen[rest] = decode(nlraw.attrs(rest))
        index = ifindex(led[0])
        if index is not None:
            out[index] = seen[rest]
    return out


def _u32(payload: bytes) -> int | None:
    return _U32.unpack_from(payload)[0] if len(payload) >= 4 else None


def _header_ifindex(payload: bytes) -> int | None:
    # ethnl_fill_reply_header puts the index first: read it there, else walk the header
    index = nlraw.first(payload, A_HEADER_DEV_INDEX)
    return _u32(index[0]) if index else get_u32(nlraw.attrs(payload), A_HEADER_DEV_INDEX)


def _header(flags: int = 0, ifindex: int | None = None) -> bytes:
    # ethtool validates nests strictly: NLA_F_NESTED is set by nest()
    inner = [nla(A_HEADER_FLAGS, nlraw.u32(flags))]
    if ifindex is not None:
        inner.insert(0, nla(A_HEADER_DEV_INDEX, nlraw.u32(ifindex)))
    return nest(HEADER, *inner)


def _bitset_value(raw: bytes | None) -> int:
    return bitset_mask(nlraw.attrs(raw).get(A_BITSET_VALUE)) if raw else 0


def strset_strings(reply: dict[int, bytes]) -> list[str]:
    """The strings of an ETHTOOL_MSG_STRSET_GET reply (its top-level attributes) holding one set,
    by index; a set with gaps in its indices is refused (values would be misattributed)."""
    names: dict[int, str] = {}
    for t, sset in nlraw.attr_list(reply.get(A_STRSET_STRINGSETS, b"")):
        if t != A_STRINGSETS_STRINGSET:
            continue
        for t2, s in nlraw.attr_list(nlraw.attrs(sset).get(A_STRINGSET_STRINGS, b"")):
            if t2 == A_STRINGS_STRING:
                sa = nlraw.attrs(s)
                names[get_u32(sa, A_STRING_INDEX)] = get_str(sa, A_STRING_VALUE) or ""
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"ethtool string set with gaps in its indices: {sorted(names)[:8]}...")
    return [names[i] for i in range(len(names))]


class Ethtool(nlraw.Genl):
    """ethtool generic netlink (Linux >= 5.6)."""

    def __init__(self) -> None:
        super().__init__("ethtool")

    def _strings(self, set_id: int, ifindex: int | None = None) -> list[str]:
        # a device's own set (driver statistics) names the device; global sets need none
        body = _header(ifindex=ifindex) + nest(A_STRSET_STRINGSETS, nest(A_STRINGSETS_STRINGSET,
                                                                      nla(A_STRINGSET_ID, nlraw.u32(set_id))))
        (reply,) = list(self.genl(ETHTOOL_MSG_STRSET_GET, body))
        return strset_strings(reply)

    def feature_names(self) -> list[str]:
        return self._strings(ETH_SS_FEATURES)

    def stat_names(self, ifindex: int) -> list[str]:
        """The names of a device's driver statistics, in the order ETHTOOL_GSTATS returns values."""
        return self._strings(ETH_SS_STATS, ifindex)

    def _dump(self, cmd: int, decode: Callable[[dict[int, bytes]], T], flags: int = 0) -> dict[int, T]:
        """ifindex -> decode(reply) over one dump of `cmd` (equal replies decoded once: by_device)."""
        replies = self.request(self.family, nlraw.pack_genl(cmd) + _header(flags), dump=True)
        return by_device(replies, HEADER, _header_ifindex, decode)

    def features(self) -> dict[int, tuple[frozenset[str], frozenset[str]]]:
        """ifindex -> (active feature names, names that cannot be changed: `ethtool -k`'s [fixed])."""
        names = self.feature_names()
        everything = (1 << len(names)) - 1

        def decode(a: dict[int, bytes]) -> tuple[frozenset[str], frozenset[str]]:
            active = _bitset_value(a.get(A_FEATURES_ACTIVE)) & everything
            fixed = (everything & ~_bitset_value(a.get(A_FEATURES_HW))) | (
                _bitset_value(a.get(A_FEATURES_NOCHANGE)) & everything)
            return (frozenset(names[b] for b in mask_bits(active)), frozenset(names[b] for b in mask_bits(fixed)))
        return self._dump(ETHTOOL_MSG_FEATURES_GET, decode, ETHTOOL_FLAG_COMPACT_BITSETS)

    def set_features(self, ifindex: int, wanted: dict[str, bool]) -> None:
        """Turn features on or off (like `ethtool -K`); the kernel's refusal comes back as NetlinkError."""
        bits = []
        for name, on in wanted.items():
            bit = [nla(A_BITSET_BIT_NAME, nlraw.asciiz(name))] + ([nla(A_BITSET_BIT_VALUE, b"")] if on else [])
            bits.append(nest(A_BITSET_BITS_BIT, *bit))
        body = nest(HEADER, nla(A_HEADER_DEV_INDEX, nlraw.u32(ifindex))) + nest(
            A_FEATURES_WANTED, nest(A_BITSET_BITS, *bits))
        for _ in self.genl(ETHTOOL_MSG_FEATURES_SET, body):
            pass

    def channels(self) -> dict[int, Channels]:
        """ifindex -> channels (one object shared by devices reporting the same: read-only)."""
        def decode(a: dict[int, bytes]) -> Channels:
            rx_max, tx_max, other_max, combined_max, rx, tx, other, combined = (get_u32(a, t) for t in A_CHANNELS)
            return Channels(rx, tx, other, combined, rx_max, tx_max, other_max, combined_max)
        return self._dump(ETHTOOL_MSG_CHANNELS_GET, decode)

    def rings(self) -> dict[int, Rings]:
        """ifindex -> rings (one object shared by devices reporting the same: read-only)."""
        def decode(a: dict[int, bytes]) -> Rings:
            return Rings(get_u32(a, A_RINGS_RX), get_u32(a, A_RINGS_TX), get_u32(a, A_RINGS_RX_MAX),
                         get_u32(a, A_RINGS_TX_MAX))
        return self._dump(ETHTOOL_MSG_RINGS_GET, decode)


def netdev_xdp() -> dict[int, NetdevXdp] | None:
    """ifindex -> XDP features from the `netdev` family (Linux >= 6.3); None when the kernel lacks it."""
    try:
        sock = nlraw.Genl("netdev")
    except NetlinkError as e:
        if e.code in (errno.ENOENT, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise
    def decode(a: dict[int, bytes]) -> NetdevXdp:
        return NetdevXdp(xdp_feature_names(nlraw.get_u64(a, NETDEV_A_DEV_XDP_FEATURES) or 0),
                         get_u32(a, NETDEV_A_DEV_XDP_ZC_MAX_SEGS))
    with sock:
        # the device's index leads each reply (netdev_nl_dev_fill)
        replies = sock.request(sock.family, nlraw.pack_genl(NETDEV_CMD_DEV_GET), dump=True)
        return by_device(replies, NETDEV_A_DEV_IFINDEX, _u32, decode)
