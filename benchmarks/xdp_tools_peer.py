#!/usr/bin/env python3
"""`offload bench` side by side with xdp-tools (xdp-trafficgen into xdp-bench drop), when present.

The peer: xdp-tools v1.6.3 built from source with its bundled libbpf (`make FORCE_SUBDIR_LIBBPF=1`;
Debian 12's 1.3 binaries do not start on Linux 6.18: they load a tracepoint program on
`xdp_redirect_map_err`, which is gone); `--xdp-tools DIR` is that built tree (its xdp-bench/ and
xdp-trafficgen/ directories are used). Without it the script says why and exits 0 (skipped).

Per case (mode, generator threads) one veth lab of its own (one pair, MTU 1500, one queue per
thread, in its own namespace; rx-gro on in generic mode, which a veth needs to take redirected
frames when its program is not native: offload bench turns it on itself, the peer gets the same),
and `--rounds` interleaved rounds on it, the order alternating (peer, offload; offload, peer; ...)
so a drift of the machine's load hits both alike:
  - the peer: `xdp-bench drop -m native|skb` on the rx veth, `xdp-trafficgen udp -t N` from the tx
    veth (its threads on CPUs 0..N-1, as offload's);
  - offload: `offload bench --modes M --threads N --repeat 1` (live frames, count_drop).
The yardstick is the same for both: the rx veth's rtnetlink stats64 rx_packets over a window of
`--duration` after 1 s of warm-up (offload's own count, `rx_pps`, is reported beside). The ratio
per case is offload's median over the peer's median; the load average is read before and after
each case. Run as root, alone on the machine (flock /tmp/offload-host.lock ...):
    .venv/bin/python benchmarks/xdp_tools_peer.py --xdp-tools /tmp/xdp-tools [--duration 5] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from generic_gap import libxdp_dir_removed, mac, rx_packets  # noqa: E402

from offload import lab  # noqa: E402
from offload.bench import confidence, queues  # noqa: E402
from offload.kernel import genl, netns, sched, xdp  # noqa: E402

OFFLOAD = str(Path(sys.executable).parent / "offload")
CASES = (("native", 1), ("native", 2), ("generic", 1))
WARMUP_S = 1.0
PEER_MODE = {"native": "native", "generic": "skb"}   # xdp-bench's word for each mode


def order(round_no: int) -> tuple[str, str]:
    """Who goes first in a round: alternating, so neither always follows the other."""
    return ("peer", "offload") if round_no % 2 == 0 else ("offload", "peer")


@dataclass
class Round:
    """One measurement of one tool: rx stats64 frames/s, and frames per second of the CPU time
    spent on the generator's CPUs by the generator and those CPUs' ksoftirqd (where, on a veth,
    the receiver's XDP runs too); offload's own count beside."""

    pps: float
    per_cpu_s: float | None
    counted_pps: float | None = None


def ratio_with_interval(peer: list[float | None], ours: list[float | None]) -> dict:
    """offload over the peer (pure): the ratio of medians and its 95% bootstrap interval over the
    rounds' pairs (each round ran both tools next to each other), as `bench compare` judges A/B."""
    pairs = [(p, o) for p, o in zip(peer, ours) if p and o]
    if len(pairs) < 2:
        return {"ratio": None, "low": None, "high": None}
    a, b = [p for p, _ in pairs], [o for _, o in pairs]
    low, high = confidence.bootstrap_interval(a, b)
    return {"ratio": round(confidence.ratio_of_medians(a, b), 3), "low": round(low, 3), "high": round(high, 3)}


def case_result(mode: str, threads: int, peer: list[Round], ours: list[Round], load: tuple[float, float]) -> dict:
    """One case's rates (the same yardstick for both: rx stats64, and per CPU-second of the
    generator's CPUs), the ratios of medians with their intervals."""
    return {"mode": mode, "threads": threads, "peer_pps": [round(r.pps) for r in peer],
            "offload_pps": [round(r.pps) for r in ours], "offload_counted_pps": [round(r.counted_pps or 0) for r in ours],
            "peer_per_cpu_s": [round(r.per_cpu_s) if r.per_cpu_s else None for r in peer],
            "offload_per_cpu_s": [round(r.per_cpu_s) if r.per_cpu_s else None for r in ours],
            "rate": ratio_with_interval([r.pps for r in peer], [r.pps for r in ours]),
            "per_cpu_second": ratio_with_interval([r.per_cpu_s for r in peer], [r.per_cpu_s for r in ours]),
            "loadavg_before": round(load[0], 2), "loadavg_after": round(load[1], 2)}


def met(c: dict) -> str:
    """Issue #22's goal, offload at least 1.0x the peer: MET when the ratio of medians of the
    rates is 1.0 or more; `not slower` when it is below but its interval reaches 1.0."""
    r = c["rate"]
    if r["ratio"] is None:
        return "not measured"
    return "MET" if r["ratio"] >= 1.0 else "MISSED (not significantly slower)" if r["high"] >= 1.0 else "MISSED"


def missing_peer(tools: Path) -> str | None:
    for tool in ("xdp-bench", "xdp-trafficgen"):
        if not os.access(tools / tool / tool, os.X_OK):
            return f"{tools / tool / tool} is not an executable (build xdp-tools v1.6.3 there first)"
    return None


def _stop(proc: subprocess.Popen) -> None:
    """SIGINT (both tools detach and exit on it), then kill; the lab's removal clears what is left."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def xdp_bench_drop(tools: Path, rx: str, ns: str, mode: str) -> Iterator[None]:
    """`xdp-bench drop` on rx in `mode` for the block, checked attached in that mode."""
    idx = socket.if_nametoindex(rx)
    proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", str(tools / "xdp-bench" / "xdp-bench"), "drop",
                             "-m", PEER_MODE[mode], "-i", "60", rx], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while mode not in xdp.attached_progs(idx) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        if mode not in xdp.attached_progs(idx):   # never measure the bare stack under the peer's name
            _stop(proc)
            raise RuntimeError(f"xdp-bench attached nothing in {mode} mode on {rx}: "
                               + proc.stderr.read().decode(errors="replace")[-500:])
        yield
    finally:
        _stop(proc)


@contextmanager
def trafficgen(tools: Path, tx: str, rx: str, ns: str, threads: int) -> Iterator[int]:
    """`xdp-trafficgen udp -t N` from tx to rx's MAC for the block (its threads on CPUs 0..N-1),
    checked still running after the warm-up; the block gets its pid."""
    proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", str(tools / "xdp-trafficgen" / "xdp-trafficgen"),
                             "udp", "-t", str(threads), "-m", mac(rx), "-M", mac(tx), tx],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(WARMUP_S)
        if proc.poll() is not None:
            raise RuntimeError("xdp-trafficgen exited: " + proc.stderr.read().decode(errors="replace")[-500:])
        yield trafficgen_pid(proc.pid)
    finally:
        _stop(proc)


def cpu_ns(pids: list[int | None]) -> int | None:
    """The CPU time of these processes (all their threads), or None when one is unreadable."""
    times = [sched.process_cpu_ns(p) for p in pids if p is not None]
    return None if None in times else sum(t for t in times if t is not None)


def trafficgen_pid(nsenter_pid: int) -> int:
    """xdp-trafficgen's own pid: nsenter forks it as its one child."""
    with open(f"/proc/{nsenter_pid}/task/{nsenter_pid}/children") as f:
        kids = f.read().split()
    return int(kids[0]) if kids else nsenter_pid


def window(idx: int, duration: float, pids: list[int | None]) -> Round:
    """The rx device's stats64 rx_packets over `duration`: per second, and per second of `pids`'
    CPU time (offload's figure is taken the same way: its generator threads and the ksoftirqd of
    their CPUs, offload.bench.harness.cpu_rate)."""
    t0, c0, n0 = time.monotonic(), rx_packets(idx), cpu_ns(pids)
    time.sleep(duration)
    t1, c1, n1 = time.monotonic(), rx_packets(idx), cpu_ns(pids)
    return Round((c1 - c0) / (t1 - t0), queues.per_cpu_second(c1 - c0, queues.cpu_seconds(n0, n1)))


def peer_rate(tools: Path, tx: str, rx: str, ns: str, mode: str, threads: int, duration: float) -> Round:
    """xdp-bench drop on rx, xdp-trafficgen udp from tx with `threads` threads: rx frames/s, and
    per CPU-second of xdp-trafficgen and the ksoftirqd of its CPUs (0..N-1)."""
    soft = list(sched.ksoftirqd(list(range(threads))).values())
    with xdp_bench_drop(tools, rx, ns, mode), trafficgen(tools, tx, rx, ns, threads) as gen:
        return window(socket.if_nametoindex(rx), duration, [gen, *soft])


def offload_rate(tx: str, rx: str, ns: str, mode: str, threads: int, duration: float) -> Round:
    """`offload bench` on the same pair: rx stats64 frames/s, per CPU-second of its generator's
    CPUs, and the program's own count/s."""
    res = subprocess.run([OFFLOAD, "bench", "--tx", tx, "--rx", rx, "--netns", ns, "--modes", mode,
                          "--generator", "live-frames", "--threads", str(threads), "--duration", str(duration),
                          "--warmup", str(WARMUP_S), "--repeat", "1", "--json"],
                         capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"offload bench failed ({res.returncode}): {res.stderr or res.stdout}")
    (run,) = json.loads(res.stdout)["results"][0]["runs"]
    return Round(run["iface_rx_packets"] / run["window_s"],
                 queues.per_cpu_second(run["iface_rx_packets"], run["generator_cpu_s"]), run["rx_pps"])


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C: the peer's processes stopped, the lab removed."""
    raise KeyboardInterrupt


def run_case(tools: Path, mode: str, threads: int, rounds: int, duration: float) -> dict:
    load0 = os.getloadavg()[0]
    with lab.temporary("peer", pairs=1, mtu=1500, queues=threads) as made, netns.inside(made.netns):
        tx, rx, ns = made.pairs[0].a, made.pairs[0].b, made.netns
        if mode == "generic":   # as offload bench does: the veth takes redirected frames only so
            with genl.Ethtool() as eth:
                eth.set_features(socket.if_nametoindex(rx), {"rx-gro": True})
        peer: list[Round] = []
        ours: list[Round] = []
        for r in range(rounds):
            for who in order(r):
                if who == "peer":
                    peer.append(peer_rate(tools, tx, rx, ns, mode, threads, duration))
                else:
                    ours.append(offload_rate(tx, rx, ns, mode, threads, duration))
    return case_result(mode, threads, peer, ours, (load0, os.getloadavg()[0]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--xdp-tools", required=True, type=Path, help="an xdp-tools v1.6.3 source tree, built")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if why := missing_peer(args.xdp_tools):
        print(json.dumps({"skipped": why}) if args.json else f"skipped: no peer: {why}")
        return 0
    signal.signal(signal.SIGTERM, _interrupt)
    with libxdp_dir_removed():
        cases = [run_case(args.xdp_tools, m, t, args.rounds, args.duration) for m, t in CASES]
    doc = {"kernel": os.uname().release, "cpus": os.cpu_count(), "duration_s": args.duration,
           "warmup_s": WARMUP_S, "rounds": args.rounds, "cases": cases}
    doc["targets"] = {f"{c['mode']} {c['threads']}": met(c) for c in cases}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"Linux {doc['kernel']}, {doc['cpus']} CPUs; {args.rounds} interleaved rounds of {args.duration:g} s "
          f"(after {WARMUP_S:g} s warm-up); rx stats64 of the rx veth for both\n")
    print("| mode | threads | offload/peer (95% interval) | per CPU-second | offload Mpps (rounds) "
          "| peer Mpps (rounds) | load average |")
    print("| --- | ---: | --- | --- | --- | --- | --- |")
    fmt = lambda xs: ", ".join(f"{x / 1e6:.2f}" for x in xs)   # noqa: E731
    ratio = lambda r: "-" if r["ratio"] is None else f"{r['ratio']:.2f}x ({r['low']:.2f}–{r['high']:.2f})"  # noqa: E731
    for c in cases:
        print(f"| {c['mode']} | {c['threads']} | {ratio(c['rate'])} | {ratio(c['per_cpu_second'])} "
              f"| {fmt(c['offload_pps'])} | {fmt(c['peer_pps'])} | {c['loadavg_before']:.1f} → {c['loadavg_after']:.1f} |")
    print()
    for c in cases:
        print(f"target offload >= 1.0x the peer, {c['mode']} {c['threads']} thread(s): {met(c)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
