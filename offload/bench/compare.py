"""`offload bench compare A B`: is B faster than A? Two programs, two objects, two modes, or one
program with two parameter sets, measured on the same devices in interleaved trials (A B B A
...), each a window of the generator flat out; the answer is the ratio of the medians of the
received rates with a bootstrap confidence interval and a verdict (offload.bench.confidence).

On a veth lab with live frames the compared figure is the rate per second of the sending CPU's
time (`rx_per_cpu_s`, offload.bench.harness.cpu_rate): the receiver runs in that CPU's softirq, so
a window in which other work took the CPU for a while gives a lower rate but the same rate per
CPU-second, and a comparison on a busy machine keeps its power. Elsewhere it is the rate.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from offload.bench import confidence, harness, queues
from offload.errors import OffloadError, UsageError
from offload.load import attach as attach_mod
from offload.probe.mode import MODES

DEFAULT_PAIRS = 10


@dataclass
class Arm:
    program: str
    mode: str = "native"
    params: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict:
        return {"program": self.program, "mode": self.mode, "params": self.params}


@dataclass
class CompareSpec:
    a: Arm
    b: Arm
    pairs: int = DEFAULT_PAIRS
    level: float = 0.95
    fail_if_slower: float | None = None   # percent


def check(spec: CompareSpec) -> None:
    for name, arm in (("A", spec.a), ("B", spec.b)):
        if arm.mode not in MODES:
            raise UsageError(f"{name}'s mode {arm.mode}: use hw, native or generic")
    if spec.pairs < 2:
        raise UsageError("--trials must be at least 2 per side: an interval needs more than one pair")
    if not 0.5 <= spec.level < 1:
        raise UsageError(f"--level {spec.level}: a confidence level from 0.5 to below 1 (0.95 is 95%)")


def _trial(s: harness.Session, gen: harness._Generator, arm: Arm) -> dict:
    """One window of `arm` on the rx device: its program attached, measured, detached."""
    attach_mod.attach(s.spec.rx, arm.program, mode=arm.mode, params=arm.params or None)
    try:
        harness.prepare_mode(s, arm.mode)
        run = harness._one_run(s.spec, gen, s.dev)
    finally:
        harness._quiet_detach(s.spec.rx)
    # a program without offload's counters: the interface's own receive count
    counted = bool(run["rx_packets"])
    rate = run["rx_pps"] if counted else round(run["iface_rx_packets"] / run["window_s"])
    per_cpu = run["rx_per_cpu_s"] if counted else queues.per_cpu_second(run["iface_rx_packets"], run["generator_cpu_s"])
    return {"rx_pps": rate, "counted_by": "program" if counted else "interface", "tx_pps": run["tx_pps"],
            "window_s": run["window_s"], "loss": run["loss"], "generator_cpu_s": run["generator_cpu_s"],
            "rx_per_cpu_s": per_cpu}


def metric_for(generator: str, rx_kind: str | None) -> str:
    """The figure compared (pure): per CPU-second where the receiver runs in the generator's CPU
    (a veth fed live frames), the received rate elsewhere (pktgen's threads are not measured, and a
    NIC's receiver runs on CPUs of its own)."""
    return "rx_per_cpu_s" if generator == "live-frames" and rx_kind == "veth" else "rx_pps"


def run(bspec: harness.Spec, spec: CompareSpec, progress: Callable[[str], None] = lambda m: None) -> dict:
    check(spec)
    bspec.modes = list(dict.fromkeys([spec.a.mode, spec.b.mode]))
    trials: list[dict] = []
    with harness.session(bspec, progress) as s:
        missing = [m for m in bspec.modes if m not in s.to_run]
        if missing:
            why = "; ".join(f"{x['mode']}: {x['reason']}" for x in s.out.skipped)
            raise UsageError(f"{bspec.rx} cannot run {', '.join(missing)} here: {why}")
        metric = metric_for(s.gen_name, s.facts[bspec.rx].kind)
        gen = s.generator()
        try:
            for i, name in enumerate(confidence.order(spec.pairs)):
                arm = spec.a if name == "A" else spec.b
                progress(f"trial {i + 1}/{2 * spec.pairs}: {name} ({arm.program} in {arm.mode})")
                trials.append({"arm": name, **_trial(s, gen, arm)})
        except KeyboardInterrupt:
            s.out.partial = "interrupted"
        except (OSError, OffloadError) as e:
            if len(trials) < 2:   # A or B never ran (the verifier refused it, say): the error is the answer
                raise
            s.out.partial = getattr(e, "message", None) or str(e)
        finally:
            gen.stop()
            gen.close()
    return {"a": spec.a.describe(), "b": spec.b.describe(), **summary(trials, spec, metric), "trials": trials,
            "host": harness.host_info(), "config": {**s.config(), "pairs": spec.pairs, "level": spec.level,
                                                    "fail_if_slower_pct": spec.fail_if_slower,
                                                    "resamples": confidence.RESAMPLES, "seed": confidence.SEED},
            "notes": s.out.notes, "partial": s.out.partial}


def summary(trials: list[dict], spec: CompareSpec, metric: str = "rx_pps") -> dict:
    """The medians, their ratio (B/A) of `metric`, its interval and the verdict (pure). Only whole
    pairs count: a comparison cut short keeps its trials but concludes on the pairs it finished.
    A trial without the metric (its CPU time unreadable) makes the comparison fall back to rates."""
    if any(t.get(metric) is None for t in trials):
        metric = "rx_pps"
    rates = {arm: [t["rx_pps"] for t in trials if t["arm"] == arm] for arm in "AB"}
    a = [t[metric] for t in trials if t["arm"] == "A"]
    b = [t[metric] for t in trials if t["arm"] == "B"]
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    out = {"median_a_pps": _median(rates["A"]), "median_b_pps": _median(rates["B"]), "metric": metric,
           "median_a": _median(a), "median_b": _median(b)}
    if n < 2 or min(a + b) <= 0:
        return {**out, "ratio": None, "interval": None, "verdict": None, "slower_than_allowed": None}
    ratio = confidence.ratio_of_medians(a, b)
    lo, hi = confidence.bootstrap_interval(a, b, spec.level)
    slow = confidence.slower_beyond(ratio, hi, spec.fail_if_slower) if spec.fail_if_slower is not None else None
    return {**out, "ratio": round(ratio, 4), "interval": [round(lo, 4), round(hi, 4)],
            "verdict": confidence.verdict(lo, hi), "slower_than_allowed": slow}


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def failure(doc: dict) -> str | None:
    """Why the comparison exits 1: cut short, no conclusion, or B slower than --fail-if-slower allows."""
    if doc["partial"]:
        return f"partial results: {doc['partial']}"
    if doc["verdict"] is None:
        return "no conclusion: fewer than 2 pairs of trials with a rate"
    if doc["slower_than_allowed"]:
        pct = doc["config"]["fail_if_slower_pct"]
        return (f"B is slower than A by {1 - doc['ratio']:.1%} (interval {doc['interval'][0]:.3f}-"
                f"{doc['interval'][1]:.3f}), more than --fail-if-slower {pct:g}% allows")
    return None
