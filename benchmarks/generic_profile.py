#!/usr/bin/env python3
"""Where a generic-mode frame's CPU time goes, against native: `perf record -a -e cpu-clock`
while `offload bench` runs, the samples of its process (the generator thread; the veth's NAPI
runs in its softirq on the same CPU) and of ksoftirqd (where NAPI goes when softirqs are busy),
kernel symbols grouped by stage, in ns per received frame. Needs perf (software events are
enough; this VM has no hardware counters).

With `--receivers R1,R2,...` it compares receive programs instead, all in generic mode under the
same live-frames generator on one lab (benchmarks/generic_gap.py's: `count_drop`, `bare_drop`, a
bare `return XDP_DROP`, and `xdp-bench` drop where xdp-bench is on PATH), `--rounds` times each,
alternating: the samples of this process (the generator thread and the NAPI in its softirq) and
of ksoftirqd, by stage and, for the receive program and its maps, by symbol. Run as root:
    .venv/bin/python benchmarks/generic_profile.py [--seconds 3] [--markdown]
    .venv/bin/python benchmarks/generic_profile.py --receivers count_drop,xdp-bench,bare_drop [--rounds 2] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from offload import lab  # noqa: E402

OFFLOAD = str(Path(sys.executable).parent / "offload")
# First match wins; the order matters (GRO and the stack's `*_skb` functions before skb handling).
STAGES = [
    ("program under test (count_drop)", r"^bpf_prog_\w+_count_drop$"),
    ("generator (BPF_PROG_RUN live frames, redirect)", r"^(xdp_test_run|xdp_do_redirect|bq_|dev_xdp_enqueue|"
                                                       r"bpf_prog_\w+_live_frames|bpf_xdp_redirect|dev_get_by_index|"
                                                       r"bpf_dispatcher_xdp|page_pool_alloc|page_pool_refill|"
                                                       r"xdp_update_frame|bpf_test_run)"),
    ("GRO", r"gro"),
    ("generic XDP hook", r"(generic_xdp|do_xdp_generic)"),
    ("stack receive path", r"(netif_receive|eth_type_trans|skb_defer_rx_timestamp|__list_add|__list_del)"),
    ("skb built from the frame, and freed", r"(skb|slab|kmem_cache|napi_pp_put_page|kfree)"),
    ("veth ring, NAPI, frame return", r"(veth_|napi|net_rx_action|softirq|xdp_return|__xdp_return|page_pool_put|"
                                      r"ptr_ring)"),
    ("locks, RCU", r"(spin|rcu|queued)"),
]


# The receive program's own cost: its JITed code and the map look-ups it calls (a per-CPU hash's
# are helper calls: hashing, the bucket walk, the key compare; an array's the verifier inlines).
RECEIVER = r"^(bpf_prog_\w+_(count_drop|bare_drop|xdp_basic_prog)|lookup_nulls_elem_raw|htab_map_hash|__htab_map_\w+|" \
           r"htab_percpu\w*|memcmp|percpu_array\w*|array_map\w*)$"


def stage_of(sym: str) -> str:
    return next((name for name, rx in STAGES if re.search(rx, sym)), "other")


def profile(tx: str, rx: str, ns: str, mode: str, seconds: float, tmp: Path) -> dict:
    proc = subprocess.Popen([OFFLOAD, "bench", "--tx", tx, "--rx", rx, "--netns", ns, "--modes", mode,
                             "--duration", str(seconds + 2), "--warmup", "1", "--repeat", "1", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(1.8)   # attached, generator warm
    data = tmp / f"{mode}.data"
    record(data, seconds)
    doc = json.loads(proc.communicate(timeout=120)[0])
    samples: dict[str, int] = {}
    for sym, n in symbols(data, proc.pid).items():
        st = sym if sym == "user space (Python)" else stage_of(sym)
        samples[st] = samples.get(st, 0) + n
    frames = doc["results"][0]["rx_pps"] * seconds
    return {"mode": mode, "rx_pps": doc["results"][0]["rx_pps"], "samples": sum(samples.values()),
            "ns_per_frame": {k: round(v * NS_PER_SAMPLE / frames, 1) for k, v in samples.items()}}


NS_PER_SAMPLE = 1e9 / 4000


def record(data: Path, seconds: float) -> None:
    """cpu-clock samples at 4 kHz of every CPU: the NAPI may run in ksoftirqd rather than in the
    generator thread's softirq."""
    subprocess.run(["perf", "record", "-q", "-a", "-e", "cpu-clock", "-F", "4000", "-o", str(data),
                    "sleep", str(seconds)], check=True, capture_output=True)


def symbols(data: Path, pid: int) -> dict[str, int]:
    """Kernel and JIT symbols' samples of process `pid` (all its threads) and of ksoftirqd."""
    ksoftirqd = ",".join(f"ksoftirqd/{c}" for c in range(os.cpu_count() or 1))
    out: dict[str, int] = {}
    for filt in (["--pid", str(pid)], ["--comm", ksoftirqd]):
        rep = subprocess.run(["perf", "report", "-i", str(data), *filt, "--no-children", "--sort", "sym",
                              "--stdio", "-F", "sample,sym"], capture_output=True, text=True).stdout
        for ln in rep.splitlines():
            m = re.match(r"^\s+(\d+)\s+\[([k.])\]\s+(\S+)", ln)
            if m:
                key = m[3] if m[2] == "k" else "user space (Python)"
                out[key] = out.get(key, 0) + int(m[1])
    return out


def profile_receiver(recv: str, made, bare: Path, seconds: float, tmp: Path) -> dict:
    """One receiver in generic mode under the live-frames generator: ns of CPU per received
    frame by stage (the receive program and its maps first), and the receiver's symbols."""
    from generic_gap import Generator, Receiver, rx_packets

    tx, rx = made.pairs[0].a, made.pairs[0].b
    idx = socket.if_nametoindex(rx)
    data = tmp / f"{recv}.data"
    with Receiver(recv, rx, made.netns, bare, "generic"), Generator("live-frames", tx, rx, made.netns):
        time.sleep(1.0)   # attached, generator warm
        c0 = rx_packets(idx)
        record(data, seconds)
        frames = rx_packets(idx) - c0
    syms = symbols(data, os.getpid())
    stages: dict[str, float] = {}
    own: dict[str, float] = {}
    for sym, n in syms.items():
        ns = n * NS_PER_SAMPLE / frames
        st = "receive program and its maps" if re.search(RECEIVER, sym) else stage_of(sym)
        stages[st] = stages.get(st, 0.0) + ns
        if st == "receive program and its maps":
            own[sym] = round(ns, 2)
    return {"receiver": recv, "rx_pps": round(frames / seconds), "frames": frames,
            "ns_per_frame": {k: round(v, 1) for k, v in stages.items()}, "receiver_symbols": own}


def receivers_main(args) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from generic_gap import BARE_DROP, libxdp_dir_removed

    from offload.kernel import genl, netns

    wanted = args.receivers.split(",")
    if "xdp-bench" in wanted and not shutil.which("xdp-bench"):
        print("xdp-bench is not on PATH (xdp-tools v1.6.3 built from source: its xdp-bench/ directory)",
              file=sys.stderr)
        return 4
    name = f"gr{os.getpid() % 100000}"
    load0 = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {r: [] for r in wanted}
    with tempfile.TemporaryDirectory() as tmp:
        src, bare = Path(tmp) / "bare_drop.c", Path(tmp) / "bare_drop.o"
        src.write_text(BARE_DROP)
        subprocess.run(["clang", "-O2", "-g", "-target", "bpf", f"-I/usr/include/{os.uname().machine}-linux-gnu",
                        "-c", str(src), "-o", str(bare)], check=True)
        made = lab.up(name, pairs=1)
        try:
            with libxdp_dir_removed(), netns.inside(made.netns):
                with genl.Ethtool() as e:   # a veth takes redirected frames without a native program only so
                    e.set_features(socket.if_nametoindex(made.pairs[0].b), {"rx-gro": True})
                for _ in range(args.rounds):
                    for r in wanted:
                        runs[r].append(profile_receiver(r, made, bare, args.seconds, Path(tmp)))
        finally:
            lab.down(name)
    doc = {"receivers": runs, "seconds": args.seconds, "rounds": args.rounds,
           "load_before": load0, "load_after": os.getloadavg()[0]}
    if not args.markdown:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"load average {load0:.2f} before, {doc['load_after']:.2f} after; generic mode, live-frames generator "
          f"(60-byte frames, one thread), {args.rounds} alternating rounds of {args.seconds:g} s of cpu-clock "
          "samples at 4 kHz per receiver; ns of CPU per received frame, mean of the rounds.\n")
    mean = {r: _mean_stages([x["ns_per_frame"] for x in v]) for r, v in runs.items()}
    stages = ["receive program and its maps"] + [n for n, _ in STAGES[1:]] + ["other", "user space (Python)"]
    print("| stage | " + " | ".join(wanted) + " |")
    print("| --- |" + " ---: |" * len(wanted))
    for st in stages:
        if any(mean[r].get(st) for r in wanted):
            print(f"| {st} | " + " | ".join(f"{mean[r].get(st, 0.0):.1f}" for r in wanted) + " |")
    print("| **total** | " + " | ".join(f"**{sum(mean[r].values()):.1f}**" for r in wanted) + " |")
    print("| rx rate per round | " + " | ".join(", ".join(f"{x['rx_pps'] / 1e6:.2f}M" for x in runs[r])
                                               for r in wanted) + " |")
    own = {r: _mean_stages([x["receiver_symbols"] for x in v]) for r, v in runs.items()}
    print("\nThe receive program's own symbols, ns per frame:\n")
    for r in wanted:
        print(f"- {r}: " + (", ".join(f"`{k}` {v:.1f}" for k, v in sorted(own[r].items(), key=lambda kv: -kv[1]))
                            or "none sampled"))
    return 0


def _mean_stages(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for r in rows for k in r}
    return {k: sum(r.get(k, 0.0) for r in rows) / len(rows) for k in keys}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--receivers", help="compare these receive programs in generic mode (count_drop, bare_drop, "
                                        "xdp-bench) instead of native against generic")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per receiver (--receivers)")
    args = ap.parse_args()
    if not shutil.which("perf"):
        print("perf is not installed here (linux-perf): nothing to measure with", file=sys.stderr)
        return 4
    if args.receivers:
        return receivers_main(args)
    name = f"gp{os.getpid() % 100000}"
    made = lab.up(name, pairs=1)
    load0 = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            res = [profile(made.pairs[0].a, made.pairs[0].b, made.netns, m, args.seconds, Path(tmp))
                   for m in ("native", "generic")]
    finally:
        lab.down(name)
    if not args.markdown:
        print(json.dumps({"results": res, "load_before": load0, "load_after": os.getloadavg()[0]}, indent=2))
        return 0
    print(f"load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after; {args.seconds:g} s of "
          "cpu-clock samples at 4 kHz per mode, 60-byte frames, one generator thread.\n")
    stages = [n for n, _ in STAGES] + ["other", "user space (Python)"]
    print("| stage | native ns/frame | generic ns/frame |")
    print("| --- | ---: | ---: |")
    for st in stages:
        v = [r["ns_per_frame"].get(st, 0.0) for r in res]
        if any(v):
            print(f"| {st} | {v[0]:.1f} | {v[1]:.1f} |")
    tot = [sum(r["ns_per_frame"].values()) for r in res]
    print(f"| **total** | **{tot[0]:.1f}** | **{tot[1]:.1f}** |")
    print(f"| rx rate in the same run | {res[0]['rx_pps'] / 1e6:.2f} Mpps | {res[1]['rx_pps'] / 1e6:.2f} Mpps |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
