#!/usr/bin/env python3
"""Where `apply` spends its time at scale: `apply` over N veths in this process (no CLI start),
optionally under cProfile, then `ip -batch` attaching the same object to the same veths, side
by side in one run. The method of issue 24: find what is paid per interface above the kernel's
own RTM_SETLINK (which `ip` pays too).

Everything happens in a network namespace of its own, with offload's state in a bpffs instance
and a run directory of the script's own; all three are removed on every exit path.

Usage (root): .venv/bin/python benchmarks/attach_profile.py N [--profile] [--top K]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

POLICY = "rules:\n  - name: scale\n    match: {interfaces: ['a*']}\n    program: count_drop\n    mode: {prefer: native}\n"


def ip_batch(ns: str, path: Path, lines: list[str], force: bool = False) -> float:
    path.write_text("".join(lines))
    t = time.perf_counter()
    subprocess.run(["ip", "-n", ns, *(["-force"] if force else []), "-batch", str(path)], check=True)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", type=int)
    ap.add_argument("--profile", action="store_true", help="apply under cProfile; its top functions printed")
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))   # unwind: namespace, mount
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="attach-profile-"))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        (tmp / "bpf").mkdir()
        subprocess.run(["mount", "-t", "bpf", "bpffs", str(tmp / "bpf")], check=True)
        stack.callback(subprocess.run, ["umount", "-l", str(tmp / "bpf")], check=False)
        os.environ.update(OFFLOAD_BPFFS=str(tmp / "bpf"), OFFLOAD_RUN_DIR=str(tmp / "run"))
        ns = f"ap{os.getpid() % 100000}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        stack.callback(subprocess.run, ["ip", "netns", "del", ns], check=False)
        ip_batch(ns, tmp / "grow", [f"link add a{i} type veth peer name b{i}\nlink set a{i} up\nlink set b{i} up\n"
                                    for i in range(args.n)])
        (tmp / "policy.yaml").write_text(POLICY)

        from offload.kernel import netns
        from offload.load import programs
        from offload.orchestrate.apply import apply
        from offload.orchestrate.policy import load

        with netns.inside(ns):
            pol = load(str(tmp / "policy.yaml"))
            prof = cProfile.Profile() if args.profile else None
            t = time.perf_counter()
            if prof:
                prof.enable()
            res = apply(pol, journal=tmp / "journal.jsonl")
            if prof:
                prof.disable()
            apply_s = time.perf_counter() - t
        assert res["outcome"] == "ok" and res["changed"] == args.n, res["outcome"]
        ip_batch(ns, tmp / "off", [f"link set dev a{i} xdp off\n" for i in range(args.n)], force=True)
        obj = programs.library_object("count_drop")
        ip_s = ip_batch(ns, tmp / "attach", [f"link set dev a{i} xdpdrv obj {obj} sec xdp\n" for i in range(args.n)])
        if prof:
            pstats.Stats(prof).sort_stats("cumulative").print_stats(args.top)
        print(f"{args.n} veths: apply in-process {apply_s:.3f} s{' (profiled)' if prof else ''}, "
              f"ip -batch {ip_s:.3f} s, ratio {apply_s / ip_s:.2f}x, load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
