#!/usr/bin/env python3
"""Where generic mode's rate goes: generators crossed with receivers on one veth pair, in one run.

Generators: offload's live-frames generator (BPF_PROG_RUN, BPF_F_TEST_XDP_LIVE_FRAMES, calls of
~0.25 s) and xdp-tools' `xdp-trafficgen udp` (the same kernel mechanism, its own batching).
Receivers, each attached in generic (skb) mode on the rx veth with rx-gro on (a veth accepts
redirected frames only then): offload's `count_drop` (per-CPU packet and byte counters),
a bare `return XDP_DROP` (no map, no counting), `xdp-bench drop -m skb` where it attaches, and
no program at all (the skbs go up the stack and are dropped there). Every rate is the rx
veth's own stats64 rx_packets over the window, the same yardstick for all; the runs of a cell
alternate with the other cells', so drift on a shared machine hits all alike. Native mode too, for
the scale. Run as root:
    .venv/bin/python benchmarks/generic_gap.py [--duration 3] [--repeat 3] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pyroute2 import IPRoute  # noqa: E402

from offload import lab  # noqa: E402
from offload.bench import harness as bench  # noqa: E402
from offload.bench.frames import udp_frame  # noqa: E402
from offload.bench.generators import live_frames as livegen  # noqa: E402
from offload.kernel import genl, netns, xdp  # noqa: E402
from offload.kernel.bpfobj import BpfObject  # noqa: E402
from offload.load import programs  # noqa: E402

BARE_DROP = """#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int bare_drop(struct xdp_md *ctx) { return XDP_DROP; }
char _license[] SEC("license") = "GPL";
"""


LIBXDP_DIR = Path("/sys/fs/bpf/xdp")


@contextmanager
def libxdp_dir_removed() -> Iterator[None]:
    """libxdp makes /sys/fs/bpf/xdp (its lock directory) on first use and leaves it: removed after
    the block when it was not there before and is empty."""
    made = not LIBXDP_DIR.exists()
    try:
        yield
    finally:
        if made:
            try:
                LIBXDP_DIR.rmdir()
            except OSError:   # gone already, or something of another tool's is in it
                pass


def rx_packets(ifindex: int) -> int:
    with IPRoute() as ipr:
        (msg,) = ipr.get_links(ifindex)
    return msg.get_attr("IFLA_STATS64")["rx_packets"]


def mac(ifname: str) -> str:
    return bench._mac(ifname).hex(":")


class Receiver:
    """A program on the rx veth for the length of a block."""

    def __init__(self, kind: str, rx: str, ns: str, bare_obj: Path | None, mode: str = "generic") -> None:
        self.kind, self.rx, self.ns, self.bare, self.mode = kind, rx, ns, bare_obj, mode
        self.obj: BpfObject | None = None
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Receiver":
        idx = socket.if_nametoindex(self.rx)
        if self.kind == "none":
            return self
        if self.kind == "xdp-bench":
            flag = "skb" if self.mode == "generic" else "native"
            self.proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{self.ns}", "xdp-bench", "drop", "-m", flag,
                                          "-i", "60", self.rx], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.time() + 10
            while not xdp.attached_progs(idx) and time.time() < deadline and self.proc.poll() is None:
                time.sleep(0.05)
            if not xdp.attached_progs(idx):   # never measure the bare stack under its name
                self.proc.kill()
                err = self.proc.communicate()[1].decode(errors="replace")
                raise RuntimeError("xdp-bench attached nothing: " + " ".join(
                    ln.strip() for ln in err.splitlines() if "fail" in ln.lower() or "error" in ln.lower())[:300])
            return self
        path, name = (programs.library_object("count_drop"), "count_drop") if self.kind == "count_drop" \
            else (self.bare, "bare_drop")
        self.obj = BpfObject(str(path))
        self.obj.select(name)
        self.obj.load()
        xdp.set_prog(idx, self.obj.prog_fd(name), self.mode)
        return self

    def __exit__(self, *exc) -> None:
        idx = socket.if_nametoindex(self.rx)
        if self.kind == "none":
            return
        if self.proc:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(10)
        else:
            xdp.clear_prog(idx, self.mode)
            self.obj.close()


class Generator:
    def __init__(self, kind: str, tx: str, rx: str, ns: str) -> None:
        self.kind, self.tx, self.rx, self.ns = kind, tx, rx, ns
        self.live: livegen.LiveFrames | None = None
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Generator":
        if self.kind == "live-frames":
            frame = udp_frame(60, bytes.fromhex(mac(self.tx).replace(":", "")),
                              bytes.fromhex(mac(self.rx).replace(":", "")))
            self.live = livegen.LiveFrames(socket.if_nametoindex(self.tx), frame, [0],
                                           str(programs.generator_object("live_frames")))
            self.live.start()
        else:  # pinned to CPU 0 like offload's thread, so both share the machine alike
            self.proc = subprocess.Popen(["taskset", "-c", "0", "nsenter", f"--net=/run/netns/{self.ns}",
                                          "xdp-trafficgen", "udp", "-t", "1", "-m", mac(self.rx), "-M", mac(self.tx),
                                          self.tx], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def __exit__(self, *exc) -> None:
        if self.live:
            self.live.close()
        if self.proc:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def trafficgen_works(tx: str, rx: str, ns: str, why: list[str]) -> bool:
    """Whether xdp-trafficgen's one frame from the lab's tx veth arrives on rx (its exit code is 1
    either way). Debian 12's build fails on kernels without the `xdp_redirect_map_err` tracepoint
    (gone in recent Linux); a source build of v1.6.3 works. Called inside the lab's namespace,
    its rx veth ready for redirected frames (rx-gro on)."""
    if not shutil.which("xdp-trafficgen"):
        why.append("xdp-trafficgen is not installed")
        return False
    before = rx_packets(socket.if_nametoindex(rx))
    res = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "xdp-trafficgen", "udp", "-n", "1", tx],
                         capture_output=True, text=True, timeout=30)
    if rx_packets(socket.if_nametoindex(rx)) == before:
        why.append("xdp-trafficgen sent nothing on this kernel: " + " ".join(
            ln.strip() for ln in (res.stderr + res.stdout).splitlines()
            if "fail" in ln.lower() or "error" in ln.lower() or "not support" in ln)[:300])
        return False
    return True


def measure(gen: str, recv: str, mode: str, made: lab.Lab, bare: Path, duration: float, warmup: float) -> float:
    tx, rx = made.pairs[0].a, made.pairs[0].b
    idx = socket.if_nametoindex(rx)
    with Receiver(recv, rx, made.netns, bare, mode), Generator(gen, tx, rx, made.netns):
        time.sleep(warmup)
        t0, c0 = time.monotonic(), rx_packets(idx)
        time.sleep(duration)
        t1, c1 = time.monotonic(), rx_packets(idx)
    return (c1 - c0) / (t1 - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    missing: list[str] = []
    recvs = ["count_drop", "bare_drop"] + (["xdp-bench"] if shutil.which("xdp-bench") else [])
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        src, bare = Path(tmp) / "bare_drop.c", Path(tmp) / "bare_drop.o"
        src.write_text(BARE_DROP)
        subprocess.run(["clang", "-O2", "-g", "-target", "bpf", f"-I/usr/include/{os.uname().machine}-linux-gnu",
                        "-c", str(src), "-o", str(bare)], check=True)
        name = f"gg{os.getpid() % 100000}"
        made = lab.up(name, pairs=1)
        try:
            with libxdp_dir_removed(), netns.inside(made.netns):
                with genl.Ethtool() as e:
                    e.set_features(socket.if_nametoindex(made.pairs[0].b), {"rx-gro": True})
                gens = ["live-frames"] + (["xdp-trafficgen"] if trafficgen_works(made.pairs[0].a, made.pairs[0].b,
                                                                    made.netns, missing)
                                          else [])
                # "none": no program at all, frames up the stack as skbs (dropped there: no socket, no route)
                cells = [(g, r, m) for m in ("generic", "native") for g in gens for r in recvs] + \
                    [(g, "none", "-") for g in gens]
                rates: dict[tuple, list[float]] = {c: [] for c in cells}
                for _ in range(args.repeat):
                    for c in list(cells):
                        if c not in rates:
                            continue
                        try:
                            rates[c].append(measure(*c, made, bare, args.duration, args.warmup))
                        except RuntimeError as e:   # a tool that does not run on this kernel
                            missing.append(str(e))
                            cells = [x for x in cells if x[1] != c[1]]
                            rates = {x: v for x, v in rates.items() if x[1] != c[1]}
        finally:
            lab.down(name)
    med = {c: statistics.median(v) for c, v in rates.items() if v}
    cells = [c for c in cells if c in med]
    rows = [{"generator": g, "receiver": r, "mode": m, "rx_pps": round(med[(g, r, m)]),
             "runs": [round(x) for x in rates[(g, r, m)]]} for g, r, m in cells]
    doc = {"rows": rows, "host": bench.host_info(), "load_before": load0, "load_after": os.getloadavg()[0],
           "duration": args.duration, "repeat": args.repeat, "not_measured": missing}
    if not args.markdown:
        print(json.dumps(doc, indent=2))
        return 0
    h = doc["host"]
    print(f"Machine: {h['cpus']} vCPU, {h['cpu_model']}, Linux {h['kernel']}; load average {load0:.2f} before, "
          f"{doc['load_after']:.2f} after; {args.repeat} alternating runs of {args.duration:g} s per cell, "
          "60-byte frames, one generator thread on CPU 0, 1 queue.\n")
    base = med.get(("live-frames", "count_drop", "generic"))
    print("| generator | receiver | mode | rx pps (median) | runs | vs live-frames + count_drop generic |")
    print("| --- | --- | --- | ---: | --- | ---: |")
    for r in rows:
        print(f"| {r['generator']} | {r['receiver']} | {r['mode']} | {r['rx_pps']:,} | "
              f"{', '.join(f'{x / 1e6:.2f}M' for x in r['runs'])} | {r['rx_pps'] / base:.2f} |")
    for m in missing:
        print(f"\nnot measured: {m}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
