#!/usr/bin/env python3
"""The NDR search against a brute-force sweep, and its repeatability, on one veth lab.

In one run, on one lab with `count_drop` attached natively: the generator's ceiling; the NDR
search (offload.bench.search, MLRsearch; its warm-up included) with its wall time; a brute-force
sweep of counted trials of the same duration at every 2% of the search's maximum load (in passes
over all loads, each pass shuffled, so the lab's drift is not read as a fall at the top), judged as
the search's goal judges a load (as many trials as --duration-sum holds, at most --exceed-ratio of
them lost or late; a load its first trials already decide runs no more), its bounds as
MLRsearch's relevant ones (the lowest load that failed, and the highest that passed below it: the
sweep's NDR); then N more searches for the coefficient of variation of the NDR's lower bound.
Checks: the sweep's NDR lies within one step of the search's bracket; the search takes at most
1/3 of the sweep's time; CV <= 5% (on an idle machine). Run as root:
    .venv/bin/python benchmarks/search.py [--duration 5] [--repeat 5] [--mode native]
        [--duration-sum S] [--exceed-ratio R] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from offload import lab  # noqa: E402
from offload.bench import harness, search, trial  # noqa: E402
from offload.kernel import netns  # noqa: E402
from offload.load import attach  # noqa: E402

STEP = 0.02
SEED = 22


def knobs(args) -> search.SearchSpec:
    return search.SearchSpec([search.Goal("ndr", 0.0)], [trial.single(60)], duration_sum=args.duration_sum,
                             exceed_ratio=args.exceed_ratio)


def one_search(s: harness.Session, mode: str, args) -> dict:
    spec = knobs(args)
    return search.search_one(s, mode, trial.single(60), spec, lambda m: None)


def sweep(s: harness.Session, max_load: float, args) -> dict:
    """Counted trials at every STEP of max_load, as many per load as the search's goal sums
    (duration sum / duration), in passes over all loads, each pass in its own shuffled order
    (schedule()): a drift of the lab during the sweep's minutes then spreads over every load
    instead of falling on the highest ones, which an ascending sweep tries last. A load passes
    the goal when at most the exceed ratio of its trials lost frames or were not offered on
    schedule (decided(): a load its first trials decide runs no more)."""
    gen = trial.generator_for(s, trial.single(60))
    per_load = round(search.duration_sum(knobs(args), args.duration) / args.duration)
    loads = [round(max_load * k * STEP) for k in range(1, round(1 / STEP) + 1)]
    results: dict[int, list[dict]] = {load: [] for load in loads}
    started, runs_done, disturbed = time.monotonic(), 0, 0
    try:
        for load in schedule(loads, per_load):
            if decided(results[load], per_load, args.exceed_ratio) is not None:
                continue   # a third trial cannot change a load that two already decided
            runs = trial.run_undisturbed(s, gen, load, args.duration)
            results[load].append(runs[-1])
            runs_done, disturbed = runs_done + len(runs), disturbed + sum(r["disturbed"] for r in runs)
    finally:
        gen.stop()
        gen.close()
    verdicts = [(load, decided(results[load], per_load, args.exceed_ratio) is True) for load in loads]
    lower, upper = bounds(verdicts)
    return {"ndr_pps": lower, "first_fail_pps": upper,
            "highest_pass_pps": max((load for load, ok in verdicts if ok), default=None),
            "passed": [ok for _, ok in verdicts], "loads": round(1 / STEP), "trials_per_load": per_load,
            "runs": runs_done, "disturbed_runs": disturbed, "wall_s": round(time.monotonic() - started, 1),
            "step_pps": round(max_load * STEP)}


def schedule(loads: list[int], per_load: int, seed: int = SEED) -> list[int]:
    """The sweep's order (pure): `per_load` passes over `loads`, each shuffled (a fixed seed: the
    same sweep every run)."""
    rng = random.Random(seed)
    order: list[int] = []
    for _ in range(per_load):
        order += rng.sample(loads, len(loads))
    return order


def bounds(verdicts: list[tuple[int, bool]]) -> tuple[int | None, int | None]:
    """The sweep's bounds as MLRsearch defines its relevant ones (pure): the upper bound is the
    lowest load that failed, the lower bound the highest load below it that passed. A pass above
    a failure (a lucky trial on a noisy lab) is no NDR: the search would not count it either."""
    upper = min((load for load, ok in verdicts if not ok), default=None)
    lower = max((load for load, ok in verdicts if ok and (upper is None or load < upper)), default=None)
    return lower, upper


def decided(trials: list[dict], per_load: int, exceed_ratio: float) -> bool | None:
    """A load's verdict once its trials so far settle it whatever the rest would say (pure):
    False when more than the exceed ratio of `per_load` already failed, True when so many passed
    that the rest failing could not exceed it, else None (run the next trial)."""
    allowed = int(exceed_ratio * per_load + 1e-9)   # failures the goal tolerates among per_load trials
    failed = sum(failing(t) for t in trials)
    if failed > allowed:
        return False
    return True if len(trials) - failed >= per_load - allowed else None


def failing(t: dict) -> bool:
    """A trial that lost a frame or fell behind its schedule."""
    return t["loss_packets"] > 0 or t["generator_short"]


def agrees(goal: dict, swept: dict, max_load: float) -> bool:
    """The sweep's NDR within one step of a search's bracket."""
    ndr, step = swept["ndr_pps"], swept["step_pps"]
    return ndr is not None and goal["lower_bound_pps"] - step <= ndr <= (goal["upper_bound_pps"] or max_load) + step


def targets(out: dict) -> dict[str, bool | None]:
    """Issue #22's three targets for the search (the CV's is stated for an idle machine: the load
    average is printed beside it)."""
    cv = out["cv"]
    return {"sweep within one step of the bracket": out["sweep_within_one_step"],
            "search time <= 1/3 of the sweep's": out["time_ratio"] <= 1 / 3,
            f"CV of {len(out['repeat_lower_pps'])} NDRs <= 5% (idle machine)": None if cv is None else cv <= 0.05}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=5.0,
                    help="final trial seconds (search and sweep; default offload bench --search's)")
    ap.add_argument("--repeat", type=int, default=5, help="searches for the coefficient of variation")
    ap.add_argument("--mode", default="native")
    ap.add_argument("--duration-sum", type=float, help="MLRsearch's duration sum per load (default: bench --search's, "
                    f"{search.DURATION_SUMS} final trials)")
    ap.add_argument("--exceed-ratio", type=float, default=search.DEFAULT_EXCEED,
                    help=f"MLRsearch's exceed ratio (default bench --search's, {search.DEFAULT_EXCEED})")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    load_before = os.getloadavg()
    with lab.temporary("srch", pairs=1, mtu=1500, queues=1) as made:
        spec = harness.Spec(made.pairs[0].a, made.pairs[0].b, [args.mode], duration=args.duration)
        with netns.inside(made.netns), harness.session(spec) as s:
            attach.attach(spec.rx, "count_drop", mode=args.mode)
            try:
                harness.prepare_mode(s, args.mode)
                first = one_search(s, args.mode, args)
                max_load = search.max_load(first["generator_ceiling_pps"], first["generator_capacity_pps"])
                swept = sweep(s, max_load, args)   # right after the first search and before the second
                more = [one_search(s, args.mode, args) for _ in range(args.repeat - 1)]
            finally:
                attach.detach(spec.rx)
    searches = [first, *more]
    lows = [r["goals"][0]["lower_bound_pps"] for r in searches]
    g = first["goals"][0]
    within = agrees(g, swept, max_load)
    after = agrees(more[0]["goals"][0], swept, max_load) if more else None
    out = {"mode": args.mode, "duration_s": args.duration, "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
           "search": {"lower_pps": g["lower_bound_pps"], "upper_pps": g["upper_bound_pps"], "limited_by": g["limited_by"],
                      "trials": first["trials_run"], "wall_s": first["wall_s"]},
           "sweep": swept, "sweep_within_one_step": within, "sweep_within_one_step_of_the_next_search": after,
           "time_ratio": round(first["wall_s"] / swept["wall_s"], 3),
           "repeat_lower_pps": lows,
           "searches": [{"lower_pps": r["goals"][0]["lower_bound_pps"], "upper_pps": r["goals"][0]["upper_bound_pps"],
                         "ceiling_pps": r["generator_ceiling_pps"], "capacity_pps": r["generator_capacity_pps"],
                         "warmup_s": r["warmup"]["seconds"], "warmup_settled": r["warmup"]["settled"],
                         "warmup_ceilings_pps": r["warmup"]["ceilings_pps"],
                         "warmup_capacities_pps": r["warmup"]["capacities_pps"],
                         "trials": r["trials_run"], "disturbed": r["disturbed_trials"], "wall_s": r["wall_s"]}
                        for r in searches],
           "cv": round(statistics.stdev(lows) / statistics.mean(lows), 4) if len(lows) > 1 else None,
           "duration_sum_s": search.duration_sum(knobs(args), args.duration), "exceed_ratio": args.exceed_ratio}
    out["targets"] = targets(out)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        srch = out["search"]
        print(f"load average before {load_before[0]:.1f}, after {out['loadavg_after'][0]:.1f}; a load judged over "
              f"{out['duration_sum_s']:g} s of {args.duration:g} s trials, exceed ratio {args.exceed_ratio:g}")
        print(f"search: NDR {srch['lower_pps']:,}-{srch['upper_pps'] or 0:,} pps ({srch['limited_by']}), "
              f"{srch['trials']} trials, {srch['wall_s']} s")
        print(f"sweep:  NDR {swept['ndr_pps'] or 0:,} pps (first failure {swept['first_fail_pps'] or 0:,}, highest "
              f"pass {swept['highest_pass_pps'] or 0:,}), {swept['runs']} trials, {swept['wall_s']} s, step "
              f"{swept['step_pps']:,} pps; within one step of the bracket: {within} (of the next search's: {after})")
        for i, r in enumerate(out["searches"], 1):
            print(f"search {i}: warm-up {r['warmup_s']} s ({'settled' if r['warmup_settled'] else 'NOT settled'}), "
                  f"Mpps per window {[round(c / 1e6, 2) for c in r['warmup_ceilings_pps']]}; "
                  f"NDR {r['lower_pps']:,}-{r['upper_pps'] or 0:,}, {r['trials']} trials ({r['disturbed']} disturbed)")
        print(f"search/sweep time {out['time_ratio']}; {len(lows)} searches: lower bounds {lows}, CV {out['cv']}")
        for name, met in out["targets"].items():
            print(f"target {name}: {'MET' if met else 'MISSED' if met is not None else 'not measured'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
