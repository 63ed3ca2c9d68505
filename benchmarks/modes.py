#!/usr/bin/env python3
"""Every XDP mode side by side on a veth lab, the harness against the raw kernel mechanism.

In one run: (1) the raw mechanism — a bare live-frames BPF_PROG_RUN loop redirecting into the tx
veth, `count_drop` attached with bcc on the rx veth, its counter read before and after; (2)
`offload bench` on the same lab with the same generator, frame and duration. Prints the table
for docs/benchmarks.md (--markdown) or JSON. Run as root:
    .venv/bin/python benchmarks/modes.py [--duration 5] [--repeat 3] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from offload import lab  # noqa: E402
from offload.bench import harness as bench  # noqa: E402
from offload.bench.frames import udp_frame  # noqa: E402
from offload.bench.generators import live_frames as livegen  # noqa: E402
from offload.kernel import genl, netns, xdp  # noqa: E402
from offload.kernel.bpfobj import BpfObject  # noqa: E402
from offload.load import programs, stats  # noqa: E402

OFFLOAD = str(Path(sys.executable).parent / "offload")


def raw_rate(tx: str, rx: str, mode: str, duration: float, warmup: float) -> float:
    """The library's count_drop object loaded by libbpf and set on rx through rtnetlink, live frames
    into tx, counter delta over the window: the mechanism without offload's harness."""
    obj = BpfObject(str(programs.library_object("count_drop")))
    obj.select("count_drop")
    obj.load()
    rx_idx = socket.if_nametoindex(rx)
    if mode == "generic":
        with genl.Ethtool() as e:
            e.set_features(rx_idx, {"rx-gro": True})
    xdp.set_prog(rx_idx, obj.prog_fd("count_drop"), mode)
    try:
        frame = udp_frame(60, b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02")
        gen = livegen.LiveFrames(socket.if_nametoindex(tx), frame, [0],
                                 str(programs.generator_object("live_frames")))
        fds = obj.map_fds()

        def dropped() -> int:
            return stats.counters(fds["xdp_stats"], rx_idx, fds.get(stats.FAST_MAP))[0]["drop"]
        gen.start()
        time.sleep(warmup)
        t0, c0 = time.monotonic(), dropped()
        time.sleep(duration)
        t1, c1 = time.monotonic(), dropped()
        gen.close()
        return (c1 - c0) / (t1 - t0)
    finally:
        xdp.clear_prog(rx_idx, mode)
        obj.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()

    name = f"mb{os.getpid() % 10000}"
    made = lab.up(name, pairs=1)
    tx, rx = made.pairs[0].a, made.pairs[0].b
    try:
        raw = {}
        with netns.inside(made.netns):
            for mode in ("native", "generic"):
                raw[mode] = statistics.median(raw_rate(tx, rx, mode, args.duration, args.warmup)
                                              for _ in range(args.repeat))
        res = subprocess.run([OFFLOAD, "bench", "--tx", tx, "--rx", rx, "--netns", made.netns, "--modes",
                              "native,generic", "--generator", "live-frames", "--duration", str(args.duration),
                              "--warmup", str(args.warmup), "--repeat", str(args.repeat), "--json"],
                             capture_output=True, text=True, check=True)
        doc = json.loads(res.stdout)
    finally:
        lab.down(name)
    rows = []
    for r in doc["results"]:
        runs = r["runs"]
        rows.append({
            "mode": r["mode"], "harness_rx_pps": r["rx_pps"], "raw_rx_pps": round(raw[r["mode"]]),
            "harness_over_raw": round(r["rx_pps"] / raw[r["mode"]], 3),
            "accounting_max_diff": max(run["accounting_diff"] or 0 for run in runs),
            "harness_cpu_pct_max": max(run["harness_cpu_pct"] for run in runs),
            "rx_pps_spread": r["rx_pps_spread"],
        })
    by = {row["mode"]: row for row in rows}
    summary = {"rows": rows, "native_over_generic": round(by["native"]["harness_rx_pps"] / by["generic"]["harness_rx_pps"], 2),
               "host": bench.host_info(), "duration": args.duration, "repeat": args.repeat}
    if not args.markdown:
        print(json.dumps(summary, indent=2))
        return 0
    h = summary["host"]
    print(f"Machine: {h['cpus']} vCPU, {h['cpu_model']}, Linux {h['kernel']}, Python {h['python']}; "
          f"{args.repeat} runs of {args.duration:g} s per mode, 60-byte frames, one generator thread.\n")
    print("| mode | offload bench rx pps (median) | spread (min-max) | raw mechanism rx pps | bench / raw | "
          "max accounting diff (counters vs stats64) | harness CPU (max) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        lo, hi = r["rx_pps_spread"]
        print(f"| {r['mode']} | {r['harness_rx_pps']:,} | {lo:,}-{hi:,} | {r['raw_rx_pps']:,} | "
              f"{r['harness_over_raw']:.3f} | {r['accounting_max_diff']:.3%} | {r['harness_cpu_pct_max']:.2f}% |")
    print(f"\nnative / generic: {summary['native_over_generic']}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
