"""The filter's blocklists against a model set (property tests): random add/del sequences of
overlapping and nested IPv4/IPv6 prefixes, on the real `filter` program loaded into the kernel.
After each step the maps hold exactly the model's prefixes, and BPF_PROG_RUN drops a source
address iff some prefix of the model contains it. Needs root (loading BPF), not a device."""

from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netaddr import IPAddress, IPNetwork

from offload.bench.frames import ipv4_udp, ipv6_udp
from offload.errors import UsageError
from offload.kernel import bpfsys
from offload.load import filter as flt
from offload.load import loader, programs

pytestmark = pytest.mark.root
XDP_DROP, XDP_PASS = 1, 2
V4_BASE = int(IPAddress("198.51.0.0"))
V6_BASE = int(IPAddress("2001:db8::"))


@pytest.fixture(scope="module")
def maps():
    """One loaded `filter` for the module (a load per example would be slow); emptied per example."""
    ld = loader.load(programs.resolve("filter"))
    m = ld.maps()
    yield ld.fd, m["blocklist_v4"], m["blocklist_v6"]
    ld.close()


def empty(fd4: int, fd6: int) -> None:
    flt.delete_from_maps(fd4, fd6, flt.keys_in_maps(fd4, fd6))
    assert flt.keys_in_maps(fd4, fd6) == []


# Addresses near one base, so random prefixes nest, overlap and repeat often.
def v4_net(offset: int, plen: int) -> IPNetwork:
    return IPNetwork(f"{IPAddress(V4_BASE + offset, 4)}/{plen}").cidr


def v6_net(hi: int, lo: int, plen: int) -> IPNetwork:
    return IPNetwork(f"{IPAddress(V6_BASE + (hi << 64) + lo, 6)}/{plen}").cidr


prefixes = st.one_of(
    st.builds(v4_net, st.integers(0, 0x1FFFF), st.integers(0, 32)),
    st.builds(v6_net, st.integers(0, 3), st.integers(0, 0x1FFFF), st.integers(0, 128)),
)
ops = st.lists(st.tuples(st.sampled_from(["add", "del"]), st.lists(prefixes, min_size=1, max_size=4)),
               min_size=1, max_size=8)
probe_offsets = st.lists(st.integers(0, 0x1FFFF), max_size=3)


def blocked(addr: IPAddress, model: set[IPNetwork]) -> bool:
    return any(addr.version == n.version and addr in n for n in model)


def verdict(fd: int, addr: IPAddress) -> int:
    frame = (ipv4_udp(str(addr), "203.0.113.1") if addr.version == 4
             else ipv6_udp(str(addr), "2001:db9::1"))
    return bpfsys.prog_test_run(fd, frame).retval


def probes(model: set[IPNetwork], offsets: list[int]) -> set[IPAddress]:
    """Each prefix's edges and the addresses just outside them, plus a few drawn ones."""
    out = {IPAddress(V4_BASE + o, 4) for o in offsets} | {IPAddress(V6_BASE + o, 6) for o in offsets}
    for n in model:
        top = (1 << (32 if n.version == 4 else 128)) - 1
        for a in (n.first - 1, n.first, n.last, n.last + 1):
            if 0 <= a <= top:
                out.add(IPAddress(a, n.version))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops, offsets=probe_offsets)
def test_maps_follow_the_model(maps, ops, offsets):
    fd, fd4, fd6 = maps
    empty(fd4, fd6)
    model: set[IPNetwork] = set()
    for op, nets in ops:
        fresh = list(dict.fromkeys(nets))   # a prefix named twice in one request counts once
        if op == "add":
            assert flt.add_to_maps(fd4, fd6, nets) == [n for n in fresh if n not in model]
            model |= set(nets)
        else:
            assert flt.delete_from_maps(fd4, fd6, nets) == [n for n in fresh if n in model]
            model -= set(nets)
        assert set(flt.keys_in_maps(fd4, fd6)) == model
        for addr in probes(model, offsets):
            assert verdict(fd, addr) == (XDP_DROP if blocked(addr, model) else XDP_PASS), (addr, model)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=st.lists(prefixes, max_size=5), request=st.lists(prefixes, min_size=1, max_size=5),
       fail_at=st.integers(0, 4))
def test_a_failed_add_takes_back_its_own_entries(maps, before, request, fail_at):
    fd, fd4, fd6 = maps
    empty(fd4, fd6)
    flt.add_to_maps(fd4, fd6, before)
    real, calls = bpfsys.map_update, []

    def flaky(*args, **kw):
        calls.append(args)
        if len(calls) > fail_at:
            raise OSError(28, "no space left in the map")
        return real(*args, **kw)

    with mock.patch.object(bpfsys, "map_update", flaky):
        try:
            flt.add_to_maps(fd4, fd6, request)
        except UsageError as e:   # ENOSPC: the map full after all, said as bad input
            assert "nothing was changed" in e.message
    assert set(flt.keys_in_maps(fd4, fd6)) == set(before) | (set(request) if len(calls) <= fail_at else set())


def test_a_nested_prefix_has_its_own_entry(maps):
    """The bug this guards: under a blocked /16, adding a /24 was a no-op (a longest-prefix lookup
    found the /16), so deleting the /16 unblocked the /24 too."""
    fd, fd4, fd6 = maps
    empty(fd4, fd6)
    wide, narrow = flt.parse_prefixes(["198.51.0.0/16", "198.51.100.0/24"])
    assert flt.add_to_maps(fd4, fd6, [wide]) == [wide]
    assert flt.add_to_maps(fd4, fd6, [narrow, wide]) == [narrow]         # the /16 itself: already present
    assert flt.delete_from_maps(fd4, fd6, [wide]) == [wide]
    assert flt.keys_in_maps(fd4, fd6) == [narrow]
    assert verdict(fd, IPAddress("198.51.100.7")) == XDP_DROP
    assert verdict(fd, IPAddress("198.51.7.7")) == XDP_PASS
    # and the other way round: a nested entry deleted leaves the covering one
    assert flt.add_to_maps(fd4, fd6, [wide]) == [wide]
    assert flt.delete_from_maps(fd4, fd6, [narrow, narrow]) == [narrow]
    assert verdict(fd, IPAddress("198.51.100.7")) == XDP_DROP
