"""`offload bench --search ndr,pdr`: the non-drop rate and the partial-drop rate per XDP mode
and frame size, found by MLRsearch (FD.io CSIT's implementation of the IETF BMWG draft) as the
controller; offload supplies the measurer (offload.bench.trial: one counted trial at a load).

Goals are as CSIT sets MLRsearch's (at a smaller scale): a load is judged over DURATION_SUMS
final trials' worth of time, of which at most half (exceed ratio 0.5) may lose more than the
goal allows, so one trial that met a burst of other work does not move a bound and the search
repeats; `--exceed-ratio 0 --duration-sum D` is RFC 2544's reading (one full trial decides).
Shorter trials (1 s) only guide the search to its interval. Every trial is kept for audit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pyroute2.netlink.exceptions import NetlinkError

from offload.bench import harness, trial
from offload.errors import NoModeError, OffloadError, UsageError
from offload.kernel import identity
from offload.load import attach as attach_mod

DEFAULT_PDR = 0.005
DEFAULT_WIDTH = 0.02          # the bounds' relative distance at which a goal is met
DEFAULT_EXCEED = 0.5          # CSIT's goal exceed ratio
DURATION_SUMS = 3             # final trials' worth of time per load (CSIT: 21 of 1 s)
MIN_LOAD = 10_000.0           # frames/s: below it the lab measures scheduling, not XDP
INITIAL_TRIAL_S = 1.0
CALIBRATE_S = 1.0             # one warm-up window
WARMUP_MAX_S = 20.0           # the warm-up's limit: a lab that never settles is searched anyway, marked
HEADROOM = 1.2              # max load over the calibrated ceiling: the ceiling itself is measured on a busy machine


@dataclass(frozen=True)
class Goal:
    name: str
    loss_ratio: float


def parse_goals(text: str) -> list[Goal]:
    """`ndr`, `pdr` (loss ratio 0.005) or `pdr=R`, comma-separated."""
    goals: list[Goal] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, value = part.partition("=")
        if name == "ndr" and not value:
            goals.append(Goal("ndr", 0.0))
        elif name == "pdr":
            try:
                ratio = float(value) if value else DEFAULT_PDR
            except ValueError:
                raise UsageError(f"--search {part}: the PDR loss ratio must be a number, e.g. pdr=0.005") from None
            if not 0 < ratio < 1:
                raise UsageError(f"--search {part}: the PDR loss ratio must be above 0 and below 1 (0.005 is 0.5%)")
            goals.append(Goal("pdr", ratio))
        else:
            raise UsageError(f"--search {part}: use ndr, pdr or pdr=RATIO, comma-separated")
    if not goals or len({g.name for g in goals}) != len(goals):
        raise UsageError(f"--search {text!r}: name ndr and/or pdr, each once")
    return goals


@dataclass
class SearchSpec:
    goals: list[Goal]
    frames: list[trial.Frames]
    width: float = DEFAULT_WIDTH
    max_seconds: float = 1200.0   # per search: MLRsearch gives up after this
    # MLRsearch's goal knobs as CSIT sets them: a load is classified over `duration_sum` seconds
    # of final trials (None: one final trial), of which at most `exceed_ratio` may lose more than
    # the goal allows (0: every trial must pass, RFC 2544's reading)
    duration_sum: float | None = None     # None: DURATION_SUMS final trials
    exceed_ratio: float = DEFAULT_EXCEED


@dataclass
class _Measurer:
    """MLRsearch's measurer: each trial is run, recorded, and handed back as a MeasurementResult."""

    s: harness.Session
    gen: harness._Generator
    progress: Callable[[str], None]
    label: str
    trials: list[dict] = field(default_factory=list)

    def measure(self, intended_duration: float, intended_load: float):
        from MLRsearch import MeasurementResult

        self.progress(f"{self.label}: trial {len(self.trials) + 1} at {intended_load / 1e6:.3f} Mpps "
                      f"for {intended_duration:g} s")
        runs = trial.run_undisturbed(self.s, self.gen, intended_load, intended_duration)
        self.trials += runs   # a disturbed run is kept for audit; the last run is the trial
        t = runs[-1]
        # MLRsearch checks the load it asked for comes back exactly (the record keeps it rounded)
        return MeasurementResult(**{**trial.for_search(t), "intended_load": intended_load,
                                    "intended_duration": intended_duration})


def _config(spec: SearchSpec, duration: float, max_load: float, max_seconds: float):
    from MLRsearch import Config, SearchGoal

    cfg = Config()
    cfg.goals = [SearchGoal(loss_ratio=g.loss_ratio, exceed_ratio=spec.exceed_ratio, relative_width=spec.width,
                            initial_trial_duration=min(INITIAL_TRIAL_S, duration), final_trial_duration=duration,
                            duration_sum=duration_sum(spec, duration), preceding_targets=2,
                            expansion_coefficient=2, fail_fast=False)
                 for g in spec.goals]
    cfg.max_load = max_load
    cfg.min_load = min(MIN_LOAD, max_load / 10)
    cfg.search_duration_max = max_seconds
    cfg.warmup_duration = None   # the warm-up ran the generator flat out just before
    return cfg


def duration_sum(spec: SearchSpec, duration: float) -> float:
    """Seconds of final trials a load is judged over: at least one final trial."""
    return max(spec.duration_sum if spec.duration_sum is not None else DURATION_SUMS * duration, duration)


def max_load(ceiling: float, capacity: int | None) -> float:
    """The search's top (pure): above the generator's ceiling, or its capacity with the CPU to
    itself when other work held the ceiling down while it was measured."""
    return max(ceiling, capacity or 0) * HEADROOM


def goal_result(goal: Goal, res, trials: list[dict], frames: trial.Frames) -> dict:
    """One goal's bounds (frames/s, and Gbit/s on a wire) and what limited it: the device (its
    loss) or the generator (trials at the upper bound that could not offer the load)."""
    lo = float(res.relevant_lower_bound) if res.relevant_lower_bound is not None else None
    hi = float(res.relevant_upper_bound) if res.relevant_upper_bound is not None else None
    ct = float(res.conditional_throughput) if res.conditional_throughput is not None else None
    return {"goal": goal.name, "loss_ratio": goal.loss_ratio,
            "lower_bound_pps": round(lo) if lo is not None else None,
            "upper_bound_pps": round(hi) if hi is not None else None,
            "conditional_throughput_pps": round(ct) if ct is not None else None,
            "lower_bound_gbps": frames.gbps(lo), "limited_by": limited_by(goal, hi, trials)}


def limited_by(goal: Goal, upper: float | None, trials: list[dict]) -> str:
    """`device` when a trial at or above the upper bound lost more than the goal allows, else
    `generator` (the load above was not offered), or `max_load` with no upper bound found."""
    if upper is None:
        return "max_load"
    above = [t for t in trials if t["intended_load_pps"] >= round(upper)]
    if any(t["loss_ratio"] is not None and t["loss_ratio"] > goal.loss_ratio for t in above):
        return "device"
    return "generator" if any(t["generator_short"] for t in above) else "device"


def search_one(s: harness.Session, mode: str, frames: trial.Frames, spec: SearchSpec,
               progress: Callable[[str], None]) -> dict:
    """The search for one mode and one frame size: warm up until the generator's ceiling settles,
    then search up to it. Cut short (Ctrl-C, SIGTERM, a device gone), the document so far, its trials kept and
    `error` saying why, rides on the exception (`.search_doc`)."""
    from MLRsearch import MultipleLossRatioSearch

    label = f"{mode} {frames.label}"
    gen = trial.generator_for(s, frames)
    try:
        started = time.monotonic()
        progress(f"{label}: warm-up, the generator flat out until its ceiling settles (at most {WARMUP_MAX_S:g} s)")
        warm = trial.warm_up(s, gen, CALIBRATE_S, WARMUP_MAX_S)
        ceiling, capacity = warm["ceiling_pps"], warm["capacity_pps"]
        m = _Measurer(s, gen, progress, label)
        doc = {"mode": mode, "frame": frames.label, "mean_frame_bytes": round(frames.mean_bytes, 2),
               "generator": s.gen_name, "generator_ceiling_pps": ceiling, "generator_capacity_pps": capacity,
               "warmup": warm, "goals": [], "trials": m.trials}
        cfg = _config(spec, s.spec.duration, max_load(ceiling, capacity), spec.max_seconds)
        try:
            found = MultipleLossRatioSearch(cfg).search(m, debug=lambda msg: None)
        except RuntimeError as e:   # MLRsearch's own failure: its time limit
            doc["error"] = f"MLRsearch stopped: {e}"
        except (KeyboardInterrupt, OSError, OffloadError, NetlinkError) as e:
            doc["error"] = "interrupted" if isinstance(e, KeyboardInterrupt) else \
                f"cut short: {getattr(e, 'message', None) or e}"
            e.search_doc = _finish(doc, m.trials, started)   # type: ignore[union-attr]
            raise
        else:
            doc["goals"] = [goal_result(g, found[sg], m.trials, frames) for g, sg in zip(spec.goals, cfg.goals)]
        return _finish(doc, m.trials, started)
    finally:
        gen.stop()
        gen.close()


def _finish(doc: dict, trials: list[dict], started: float) -> dict:
    doc["trials_run"] = len(trials)
    doc["trial_seconds"] = round(sum(t["duration_s"] for t in trials), 3)
    doc["wall_s"] = round(time.monotonic() - started, 3)
    doc["generator_short_trials"] = sum(t["generator_short"] for t in trials)
    doc["disturbed_trials"] = sum(bool(t.get("disturbed")) for t in trials)
    return doc


def run(bspec: harness.Spec, spec: SearchSpec, progress: Callable[[str], None] = lambda m: None) -> dict:
    results: list[dict] = []
    with harness.session(bspec, progress) as s:
        try:
            for mode in s.to_run:
                _search_mode(s, mode, spec, results, progress)
                if s.out.partial:   # the device went away or the run was cut: no mode after it, as a bench
                    break
        except KeyboardInterrupt:
            s.out.partial = s.out.partial or "interrupted"
    cfg = {**s.config(), "pkt_size": None, "goals": [{"name": g.name, "loss_ratio": g.loss_ratio} for g in spec.goals],
           "frames": [f.label for f in spec.frames], "relative_width": spec.width,
           "initial_trial_s": min(INITIAL_TRIAL_S, bspec.duration), "final_trial_s": bspec.duration,
           "duration_sum_s": duration_sum(spec, bspec.duration), "exceed_ratio": spec.exceed_ratio,
           "link_speed_mbps": _speed(s)}
    if s.gen_name == "live-frames" and s.facts[bspec.rx].kind == "veth":
        s.out.notes.append(f"{bspec.rx} is a veth: it receives live frames in the sending CPU's softirq, so the "
                           "program's cost slows the generator itself; on a veth lab the search's top is where "
                           "generator and program together saturate a CPU, shown as `limit: generator`")
    return {"results": results, "skipped": s.out.skipped, "host": harness.host_info(), "config": cfg,
            "notes": s.out.notes, "partial": s.out.partial}


def _speed(s: harness.Session) -> int | None:
    """The rx link's speed for the line-rate curve; a veth's reported 10000 is no wire's."""
    return None if s.facts[s.spec.rx].kind == "veth" else identity.link_speed_mbps(s.spec.rx)


def _search_mode(s: harness.Session, mode: str, spec: SearchSpec, results: list[dict],
                 progress: Callable[[str], None]) -> None:
    progress(f"{s.spec.rx}: attaching {s.spec.program} in {mode}")
    try:
        attach_mod.attach(s.spec.rx, s.spec.program, mode=mode)
    except (NoModeError, OffloadError) as e:
        s.out.skipped.append({"mode": mode, "reason": e.message})
        return
    try:
        harness.prepare_mode(s, mode)
        for frames in spec.frames:
            results.append(search_one(s, mode, frames, spec, progress))
    except (KeyboardInterrupt, OSError, OffloadError, NetlinkError) as e:
        if (doc := getattr(e, "search_doc", None)) is not None:
            results.append(doc)
        if isinstance(e, KeyboardInterrupt):
            raise
        gone = "" if harness._exists(s.spec.rx) else f" ({s.spec.rx} was removed during the run)"
        s.out.partial = f"{mode}: {getattr(e, 'message', None) or e}{gone}"
    finally:
        harness._quiet_detach(s.spec.rx)


def failure(doc: dict) -> str | None:
    """Why a finished search counts as failed (exit 1): cut short, nothing searched, a search
    that MLRsearch gave up."""
    if problem := harness.failure(doc):
        return problem
    stopped = [f"{r['mode']} {r['frame']}: {r['error']}" for r in doc["results"] if r.get("error")]
    return "; ".join(stopped) or None
