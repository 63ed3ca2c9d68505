"""Generic netlink adapters: the ethtool family (features, channels, rings) and the `netdev`
family (XDP features), each read with one dump for every device of the namespace.

pyroute2's NlEthtool asks per device and re-resolves the family on every call; a probe over a
thousand interfaces needs dumps, so the messages are declared here on pyroute2's genl classes.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass

from pyroute2.netlink import (
    NLA_F_NESTED,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_MULTI,
    NLM_F_REQUEST,
    genlmsg,
    nla,
)
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import GenericNetlinkSocket
from pyroute2.netlink.generic.ethtool import ethtool_rings_msg, ethtool_strset_msg

from offload.kernel.rtnl import attr_map

# include/uapi/linux/ethtool_netlink.h
ETHTOOL_MSG_STRSET_GET = 1
ETHTOOL_MSG_FEATURES_GET = 11
ETHTOOL_MSG_FEATURES_SET = 12
ETHTOOL_MSG_RINGS_GET = 15
ETHTOOL_MSG_CHANNELS_GET = 17
ETHTOOL_FLAG_COMPACT_BITSETS = 1 << 0
ETH_SS_STATS = 1       # the driver's own statistics (`ethtool -S`)
ETH_SS_FEATURES = 4

# include/uapi/linux/netdev.h: enum netdev_xdp_act, in the kernel's spelling.
NETDEV_CMD_DEV_GET = 1
XDP_ACT_NAMES = (
    (1 << 0, "basic"),
    (1 << 1, "redirect"),
    (1 << 2, "ndo-xmit"),
    (1 << 3, "xsk-zerocopy"),
    (1 << 4, "hw-offload"),
    (1 << 5, "rx-sg"),
    (1 << 6, "ndo-xmit-sg"),
)


class _header(nla):
    nla_flags = NLA_F_NESTED  # ethtool validates nests strictly
    nla_map = (
        ("ETHTOOL_A_HEADER_UNSPEC", "none"),
        ("ETHTOOL_A_HEADER_DEV_INDEX", "uint32"),
        ("ETHTOOL_A_HEADER_DEV_NAME", "asciiz"),
        ("ETHTOOL_A_HEADER_FLAGS", "uint32"),
    )


class _bitset(nla):
    nla_flags = NLA_F_NESTED
    # Compact bitsets: VALUE and MASK are arrays of host-order u32 words.
    nla_map = (
        ("ETHTOOL_A_BITSET_UNSPEC", "none"),
        ("ETHTOOL_A_BITSET_NOMASK", "flag"),
        ("ETHTOOL_A_BITSET_SIZE", "uint32"),
        ("ETHTOOL_A_BITSET_BITS", "none"),
        ("ETHTOOL_A_BITSET_VALUE", "cdata"),
        ("ETHTOOL_A_BITSET_MASK", "cdata"),
    )


class features_msg(genlmsg):
    nla_map = (
        ("ETHTOOL_A_FEATURES_UNSPEC", "none"),
        ("ETHTOOL_A_FEATURES_HEADER", "_header"),
        ("ETHTOOL_A_FEATURES_HW", "_bitset"),
        ("ETHTOOL_A_FEATURES_WANTED", "none"),  # unused: not decoded
        ("ETHTOOL_A_FEATURES_ACTIVE", "_bitset"),
        ("ETHTOOL_A_FEATURES_NOCHANGE", "_bitset"),
    )
    _header = _header
    _bitset = _bitset


class _bitset_named(nla):
    """A verbose bitset to send: named bits with values (mask = the bits listed)."""

    nla_flags = NLA_F_NESTED
    nla_map = (
        ("ETHTOOL_A_BITSET_UNSPEC", "none"),
        ("ETHTOOL_A_BITSET_NOMASK", "flag"),
        ("ETHTOOL_A_BITSET_SIZE", "uint32"),
        ("ETHTOOL_A_BITSET_BITS", "bits"),
    )

    class bits(nla):
        nla_flags = NLA_F_NESTED
        nla_map = (("ETHTOOL_A_BITSET_BITS_UNSPEC", "none"), ("ETHTOOL_A_BITSET_BITS_BIT", "bit"))

        class bit(nla):
            nla_flags = NLA_F_NESTED
            nla_map = (
                ("ETHTOOL_A_BITSET_BIT_UNSPEC", "none"),
                ("ETHTOOL_A_BITSET_BIT_INDEX", "uint32"),
                ("ETHTOOL_A_BITSET_BIT_NAME", "asciiz"),
                ("ETHTOOL_A_BITSET_BIT_VALUE", "flag"),
            )


class features_set_msg(genlmsg):
    nla_map = (
        ("ETHTOOL_A_FEATURES_UNSPEC", "none"),
        ("ETHTOOL_A_FEATURES_HEADER", "_header"),
        ("ETHTOOL_A_FEATURES_HW", "none"),
        ("ETHTOOL_A_FEATURES_WANTED", "_bitset_named"),
    )
    _header = _header
    _bitset_named = _bitset_named


class channels_msg(genlmsg):
    nla_map = (
        ("ETHTOOL_A_CHANNELS_UNSPEC", "none"),
        ("ETHTOOL_A_CHANNELS_HEADER", "_header"),
        ("ETHTOOL_A_CHANNELS_RX_MAX", "uint32"),
        ("ETHTOOL_A_CHANNELS_TX_MAX", "uint32"),
        ("ETHTOOL_A_CHANNELS_OTHER_MAX", "uint32"),
        ("ETHTOOL_A_CHANNELS_COMBINED_MAX", "uint32"),
        ("ETHTOOL_A_CHANNELS_RX_COUNT", "uint32"),
        ("ETHTOOL_A_CHANNELS_TX_COUNT", "uint32"),
        ("ETHTOOL_A_CHANNELS_OTHER_COUNT", "uint32"),
        ("ETHTOOL_A_CHANNELS_COMBINED_COUNT", "uint32"),
    )
    _header = _header


class rings_msg(ethtool_rings_msg):
    _header = _header
    nla_map = (("ETHTOOL_A_RINGS_UNSPEC", "none"), ("ETHTOOL_A_RINGS_HEADER", "_header")) + tuple(
        ethtool_rings_msg.nla_map[2:]
    )


class strset_msg(ethtool_strset_msg):
    """pyroute2's message with our strict (NLA_F_NESTED) header."""

    _header = _header
    nla_map = (("ETHTOOL_A_STRSET_UNSPEC", "none"), ("ETHTOOL_A_STRSET_HEADER", "_header")) + tuple(
        ethtool_strset_msg.nla_map[2:]
    )


class netdev_msg(genlmsg):
    nla_map = (
        ("NETDEV_A_DEV_UNSPEC", "none"),
        ("NETDEV_A_DEV_IFINDEX", "uint32"),
        ("NETDEV_A_DEV_PAD", "none"),
        ("NETDEV_A_DEV_XDP_FEATURES", "uint64"),
        ("NETDEV_A_DEV_XDP_ZC_MAX_SEGS", "uint32"),
        ("NETDEV_A_DEV_XDP_RX_METADATA_FEATURES", "uint64"),
        ("NETDEV_A_DEV_XSK_FEATURES", "uint64"),
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


def strset_strings(reply: genlmsg) -> list[str]:
    """The strings of a decoded ETHTOOL_MSG_STRSET_GET reply holding one set, by index."""
    names: dict[int, str] = {}
    sets = reply.get_attr("ETHTOOL_A_STRSET_STRINGSETS")
    sset = sets.get_attr("ETHTOOL_A_STRINGSETS_STRINGSET") if sets else None
    strings = sset.get_attr("ETHTOOL_A_STRINGSET_STRINGS") if sset else None
    for s in strings.get_attrs("ETHTOOL_A_STRINGS_STRING") if strings else ():
        names[s.get_attr("ETHTOOL_A_STRING_INDEX")] = s.get_attr("ETHTOOL_A_STRING_VALUE") or ""
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"ethtool string set with gaps in its indices: {sorted(names)[:8]}...")
    return [names[i] for i in range(len(names))]


class _Genl:
    """One generic-netlink socket bound once to a family; each dump names its message class."""

    def __init__(self, family: str, first_class: type) -> None:
        self.sock = GenericNetlinkSocket()
        try:
            self.sock.bind(family, first_class)
        except Exception:
            self.sock.close()
            raise

    def dump(self, cls: type, msg: genlmsg) -> list:
        self.sock.asyncore.marshal.msg_map[self.sock.prid] = cls
        return list(self.sock.nlm_request(msg, msg_type=self.sock.prid, msg_flags=NLM_F_REQUEST | NLM_F_DUMP))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_FEATURE_ATTRS = frozenset(("ETHTOOL_A_FEATURES_HEADER", "ETHTOOL_A_FEATURES_HW", "ETHTOOL_A_FEATURES_ACTIVE",
                            "ETHTOOL_A_FEATURES_NOCHANGE"))


class _Everything(frozenset):
    def __contains__(self, item) -> bool:
        return True


_ALL = _Everything()


def _ifindex(msg, header_attr: str) -> int:
    return msg.get_attr(header_attr).get_attr("ETHTOOL_A_HEADER_DEV_INDEX")


def _request(cls: type, cmd: int, header_attr: str, flags: int = 0) -> genlmsg:
    msg = cls()
    msg["cmd"] = cmd
    msg["version"] = 1
    msg["attrs"].append((header_attr, {"attrs": [("ETHTOOL_A_HEADER_FLAGS", flags)]}))
    return msg


class Ethtool(_Genl):
    """ethtool generic netlink (Linux >= 5.6)."""

    def __init__(self) -> None:
        super().__init__("ethtool", features_msg)

    def _strings(self, set_id: int, ifindex: int | None = None) -> list[str]:
        msg = _request(strset_msg, ETHTOOL_MSG_STRSET_GET, "ETHTOOL_A_STRSET_HEADER")
        if ifindex is not None:   # a device's own set (driver statistics); global sets need none
            msg["attrs"][0][1]["attrs"].insert(0, ("ETHTOOL_A_HEADER_DEV_INDEX", ifindex))
        msg["attrs"].append(
            ("ETHTOOL_A_STRSET_STRINGSETS",
             {"attrs": [("ETHTOOL_A_STRINGSETS_STRINGSET", {"attrs": [("ETHTOOL_A_STRINGSET_ID", set_id)]})]})
        )
        self.sock.asyncore.marshal.msg_map[self.sock.prid] = strset_msg
        (reply,) = self.sock.nlm_request(msg, msg_type=self.sock.prid, msg_flags=NLM_F_REQUEST)
        return strset_strings(reply)

    def feature_names(self) -> list[str]:
        return self._strings(ETH_SS_FEATURES)

    def stat_names(self, ifindex: int) -> list[str]:
        """The names of a device's driver statistics, in the order ETHTOOL_GSTATS returns values."""
        return self._strings(ETH_SS_STATS, ifindex)

    def features(self) -> dict[int, tuple[set[str], set[str]]]:
        """ifindex -> (active feature names, names that cannot be changed: `ethtool -k`'s [fixed])."""
        names = self.feature_names()
        req = _request(features_msg, ETHTOOL_MSG_FEATURES_GET, "ETHTOOL_A_FEATURES_HEADER",
                       ETHTOOL_FLAG_COMPACT_BITSETS)
        out: dict[int, tuple[set[str], set[str]]] = {}
        everything = (1 << len(names)) - 1
        for m in self.dump(features_msg, req):
            a = attr_map(m, _FEATURE_ATTRS)

            def mask(attr: str) -> int:
                bs = a.get(attr)
                return bitset_mask(bs.get_attr("ETHTOOL_A_BITSET_VALUE")) if bs else 0
            active = mask("ETHTOOL_A_FEATURES_ACTIVE") & everything
            fixed = (everything & ~mask("ETHTOOL_A_FEATURES_HW")) | (mask("ETHTOOL_A_FEATURES_NOCHANGE") & everything)
            out[a["ETHTOOL_A_FEATURES_HEADER"].get_attr("ETHTOOL_A_HEADER_DEV_INDEX")] = (
                {names[b] for b in mask_bits(active)}, {names[b] for b in mask_bits(fixed)})
        return out

    def set_features(self, ifindex: int, wanted: dict[str, bool]) -> None:
        """Turn features on or off (like `ethtool -K`); the kernel's refusal comes back as NetlinkError."""
        bits = []
        for name, on in wanted.items():
            attrs = [("ETHTOOL_A_BITSET_BIT_NAME", name)]
            if on:
                attrs.append(("ETHTOOL_A_BITSET_BIT_VALUE", True))
            bits.append(("ETHTOOL_A_BITSET_BITS_BIT", {"attrs": attrs}))
        msg = features_set_msg()
        msg["cmd"] = ETHTOOL_MSG_FEATURES_SET
        msg["version"] = 1
        msg["attrs"].append(("ETHTOOL_A_FEATURES_HEADER", {"attrs": [("ETHTOOL_A_HEADER_DEV_INDEX", ifindex)]}))
        msg["attrs"].append(("ETHTOOL_A_FEATURES_WANTED", {"attrs": [("ETHTOOL_A_BITSET_BITS", {"attrs": bits})]}))
        self.sock.asyncore.marshal.msg_map[self.sock.prid] = features_set_msg
        self.sock.nlm_request(msg, msg_type=self.sock.prid, msg_flags=NLM_F_REQUEST | NLM_F_ACK)

    def channels(self) -> dict[int, Channels]:
        req = _request(channels_msg, ETHTOOL_MSG_CHANNELS_GET, "ETHTOOL_A_CHANNELS_HEADER")
        out = {}
        for m in self.dump(channels_msg, req):
            a = attr_map(m, _ALL)
            g = lambda k: a.get("ETHTOOL_A_CHANNELS_" + k)  # noqa: E731
            out[_ifindex(m, "ETHTOOL_A_CHANNELS_HEADER")] = Channels(
                g("RX_COUNT"), g("TX_COUNT"), g("OTHER_COUNT"), g("COMBINED_COUNT"),
                g("RX_MAX"), g("TX_MAX"), g("OTHER_MAX"), g("COMBINED_MAX"))
        return out

    def rings(self) -> dict[int, Rings]:
        req = _request(rings_msg, ETHTOOL_MSG_RINGS_GET, "ETHTOOL_A_RINGS_HEADER")
        out = {}
        for m in self.dump(rings_msg, req):
            a = attr_map(m, _ALL)
            g = lambda k: a.get("ETHTOOL_A_RINGS_" + k)  # noqa: E731
            out[_ifindex(m, "ETHTOOL_A_RINGS_HEADER")] = Rings(g("RX"), g("TX"), g("RX_MAX"), g("TX_MAX"))
        return out


def netdev_xdp() -> dict[int, NetdevXdp] | None:
    """ifindex -> XDP features from the `netdev` family (Linux >= 6.3); None when the kernel lacks it."""
    try:
        genl = _Genl("netdev", netdev_msg)
    except NetlinkError as e:
        if e.code in (errno.ENOENT, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise
    with genl:
        # The netdev family's dump replies lack NLM_F_MULTI (genlmsg_iput() puts no flags), and
        # pyroute2 ends a dump at the first batch holding such a message: mark them multi-part so
        # the dump runs to NLMSG_DONE.
        marshal = genl.sock.asyncore.marshal
        parse = marshal.parse

        def parse_multi(data, seq=None, callback=None):
            for m in parse(data, seq, callback):
                m["header"]["flags"] |= NLM_F_MULTI
                yield m

        marshal.parse = parse_multi
        req = netdev_msg()
        req["cmd"] = NETDEV_CMD_DEV_GET
        req["version"] = 1
        return {
            m.get_attr("NETDEV_A_DEV_IFINDEX"): NetdevXdp(
                xdp_feature_names(m.get_attr("NETDEV_A_DEV_XDP_FEATURES") or 0),
                m.get_attr("NETDEV_A_DEV_XDP_ZC_MAX_SEGS"))
            for m in genl.dump(netdev_msg, req)
        }
