#!/usr/bin/env python3
"""How probing scales: `offload probe --json` end to end over N veth pairs (2N interfaces) in a
lab namespace, against a per-device `ethtool -i` + `ethtool -k` loop over the same devices, in
the same run. Run as root from the repository:  .venv/bin/python benchmarks/probe_scale.py [N]

Targets: 1000 interfaces in under 1 s end to end on a 2-core machine (issue 2); in <= 0.35 s,
at least 6x faster than the ethtool loop in the same run (issue 13). offload is byte-compiled
first, as a wheel install would be. The probe's CPU time (user + system, from wait4) is reported
beside its wall time: on a shared machine it says what the probe itself cost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from start import byte_compile  # noqa: E402

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pairs", nargs="?", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=5, help="probe runs (median and best reported)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    byte_compile()
    name = f"scale{os.getpid() % 1000}"
    made = lab.up(name, pairs=args.pairs)
    try:
        ns = ["ip", "netns", "exec", made.netns]
        probe_runs, probe_cpu = [], []
        for _ in range(args.repeat):
            secs, out, cpu = timed(ns + [OFFLOAD, "probe", "--json"])
            probe_runs.append(secs)
            probe_cpu.append(cpu)
        n_ifaces = len(json.loads(out)["interfaces"])
        devs = [d for p in made.pairs for d in (p.a, p.b)]
        script = "for d in " + " ".join(devs) + '; do ethtool -i "$d" >/dev/null; ethtool -k "$d" >/dev/null; done'
        loop_secs, _, loop_cpu = timed(ns + ["sh", "-c", script])
    finally:
        lab.down(name)
    result = {
        "interfaces": n_ifaces,
        "probe_seconds_median": round(statistics.median(probe_runs), 3),
        "probe_seconds_best": round(min(probe_runs), 3),
        "probe_cpu_seconds_median": round(statistics.median(probe_cpu), 3),
        "ethtool_loop_seconds": round(loop_secs, 3),
        "ethtool_loop_cpu_seconds": round(loop_cpu, 3),
        "ratio_loop_over_probe": round(loop_secs / statistics.median(probe_runs), 2),
        "machine": {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load": os.getloadavg()[0]},
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{n_ifaces} interfaces: offload probe --json {result['probe_seconds_median']:.3f} s median "
              f"(best {result['probe_seconds_best']:.3f} s of {args.repeat}, CPU {result['probe_cpu_seconds_median']:.3f} s); "
              f"per-device ethtool -i/-k loop "
              f"{loop_secs:.3f} s; the loop takes {result['ratio_loop_over_probe']}x as long")
    return 0


if __name__ == "__main__":
    sys.exit(main())
