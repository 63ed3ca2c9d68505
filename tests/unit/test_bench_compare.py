"""`offload bench compare`'s arithmetic (pure): the A B B A order, the ratio of medians, its
paired bootstrap interval, the verdict and --fail-if-slower; and the documents and tables of a
search and a comparison (schema-valid, readable at 80 columns)."""

from __future__ import annotations

import random
from io import StringIO

import pytest
from lib.schemas import validate

from offload import jsondoc
from offload.bench import compare, confidence, harness
from offload.bench import render as bench_render
from offload.errors import UsageError

HOST = {"kernel": "6.18.0", "cpus": 2, "cpu_model": "x", "python": "3.11", "machine": "x86_64"}


def valid(doc: dict, kind: str) -> dict:
    """`doc` as its --json document, checked against its schema."""
    return validate(jsondoc.document(kind, doc), kind)


def test_order_is_abba():
    assert "".join(confidence.order(4)) == "ABBAABBA"


def test_identical_sides_are_no_difference_and_a_clear_gap_is_found():
    rng = random.Random(1)
    a = [1e6 * rng.uniform(0.97, 1.03) for _ in range(10)]
    b = [x * rng.uniform(0.98, 1.02) for x in a]
    lo, hi = confidence.bootstrap_interval(a, b)
    assert lo < 1 < hi and confidence.verdict(lo, hi) == confidence.SAME
    slow = [x * 0.8 for x in a]
    lo, hi = confidence.bootstrap_interval(a, slow)
    assert hi < 1 and confidence.verdict(lo, hi) == confidence.SLOWER
    assert lo <= confidence.ratio_of_medians(a, slow) <= hi
    lo, hi = confidence.bootstrap_interval(slow, a)
    assert confidence.verdict(lo, hi) == confidence.FASTER


def test_the_interval_is_reproducible_and_narrows_with_the_level():
    a, b = [100.0, 104, 98, 101, 99, 103], [90.0, 97, 92, 95, 91, 96]
    assert confidence.bootstrap_interval(a, b) == confidence.bootstrap_interval(a, b)
    lo95, hi95 = confidence.bootstrap_interval(a, b, 0.95)
    lo80, hi80 = confidence.bootstrap_interval(a, b, 0.80)
    assert lo95 <= lo80 <= hi80 <= hi95


def test_the_bootstrap_refuses_what_it_cannot_use():
    with pytest.raises(ValueError):
        confidence.bootstrap_interval([1.0], [1.0])
    with pytest.raises(ValueError):
        confidence.bootstrap_interval([1.0, 2.0], [1.0, 0.0])


def test_fail_if_slower_needs_significance_and_the_size():
    assert confidence.slower_beyond(0.90, 0.95, 5)          # 10% slower, interval below 1
    assert not confidence.slower_beyond(0.97, 0.99, 5)      # significant but within 5%
    assert not confidence.slower_beyond(0.90, 1.02, 5)      # 10% but not significant


def _trials(a: list[float], b: list[float]) -> list[dict]:
    it = {"A": iter(a), "B": iter(b)}
    return [{"arm": arm, "rx_pps": next(it[arm]), "counted_by": "program", "tx_pps": 1.0, "window_s": 1.0,
             "loss": 0.0} for arm in confidence.order(len(a))]


def compare_doc(a: list[float], b: list[float], fail: float | None = None) -> dict:
    spec = compare.CompareSpec(compare.Arm("count_drop"), compare.Arm("/some/where/burn.c", "native",
                                                                      {"loops": "200"}), len(a), 0.95, fail)
    trials = _trials(a, b)
    return {"a": spec.a.describe(), "b": spec.b.describe(), **compare.summary(trials, spec), "trials": trials,
            "host": HOST, "config": {"tx": "lab-a0", "rx": "lab-b0", "program": "count_drop",
                                     "generator": "live-frames", "duration": 1.0, "pkt_size": 60, "pairs": len(a),
                                     "level": 0.95, "fail_if_slower_pct": fail, "resamples": 10000, "seed": 22},
            "notes": [], "partial": None}


def test_a_slower_b_fails_the_ci_gate_with_a_valid_document():
    doc = valid(compare_doc([2.4e6, 2.5e6, 2.45e6, 2.42e6], [2.0e6, 2.05e6, 2.1e6, 2.02e6], fail=5), "bench-compare")
    assert doc["verdict"] == "slower" and doc["slower_than_allowed"]
    assert "more than --fail-if-slower 5% allows" in compare.failure(doc)
    same = valid(compare_doc([2.4e6, 2.5e6, 2.45e6, 2.42e6], [2.42e6, 2.47e6, 2.44e6, 2.43e6], fail=5),
                    "bench-compare")
    assert same["verdict"] == "no significant difference" and compare.failure(same) is None


def test_a_comparison_cut_short_concludes_on_whole_pairs_only():
    spec = compare.CompareSpec(compare.Arm("a"), compare.Arm("b"), 3)
    trials = _trials([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])[:3]   # A B B: one whole pair
    assert compare.summary(trials, spec)["verdict"] is None
    cut = _trials([1.0, 1.0, 9.0], [2.0, 2.0, 2.0])[:5]      # A B B A A: 3 A, 2 B: the two whole pairs only
    assert compare.summary(cut, spec)["verdict"] == confidence.FASTER


def test_the_rate_per_cpu_second_leaves_out_what_other_work_took():
    # 1M frames in a window where the sending CPU ran ours for 0.25 s: 4M per CPU-second
    assert harness.cpu_rate(1_000_000, 10**9, 10**9 + 250_000_000) == {"generator_cpu_s": 0.25,
                                                                       "rx_per_cpu_s": 4_000_000}
    assert harness.cpu_rate(1_000_000, None, 10**9)["rx_per_cpu_s"] is None     # a thread had ended
    assert harness.cpu_rate(1_000_000, 10**9, 10**9)["rx_per_cpu_s"] is None    # no CPU time: no rate


def test_the_compared_figure_is_per_cpu_second_only_where_the_receiver_shares_the_generators_cpu():
    assert compare.metric_for("live-frames", "veth") == "rx_per_cpu_s"
    assert compare.metric_for("live-frames", "device") == "rx_pps"
    assert compare.metric_for("pktgen", "veth") == "rx_pps"


def test_the_verdict_follows_the_metric_and_falls_back_to_rates_without_it():
    spec = compare.CompareSpec(compare.Arm("a"), compare.Arm("b"), 4)
    # B's rates fell (a busy CPU) while its rate per CPU-second held: no difference per CPU-second
    trials = [{**t, "rx_per_cpu_s": 8e6, "rx_pps": 4e6 if t["arm"] == "A" else 2e6}
              for t in _trials([4e6] * 4, [2e6] * 4)]
    per_cpu = compare.summary(trials, spec, "rx_per_cpu_s")
    assert (per_cpu["metric"], per_cpu["ratio"], per_cpu["verdict"]) == ("rx_per_cpu_s", 1.0, confidence.SAME)
    assert (per_cpu["median_a_pps"], per_cpu["median_b_pps"]) == (4e6, 2e6)     # the rates still reported
    trials[0]["rx_per_cpu_s"] = None
    rates = compare.summary(trials, spec, "rx_per_cpu_s")
    assert (rates["metric"], rates["verdict"]) == ("rx_pps", confidence.SLOWER)


@pytest.mark.parametrize("bad", [dict(pairs=1), dict(level=0.3), dict(level=1.0)])
def test_bad_compare_settings_are_usage_errors(bad):
    spec = compare.CompareSpec(compare.Arm("a"), compare.Arm("b"), **bad)
    with pytest.raises(UsageError):
        compare.check(spec)


def _search_doc() -> dict:
    t = {"intended_load_pps": 2_000_000, "duration_s": 1.0, "intended_count": 2_000_000, "tx_packets": 2_000_000,
         "rx_packets": 2_000_000, "loss_packets": 0, "loss_ratio": 0.0, "offered_load_pps": 2_000_000,
         "offered_s": 0.95, "lag_s": 0.0, "generator_short": False, "wall_s": 1.2}
    late = {**t, "intended_load_pps": 2_040_000, "offered_s": 1.2, "lag_s": 0.2, "generator_short": True}
    goal = {"goal": "ndr", "loss_ratio": 0.0, "lower_bound_pps": 2_000_000, "upper_bound_pps": 2_040_000,
            "conditional_throughput_pps": 2_000_000, "lower_bound_gbps": 1.344, "limited_by": "generator"}
    res = [{"mode": m, "frame": f, "mean_frame_bytes": 60.0, "generator": "live-frames",
            "generator_ceiling_pps": 2_100_000, "goals": [goal, {**goal, "goal": "pdr", "loss_ratio": 0.005}],
            "trials": [t, late], "trials_run": 2, "trial_seconds": 2.0, "wall_s": 4.1, "generator_short_trials": 1}
           for m in ("native", "generic") for f in ("60", "1514", "imix")]
    return {"results": res, "skipped": [{"mode": "hw", "reason": "veth has no hardware offload (no hw-offload "
                                         "feature, no offload-capable driver)"}],
            "host": HOST, "config": {"tx": "bench1-a0", "rx": "bench1-b0", "program": "count_drop",
                                     "generator": "live-frames", "threads": 1, "pkt_size": None,
                                     "goals": [{"name": "ndr", "loss_ratio": 0.0}, {"name": "pdr", "loss_ratio": 0.005}],
                                     "frames": ["60", "1514", "imix"], "relative_width": 0.02, "initial_trial_s": 1.0,
                                     "final_trial_s": 1.0, "link_speed_mbps": None},
            "notes": ["bench1-b0 is a veth: its program's cost slows the generator itself"], "partial": None}


def _render(fn, doc: dict, width: int) -> str:
    from rich.console import Console

    buf = StringIO()
    fn(doc, Console(width=width, file=buf, highlight=False, color_system=None))
    return buf.getvalue()


@pytest.mark.parametrize("width", [80, 120])
def test_search_and_compare_tables_fit_and_say_it_all(width):
    doc = valid(_search_doc(), "bench-search")
    text = _render(bench_render.search_result, doc, width)
    assert all(len(ln.rstrip()) <= width for ln in text.splitlines()), text
    assert "…" not in text and "2.04" in text and "generator" in text and "imix" in text
    assert "hw skipped: veth has no hardware offload" in " ".join(text.split())
    cmp = compare_doc([2.4e6, 2.5e6, 2.45e6, 2.42e6], [2.0e6, 2.05e6, 2.1e6, 2.02e6])
    text = _render(bench_render.compare_result, cmp, width)
    assert all(len(ln.rstrip()) <= width for ln in text.splitlines()), text
    assert "B/A 0.8" in text and "B is slower" in text and "loops=200" in text
