#!/usr/bin/env python3
"""`offload bench compare`'s false positives and its power, on one veth lab.

In one run: N comparisons of count_drop against itself (each `--trials T` per side, A B B A
...), counting the verdicts that are not "no significant difference" (the false-positive rate;
at a 95% level about 1 in 20 is expected); then M comparisons of count_drop against
benchmarks/progs/burn.c (count_drop plus `loops` rounds of a 64-bit multiply-add per frame),
which must say "slower". Each run is the CLI with --json on the lab's devices. Run as root:
    .venv/bin/python benchmarks/compare_ab.py [--runs 20] [--burn-runs 3] [--loops 100]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from offload import lab  # noqa: E402

OFFLOAD = str(Path(sys.executable).parent / "offload")
BURN = str(Path(__file__).resolve().parent / "progs" / "burn.c")


def compare(tx: str, rx: str, ns: str, a: str, b: str, args, extra: list[str]) -> dict:
    argv = [OFFLOAD, "bench", "compare", a, b, "--tx", tx, "--rx", rx, "--netns", ns, "--trials", str(args.trials),
            "--duration", str(args.duration), "--warmup", str(args.warmup), "--json", *extra]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    if res.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr or res.stdout}")
    doc = json.loads(res.stdout)
    return {k: doc[k] for k in ("ratio", "interval", "verdict", "metric")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--burn-runs", type=int, default=3)
    ap.add_argument("--loops", type=int, default=100)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--duration", type=float, default=0.5)
    ap.add_argument("--warmup", type=float, default=0.2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    load_before = os.getloadavg()
    with lab.temporary("ab", pairs=1, mtu=1500, queues=1) as made:
        tx, rx, ns = made.pairs[0].a, made.pairs[0].b, made.netns
        same = [compare(tx, rx, ns, "count_drop", "count_drop", args, []) for _ in range(args.runs)]
        burn = [compare(tx, rx, ns, "count_drop", BURN, args, ["--param-b", f"loops={args.loops}"])
                for _ in range(args.burn_runs)]
    out = {"loadavg_before": load_before, "loadavg_after": os.getloadavg(), "trials_per_side": args.trials,
           "duration_s": args.duration, "same": same,
           "same_no_difference": sum(r["verdict"] == "no significant difference" for r in same),
           "burn_loops": args.loops, "burn": burn, "burn_slower": sum(r["verdict"] == "slower" for r in burn)}
    # the targets: false positives at most 1 in 20, the burn program detected in every run
    out["targets"] = {"false positives <= 1/20": out["same_no_difference"] >= args.runs - args.runs // 20,
                      "slowdown detected in every run": out["burn_slower"] == args.burn_runs}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"load average before {load_before[0]:.1f}, after {out['loadavg_after'][0]:.1f}")
        print(f"count_drop vs count_drop: {out['same_no_difference']}/{args.runs} no significant difference")
        for r in same:
            print(f"  {r['ratio']:.3f} [{r['interval'][0]:.3f}, {r['interval'][1]:.3f}] {r['verdict']}")
        print(f"count_drop vs burn loops={args.loops}: {out['burn_slower']}/{args.burn_runs} slower")
        for r in burn:
            print(f"  {r['ratio']:.3f} [{r['interval'][0]:.3f}, {r['interval'][1]:.3f}] {r['verdict']}")
        print(f"compared: {same[0]['metric'] if same else burn[0]['metric'] if burn else '-'}")
        for name, met in out["targets"].items():
            print(f"target {name}: {'MET' if met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
