#!/usr/bin/env python3
"""Where a generic-mode frame's CPU time goes, against native: `perf record -a -e cpu-clock`
while `offload bench` runs, the samples of its process (the generator thread; the veth's NAPI
runs in its softirq on the same CPU) and of ksoftirqd (where NAPI goes when softirqs are busy),
kernel symbols grouped by stage, in ns per received frame. Needs perf (software events are
enough; this VM has no hardware counters). Run as root:
    .venv/bin/python benchmarks/generic_profile.py [--seconds 3] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
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


def stage_of(sym: str) -> str:
    return next((name for name, rx in STAGES if re.search(rx, sym)), "other")


def profile(tx: str, rx: str, ns: str, mode: str, seconds: float, tmp: Path) -> dict:
    proc = subprocess.Popen([OFFLOAD, "bench", "--tx", tx, "--rx", rx, "--netns", ns, "--modes", mode,
                             "--duration", str(seconds + 2), "--warmup", "1", "--repeat", "1", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(1.8)   # attached, generator warm
    data = tmp / f"{mode}.data"
    # Every CPU: the NAPI may run in ksoftirqd rather than in the generator thread's softirq.
    subprocess.run(["perf", "record", "-q", "-a", "-e", "cpu-clock", "-F", "4000", "-o", str(data),
                    "sleep", str(seconds)], check=True, capture_output=True)
    doc = json.loads(proc.communicate(timeout=120)[0])
    ksoftirqd = ",".join(f"ksoftirqd/{c}" for c in range(os.cpu_count() or 1))
    samples: dict[str, int] = {}
    for filt in (["--pid", str(proc.pid)], ["--comm", ksoftirqd]):
        rep = subprocess.run(["perf", "report", "-i", str(data), *filt, "--no-children", "--sort", "sym",
                              "--stdio", "-F", "sample,sym"], capture_output=True, text=True).stdout
        for ln in rep.splitlines():
            m = re.match(r"^\s+(\d+)\s+\[[k.]\]\s+(\S+)", ln)
            if m:
                st = stage_of(m[2]) if "[k]" in ln else "user space (Python)"
                samples[st] = samples.get(st, 0) + int(m[1])
    frames = doc["results"][0]["rx_pps"] * seconds
    ns_per_sample = 1e9 / 4000
    return {"mode": mode, "rx_pps": doc["results"][0]["rx_pps"], "samples": sum(samples.values()),
            "ns_per_frame": {k: round(v * ns_per_sample / frames, 1) for k, v in samples.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    if not shutil.which("perf"):
        print("perf is not installed here (linux-perf): nothing to measure with", file=sys.stderr)
        return 4
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
