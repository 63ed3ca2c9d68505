#!/usr/bin/env python3
"""watch's memory over churn (issue 24): `offload watch` over N attached veths, then C cycles of
one veth deleted and made again under the same name (a pod restarting), each repaired by watch
(its program attached to the new veth) before the next; every K cycles watch's resident memory,
its open fds, offload's pins and records are sampled. Reports first/last and the least-squares
slope (KiB per 100 cycles) of the RSS, and a verdict on issue 24's target (MET or MISSED: the RSS
at the end at most 5% above the first sample, fds, pins and records unchanged).

Same isolation as attach_scale.py: a network namespace, a bpffs instance and a run directory of
the script's own, removed on every exit path (SIGTERM included).

Usage: .venv/bin/python benchmarks/watch_rss.py [N] [--cycles C] [--every K] [--plot FILE.png] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from attach_scale import OFFLOAD, Lab, batch, rss_kib, xdp_count  # noqa: E402
from start import byte_compile  # noqa: E402

SETTLE = 0.5   # seconds left to watch before a sample
FLAT = 0.05    # "flat": the last sample's RSS at most 5% above the first, fds, pins and records unchanged


def files_under(path: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(path))


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sample(lab: Lab, pid: int, cycle: int) -> dict:
    """What watch holds after `cycle` cycles: memory, fds, CPU so far, and offload's state on disk."""
    time.sleep(SETTLE)   # its reconcile finished (the program is on before the journal's end record)
    return {"cycle": cycle, "rss_kib": rss_kib(pid), "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "cpu_s": round(cpu_s(pid), 2),
            "pins": files_under(lab.tmp / "bpf"), "records": files_under(lab.tmp / "run"),
            "load": round(os.getloadavg()[0], 2)}


def has_xdp(ns: str, dev: str) -> bool:
    out = subprocess.run(["ip", "-n", ns, "-j", "-d", "link", "show", "dev", dev], capture_output=True, text=True)
    return out.returncode == 0 and bool(json.loads(out.stdout)[0].get("xdp", {}).get("prog"))


def remake(lab: Lab, i: int) -> None:
    """Veth pair a<i>/b<i> deleted and made again (new ifindex, no program) in one `ip -batch`."""
    batch(lab.ns, lab.tmp / "remake", [f"link del a{i}\nlink add a{i} type veth peer name b{i}\n"
                                       f"link set a{i} up\nlink set b{i} up\n"])


def wait_for(test, what: str, timeout: float, step: float = 0.02) -> None:
    end = time.monotonic() + timeout
    while not test():
        if time.monotonic() > end:
            raise SystemExit(f"watch_rss: {what} not within {timeout:g} s")
        time.sleep(step)


def slope_per_100(samples: list[dict], key: str = "rss_kib") -> float:
    """Least-squares slope of `key` against the cycle, per 100 cycles."""
    xs, ys = [s["cycle"] for s in samples], [s[key] for s in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return 100 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0


def flat(out: dict) -> bool:
    """The issue's target: watch's RSS flat over the cycles, and nothing else held grows either."""
    return (out["rss_kib_last"] <= out["rss_kib_first"] * (1 + FLAT)
            and all(out[f"{k}_last"] == out[f"{k}_first"] for k in ("fds", "pins", "records")))


def churn(lab: Lab, n: int, cycles: int, every: int) -> dict:
    watch = subprocess.Popen([OFFLOAD, "watch", "-f", str(lab.policy), "--netns", lab.ns, "--interval", "86400",
                              "--journal", str(lab.journal)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        wait_for(lambda: xdp_count(lab.ns, "a") == n, f"{n} veths attached at watch's start", 1800, step=1)
        start_s = time.monotonic() - t0
        time.sleep(2)   # the link events of its own attaches read
        samples, cycle_s = [sample(lab, watch.pid, 0)], []
        for c in range(1, cycles + 1):
            i = (c * 7919) % n   # spread over the lab, every veth in turn when n is not a multiple of 7919
            t = time.monotonic()
            remake(lab, i)
            wait_for(lambda: has_xdp(lab.ns, f"a{i}"), f"a{i} repaired at cycle {c}", 120)
            cycle_s.append(time.monotonic() - t)
            if c % every == 0:
                samples.append(sample(lab, watch.pid, c))
                print(f"cycle {c}: {samples[-1]}", file=sys.stderr)
        alive = watch.poll() is None
    finally:
        watch.send_signal(signal.SIGTERM)
        watch.wait(timeout=300)
    first, last = samples[0], samples[-1]
    return {"interfaces": n, "cycles": cycles, "every": every, "watch_alive": alive,
            "watch_start_s": round(start_s, 3), "cycle_s_median": round(statistics.median(cycle_s), 4),
            "watch_cpu_s_per_cycle": round((last["cpu_s"] - first["cpu_s"]) / cycles, 4),
            "rss_kib_first": first["rss_kib"], "rss_kib_last": last["rss_kib"],
            "rss_kib_max": max(s["rss_kib"] for s in samples),
            "rss_slope_kib_per_100_cycles": round(slope_per_100(samples), 1),
            "fds_first": first["fds"], "fds_last": last["fds"],
            "pins_first": first["pins"], "pins_last": last["pins"],
            "records_first": first["records"], "records_last": last["records"], "samples": samples}


def plot(out: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=100, layout="tight")
    ax.plot([s["cycle"] for s in out["samples"]], [s["rss_kib"] / 1024 for s in out["samples"]], "o-")
    ax.set(xlabel=f"delete/re-create cycles (watch over {out['interfaces']} attached veths)",
           ylabel="watch RSS, MiB", ylim=(0, None))
    ax.grid(True, alpha=0.3)
    fig.savefig(path)


def markdown(out: dict) -> str:
    lines = ["| cycle | RSS KiB | fds | pins | records | watch CPU s | load |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {s['cycle']} | {s['rss_kib']} | {s['fds']} | {s['pins']} | {s['records']} | {s['cpu_s']} | {s['load']} |"
              for s in out["samples"]]
    lines += ["", f"{out['interfaces']} veths attached by watch in {out['watch_start_s']} s; {out['cycles']} cycles "
              f"(median {out['cycle_s_median']} s each, watch's CPU {out['watch_cpu_s_per_cycle']} s per cycle); RSS {out['rss_kib_first']} -> {out['rss_kib_last']} KiB "
              f"(max {out['rss_kib_max']}), slope {out['rss_slope_kib_per_100_cycles']} KiB per 100 cycles; "
              f"fds {out['fds_first']} -> {out['fds_last']}; pins {out['pins_first']} -> {out['pins_last']}; "
              f"records {out['records_first']} -> {out['records_last']}."]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("interfaces", nargs="?", type=int, default=5000)
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--every", type=int, default=50, help="cycles between samples")
    ap.add_argument("--plot", metavar="FILE.png", help="RSS against cycles, as a plot")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    byte_compile()   # as a wheel install would be
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))   # unwind: namespace, mount
    tmp = Path(tempfile.mkdtemp(prefix="watch-rss-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        lab = Lab(stack, tmp)
        lab.grow(args.interfaces)
        out = {"load_start": round(os.getloadavg()[0], 2), **churn(lab, args.interfaces, args.cycles, args.every)}
    out["load_end"] = round(os.getloadavg()[0], 2)
    if args.plot:
        plot(out, args.plot)
    out["rss_flat"] = flat(out)
    print(json.dumps(out, indent=2) if args.json else markdown(out))
    print(f"target watch RSS flat over {out['cycles']} cycles with {out['interfaces']} interfaces attached "
          f"(at most {FLAT:.0%} above the first sample): {'MET' if out['rss_flat'] else 'MISSED'}", file=sys.stderr)
    return 0 if out["watch_alive"] else 1


if __name__ == "__main__":
    sys.exit(main())
