#!/usr/bin/env python3
"""Multi-queue scaling: `offload bench --lab --threads 2` against `--threads 1`, in one run.

Alternates single runs of `offload bench --lab --modes M --threads 1` and `--threads 2` (each
builds its own lab: 1 queue, resp. 2 queues per veth), `--repeat` rounds, and, for contrast,
`--threads 2` on a lab of single-queue veths (both generators into one rx ring). Prints the
medians, the 2-thread/1-thread ratio of the received rate, and the loss (the tx veth's
xdp_xmit_errors over what it was handed). Run as root:
    .venv/bin/python benchmarks/scaling.py [--modes native] [--duration 3] [--repeat 3] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from offload import lab  # noqa: E402
from offload.bench import harness as bench  # noqa: E402

OFFLOAD = str(Path(sys.executable).parent / "offload")


def one(args: argparse.Namespace, mode: str, where: list[str], threads: int) -> dict:
    res = subprocess.run([OFFLOAD, "bench", *where, "--modes", mode, "--threads", str(threads), "--duration",
                          str(args.duration), "--warmup", str(args.warmup), "--repeat", "1", "--json"],
                         capture_output=True, text=True, check=True)
    (r,) = json.loads(res.stdout)["results"]
    (run,) = r["runs"]
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="native,generic")
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    name = f"sc{os.getpid() % 100000}"
    shared = lab.up(name, pairs=1)          # single-queue veths, for the contrast
    one_q = ["--tx", shared.pairs[0].a, "--rx", shared.pairs[0].b, "--netns", shared.netns]
    cases = [("1 thread, 1 queue", ["--lab"], 1), ("2 threads, 2 queues", ["--lab"], 2),
             ("2 threads, 1 shared queue", one_q, 2)]
    runs: dict[tuple[str, str], list[dict]] = {}
    try:
        for _ in range(args.repeat):
            for mode in args.modes.split(","):
                for label, where, threads in cases:
                    runs.setdefault((mode, label), []).append(one(args, mode, where, threads))
    finally:
        lab.down(name)
    rows = []
    for (mode, label), rs in runs.items():
        rows.append({"mode": mode, "case": label, "rx_pps": round(statistics.median(r["rx_pps"] for r in rs)),
                     "rx_pps_runs": [r["rx_pps"] for r in rs],
                     "loss_ratio": statistics.median(r["loss_ratio"] for r in rs),
                     "loss_ratio_max": max(r["loss_ratio"] for r in rs),
                     "tx_minus_rx_ratio_max": max(r["tx_minus_rx_ratio"] for r in rs),
                     "rx_queue_packets": rs[-1]["rx_queue_packets"], "rx_cpus": rs[-1]["rx_cpus"]})
    by = {(r["mode"], r["case"]): r for r in rows}
    ratios = {m: round(by[(m, "2 threads, 2 queues")]["rx_pps"] / by[(m, "1 thread, 1 queue")]["rx_pps"], 2)
              for m in args.modes.split(",")}
    doc = {"rows": rows, "scaling": ratios, "host": bench.host_info(), "load_before": load0,
           "load_after": os.getloadavg()[0], "duration": args.duration, "repeat": args.repeat}
    if not args.markdown:
        print(json.dumps(doc, indent=2))
        return 0
    h = doc["host"]
    print(f"Machine: {h['cpus']} vCPU, {h['cpu_model']}, Linux {h['kernel']}; load average {load0:.2f} before, "
          f"{doc['load_after']:.2f} after; {args.repeat} alternating rounds of {args.duration:g} s runs, "
          "60-byte frames, live-frames generator.\n")
    print("| mode | case | rx pps (median) | runs | loss_ratio (median, max) | tx-rx (max) | vs 1 thread |")
    print("| --- | --- | ---: | --- | ---: | ---: | ---: |")
    for r in rows:
        base = by[(r["mode"], "1 thread, 1 queue")]["rx_pps"]
        print(f"| {r['mode']} | {r['case']} | {r['rx_pps']:,} | "
              f"{', '.join(f'{x / 1e6:.2f}M' for x in r['rx_pps_runs'])} | "
              f"{r['loss_ratio']:.2%}, {r['loss_ratio_max']:.2%} | {r['tx_minus_rx_ratio_max']:.2%} | "
              f"{r['rx_pps'] / base:.2f}x |")
    print("\n2 threads / 1 thread: " + ", ".join(f"{m} {v:.2f}x" for m, v in ratios.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
