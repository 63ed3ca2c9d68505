"""Where frames went: the ethtool string-set parser and the GSTATS unpacker on data recorded from
a 2-queue veth, per-queue name spellings, and the loss arithmetic (pure, no kernel)."""

import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lib.helpers import FIXTURES

from offload.bench import queues
from offload.bench.harness import CounterSample, Spec, _window, queue_notes
from offload.kernel import genl, nlraw
from offload.kernel.ethstats import split_queues, unpack_gstats

REC = json.loads((FIXTURES / "ethtool" / "veth-2q-6.18.json").read_text())


def recorded_names() -> list[str]:
    raw = bytes.fromhex(REC["strset_reply_hex"])   # nlmsghdr (16 bytes) + genlmsghdr (4) + attributes
    return genl.strset_strings(nlraw.attrs(raw[20:]))


def test_strset_reply_parsed_in_index_order():
    names = recorded_names()
    assert len(names) == 19 and names[0] == "peer_ifindex"
    assert names[1:8] == ["rx_queue_0_xdp_packets", "rx_queue_0_xdp_bytes", "rx_queue_0_drops",
                          "rx_queue_0_xdp_redirect", "rx_queue_0_xdp_drops", "rx_queue_0_xdp_tx",
                          "rx_queue_0_xdp_tx_errors"]
    assert names[-4:] == ["tx_queue_0_xdp_xmit", "tx_queue_0_xdp_xmit_errors", "tx_queue_1_xdp_xmit",
                          "tx_queue_1_xdp_xmit_errors"]


def test_gstats_buffer_unpacked_against_the_names():
    names = recorded_names()
    stats = unpack_gstats(bytes.fromhex(REC["gstats_hex"]), names)
    assert stats["tx_queue_0_xdp_xmit"] == stats["tx_queue_1_xdp_xmit"] == 1_000_000
    assert stats["tx_queue_0_xdp_xmit_errors"] == 0 and stats["peer_ifindex"] == 2
    q = split_queues(stats)
    assert sorted(q.queues["tx"]) == [0, 1] and sorted(q.queues["rx"]) == [0, 1]
    assert q.queues["tx"][1] == {"xdp_xmit": 1_000_000, "xdp_xmit_errors": 0}
    assert q.other == {"peer_ifindex": 2}


def test_gstats_of_a_set_that_changed_size_is_refused():
    names = recorded_names()
    assert unpack_gstats(bytes.fromhex(REC["gstats_hex"]), names[:-1]) is None


def test_strset_with_a_gap_is_refused():
    def string(i: int, v: str) -> bytes:
        return nlraw.nest(genl.A_STRINGS_STRING, nlraw.nla(genl.A_STRING_INDEX, nlraw.u32(i)),
                          nlraw.nla(genl.A_STRING_VALUE, nlraw.asciiz(v)))
    body = nlraw.nest(genl.A_STRSET_STRINGSETS, nlraw.nest(genl.A_STRINGSETS_STRINGSET, nlraw.nest(
        genl.A_STRINGSET_STRINGS, string(0, "a"), string(2, "c"))))
    with pytest.raises(ValueError, match="gaps"):
        genl.strset_strings(nlraw.attrs(body))
    good = nlraw.nest(genl.A_STRSET_STRINGSETS, nlraw.nest(genl.A_STRINGSETS_STRINGSET, nlraw.nest(
        genl.A_STRINGSET_STRINGS, string(1, "b"), string(0, "a"))))
    assert genl.strset_strings(nlraw.attrs(good)) == ["a", "b"]


@pytest.mark.parametrize("name,where", [
    ("rx_queue_3_xdp_packets", ("rx", 3, "xdp_packets")),     # veth, virtio_net, ice, ixgbe
    ("tx12_xdp_xmit", ("tx", 12, "xdp_xmit")),                 # mlx5
    ("rx-0.packets", ("rx", 0, "packets")),                    # i40e
    ("rx_packets", None),
    ("tx_queue_x_bytes", None),
])
def test_queue_name_spellings(name, where):
    q = split_queues({name: 7})
    if where is None:
        assert q.other == {name: 7}
    else:
        d, i, stat = where
        assert q.queues[d] == {i: {stat: 7}} and not q.other


def _driver(xmit: list[int], errors: list[int], rx: list[int]) -> tuple[dict, dict]:
    tx = {}
    for i, (x, e) in enumerate(zip(xmit, errors)):
        tx[f"tx_queue_{i}_xdp_xmit"], tx[f"tx_queue_{i}_xdp_xmit_errors"] = x, e
    return tx, {f"rx_queue_{i}_xdp_packets": n for i, n in enumerate(rx)}


@given(st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 10**7)), min_size=1, max_size=8),
       st.integers(0, 10**6))
def test_loss_adds_up(per_queue, missing):
    xmit, errors = [x for x, _ in per_queue], [e for _, e in per_queue]
    tx, rx = _driver(xmit, errors, xmit)          # every frame transmitted arrived on its queue...
    view = queues.queue_view(tx, rx)
    sent = sum(xmit) + sum(errors)
    received = max(sum(xmit) - missing, 0)        # ...but the receiver counted `missing` fewer
    f = queues.loss_fields(sent, received, view)
    assert view["xmit"] == sum(xmit) and view["xmit_errors"] == f["xmit_errors"] == sum(errors)
    assert sum((view["rx_queue_packets"] or {}).values()) == sum(xmit)
    assert f["loss_source"] == "xdp_xmit_errors"
    assert f["tx_minus_rx"] == sent - received >= f["xmit_errors"]
    assert f["unexplained"] == f["tx_minus_rx"] - f["xmit_errors"]
    if sent:
        assert f["loss_ratio"] == pytest.approx(sum(errors) / sent, abs=1e-6)
        assert f["tx_minus_rx_ratio"] == pytest.approx((sent - received) / sent, abs=1e-6)
    else:
        assert f["loss_ratio"] is None


def test_loss_without_driver_counts_falls_back_to_tx_minus_rx():
    view = queues.queue_view({"tx_packets": 5}, {})
    assert view["xmit"] is None and view["xmit_errors"] is None and view["rx_queue_packets"] is None
    f = queues.loss_fields(1000, 990, view)
    assert f == {"loss_ratio": 0.01, "loss_source": "tx-rx", "xmit_errors": None, "tx_minus_rx": 10,
                 "tx_minus_rx_ratio": 0.01, "unexplained": None}
    assert queues.loss_fields(1000, 1003, view)["loss_ratio"] == 0.0   # window edges, never negative


def test_only_queues_that_moved_are_listed_and_deltas_subtract():
    before = {"tx_queue_0_xdp_xmit": 10, "tx_queue_1_xdp_xmit": 5, "peer_ifindex": 2}
    after = {"tx_queue_0_xdp_xmit": 15, "tx_queue_1_xdp_xmit": 5, "peer_ifindex": 2, "new": 1}
    d = queues.delta(before, after)
    assert d == {"tx_queue_0_xdp_xmit": 5, "tx_queue_1_xdp_xmit": 0, "peer_ifindex": 0}
    assert [q["queue"] for q in queues.queue_view(d, {})["queues"]] == [0]


def test_cpu_view():
    assert queues.cpu_view([1, 2, 3], [1, 12, 4]) == {"1": 10, "2": 1}
    assert queues.cpu_view(None, [1]) is None


@pytest.mark.parametrize("cpus,rxq,kind,shared", [([0, 1], 1, "veth", True), ([0, 1], 2, "veth", False),
                                                  ([2, 3], 2, "veth", False), ([0, 2], 2, "veth", True),
                                                  ([0], 1, "veth", False)])
def test_veth_queue_notes(cpus, rxq, kind, shared):
    notes = queue_notes(Spec("a", "b", ["native"]), cpus, rxq, kind, None)
    assert bool(notes) == shared
    if shared:
        assert "share" in notes[0] and "loss_ratio" in notes[0]


def test_real_nic_queue_note_names_its_channels():
    (note,) = queue_notes(Spec("ens1f0", "ens1f1", ["native"]), [0, 1], 64, "device", {"combined_count": 8})
    assert "8 rx queue(s)" in note and "RSS" in note
    assert queue_notes(Spec("ens1f0", "ens1f1", ["native"]), [0], 64, "device", None) == []


def test_gstats_header_layout():
    buf = struct.pack("=II", 0x1D, 2) + struct.pack("=QQ", 5, 2**63)
    assert unpack_gstats(buf, ["a", "b"]) == {"a": 5, "b": 2**63}


def _sample(t: float, counted: int, sent: float, xmit: int, errors: int) -> CounterSample:
    return CounterSample(t, counted, counted, sent, 0.0, 0.0, [counted, 0],
                         {"tx_queue_0_xdp_xmit": xmit, "tx_queue_0_xdp_xmit_errors": errors},
                         {"rx_queue_0_xdp_packets": xmit})


def test_window_takes_the_drivers_tx_count_for_live_frames():
    a, b = _sample(0.0, 0, 0.0, 0, 0), _sample(2.0, 900, 1010.4, 900, 100)
    w = _window(a, b)
    assert w["tx_packets"] == w["tx_driver_packets"] == 1000 and w["generator_tx_packets"] == 1010
    assert w["loss_ratio"] == 0.1 and w["unexplained"] == 0 and w["tx_pps"] == 500
    assert w["rx_queue_packets"] == {"0": 900} and w["rx_cpus"] == {"0": 900}


def test_window_of_pktgen_ignores_the_xdp_counters():
    # pktgen transmits skbs (ndo_start_xmit): a veth's XDP xmit counters stay at 0
    a, b = _sample(0.0, 0, 0.0, 0, 0), _sample(2.0, 990, 1000.0, 0, 0)
    w = _window(a, b, xdp_xmit=False)
    assert w["tx_packets"] == 1000 and w["tx_driver_packets"] is None
    assert w["loss_source"] == "tx-rx" and w["loss_ratio"] == 0.01 and w["xmit_errors"] is None


def test_window_counts_both_receive_counters_over_one_window():
    # the program's count and the interface's stats64 both run from sample a to sample b
    a = CounterSample(1.0, 5_000, 7_000, 0.0, 0.0, 0.0)
    b = CounterSample(3.0, 6_000, 8_010, 1_000.0, 0.0, 0.0)
    w = _window(a, b, xdp_xmit=False)
    assert w["rx_packets"] == 1_000 and w["iface_rx_packets"] == 1_010 and w["rx_pps"] == 500
    assert w["accounting_diff"] == round(10 / 1_010, 5)


def test_cpu_seconds_and_the_rate_per_cpu_second_are_one_arithmetic():
    assert queues.cpu_seconds(10**9, 10**9 + 250_000_000) == 0.25
    assert queues.cpu_seconds(None, 10**9) is None and queues.cpu_seconds(10**9, None) is None
    assert queues.cpu_seconds(10**9, 10**9) is None      # the clock did not advance: no rate of it
    assert queues.per_cpu_second(1_000_000, 0.25) == 4_000_000
    assert queues.per_cpu_second(0, 0.25) == 0           # nothing received in CPU time spent: zero, known
    assert queues.per_cpu_second(1_000_000, None) is None
