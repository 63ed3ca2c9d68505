#!/usr/bin/env python3
"""`offload check` of one object against every interface of a namespace, beside `offload probe` of
the same interfaces, side by side in one run: N veth pairs (2N interfaces) in a lab namespace of
the benchmark's own (nobody else's tests see them). Run as root from the repository:
    .venv/bin/python benchmarks/check_scale.py [N] [--repeat R] [--json]

Target (issue 20): check within 2x of a single probe of the same interfaces (the program is read
once; each interface's verdicts are pure). The runs alternate probe, check, probe, check... so a
change in the machine's load falls on both; medians and CPU seconds (wait4) are reported.
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
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
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


def the_object(workdir: Path) -> Path:
    """The corpus's per-CPU-map program (tests/lib/objects.py), compiled by clang."""
    from lib.objects import corpus_objects

    return corpus_objects(workdir)["percpu-array"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pairs", nargs="?", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=5, help="runs of each (medians reported)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    byte_compile()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        obj = the_object(Path(tmp))
        name = f"chk{os.getpid() % 1000}"
        made = lab.up(name, pairs=args.pairs)
        try:
            ns = ["ip", "netns", "exec", made.netns]
            runs: dict[str, list[tuple[float, float]]] = {"probe": [], "check": []}
            for _ in range(args.repeat):
                secs, out, cpu = timed(ns + [OFFLOAD, "probe", "--json"])
                runs["probe"].append((secs, cpu))
                n_probe = len(json.loads(out)["interfaces"])
                secs, out, cpu = timed(ns + [OFFLOAD, "check", str(obj), "--json"])
                runs["check"].append((secs, cpu))
                n_check = len(json.loads(out)["targets"])
        finally:
            lab.down(name)

    def med(kind: str, i: int) -> float:
        return round(statistics.median(r[i] for r in runs[kind]), 3)

    result = {
        "interfaces": {"probe": n_probe, "check": n_check},
        "probe_seconds_median": med("probe", 0), "probe_cpu_seconds_median": med("probe", 1),
        "check_seconds_median": med("check", 0), "check_cpu_seconds_median": med("check", 1),
        "ratio_check_over_probe": round(med("check", 0) / med("probe", 0), 2),
        "machine": {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_before": load_before, "load_after": os.getloadavg()[0]},
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{n_check} interfaces: offload check {result['check_seconds_median']:.3f} s median "
              f"({result['check_cpu_seconds_median']:.3f} s CPU), offload probe {result['probe_seconds_median']:.3f} s "
              f"({result['probe_cpu_seconds_median']:.3f} s CPU): check/probe {result['ratio_check_over_probe']}x "
              f"(target <= 2x); load {load_before:.2f} -> {result['machine']['load_after']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
