"""Every library program through BPF_PROG_RUN: an input frame -> the expected verdict, output
bytes and counters. Needs root (loading BPF), not a device."""

import os
import socket
import struct

import pytest

from offload.bench.frames import DST_MAC, SRC_MAC, eth, ipv4_udp, ipv6_udp
from offload.kernel import bpfsys, netns
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


def counters(ld, action: int, ifindex: int = LO, fast: bool = True) -> tuple[int, int]:
    """The program's packets and bytes for `action`, counted for interface `ifindex` (`fast`:
    with its fast slots, as offload reads them; else its hash alone)."""
    maps = ld.maps()
    packets, nbytes, _ = stats.counters(maps["xdp_stats"], ifindex, maps.get(stats.FAST_MAP) if fast else None)
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


def test_one_interface_counts_in_its_fast_slot(load):
    """An interface alone in its slot counts in the per-CPU array (no hash lookup a frame): exact,
    and its hash entry never made."""
    ld = load("count_drop")
    bpfsys.prog_test_run(ld.fd, FRAME, repeat=7)
    assert counters(ld, XDP_DROP) == (7, 7 * len(FRAME))
    assert counters(ld, XDP_DROP, fast=False) == (0, 0)
    entry = 16 * len(programs.ACTIONS) * bpfsys.possible_cpus()
    assert bpfsys.map_lookup(ld.maps()["xdp_stats"], struct.pack("=I", LO), entry) is None


LO_IN_NETNS = 1   # a new namespace's loopback


def _xdp_md(ifindex: int, size: int) -> bytes:
    """struct xdp_md in: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex."""
    return struct.pack("=6I", 0, size, 0, ifindex, 0, 0)


def test_interfaces_sharing_a_slot_count_apart(load, env):
    """Two interfaces whose ifindexes share a fast slot (1 and 1 + 64): the first to run on a CPU
    holds the slot there, the other counts in the hash; each reads exactly its own frames."""
    ld = load("count_pass")
    info = bpfsys.map_info_fd(ld.maps()[stats.FAST_MAP])
    assert info is not None
    other = LO_IN_NETNS + info.max_entries
    made = env.make_lab()
    # (a veth: this kernel has no dummy driver; removed with the lab's namespace)
    env.cmd("ip", "link", "add", f"{made.name}s", "index", str(other), "type", "veth", "peer", "name", f"{made.name}p",
            netns=made.netns)
    cpu = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpu)})   # one CPU: its slot is the one both meet in
    try:
        with netns.inside(made.netns):
            bpfsys.prog_test_run(ld.fd, FRAME, repeat=5)                                      # lo: claims the slot
            bpfsys.prog_test_run(ld.fd, FRAME, repeat=3, ctx=_xdp_md(other, len(FRAME)))    # its slot is taken
            bpfsys.prog_test_run(ld.fd, FRAME, repeat=2)
    finally:
        os.sched_setaffinity(0, cpu)
    assert counters(ld, XDP_PASS, LO_IN_NETNS) == (7, 7 * len(FRAME))
    assert counters(ld, XDP_PASS, other) == (3, 3 * len(FRAME))
    assert counters(ld, XDP_PASS, LO_IN_NETNS, fast=False) == (0, 0)    # lo on the fast path
    assert counters(ld, XDP_PASS, other, fast=False) == (3, 3 * len(FRAME))  # the other on the hash


# The counters' layout before the fast slots (offload 0500897's bpf/offload_stats.h): a per-CPU
# hash keyed by ifindex alone. Programs loaded and pinned then keep it.
HASH_ONLY = """#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct datarec { __u64 packets; __u64 bytes; };
struct counters { struct datarec action[5]; };
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __uint(max_entries, 1024);
    __type(key, __u32);
    __type(value, struct counters);
} xdp_stats SEC(".maps");
SEC("xdp")
int old_drop(struct xdp_md *ctx)
{
    __u32 key = ctx->ingress_ifindex;
    struct counters *rec = bpf_map_lookup_elem(&xdp_stats, &key);
    if (!rec) {
        struct counters zero = {};
        bpf_map_update_elem(&xdp_stats, &key, &zero, BPF_NOEXIST);
        rec = bpf_map_lookup_elem(&xdp_stats, &key);
    }
    if (rec) {
        rec->action[XDP_DROP].packets++;
        rec->action[XDP_DROP].bytes += ctx->data_end - ctx->data;
    }
    return XDP_DROP;
}
char _license[] SEC("license") = "GPL";
"""


def test_counters_of_a_program_without_fast_slots(load, tmp_path):
    """A program built before the fast slots (its hash alone) reads as it did."""
    src = tmp_path / "old.c"
    src.write_text(HASH_ONLY)
    ld = loader.load(programs.resolve(str(src)))
    try:
        assert set(ld.maps()) == {"xdp_stats"}
        bpfsys.prog_test_run(ld.fd, FRAME, repeat=4)
        assert counters(ld, XDP_DROP) == (4, 4 * len(FRAME))
        assert counters(ld, XDP_PASS) == (0, 0)
    finally:
        ld.close()


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
