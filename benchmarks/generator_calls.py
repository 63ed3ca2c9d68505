#!/usr/bin/env python3
"""What a live-frames call costs beside its frames, and what the call's length does to the rate.

Both offload's generator and xdp-trafficgen send with BPF_PROG_RUN in live-frames mode
(BPF_F_TEST_XDP_LIVE_FRAMES, batches of 64), redirecting every frame out of the tx veth; they
differ in how many frames one call asks for. Every call sets up and tears down the kernel's
test-run state (a page pool among it). Is that a fixed cost, or does the loss lie elsewhere?

1. the fixed cost: the wall time of `--calls` calls of one frame each, from a thread pinned to
   CPU 0, with the receiver attached (median and 90th percentile);
2. the rate against the call's length: offload's generator flat out with calls sized to take each
   of `--call-seconds`, and xdp-trafficgen (a fixed 1<<20 frames a call) when `--xdp-tools DIR`
   names a built xdp-tools, all into the same receiver (offload's count_drop, in each of
   `--modes`), one generator thread on CPU 0, on one veth pair of a lab of its own, `--rounds`
   rounds with the generators alternating; the rate is the rx veth's stats64 rx_packets over the
   window. The calls per second times the fixed cost is the share of time it explains.
Run as root, alone on the machine (flock /tmp/offload-host.lock ...):
    .venv/bin/python benchmarks/generator_calls.py [--xdp-tools /tmp/xdp-tools] [--modes generic,native]
        [--call-seconds 0.25,1,2] [--duration 5] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from generic_gap import Receiver, mac  # noqa: E402
from xdp_tools_peer import WARMUP_S, libxdp_dir_removed, missing_peer, trafficgen, window  # noqa: E402

from offload import lab  # noqa: E402
from offload.bench.frames import udp_frame  # noqa: E402
from offload.bench.generators import live_frames as livegen  # noqa: E402
from offload.kernel import bpfsys, genl, netns  # noqa: E402
from offload.load import programs  # noqa: E402

TRAFFICGEN_CALL = 1 << 20   # xdp-trafficgen's frames per call (its run_prog(): repeat = 1 << 20)


def _frame(tx: str, rx: str) -> bytes:
    return udp_frame(60, bytes.fromhex(mac(tx).replace(":", "")), bytes.fromhex(mac(rx).replace(":", "")))


def _generator(tx: str, rx: str, call_seconds: float = livegen.CALL_SECONDS) -> livegen.LiveFrames:
    return livegen.LiveFrames(socket.if_nametoindex(tx), _frame(tx, rx), [0],
                              str(programs.generator_object("live_frames")), call_seconds=call_seconds)


def call_cost(tx: str, rx: str, calls: int) -> list[float]:
    """Wall seconds of `calls` one-frame live-frames calls, from this thread pinned to CPU 0."""
    gen = _generator(tx, rx)
    frame, was = _frame(tx, rx), os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {0})
        took = []
        for _ in range(calls):
            t0 = time.perf_counter()
            bpfsys.prog_test_run(gen.fd, frame, repeat=1, flags=livegen.BPF_F_TEST_XDP_LIVE_FRAMES,
                                 batch_size=64, out_size=0)
            took.append(time.perf_counter() - t0)
        return took
    finally:
        os.sched_setaffinity(0, was)
        gen.close()


def live_rate(tx: str, rx: str, call_seconds: float, duration: float) -> tuple[float, float, float]:
    """offload's generator flat out: (rx frames/s, calls/s, median frames per call) in the window."""
    gen = _generator(tx, rx, call_seconds)
    try:
        gen.start()
        time.sleep(WARMUP_S)
        t0 = time.monotonic()
        rate = window(socket.if_nametoindex(rx), duration)
        t1 = time.monotonic()
    finally:
        gen.close()
    s = gen.threads[0].samples
    inside = [i for i in range(1, len(s)) if t0 <= s[i][0] <= t1]
    sizes = [s[i][1] - s[i - 1][1] for i in inside]
    return rate, len(inside) / (t1 - t0), statistics.median(sizes) if sizes else 0.0


def measure_mode(mode: str, made: lab.Lab, args: argparse.Namespace) -> dict:
    tx, rx, ns = made.pairs[0].a, made.pairs[0].b, made.netns
    names = [f"live-frames {c:g} s" for c in args.call_seconds] + (["xdp-trafficgen"] if args.xdp_tools else [])
    rates: dict[str, list[float]] = {n: [] for n in names}
    calls: dict[str, list[float]] = {n: [] for n in names}
    per_call: dict[str, list[float]] = {n: [] for n in names}
    with Receiver("count_drop", rx, ns, None, mode):
        cost = call_cost(tx, rx, args.calls)
        for r in range(args.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):   # alternating: drift hits all alike
                if name == "xdp-trafficgen":
                    with trafficgen(args.xdp_tools, tx, rx, ns, 1):
                        rate = window(socket.if_nametoindex(rx), args.duration)
                    n, size = rate / TRAFFICGEN_CALL, TRAFFICGEN_CALL
                else:
                    rate, n, size = live_rate(tx, rx, float(name.split()[1]), args.duration)
                rates[name].append(rate)
                calls[name].append(n)
                per_call[name].append(size)
    cost_s = statistics.median(cost)
    base = statistics.median(rates[names[0]])
    rows = [{"generator": n, "rx_pps": [round(x) for x in rates[n]], "rx_pps_median": round(statistics.median(rates[n])),
             "calls_per_s": round(statistics.median(calls[n]), 2), "frames_per_call": round(statistics.median(per_call[n])),
             "fixed_cost_share": round(statistics.median(calls[n]) * cost_s, 4),
             "vs_first": round(statistics.median(rates[n]) / base, 3)} for n in names]
    return {"mode": mode, "call_cost_ms": {"median": round(cost_s * 1e3, 3),
                                           "p90": round(statistics.quantiles(cost, n=10)[-1] * 1e3, 3),
                                           "calls": len(cost)}, "rows": rows}


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt   # SIGTERM unwinds like Ctrl-C: generators stopped, lab removed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--xdp-tools", type=Path, help="a built xdp-tools v1.6.3 tree: xdp-trafficgen beside")
    ap.add_argument("--modes", default="generic,native")
    ap.add_argument("--call-seconds", default="0.25,1,2", type=lambda v: [float(x) for x in v.split(",")])
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.xdp_tools and (why := missing_peer(args.xdp_tools)):
        print(f"xdp-trafficgen left out: {why}", file=sys.stderr)
        args.xdp_tools = None
    signal.signal(signal.SIGTERM, _interrupt)
    load0 = os.getloadavg()[0]
    out = []
    with libxdp_dir_removed(), lab.temporary("gcall", pairs=1) as made, netns.inside(made.netns):
        with genl.Ethtool() as eth:   # a veth takes redirected frames under a generic program only so
            eth.set_features(socket.if_nametoindex(made.pairs[0].b), {"rx-gro": True})
        out = [measure_mode(m, made, args) for m in args.modes.split(",")]
    doc = {"kernel": os.uname().release, "loadavg_before": load0, "loadavg_after": os.getloadavg()[0],
           "duration_s": args.duration, "rounds": args.rounds, "modes": out}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"Linux {doc['kernel']}; load average {load0:.2f} before, {doc['loadavg_after']:.2f} after; "
          f"{args.rounds} alternating rounds of {args.duration:g} s, 60-byte frames, one thread on CPU 0\n")
    for m in out:
        c = m["call_cost_ms"]
        print(f"{m['mode']}: a one-frame call takes {c['median']:.2f} ms (median of {c['calls']}; "
              f"p90 {c['p90']:.2f} ms)\n")
        print("| generator | frames a call | calls/s | share of time in the fixed cost | rx Mpps (rounds) | "
              f"vs {m['rows'][0]['generator']} |")
        print("| --- | ---: | ---: | ---: | --- | ---: |")
        for r in m["rows"]:
            print(f"| {r['generator']} | {r['frames_per_call']:,} | {r['calls_per_s']:.2f} | "
                  f"{100 * r['fixed_cost_share']:.1f}% | {', '.join(f'{x / 1e6:.2f}' for x in r['rx_pps'])} | "
                  f"{r['vs_first']:.3f} |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
