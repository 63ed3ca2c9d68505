#!/usr/bin/env python3
"""`attach --mode auto` of a program hw would refuse, with the advisor (hw not tried: the program is
read instead) against `--try-hw` (what attach did before the advisor: load for hw, be refused,
fall back), side by side and alternating, on a netdevsim port. netdevsim exists only in the VM
lane's kernel, so this runs there:
    scripts/vm-test --run .venv/bin/python benchmarks/advisor_attach.py [--repeat R]

Target (issue 20): no slower than before. Wall seconds of the whole command (interpreter start
included, as a user sees it) per variant, after one warm-up run of each, in ABBA order.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
OFFLOAD = str(Path(sys.executable).parent / "offload")


def attach(port: str, obj: Path, *extra: str) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run([OFFLOAD, "attach", port, str(obj), "--json", *extra], check=True,
                         capture_output=True, text=True).stdout
    secs = time.perf_counter() - t
    subprocess.run([OFFLOAD, "detach", port], check=True, capture_output=True)
    return secs, json.loads(out)["mode"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from lib.env import NetdevSim
    from lib.objects import corpus_objects

    with tempfile.TemporaryDirectory() as tmp, NetdevSim() as nsim:
        obj = corpus_objects(Path(tmp))["percpu-array"]
        runs: dict[str, list[float]] = {"advisor": [], "try-hw": []}
        attach(nsim.ifname, obj)                   # warm-up, not counted: caches, page cache over 9p
        attach(nsim.ifname, obj, "--try-hw")
        for r in range(args.repeat):               # ABBA: the order alternates each round
            for variant in (("advisor", "try-hw") if r % 2 == 0 else ("try-hw", "advisor")):
                secs, mode = attach(nsim.ifname, obj, *(["--try-hw"] if variant == "try-hw" else []))
                assert mode == "native"
                runs[variant].append(secs)
    med = {k: round(statistics.median(v), 2) for k, v in runs.items()}
    print(json.dumps({"attach_auto_seconds_median": med, "runs": runs,
                      "ratio_advisor_over_try_hw": round(med["advisor"] / med["try-hw"], 3),
                      "machine": {"kernel": platform.release(), "cpus": os.cpu_count(),
                                  "load": os.getloadavg()[0], "note": "qemu TCG guest"}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
