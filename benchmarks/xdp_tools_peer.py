#!/usr/bin/env python3
"""`offload bench` side by side with xdp-tools (xdp-trafficgen into xdp-bench drop), when present.

The peer: xdp-tools built from source with its bundled libbpf (Debian 12's 1.3.1 binaries fail
on recent kernels: xdp-trafficgen looks for a tracepoint that is gone), e.g.
    git clone --branch v1.6.3 https://github.com/xdp-project/xdp-tools /tmp/xdp-tools
    make -C /tmp/xdp-tools FORCE_SUBDIR_LIBBPF=1
then `--xdp-tools /tmp/xdp-tools` (its xdp-bench/ and xdp-trafficgen/ directories are used).
Per mode and thread count, `--rounds` interleaved rounds on the same veth lab shape (N queues
for N threads): the peer's pair measured by the rx veth's stats64 rx_packets over the window,
then `offload bench --repeat 1` (its rx_pps: the program's count, which equals stats64 on a
veth). Prints the ratio offload/peer per case (median of the rounds). Run as root:
    .venv/bin/python benchmarks/xdp_tools_peer.py --xdp-tools DIR [--duration 5] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from generic_gap import mac, rx_packets  # noqa: E402

from offload import lab  # noqa: E402
from offload.kernel import xdp  # noqa: E402

OFFLOAD = str(Path(sys.executable).parent / "offload")
CASES = (("native", 1), ("native", 2), ("generic", 1))


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def peer_rate(tools: Path, tx: str, rx: str, ns: str, mode: str, threads: int, duration: float) -> float:
    """xdp-bench drop on rx, xdp-trafficgen udp from tx with `threads` threads: rx frames/s."""
    enter = ["nsenter", f"--net=/run/netns/{ns}"]
    bench = subprocess.Popen([*enter, str(tools / "xdp-bench" / "xdp-bench"), "drop", "-m",
                              "skb" if mode == "generic" else "native", "-i", "60", rx],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        idx = socket.if_nametoindex(rx)
        deadline = time.monotonic() + 10
        while not xdp.attached_progs(idx) and time.monotonic() < deadline and bench.poll() is None:
            time.sleep(0.05)
        if not xdp.attached_progs(idx):   # never measure the bare stack under the peer's name
            raise RuntimeError("xdp-bench attached nothing: " + bench.stderr.read1(2000).decode(errors="replace"))
        gen = subprocess.Popen([*enter, str(tools / "xdp-trafficgen" / "xdp-trafficgen"), "udp", "-t", str(threads),
                                "-m", mac(rx), "-M", mac(tx), tx], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            time.sleep(1.0)    # warm-up, as offload bench's
            t0, c0 = time.monotonic(), rx_packets(idx)
            time.sleep(duration)
            t1, c1 = time.monotonic(), rx_packets(idx)
        finally:
            _stop(gen)
    finally:
        _stop(bench)
    return (c1 - c0) / (t1 - t0)


def offload_rate(tx: str, rx: str, ns: str, mode: str, threads: int, duration: float) -> float:
    res = subprocess.run([OFFLOAD, "bench", "--tx", tx, "--rx", rx, "--netns", ns, "--modes", mode, "--threads",
                          str(threads), "--duration", str(duration), "--warmup", "1", "--repeat", "1", "--json"],
                         capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"offload bench failed ({res.returncode}): {res.stderr or res.stdout}")
    return json.loads(res.stdout)["results"][0]["rx_pps"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--xdp-tools", required=True, type=Path, help="an xdp-tools source tree, built")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    for tool in ("xdp-bench", "xdp-trafficgen"):
        if not os.access(args.xdp_tools / tool / tool, os.X_OK):
            print(f"no peer: {args.xdp_tools / tool / tool} is not an executable (build xdp-tools first)",
                  file=sys.stderr)
            return 2
    load_before = os.getloadavg()
    out = []
    for mode, threads in CASES:
        with lab.temporary("peer", pairs=1, mtu=1500, queues=threads) as made:
            tx, rx, ns = made.pairs[0].a, made.pairs[0].b, made.netns
            peer, ours = [], []
            for _ in range(args.rounds):   # interleaved: a drift of the machine's load hits both
                peer.append(peer_rate(args.xdp_tools, tx, rx, ns, mode, threads, args.duration))
                ours.append(offload_rate(tx, rx, ns, mode, threads, args.duration))
        out.append({"mode": mode, "threads": threads, "peer_pps": [round(p) for p in peer],
                    "offload_pps": [round(o) for o in ours],
                    "ratio": round(statistics.median(ours) / statistics.median(peer), 3)})
    doc = {"loadavg_before": load_before, "loadavg_after": os.getloadavg(), "duration_s": args.duration,
           "rounds": args.rounds, "cases": out}
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"load average before {load_before[0]:.1f}, after {doc['loadavg_after'][0]:.1f}")
        for c in out:
            print(f"{c['mode']:8} {c['threads']} thread(s): offload/peer {c['ratio']:.2f}x "
                  f"(offload {c['offload_pps']}, peer {c['peer_pps']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
