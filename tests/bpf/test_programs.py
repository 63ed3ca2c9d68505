"""Every library program through BPF_PROG_RUN: an input frame -> the expected verdict, output
bytes and counters. Needs root (loading BPF), not a device."""

import os
import socket
import struct

import pytest

from offload.bench.frames import DST_MAC, SRC_MAC, eth, ipv4_udp, ipv6_udp
from offload.kernel import bpfsys
from offload.load import loader, programs, stats
from offload.load.filter import add_to_maps, parse_prefixes

pytestmark = pytest.mark.root
XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)


@pytest.fixture
def load():
    made = []

    def _load(name, params=None, hw=False):
        prog = programs.resolve(name, params)
        if hw:  # the offloadable object (NAME.hw.o), loaded for the host so BPF_PROG_RUN can run it
            ld = loader.load_object(prog, str(prog.object_for(hw=True)))
        else:
            ld = loader.load(prog)
        made.append(ld)
        return ld
    yield _load
    for ld in made:
        ld.close()


LO = socket.if_nametoindex("lo")   # BPF_PROG_RUN runs XDP as if received on this namespace's loopback


def counters(ld, action: int, ifindex: int = LO) -> tuple[int, int]:
    """The program's packets and bytes for `action`, counted for interface `ifindex`."""
    packets, nbytes, _ = stats.counters(ld.maps()["xdp_stats"], ifindex)
    name = programs.ACTIONS[action]
    return packets[name], nbytes[name]


FRAME = ipv4_udp("198.51.100.7", "203.0.113.9")


@pytest.mark.parametrize("name,verdict", [("count_drop", XDP_DROP), ("count_pass", XDP_PASS)])
def test_counting_programs(load, name, verdict):
    ld = load(name)
    r = bpfsys.prog_test_run(ld.fd, FRAME, repeat=5)
    assert r.retval == verdict
    assert r.data_out == FRAME                       # untouched
    assert counters(ld, verdict) == (5, 5 * len(FRAME))
    assert counters(ld, XDP_TX) == (0, 0)


def test_offloadable_form_counts_in_a_plain_array(load):
    ld = load("count_drop", hw=True)
    assert set(ld.maps()) == {"xdp_stats_hw"}
    assert bpfsys.prog_test_run(ld.fd, FRAME, repeat=3).retval == XDP_DROP
    fd = ld.maps()["xdp_stats_hw"]
    pkts = struct.unpack("=Q", bpfsys.map_lookup(fd, struct.pack("=I", 0), 8))[0]
    nbytes = struct.unpack("=Q", bpfsys.map_lookup(fd, struct.pack("=I", 1), 8))[0]
    assert (pkts, nbytes) == (3, 3 * len(FRAME))


def test_reflect_swaps_macs_and_transmits(load):
    ld = load("reflect")
    r = bpfsys.prog_test_run(ld.fd, FRAME)
    assert r.retval == XDP_TX
    assert r.data_out[:6] == SRC_MAC and r.data_out[6:12] == DST_MAC and r.data_out[12:] == FRAME[12:]
    # A bare Ethernet header is enough (BPF_PROG_RUN refuses frames shorter than ETH_HLEN).
    r = bpfsys.prog_test_run(ld.fd, FRAME[:14])
    assert r.retval == XDP_TX and r.data_out[:6] == SRC_MAC


def test_redirect_uses_the_devmap(load):
    ld = load("redirect", {"target": "lo"})
    # no entry yet: aborted (and counted as such)
    assert bpfsys.prog_test_run(ld.fd, FRAME).retval == XDP_ABORTED
    bpfsys.map_update(ld.maps()["tx_port"], (0).to_bytes(4, "little"), (1).to_bytes(4, "little"))
    assert bpfsys.prog_test_run(ld.fd, FRAME).retval == XDP_REDIRECT
    assert counters(ld, XDP_REDIRECT)[0] == 1 and counters(ld, XDP_ABORTED)[0] == 1


@pytest.mark.parametrize("frame,verdict", [
    (ipv4_udp("192.0.2.33", "203.0.113.9"), XDP_DROP),          # in 192.0.2.0/24
    (ipv4_udp("192.0.3.1", "203.0.113.9"), XDP_PASS),
    (ipv4_udp("203.0.113.9", "192.0.2.33"), XDP_PASS),          # blocked address as destination only
    (ipv4_udp("10.1.2.3", "10.0.0.1"), XDP_DROP),               # in 10.0.0.0/8
    (ipv6_udp("2001:db8:1::5", "2001:db9::1"), XDP_DROP),        # in 2001:db8::/32
    (ipv6_udp("2001:db9::5", "2001:db8::1"), XDP_PASS),
    (ipv4_udp("192.0.2.33", "203.0.113.9", vlan=100), XDP_DROP),  # one VLAN tag looked into
    (eth(0x0806, b"\x00" * 28), XDP_PASS),                     # ARP
    (ipv4_udp("192.0.2.33", "203.0.113.9")[:20], XDP_PASS),     # truncated IP header
])
def test_filter_blocklist(load, frame, verdict):
    ld = load("filter")
    m = ld.maps()
    add_to_maps(m["blocklist_v4"], m["blocklist_v6"], parse_prefixes(["192.0.2.0/24", "10.0.0.0/8", "2001:db8::/32"]))
    assert bpfsys.prog_test_run(ld.fd, frame).retval == verdict
    assert counters(ld, verdict)[0] == 1


def test_user_c_with_params(load, tmp_path):
    src = tmp_path / "mine.c"
    src.write_text("int xdp_prog(struct xdp_md *ctx) { return VERDICT; }\n")
    prog = programs.resolve(str(src), {"VERDICT": "XDP_DROP"})
    ld = loader.load(prog)
    try:
        assert bpfsys.prog_test_run(ld.fd, FRAME).retval == XDP_DROP
    finally:
        ld.close()


def test_compile_error_names_file_and_line(tmp_path):
    src = tmp_path / "broken.c"
    src.write_text("int xdp_prog(struct xdp_md *ctx)\n{\n    return undefined_thing;\n}\n")
    with pytest.raises(loader.CompileError) as e:
        loader.load(programs.resolve(str(src)))
    assert f"{src}:3:" in e.value.message and "undefined_thing" in e.value.message


def test_verifier_rejection_keeps_the_log(tmp_path):
    src = tmp_path / "oob.c"
    # reads past the packet without a bounds check: the verifier must refuse
    src.write_text("int xdp_prog(struct xdp_md *ctx) {\n"
                   "    unsigned char *p = (void *)(long)ctx->data;\n"
                   "    return p[100] ? XDP_DROP : XDP_PASS;\n}\n")
    with pytest.raises(loader.VerifierError) as e:
        loader.load(programs.resolve(str(src)))
    assert "invalid access to packet" in e.value.message


def test_stderr_is_restored_after_a_load(tmp_path):
    before = os.fstat(2)
    with pytest.raises(loader.CompileError):
        src = tmp_path / "x.c"
        src.write_text("int xdp_prog(struct xdp_md *ctx) { return }\n")
        loader.load(programs.resolve(str(src)))
    after = os.fstat(2)
    assert (before.st_dev, before.st_ino) == (after.st_dev, after.st_ino)


def test_counters_are_kept_per_receiving_interface(load):
    """The library's counters map holds an entry per ingress ifindex, as many as a shared program
    may serve (loader.SHARED_BY): BPF_PROG_RUN counts for the loopback, no other key."""
    ld = load("count_pass")
    fd = ld.maps()["xdp_stats"]
    info = bpfsys.map_info_fd(fd)
    assert info is not None and info.max_entries == loader.SHARED_BY and info.key_size == 4
    bpfsys.prog_test_run(ld.fd, FRAME, repeat=2)
    assert counters(ld, XDP_PASS) == (2, 2 * len(FRAME))
    assert counters(ld, XDP_PASS, ifindex=LO + 100_000) == (0, 0)


def test_a_batch_loads_a_shareable_program_once_and_another_past_its_size(monkeypatch):
    monkeypatch.setattr(loader, "SHARED_BY", 2)
    prog, filt = programs.resolve("count_drop"), programs.resolve("filter")
    with loader.sharing():
        ids = []
        for _ in range(3):   # each as an attach uses it: loaded (or lent), then closed
            ld = loader.load(prog)
            ids.append(bpfsys.obj_info_id(ld.fd))
            ld.close()       # a lent one stays open for the batch
        own_ids = set()
        for _ in range(2):   # filter's maps are an interface's own: never shared
            ld = loader.load(filt)
            own_ids.add(bpfsys.obj_info_id(ld.fd))
            ld.close()
    assert ids[0] == ids[1] != ids[2] and len(own_ids) == 2
