#!/usr/bin/env python3
"""How steady this machine's CPU is, with no network in it: a Python loop touching 128 cache lines
64 KiB apart in an 8 MiB buffer (interpreter-bound, with the lines' set conflicts), pinned to one
CPU, counted in 1 s windows, per second of its own CPU time (so other work's share
of the CPU is out); the coefficient of variation of that rate over windows of 1, 2, 3, 5 and 10 s.
On a VM it is the host's noise (its other tenants, SMT siblings, caches), the floor under any
search's repeatability on this machine. Run alone (flock /tmp/offload-host.lock ...):
    python3 benchmarks/cpu_noise.py [--seconds 60] [--cpu 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

SPAN = 8 << 20
STRIDE = 4096 * 16       # 128 lines a pass, in the same cache sets: mostly the interpreter's work


def windows(seconds: int, cpu: int) -> list[tuple[int, float]]:
    """(loops, CPU seconds) per 1 s window."""
    os.sched_setaffinity(0, {cpu})
    buf = bytearray(SPAN)
    out = []
    for _ in range(seconds):
        t0, c0, n = time.monotonic(), time.thread_time(), 0
        while time.monotonic() - t0 < 1.0:
            for i in range(0, SPAN, STRIDE):
                buf[i] = (buf[i] + 1) & 255
            n += 1
        out.append((n, time.thread_time() - c0))
    return out


def cv_over(ws: list[tuple[int, float]], k: int) -> float | None:
    """The CV of the rate per CPU-second over consecutive windows of k seconds (pure)."""
    rates = [sum(n for n, _ in ws[i:i + k]) / sum(c for _, c in ws[i:i + k]) for i in range(0, len(ws) - k + 1, k)]
    return round(statistics.stdev(rates) / statistics.mean(rates), 4) if len(rates) > 1 else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--cpu", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    ws = windows(args.seconds, args.cpu)
    doc = {"seconds": args.seconds, "cpu": args.cpu, "load_before": load0, "load_after": os.getloadavg()[0],
           "cv_by_window_s": {k: cv_over(ws, k) for k in (1, 2, 3, 5, 10)}}
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"load average {load0:.2f} before, {doc['load_after']:.2f} after; CPU {args.cpu}, {args.seconds} s")
        for k, cv in doc["cv_by_window_s"].items():
            print(f"windows of {k:>2} s: CV {cv * 100:.2f}%" if cv is not None else f"windows of {k:>2} s: too few")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
