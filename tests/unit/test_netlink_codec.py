"""Decoding of what netlink answers: ethtool compact bitsets and netdev xdp-feature masks."""

import struct

from hypothesis import given
from hypothesis import strategies as st

from offload.kernel import genl
from offload.kernel.genl import XDP_ACT_NAMES, bitset_bits, xdp_feature_names
from offload.kernel.nlraw import asciiz, get_u32, nest, nla, u32


@given(st.sets(st.integers(0, 127)))
def test_bitset_roundtrip(bits):
    words = [0] * 4
    for b in bits:
        words[b // 32] |= 1 << (b % 32)
    assert bitset_bits(struct.pack("=4I", *words)) == bits


def test_bitset_empty():
    assert bitset_bits(None) == set() and bitset_bits(b"") == set()


def test_xdp_feature_names_kernel_spelling():
    assert xdp_feature_names(0) == []
    assert xdp_feature_names(43) == ["basic", "redirect", "xsk-zerocopy", "rx-sg"]  # virtio_net, recorded
    assert xdp_feature_names(127) == [n for _, n in XDP_ACT_NAMES]
    assert [n for _, n in XDP_ACT_NAMES] == ["basic", "redirect", "ndo-xmit", "xsk-zerocopy", "hw-offload",
                                             "rx-sg", "ndo-xmit-sg"]


def _reply(*attrs: bytes) -> tuple[bytes, int, int]:
    """One generic-netlink reply as nlraw yields it: buffer, payload start (genlmsghdr), end."""
    body = b"\0" * 4 + b"".join(attrs)
    return b"\0" * 16 + body, 16, 16 + len(body)


def _header(ifindex: int, name: str) -> bytes:
    return nest(genl.HEADER, nla(genl.A_HEADER_DEV_INDEX, u32(ifindex)), nla(2, asciiz(name)))


def test_by_device_decodes_equal_replies_once_and_keeps_each_device():
    decoded = []

    def decode(a):
        decoded.append(a)
        return {"rx": get_u32(a, 6)}
    replies = [_reply(_header(2, "a0"), nla(6, u32(64))), _reply(_header(3, "a1"), nla(6, u32(64))),
               _reply(_header(4, "nic0"), nla(6, u32(1024)))]
    got = genl.by_device(iter(replies), genl.HEADER, genl._header_ifindex, decode)
    assert got == {2: {"rx": 64}, 3: {"rx": 64}, 4: {"rx": 1024}}
    assert len(decoded) == 2 and got[2] is got[3]


def test_by_device_reply_not_led_by_the_device_is_decoded_whole():
    # the header after the state, and the index after the name inside it: still found
    late = _reply(nla(6, u32(8)), nest(genl.HEADER, nla(2, asciiz("x0")), nla(genl.A_HEADER_DEV_INDEX, u32(9))))
    got = genl.by_device(iter([late]), genl.HEADER, genl._header_ifindex, lambda a: get_u32(a, 6))
    assert got == {9: 8}


def test_by_device_netdev_replies_led_by_the_index():
    replies = [_reply(nla(genl.NETDEV_A_DEV_IFINDEX, u32(i)), nla(genl.NETDEV_A_DEV_XDP_FEATURES, struct.pack("=Q", 3)))
               for i in (1, 5)]
    got = genl.by_device(iter(replies), genl.NETDEV_A_DEV_IFINDEX, genl._u32,
                         lambda a: xdp_feature_names(struct.unpack("=Q", a[genl.NETDEV_A_DEV_XDP_FEATURES])[0]))
    assert got == {1: ["basic", "redirect"], 5: ["basic", "redirect"]}
