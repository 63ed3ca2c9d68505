#!/usr/bin/env python3
"""Attach at scale, against iproute2, in one run on one lab:

1. `offload apply` of a policy putting count_drop on N veths, against `ip -batch` attaching the
   same object (the library's precompiled count_drop.o) to the same N veths;
2. `offload attach` of a library program end to end, with `offload --version` (the interpreter and
   CLI start alone) beside it;
3. `offload watch` reacting to M veths created at once: time until all M carry the program.

Usage: .venv/bin/python benchmarks/attach_scale.py [N] [--hotplug M] [--repeat R] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from start import byte_compile  # noqa: E402
from start import timed as timed_cpu  # noqa: E402

from offload import lab  # noqa: E402
from offload.load import programs  # noqa: E402

OFFLOAD = str(Path(sys.executable).parent / "offload")


def timed(argv: list[str], **kw) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, text=True, **kw)
    return time.perf_counter() - t


def xdp_count(ns: str, prefix: str) -> int:
    links = json.loads(subprocess.run(["ip", "-n", ns, "-j", "-d", "link"], capture_output=True, text=True,
                                      check=True).stdout)
    return sum(1 for ln in links if ln["ifname"].startswith(prefix) and ln.get("xdp", {}).get("prog"))


def clear(ns: str, devs: list[str]) -> None:
    """Everything off the lab between runs: apply's programs by an empty policy, the rest with one
    `ip -batch`, and `offload gc` frees the pins and records of what ip took off (a detach per
    device would be N starts of offload, minutes under load)."""
    subprocess.run([OFFLOAD, "apply", "-f", "/dev/null", "--netns", ns], capture_output=True)
    with tempfile.NamedTemporaryFile("w", suffix=".batch") as batch:
        batch.write("".join(f"link set dev {d} xdp off\n" for d in devs))
        batch.flush()
        subprocess.run(["ip", "-n", ns, "-force", "-batch", batch.name], capture_output=True)
    subprocess.run([OFFLOAD, "gc"], capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", nargs="?", type=int, default=100)
    ap.add_argument("--hotplug", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    byte_compile()   # as a wheel install would be
    name = f"as{os.getpid() % 100000}"
    made = lab.up(name, pairs=args.n)
    ns, devs = made.netns, [p.a for p in made.pairs]
    obj = programs.library_object("count_drop")
    out: dict = {"n": args.n, "object": str(obj)}
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "policy.yaml"
        # h* are the veths hot-plugged under watch (absent until then)
        policy.write_text(f"rules:\n  - name: scale\n    match: {{interfaces: ['{name}-a*', '{name}-h*']}}\n"
                          "    program: count_drop\n    mode: {prefer: native}\n")
        batch = Path(tmp) / "batch"
        batch.write_text("".join(f"link set dev {d} xdpdrv obj {obj} sec xdp\n" for d in devs))
        journal = Path(tmp) / "journal.jsonl"
        try:
            apply_s, ip_s = [], []
            for _ in range(args.repeat):
                apply_s.append(timed([OFFLOAD, "apply", "-f", str(policy), "--netns", ns, "--journal", str(journal)]))
                assert xdp_count(ns, f"{name}-a") == args.n
                clear(ns, devs)
                ip_s.append(timed(["ip", "-n", ns, "-batch", str(batch)]))
                assert xdp_count(ns, f"{name}-a") == args.n
                clear(ns, devs)
            out["apply_s"], out["ip_batch_s"] = statistics.median(apply_s), statistics.median(ip_s)
            out["apply_over_ip"] = round(out["apply_s"] / out["ip_batch_s"], 2)

            one, version, bare, cpu = [], [], [], {"attach": [], "version": [], "pass": []}
            for _ in range(args.repeat):
                bare.append(timed_cpu([sys.executable, "-c", "pass"], cpu["pass"]))
                version.append(timed_cpu([OFFLOAD, "--version"], cpu["version"]))
                one.append(timed_cpu([OFFLOAD, "attach", devs[0], "count_drop", "--mode", "native", "--netns", ns],
                                     cpu["attach"]))
                subprocess.run([OFFLOAD, "detach", devs[0], "--netns", ns], check=True, capture_output=True)
            out["attach_s"], out["version_s"] = statistics.median(one), statistics.median(version)
            out["python_pass_s"] = statistics.median(bare)
            # CPU seconds (user + system) of the same runs: what they cost, whatever the machine's load
            out.update({f"{k}_cpu_s": round(statistics.median(v), 3) for k, v in cpu.items()})

            watch = subprocess.Popen([OFFLOAD, "watch", "-f", str(policy), "--netns", ns, "--interval", "600",
                                      "--journal", str(journal)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + 120
                while xdp_count(ns, f"{name}-a") < args.n and time.monotonic() < deadline:
                    time.sleep(0.05)
                hot = [f"{name}-h{i}" for i in range(args.hotplug)]
                lines = "".join(f"link add {h} type veth peer name {name}-p{i}\nlink set dev {h} up\n"
                                for i, h in enumerate(hot))
                (Path(tmp) / "hot").write_text(lines)
                t0 = time.monotonic()
                subprocess.run(["ip", "-n", ns, "-batch", str(Path(tmp) / "hot")], check=True)
                while xdp_count(ns, f"{name}-h") < args.hotplug and time.monotonic() - t0 < 60:
                    time.sleep(0.02)
                out["hotplug"] = args.hotplug
                out["hotplug_attached"] = xdp_count(ns, f"{name}-h")
                out["hotplug_s"] = round(time.monotonic() - t0, 3)
            finally:
                watch.send_signal(signal.SIGTERM)
                watch.wait(timeout=60)
        finally:
            lab.down(name)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"apply over {args.n} veths: {out['apply_s']:.3f} s; ip -batch: {out['ip_batch_s']:.3f} s; "
              f"ratio {out['apply_over_ip']}x")
        print(f"offload attach (library program): {out['attach_s']:.3f} s; offload --version: {out['version_s']:.3f} s; "
              f"python -c pass: {out['python_pass_s']:.3f} s")
        print(f"watch: {out['hotplug_attached']}/{out['hotplug']} hot-plugged veths attached in {out['hotplug_s']:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
