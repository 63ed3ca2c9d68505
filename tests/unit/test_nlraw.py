"""offload's own netlink decoding (kernel/nlraw and its users): the attribute numbers are the
kernel's (read from the uapi headers installed here), the walk gives back what was packed, and a
link message encoded by pyroute2 decodes to the same values pyroute2 reads from it."""

import re
import socket
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offload.kernel import devlink, genl, linkevents, nlraw, rtnl, xdp

UAPI = Path("/usr/include/linux")


def enum_values(header: str) -> dict[str, int]:
    """NAME -> value of every enumerator in a uapi header (implicit values counted)."""
    path = UAPI / header
    if not path.exists():
        pytest.skip(f"{path} is not installed (Debian's linux-libc-dev provides it)")
    text = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)
    text = re.sub(r"^\s*#.*$", "", text, flags=re.M)   # `#define IFLA_MASTER IFLA_MASTER` inside enums
    out = {}
    for body in re.findall(r"enum\s*\w*\s*\{(.*?)\}", text, flags=re.S):
        value = -1
        for item in filter(None, (i.strip() for i in body.split(","))):
            name, _, expr = item.partition("=")
            name, expr = name.strip(), expr.strip()
            if expr:
                try:
                    value = int(expr, 0)
                except ValueError:
                    if expr not in out:
                        continue   # an expression we do not evaluate: nothing here depends on it
                    value = out[expr]
            else:
                value += 1
            out[name] = value
    return out


def test_rtnetlink_numbers_are_the_kernels():
    link, addr = enum_values("if_link.h"), enum_values("if_addr.h")
    rt = enum_values("rtnetlink.h")
    for name in ("IFLA_IFNAME", "IFLA_MTU", "IFLA_LINK", "IFLA_MASTER", "IFLA_OPERSTATE", "IFLA_LINKINFO",
                 "IFLA_EXT_MASK", "IFLA_NUM_TX_QUEUES", "IFLA_NUM_RX_QUEUES", "IFLA_LINK_NETNSID", "IFLA_XDP",
                 "IFLA_MIN_MTU", "IFLA_MAX_MTU", "IFLA_PARENT_DEV_NAME", "IFLA_PARENT_DEV_BUS_NAME",
                 "IFLA_INFO_KIND", "IFLA_XDP_ATTACHED", "IFLA_XDP_PROG_ID"):
        assert getattr(rtnl, name) == link[name], name
    assert rtnl.XDP_MODE_ATTRS == {"hw": link["IFLA_XDP_HW_PROG_ID"], "native": link["IFLA_XDP_DRV_PROG_ID"],
                                   "generic": link["IFLA_XDP_SKB_PROG_ID"]}
    assert (xdp.IFLA_XDP_FD, xdp.IFLA_XDP_FLAGS, xdp.IFLA_XDP_EXPECTED_FD) == (
        link["IFLA_XDP_FD"], link["IFLA_XDP_FLAGS"], link["IFLA_XDP_EXPECTED_FD"])
    assert rtnl.OPER_STATES == tuple(n[len("IF_OPER_"):] for n in sorted(
        (k for k in enum_values("if.h") if k.startswith("IF_OPER_")), key=enum_values("if.h").get))
    assert (rtnl.RTM_GETLINK, rtnl.RTM_GETADDR, rtnl.RTM_GETROUTE, xdp.RTM_SETLINK) == (
        rt["RTM_GETLINK"], rt["RTM_GETADDR"], rt["RTM_GETROUTE"], rt["RTM_SETLINK"])
    assert (rtnl.RTA_DST, rtnl.RTA_OIF, rtnl.RTA_MULTIPATH) == (rt["RTA_DST"], rt["RTA_OIF"], rt["RTA_MULTIPATH"])
    assert rtnl.IFA_ADDRESS == addr["IFA_ADDRESS"]
    assert (linkevents.RTM_NEWLINK, linkevents.RTM_DELLINK) == (rt["RTM_NEWLINK"], rt["RTM_DELLINK"])
    assert int(re.search(r"#define\s+RTMGRP_LINK\s+(\w+)", (UAPI / "rtnetlink.h").read_text())[1], 0) == \
        linkevents.RTMGRP_LINK


def test_generic_netlink_numbers_are_the_kernels():
    g, e, d = enum_values("genetlink.h"), enum_values("ethtool_netlink.h"), enum_values("devlink.h")
    assert (nlraw.CTRL_CMD_GETFAMILY, nlraw.CTRL_ATTR_FAMILY_ID, nlraw.CTRL_ATTR_FAMILY_NAME) == (
        g["CTRL_CMD_GETFAMILY"], g["CTRL_ATTR_FAMILY_ID"], g["CTRL_ATTR_FAMILY_NAME"])
    for ours, theirs in [
        ("ETHTOOL_MSG_STRSET_GET", "ETHTOOL_MSG_STRSET_GET"), ("ETHTOOL_MSG_FEATURES_GET", "ETHTOOL_MSG_FEATURES_GET"),
        ("ETHTOOL_MSG_FEATURES_SET", "ETHTOOL_MSG_FEATURES_SET"), ("ETHTOOL_MSG_RINGS_GET", "ETHTOOL_MSG_RINGS_GET"),
        ("ETHTOOL_MSG_CHANNELS_GET", "ETHTOOL_MSG_CHANNELS_GET"),
        ("HEADER", "ETHTOOL_A_FEATURES_HEADER"), ("HEADER", "ETHTOOL_A_CHANNELS_HEADER"),
        ("HEADER", "ETHTOOL_A_RINGS_HEADER"), ("HEADER", "ETHTOOL_A_STRSET_HEADER"),
        ("A_HEADER_DEV_INDEX", "ETHTOOL_A_HEADER_DEV_INDEX"), ("A_HEADER_FLAGS", "ETHTOOL_A_HEADER_FLAGS"),
        ("A_BITSET_BITS", "ETHTOOL_A_BITSET_BITS"), ("A_BITSET_VALUE", "ETHTOOL_A_BITSET_VALUE"),
        ("A_BITSET_BITS_BIT", "ETHTOOL_A_BITSET_BITS_BIT"), ("A_BITSET_BIT_NAME", "ETHTOOL_A_BITSET_BIT_NAME"),
        ("A_BITSET_BIT_VALUE", "ETHTOOL_A_BITSET_BIT_VALUE"), ("A_FEATURES_HW", "ETHTOOL_A_FEATURES_HW"),
        ("A_FEATURES_WANTED", "ETHTOOL_A_FEATURES_WANTED"), ("A_FEATURES_ACTIVE", "ETHTOOL_A_FEATURES_ACTIVE"),
        ("A_FEATURES_NOCHANGE", "ETHTOOL_A_FEATURES_NOCHANGE"), ("A_STRSET_STRINGSETS", "ETHTOOL_A_STRSET_STRINGSETS"),
        ("A_STRINGSETS_STRINGSET", "ETHTOOL_A_STRINGSETS_STRINGSET"), ("A_STRINGSET_ID", "ETHTOOL_A_STRINGSET_ID"),
        ("A_STRINGSET_STRINGS", "ETHTOOL_A_STRINGSET_STRINGS"), ("A_STRINGS_STRING", "ETHTOOL_A_STRINGS_STRING"),
        ("A_STRING_INDEX", "ETHTOOL_A_STRING_INDEX"), ("A_STRING_VALUE", "ETHTOOL_A_STRING_VALUE"),
        ("A_RINGS_RX_MAX", "ETHTOOL_A_RINGS_RX_MAX"), ("A_RINGS_TX_MAX", "ETHTOOL_A_RINGS_TX_MAX"),
        ("A_RINGS_RX", "ETHTOOL_A_RINGS_RX"), ("A_RINGS_TX", "ETHTOOL_A_RINGS_TX"),
    ]:
        assert getattr(genl, ours) == e[theirs], theirs
    assert list(genl.A_CHANNELS) == [e[f"ETHTOOL_A_CHANNELS_{k}"] for k in (
        "RX_MAX", "TX_MAX", "OTHER_MAX", "COMBINED_MAX", "RX_COUNT", "TX_COUNT", "OTHER_COUNT", "COMBINED_COUNT")]
    assert genl.ETH_SS_FEATURES == enum_values("ethtool.h")["ETH_SS_FEATURES"]
    assert (devlink.DEVLINK_CMD_PORT_GET, devlink.DEVLINK_ATTR_PORT_NETDEV_IFINDEX) == (
        d["DEVLINK_CMD_PORT_GET"], d["DEVLINK_ATTR_PORT_NETDEV_IFINDEX"])


def test_netdev_numbers_are_the_specs():
    # Debian 12's headers predate the netdev family (Linux 6.3): its numbers, from the kernel's
    # Documentation/netlink/specs/netdev.yaml: dev-get is command 1; ifindex 1, pad 2,
    # xdp-features 3, xdp-zc-max-segs 4.
    assert (genl.NETDEV_CMD_DEV_GET, genl.NETDEV_A_DEV_IFINDEX, genl.NETDEV_A_DEV_XDP_FEATURES,
            genl.NETDEV_A_DEV_XDP_ZC_MAX_SEGS) == (1, 1, 3, 4)


attr_values = st.lists(st.tuples(st.integers(1, 0x3FFF), st.binary(max_size=40)), max_size=12)


@given(attr_values)
def test_attributes_walk_back_what_was_packed(items):
    buf = b"".join(nlraw.nla(t, v) for t, v in items)
    assert len(buf) % 4 == 0
    assert nlraw.attr_list(buf) == items
    assert nlraw.attrs(buf) == dict(items)
    wanted = frozenset(t for t, _ in items[::2])
    assert nlraw.attrs(buf, wanted=wanted) == {t: v for t, v in items if t in wanted}


@given(attr_values)
def test_nest_flag_is_masked_and_nests_walk(items):
    inner = [nlraw.nla(t, v) for t, v in items]
    outer = nlraw.nest(7, *inner)
    ((typ, payload),) = nlraw.attr_list(outer)
    assert typ == 7 and struct.unpack_from("=H", outer, 2)[0] & nlraw.NLA_F_NESTED
    assert nlraw.attr_list(payload) == items


def test_truncated_attribute_stops_the_walk():
    buf = nlraw.nla(1, b"abcd") + struct.pack("=HH", 2, 5)   # a length below the header: malformed
    assert nlraw.attrs(buf) == {1: b"abcd"}


@given(name=st.text(st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="/:"), min_size=1,
                    max_size=15),
       index=st.integers(1, 2**31 - 1), mtu=st.integers(68, 65535), flags=st.integers(0, 2**32 - 1),
       oper=st.integers(0, 6), link=st.integers(0, 2**32 - 1), nsid=st.integers(-1, 2**31 - 1),
       txq=st.integers(1, 4096), drv=st.integers(0, 2**32 - 1), skb=st.integers(0, 2**32 - 1),
       kind=st.sampled_from(["veth", "vlan", "bond"]))
def test_link_message_from_pyroute2_decodes_the_same(name, index, mtu, flags, oper, link, nsid, txq, drv, skb, kind):
    """pyroute2 encodes an RTM_NEWLINK; offload's walk reads what pyroute2 itself decodes."""
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    msg = ifinfmsg()
    msg["index"], msg["flags"], msg["ifi_type"] = index, flags, 1
    msg["attrs"] = [("IFLA_IFNAME", name), ("IFLA_MTU", mtu), ("IFLA_OPERSTATE", rtnl.OPER_STATES[oper]),
                    ("IFLA_LINK", link), ("IFLA_LINK_NETNSID", nsid), ("IFLA_NUM_TX_QUEUES", txq),
                    ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", kind)]}),
                    ("IFLA_XDP", {"attrs": [("IFLA_XDP_DRV_PROG_ID", drv), ("IFLA_XDP_SKB_PROG_ID", skb)]})]
    msg.encode()
    data = bytes(msg.data)
    ours = rtnl.link_from_buffer(data, 16, len(data))
    theirs = ifinfmsg(data)
    theirs.decode()
    assert (ours.name, ours.ifindex, ours.mtu, ours.admin_up, ours.oper_state) == (
        theirs.get_attr("IFLA_IFNAME"), theirs["index"], theirs.get_attr("IFLA_MTU"), bool(theirs["flags"] & 1),
        theirs.get_attr("IFLA_OPERSTATE"))
    assert (ours.peer_ifindex, ours.peer_netnsid, ours.num_tx_queues, ours.num_rx_queues) == (
        theirs.get_attr("IFLA_LINK"), theirs.get_attr("IFLA_LINK_NETNSID"), txq, None)
    assert ours.kind == theirs.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") == kind
    assert ours.xdp_prog_ids == {m: i for m, i in (("native", drv), ("generic", skb)) if i}


def test_extended_ack_message_is_read_from_an_error():
    # NLMSG_ERROR with NLM_F_CAPPED | NLM_F_ACK_TLVS: errno, the request's header, NLMSGERR_ATTR_MSG
    payload = struct.pack("=i", -34) + struct.pack("=IHHII", 40, 19, 5, 1, 0) + nlraw.nla(
        nlraw.NLMSGERR_ATTR_MSG, b"veth: Peer MTU is too large to set XDP\0")
    data = struct.pack("=IHHII", 16 + len(payload), nlraw.NLMSG_ERROR, nlraw.NLM_F_CAPPED | nlraw.NLM_F_ACK_TLVS,
                       1, 0) + payload
    assert nlraw._extack(data, 16, len(data), nlraw.NLM_F_CAPPED | nlraw.NLM_F_ACK_TLVS) == \
        "veth: Peer MTU is too large to set XDP"
    assert nlraw._extack(data, 16, len(data), nlraw.NLM_F_CAPPED) == ""


def test_a_missing_family_is_enoent():
    with pytest.raises(nlraw.NetlinkError) as e:
        nlraw.Genl("nosuchfamily")
    assert e.value.code == 2 and isinstance(e.value, OSError)


def test_links_of_this_namespace_match_socket_names():
    # read-only: this namespace's links by rtnetlink against the C library's own list
    names = {name for _, name in socket.if_nameindex()}
    links = rtnl.dump_links()
    assert {link.name for link in links} == names
    assert {link.ifindex for link in links} == {i for i, _ in socket.if_nameindex()}


def _link_message(*attrs: bytes, index: int = 5) -> tuple[bytes, int, int]:
    data = struct.pack("=IHHII", 0, 16, 0, 0, 0) + rtnl._IFINFO.pack(0, 1, index, 0, 0) + b"".join(attrs)
    return data, 16, len(data)


def test_first_reads_the_leading_attribute_of_its_type_only():
    buf = b"xx" + nlraw.nla(7, b"abc\0") + nlraw.nla(8, nlraw.u32(9))
    payload, nxt = nlraw.first(buf, 7, 2)
    assert (payload, nxt) == (b"abc\0", 2 + 8) and nlraw.cstr(payload) == "abc"
    assert nlraw.first(buf, 8, nxt) == (nlraw.u32(9), len(buf))
    assert nlraw.first(buf, 8, 2) is None                        # another type leads
    assert nlraw.first(buf, 7, 2, 2 + 6) is None                 # the attribute runs past the end
    assert nlraw.first(nlraw.nla(7, b""), 7) is None              # empty: nothing to read there
    assert nlraw.first(nlraw.nla(7 | nlraw.NLA_F_NESTED, b"1234"), 7) == (b"1234", 8)


def test_a_link_name_is_read_from_the_first_attribute_only():
    named = _link_message(nlraw.nla(rtnl.IFLA_IFNAME, b"pod-veth7\0"), nlraw.nla(rtnl.IFLA_MTU, nlraw.u32(1500)))
    assert rtnl._name(*named) == "pod-veth7"
    # not first (no kernel sends that): unknown here, so the caller decodes the whole message
    late = _link_message(nlraw.nla(rtnl.IFLA_MTU, nlraw.u32(1500)), nlraw.nla(rtnl.IFLA_IFNAME, b"late0\0"))
    assert rtnl._name(*late) is None and rtnl.link_from_buffer(*late).name == "late0"
    assert rtnl._name(*_link_message()) is None


def test_named_links_and_names_match_the_whole_dump():
    # read-only, this namespace: the named links (and what they point at) as the full dump has them
    links = rtnl.dump_links()
    assert rtnl.link_names() == {link.name for link in links}
    first = links[0]
    want = {first.name}
    also = {first.peer_ifindex} if first.peer_ifindex and first.peer_netnsid is None else set()
    assert rtnl.dump_links(names=want) == [link for link in links if link.name in want or link.ifindex in also]
    assert rtnl.dump_links(names={"no-such-link"}) == []
