"""Decoding of what netlink answers: ethtool compact bitsets and netdev xdp-feature masks."""

import struct

from hypothesis import given
from hypothesis import strategies as st

from offload.kernel.genl import XDP_ACT_NAMES, bitset_bits, xdp_feature_names


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
