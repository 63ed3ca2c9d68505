#!/usr/bin/env python3
"""Where a veth lab's rate drifts: the generator's flat-out ceiling, window after window.

Native `count_drop` on a one-queue veth lab fed live frames (60-byte frames, one thread on CPU 0),
the generator run flat out for `--window` s at a time, in three phases in one process: a fresh
lab and generator (`--first` windows), the same lab with a new generator (its own program and
page pool; `--second` windows), then a second fresh lab (`--first` windows). Per window: the
rate, the rate per second of the generator CPU's time (whence steal and other work are out),
the CPUs' clock (MHz, /proc/cpuinfo) and the load average. A rise that restarts with each lab is
the lab's warm-up; one that restarts with each generator is the generator's; one that does
neither is the machine's. Run as root, alone (flock /tmp/offload-host.lock ...):
    .venv/bin/python benchmarks/warmup.py [--window 1] [--first 60] [--second 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from offload import lab  # noqa: E402
from offload.bench import harness, trial  # noqa: E402
from offload.kernel import netns  # noqa: E402
from offload.load import attach  # noqa: E402


def cpu_mhz() -> list[float]:
    with open("/proc/cpuinfo") as f:
        return [float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")]


def windows(s: harness.Session, gen: harness._Generator, n: int, seconds: float, phase: str, t0: float) -> list[dict]:
    out = []
    for _ in range(n):
        cpu0 = gen.cpu_ns()
        pps = trial.calibrate(s, gen, seconds)
        cap = trial.capacity(int(gen.sent()), cpu0, gen.cpu_ns())
        out.append({"phase": phase, "t_s": round(time.monotonic() - t0, 1), "pps": round(pps),
                    "per_cpu_s": cap, "mhz": cpu_mhz(), "load1": os.getloadavg()[0]})
    return out


def on_lab(prefix: str, phases: list[tuple[str, int]], seconds: float, t0: float) -> list[dict]:
    rows: list[dict] = []
    with lab.temporary(prefix, pairs=1, mtu=1500, queues=1) as made:
        spec = harness.Spec(made.pairs[0].a, made.pairs[0].b, ["native"], duration=seconds)
        with netns.inside(made.netns), harness.session(spec) as s:
            attach.attach(spec.rx, "count_drop", mode="native")
            try:
                for phase, n in phases:
                    gen = trial.generator_for(s, trial.single(60))
                    try:
                        rows += windows(s, gen, n, seconds, phase, t0)
                    finally:
                        gen.close()
            finally:
                attach.detach(spec.rx)
    return rows


def summary(rows: list[dict]) -> dict:
    """Per phase: the median rate of its first and last five windows, and their ratio."""
    out = {}
    for phase in dict.fromkeys(r["phase"] for r in rows):
        pps = [r["pps"] for r in rows if r["phase"] == phase]
        per = [r["per_cpu_s"] for r in rows if r["phase"] == phase and r["per_cpu_s"]]
        first, last = statistics.median(pps[:5]), statistics.median(pps[-5:])
        out[phase] = {"first5_pps": round(first), "last5_pps": round(last), "rise": round(last / first, 3),
                      "per_cpu_s_first5": round(statistics.median(per[:5])) if per else None,
                      "per_cpu_s_last5": round(statistics.median(per[-5:])) if per else None}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=float, default=1.0)
    ap.add_argument("--first", type=int, default=60, help="windows on each fresh lab")
    ap.add_argument("--second", type=int, default=20, help="windows of the second generator on the first lab")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    t0 = time.monotonic()
    rows = on_lab("b2wa", [("lab 1, generator 1", args.first), ("lab 1, generator 2", args.second)], args.window, t0)
    rows += on_lab("b2wb", [("lab 2, generator 3", args.first)], args.window, t0)
    doc = {"kernel": os.uname().release, "window_s": args.window, "phases": summary(rows), "windows": rows}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    for r in rows:
        print(f"{r['t_s']:7.1f} s  {r['phase']:20}  {r['pps'] / 1e6:6.2f} Mpps  "
              f"{(r['per_cpu_s'] or 0) / 1e6:6.2f} M/CPU-s  MHz {'/'.join(f'{m:.0f}' for m in r['mhz'])}  "
              f"load {r['load1']:.2f}")
    for phase, p in doc["phases"].items():
        print(f"{phase}: first 5 windows {p['first5_pps'] / 1e6:.2f} Mpps, last 5 {p['last5_pps'] / 1e6:.2f} Mpps "
              f"(x{p['rise']}); per CPU-second {(p['per_cpu_s_first5'] or 0) / 1e6:.2f} -> "
              f"{(p['per_cpu_s_last5'] or 0) / 1e6:.2f} M")
    return 0


if __name__ == "__main__":
    sys.exit(main())
