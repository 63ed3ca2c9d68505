#!/usr/bin/env python3
"""CLI start: `offload --version` and `import offload.cli` against `python -c pass` with the same
interpreter, interleaved in one run (medians). Issue 13's target: `offload --version` within
0.15 s of `python -c pass`. Usage: .venv/bin/python benchmarks/start.py [--repeat N] [--json]

offload is byte-compiled first, as a wheel install would be (with PYTHONDONTWRITEBYTECODE set,
an editable checkout would otherwise compile every module from source on every start).
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

ROOT = Path(__file__).resolve().parent.parent
OFFLOAD = str(Path(sys.executable).parent / "offload")


def byte_compile() -> None:
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "offload")], check=True)


def cpu_of_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(argv: list[str], cpu: list[float] | None = None) -> float:
    """Wall seconds of one run; its CPU seconds (user + system) appended to `cpu`: on a shared
    machine the CPU time says what the command itself cost."""
    c, t = cpu_of_children(), time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    wall = time.perf_counter() - t
    if cpu is not None:
        cpu.append(cpu_of_children() - c)
    return wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    byte_compile()
    cases = {
        "python_pass_s": [sys.executable, "-c", "pass"],
        "version_s": [OFFLOAD, "--version"],
        "import_cli_s": [sys.executable, "-c", "import offload.cli"],
        "probe_help_s": [OFFLOAD, "probe", "--help"],
    }
    runs: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.repeat):   # interleaved: a burst of load hits every case alike
        for k, argv in cases.items():
            runs[k].append(timed(argv, cpu[k]))
    out = {k: round(statistics.median(v), 4) for k, v in runs.items()}
    out.update({k.replace("_s", "_cpu_s"): round(statistics.median(v), 4) for k, v in cpu.items()})
    out["version_over_pass_s"] = round(out["version_s"] - out["python_pass_s"], 4)
    out["version_over_pass_cpu_s"] = round(out["version_cpu_s"] - out["python_pass_cpu_s"], 4)
    out["repeat"] = args.repeat
    out["machine"] = {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version(),
                      "load": os.getloadavg()[0]}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"python -c pass {out['python_pass_s']:.3f} s; offload --version {out['version_s']:.3f} s "
              f"(+{out['version_over_pass_s']:.3f} s); import offload.cli {out['import_cli_s']:.3f} s; "
              f"offload probe --help {out['probe_help_s']:.3f} s (medians of {args.repeat})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
