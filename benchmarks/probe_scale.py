#!/usr/bin/env python3
"""How probing scales: `offload probe --json` end to end over N veth pairs (2N interfaces) in a
lab namespace, side by side with `ip -d -j link show` (the kernel's dump, printed by iproute2)
and a per-device `ethtool -i` + `ethtool -k` loop over the same devices, in the same run.
Run as root from the repository:
    .venv/bin/python benchmarks/probe_scale.py [N] [--repeat R] [--against REV] [--stages] [--json]

Targets: 1000 interfaces in under 1 s end to end on a 2-core machine (issue 2); in <= 0.35 s,
at least 6x faster than the ethtool loop in the same run (issue 13); at most 0.25 s idle (issue
24). offload is byte-compiled first, as a wheel install would be. CPU time (user + system, from
wait4) is reported beside wall time: on a shared machine it says what the command itself cost.

--against REV: the probe of git revision REV (its `offload/` and `drivers_profiles/`, extracted
beside the repository into a temporary directory) runs interleaved with this one on the same
lab; both documents must be byte-identical (exit 1 otherwise), and both are timed. --stages:
the CPU time of each part of a probe (dumps received, dumps decoded, ioctls, verdicts, JSON),
measured in one process inside the lab: what is paid per interface above the kernel's dumps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from start import ROOT, byte_compile  # noqa: E402

from offload import lab  # noqa: E402

OFFLOAD = str(Path(sys.executable).parent / "offload")


def timed(argv: list[str]) -> tuple[float, str, float]:
    """Wall seconds, stdout, and the CPU seconds of the command and its children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, out, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def extract(rev: str, into: Path) -> list[str]:
    """`offload probe --json` of revision `rev`: its package and profiles extracted into `into`
    (never into the repository), byte-compiled like this one; -P: the repository, the current
    directory, must not come first on the import path."""
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "offload", "drivers_profiles"], check=True,
                         capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=tar, check=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(into / "offload")], check=True)
    return ["env", f"PYTHONPATH={into}", f"OFFLOAD_PROFILES={into / 'drivers_profiles'}", sys.executable, "-P", "-m",
            "offload", "probe", "--json"]


def summary(runs: list[tuple[float, float]]) -> dict:
    walls, cpus = [w for w, _ in runs], [c for _, c in runs]
    return {"seconds_median": round(statistics.median(walls), 4), "seconds_best": round(min(walls), 4),
            "cpu_seconds_median": round(statistics.median(cpus), 4), "cpu_seconds_best": round(min(cpus), 4)}


def measure(netns: str, cases: dict[str, list[str]], repeat: int) -> tuple[dict, dict[str, str]]:
    """Each case run `repeat` times, interleaved (the machine's load falls on all alike): wall and
    CPU seconds, and each case's last output."""
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
    outs: dict[str, str] = {}
    for _ in range(repeat):
        for k, argv in cases.items():
            secs, outs[k], cpu = timed(["ip", "netns", "exec", netns] + argv)
            runs[k].append((secs, cpu))
    return {k: summary(v) for k, v in runs.items()}, outs


def stages(repeat: int) -> dict:
    """Inside the lab's namespace, in this process: CPU milliseconds (median of `repeat`) of each
    part of a probe, the kernel's dumps received but not decoded beside the same dumps decoded."""
    from offload import jsondoc
    from offload.kernel import genl, nlraw, rtnl
    from offload.kernel.drvinfo import DrvInfoReader
    from offload.probe import facts, profiles, report

    def raw_links() -> None:
        with nlraw.Socket(nlraw.NETLINK_ROUTE) as sock:
            for _ in sock.request(rtnl.RTM_GETLINK, rtnl._request(), dump=True):
                pass

    def raw_ethtool() -> None:
        with genl.Ethtool() as eth:
            eth.feature_names()
            for cmd, flags in ((genl.ETHTOOL_MSG_FEATURES_GET, genl.ETHTOOL_FLAG_COMPACT_BITSETS),
                               (genl.ETHTOOL_MSG_CHANNELS_GET, 0), (genl.ETHTOOL_MSG_RINGS_GET, 0)):
                for _ in eth.request(eth.family, nlraw.pack_genl(cmd) + genl._header(flags), dump=True):
                    pass

    def ethtool() -> None:
        with genl.Ethtool() as eth:
            eth.features(), eth.channels(), eth.rings()

    links = rtnl.dump_links()

    def drvinfo() -> None:
        with DrvInfoReader() as drv:
            for link in links:
                drv.read(link.name)
    host, devices = facts.gather()
    profs, problems = profiles.load(None, {d.driver for d in devices if d.driver})
    doc = jsondoc.document("probe", report.report(host, devices, profs, problems))
    one = {links[len(links) // 2].name}
    parts = {"rtnl dump, received": raw_links, "rtnl dump, decoded": rtnl.dump_links,
             "rtnl dump, one link named (and its peer) decoded": lambda: rtnl.dump_links(names=one),
             "rtnl dump, every link's name": rtnl.link_names,
             "ethtool dumps, received": raw_ethtool, "ethtool dumps, decoded": ethtool, "netdev dump, decoded": genl.netdev_xdp,
             "GDRVINFO ioctls": drvinfo, "facts.gather (whole dumps decoded, ioctls, records)": facts.gather,
             "verdicts and report": lambda: report.report(host, devices, profs, problems),
             "json.dumps": lambda: json.dumps(doc)}
    out = {}
    for name, fn in parts.items():
        cpu = []
        for _ in range(repeat):
            t = time.process_time()
            fn()
            cpu.append(time.process_time() - t)
        out[name] = round(statistics.median(cpu) * 1e3, 2)
    return {"interfaces": len(devices), "cpu_ms": out}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pairs", nargs="?", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=5, help="runs of each command (medians and best reported)")
    ap.add_argument("--against", metavar="REV", help="also run REV's probe; the documents must be identical")
    ap.add_argument("--stages", action="store_true", help="also the CPU time of each part of a probe, in-process")
    ap.add_argument("--stages-here", action="store_true", help=argparse.SUPPRESS)   # run by --stages in the lab
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.stages_here:
        print(json.dumps(stages(args.repeat)))
        return 0

    byte_compile()
    tmp = Path(tempfile.mkdtemp(prefix="probe-scale-"))
    name = f"scale{os.getpid() % 1000}"
    load_start = os.getloadavg()[0]
    try:
        cases = {"probe": [OFFLOAD, "probe", "--json"], "ip_link": ["ip", "-d", "-j", "link", "show"]}
        if args.against:
            cases["against"] = extract(args.against, tmp)
        made = lab.up(name, pairs=args.pairs)
        try:
            stats, outs = measure(made.netns, cases, args.repeat)
            devs = [d for p in made.pairs for d in (p.a, p.b)]
            script = "for d in " + " ".join(devs) + '; do ethtool -i "$d" >/dev/null; ethtool -k "$d" >/dev/null; done'
            loop_secs, _, loop_cpu = timed(["ip", "netns", "exec", made.netns, "sh", "-c", script])
            if args.stages:
                parts = json.loads(timed(["ip", "netns", "exec", made.netns, sys.executable, __file__, "--stages-here",
                                          "--repeat", str(max(args.repeat, 9))])[1])
        finally:
            lab.down(name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    probe = stats["probe"]
    result = {
        "interfaces": len(json.loads(outs["probe"])["interfaces"]),
        "probe_seconds_median": probe["seconds_median"],
        "probe_seconds_best": probe["seconds_best"],
        "probe_cpu_seconds_median": probe["cpu_seconds_median"],
        "ip_link_seconds_median": stats["ip_link"]["seconds_median"],
        "ip_link_cpu_seconds_median": stats["ip_link"]["cpu_seconds_median"],
        "ratio_probe_over_ip_link": round(probe["seconds_median"] / stats["ip_link"]["seconds_median"], 2),
        "ratio_probe_over_ip_link_cpu": round(probe["cpu_seconds_median"] / stats["ip_link"]["cpu_seconds_median"], 2),
        "ethtool_loop_seconds": round(loop_secs, 3),
        "ethtool_loop_cpu_seconds": round(loop_cpu, 3),
        "ratio_loop_over_probe": round(loop_secs / probe["seconds_median"], 2),
        "runs": stats,
        "machine": {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load": round(os.getloadavg()[0], 2), "load_start": round(load_start, 2)},
    }
    if args.stages:
        n = parts["interfaces"]
        result["stages"] = {k: {"cpu_ms": v, "cpu_us_per_interface": round(v * 1e3 / n, 1)}
                            for k, v in parts["cpu_ms"].items()}
    if args.against:
        result["against"] = {"rev": args.against, "documents_identical": outs["against"] == outs["probe"],
                             "ratio_probe_over_against": round(probe["seconds_median"] / stats["against"]["seconds_median"], 3),
                             "cpu_ratio_probe_over_against": round(
                                 probe["cpu_seconds_median"] / stats["against"]["cpu_seconds_median"], 3)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['interfaces']} interfaces: offload probe --json {probe['seconds_median']:.3f} s median "
              f"(best {probe['seconds_best']:.3f} s of {args.repeat}, CPU {probe['cpu_seconds_median']:.3f} s); "
              f"ip -d -j link show {stats['ip_link']['seconds_median']:.3f} s (CPU "
              f"{stats['ip_link']['cpu_seconds_median']:.3f} s): {result['ratio_probe_over_ip_link']}x; per-device "
              f"ethtool -i/-k loop {loop_secs:.3f} s: the loop takes {result['ratio_loop_over_probe']}x as long")
        for k, v in result.get("stages", {}).items():
            print(f"  {k}: {v['cpu_ms']} ms CPU, {v['cpu_us_per_interface']} us per interface")
        if args.against:
            a = stats["against"]
            print(f"{args.against}: {a['seconds_median']:.3f} s median (CPU {a['cpu_seconds_median']:.3f} s); "
                  f"documents identical: {result['against']['documents_identical']}")
    return 0 if not args.against or result["against"]["documents_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
