#!/usr/bin/env python3
"""Attach at scale, against iproute2, in one run, in a network namespace of its own:

1. for each size N (ascending; the namespace grows from one to the next): `offload apply` of a
   policy putting count_drop on N veths, against `ip -batch` attaching the same object (the
   library's precompiled count_drop.o) to the same N veths, side by side, median of --repeat;
   seconds per interface of each;
2. `offload attach` of a library program end to end, with `offload --version` beside it;
3. `offload watch` over the largest N: a burst of --hotplug veths created with one `ip -batch`,
   the time until all carry the program, against `ip -batch` creating them and attaching the
   same object (from the burst's start), and against `ip -batch` attaching only (from the end of
   creation); watch's resident memory before and after the burst.

offload's state lives in a bpffs instance and a run directory of the script's own
(OFFLOAD_BPFFS, OFFLOAD_RUN_DIR), so its `offload gc` runs touch nothing else on the host; the
namespace (with every veth in it), the mount and the directory are removed on every exit path.

With --ipv6-off the namespace's veths are made with IPv6 disabled (net.ipv6.conf.{all,default}.
disable_ipv6=1 before the first veth): the kernel's NETDEV_CHANGE work of an RTM_SETLINK attach
(addrconf's walk of the IPv6 FIB and MLD reports, linear in the number of interfaces, found by
benchmarks/kernel_attach.py) is then absent, for ip and offload alike.

It ends with a verdict, MET or MISSED, per target of issue 24 it measured.

With --via link, offload attaches through pinned bpf_links (the policy's `via: link`, `attach
--via link`); `ip -batch` stays RTM_SETLINK, the same as without it. offload's programs are then
taken off by `offload apply` of a policy matching nothing (netlink cannot take a link's off).

Usage: .venv/bin/python benchmarks/attach_scale.py [N ...] [--hotplug M] [--repeat R]
       [--plot FILE.png] [--json] [--ip-shared] [--ipv6-off] [--via netlink|link] [--ipv6-off]
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
from start import byte_compile  # noqa: E402
from start import timed as timed_cpu  # noqa: E402

from offload.load import programs  # noqa: E402

OFFLOAD = str(Path(sys.executable).parent / "offload")
POLICY = ("rules:\n  - name: scale\n    match: {interfaces: ['a*', 'h*']}\n"
          "    program: count_drop\n    mode: {prefer: native}\n")
NO_MATCH = "rules:\n  - name: scale\n    match: {interfaces: ['nothing-here*']}\n    program: count_drop\n"


def timed(argv: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, text=True)
    return time.perf_counter() - t


def batch(ns: str, path: Path, lines: list[str], force: bool = False) -> float:
    """`ip -n NS -batch` of `lines`: its wall seconds."""
    path.write_text("".join(lines))
    return timed(["ip", "-n", ns, *(["-force"] if force else []), "-batch", str(path)])


def xdp_count(ns: str, prefix: str) -> int:
    links = json.loads(subprocess.run(["ip", "-n", ns, "-j", "-d", "link"], capture_output=True, text=True,
                                      check=True).stdout)
    return sum(1 for ln in links if ln["ifname"].startswith(prefix) and ln.get("xdp", {}).get("prog"))


class Lab:
    """A namespace of veth pairs a0/b0 ... (and h0/g0 ... when hot-plugged), and offload's private
    state for this run."""

    def __init__(self, stack: ExitStack, tmp: Path, ipv6: bool = True, via: str = "netlink") -> None:
        self.tmp, self.ns, self.n = tmp, f"as{os.getpid() % 100000}", 0
        (tmp / "bpf").mkdir()
        subprocess.run(["mount", "-t", "bpf", "bpffs", str(tmp / "bpf")], check=True)
        stack.callback(subprocess.run, ["umount", "-l", str(tmp / "bpf")], check=False)
        os.environ.update(OFFLOAD_BPFFS=str(tmp / "bpf"), OFFLOAD_RUN_DIR=str(tmp / "run"))
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        stack.callback(subprocess.run, ["ip", "netns", "del", self.ns], check=False)
        if not ipv6:   # before the first veth: no IPv6 on any of them
            subprocess.run(["ip", "netns", "exec", self.ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                            "net.ipv6.conf.default.disable_ipv6=1"], check=True)
        self.policy = tmp / "policy.yaml"
        self.via = via
        self.policy.write_text(POLICY + ("    via: link\n" if via == "link" else ""))
        self.none = tmp / "none.yaml"   # the rule matching nothing: apply detaches what it attached
        self.none.write_text(NO_MATCH)
        self.journal = tmp / "journal.jsonl"
        self.obj = programs.library_object("count_drop")

    def grow(self, n: int, side: str = "a", peer: str = "b", start: int | None = None) -> float:
        """Veth pairs up to `n` on side `side` (created and up in one `ip -batch`): its seconds."""
        first = self.n if start is None else start
        lines = [f"link add {side}{i} type veth peer name {peer}{i}\nlink set {side}{i} up\nlink set {peer}{i} up\n"
                 for i in range(first, n)]
        secs = batch(self.ns, self.tmp / "grow", lines)
        if start is None:
            self.n = n
        return secs

    def devs(self, side: str = "a", n: int | None = None) -> list[str]:
        return [f"{side}{i}" for i in range(self.n if n is None else n)]

    def ip_attach(self, devs: list[str]) -> float:
        return batch(self.ns, self.tmp / "attach", [f"link set dev {d} xdpdrv obj {self.obj} sec xdp\n" for d in devs])

    def ip_attach_shared(self, devs: list[str]) -> float:
        """`ip -batch` attaching one program, loaded once (by bpftool, pinned in the run's bpffs),
        to every veth: the kernel's own attach cost with no load per interface, as offload's shared
        program has it."""
        pinned = self.tmp / "bpf" / "shared_count_drop"
        if not pinned.exists():
            subprocess.run(["bpftool", "prog", "load", str(self.obj), str(pinned), "type", "xdp"], check=True)
        return batch(self.ns, self.tmp / "attach", [f"link set dev {d} xdpdrv pinned {pinned}\n" for d in devs])

    def clear(self, devs: list[str]) -> None:
        """Everything off: one `ip -batch`, then `offload gc` frees the pins and records of what it
        took off (this run's own state only). Links offload holds are taken off by an apply of the
        rule matching nothing (netlink cannot)."""
        if self.via == "link":
            subprocess.run([OFFLOAD, "apply", "-f", str(self.none), "--netns", self.ns, "--journal",
                            str(self.journal)], check=True, capture_output=True)
        batch(self.ns, self.tmp / "off", [f"link set dev {d} xdp off\n" for d in devs], force=True)
        subprocess.run([OFFLOAD, "gc"], capture_output=True, check=True)

    def apply(self) -> float:
        return timed([OFFLOAD, "apply", "-f", str(self.policy), "--netns", self.ns, "--journal", str(self.journal)])


def side_by_side(lab: Lab, repeat: int, ip_shared: bool = False) -> dict:
    """apply and ip -batch over the lab's a-side veths, alternating, median of `repeat`; with
    `ip_shared`, also ip -batch attaching one program loaded once (the kernel's attach alone)."""
    devs, apply_s, ip_s, shared_s = lab.devs(), [], [], []
    for _ in range(repeat):
        apply_s.append(lab.apply())
        assert xdp_count(lab.ns, "a") == lab.n, "apply left veths without the program"
        lab.clear(devs)
        ip_s.append(lab.ip_attach(devs))
        assert xdp_count(lab.ns, "a") == lab.n
        lab.clear(devs)
        if ip_shared:
            shared_s.append(lab.ip_attach_shared(devs))
            assert xdp_count(lab.ns, "a") == lab.n
            lab.clear(devs)
    a, i = statistics.median(apply_s), statistics.median(ip_s)
    row = {"n": lab.n, "apply_s": round(a, 3), "ip_batch_s": round(i, 3), "apply_over_ip": round(a / i, 2),
           "apply_s_per_iface": a / lab.n, "ip_s_per_iface": i / lab.n, "apply_runs": apply_s, "ip_runs": ip_s,
           "load": round(os.getloadavg()[0], 2)}
    if shared_s:
        sh = statistics.median(shared_s)
        row.update(ip_shared_s=round(sh, 3), ip_shared_s_per_iface=sh / lab.n, ip_shared_runs=shared_s)
    return row


def one_attach(lab: Lab, repeat: int) -> dict:
    one, version, bare, cpu = [], [], [], {"attach": [], "version": [], "pass": []}
    for _ in range(repeat):
        bare.append(timed_cpu([sys.executable, "-c", "pass"], cpu["pass"]))
        version.append(timed_cpu([OFFLOAD, "--version"], cpu["version"]))
        one.append(timed_cpu([OFFLOAD, "attach", "a0", "count_drop", "--mode", "native", "--netns", lab.ns,
                              "--via", lab.via], cpu["attach"]))
        subprocess.run([OFFLOAD, "detach", "a0", "--netns", lab.ns], check=True, capture_output=True)
    out = {"attach_s": statistics.median(one), "version_s": statistics.median(version),
           "python_pass_s": statistics.median(bare)}
    # CPU seconds (user + system) of the same runs: what they cost, whatever the machine's load
    out.update({f"{k}_cpu_s": round(statistics.median(v), 3) for k, v in cpu.items()})
    return out


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))


def hotplug(lab: Lab, m: int) -> dict:
    """watch over the lab's veths; a burst of `m` veths created at once: until all are attached.

    Two comparisons with `ip -batch`, both reported (docs/benchmarks.md says which is which):
    - from the burst's start: watch's time from the first veth's creation until all carry the
      program, against one `ip -batch` that creates the same veths and attaches to each (both
      pay the creation; watch attaches while the veths are still being made);
    - from the end of creation: watch's time from the creating `ip -batch`'s exit until all carry
      the program, against `ip -batch` attaching to the `m` veths made already (watch's attaches
      done during the creation are not counted: this one flatters watch)."""
    watch = subprocess.Popen([OFFLOAD, "watch", "-f", str(lab.policy), "--netns", lab.ns, "--interval", "600",
                              "--journal", str(lab.journal)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 900
        while xdp_count(lab.ns, "a") < lab.n and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)   # its start reconcile over, and the link events of its own attaches read
        rss_before = rss_kib(watch.pid)
        t0 = time.monotonic()
        create_s = lab.grow(m, side="h", peer="g", start=0)
        created = time.monotonic()
        while (got := xdp_count(lab.ns, "h")) < m and time.monotonic() - t0 < 600:
            time.sleep(0.05)
        done = time.monotonic()
        rss_after = rss_kib(watch.pid)
    finally:
        watch.send_signal(signal.SIGTERM)
        watch.wait(timeout=120)
    hot = [f"h{i}" for i in range(m)]
    lab.clear(hot)
    ip_s = lab.ip_attach(hot)
    assert xdp_count(lab.ns, "h") == m
    lab.clear(hot)
    batch(lab.ns, lab.tmp / "del", [f"link del h{i}\n" for i in range(m)])
    ip_both_s = batch(lab.ns, lab.tmp / "both", [
        f"link add h{i} type veth peer name g{i}\nlink set h{i} up\nlink set g{i} up\n"
        f"link set dev h{i} xdpdrv obj {lab.obj} sec xdp\n" for i in range(m)])
    assert xdp_count(lab.ns, "h") == m
    lab.clear(hot + lab.devs())
    hot_s, after_s = done - t0, done - created
    return {"hotplug": m, "hotplug_attached": got, "hotplug_s": round(hot_s, 3), "hotplug_create_s": round(create_s, 3),
            "hotplug_ip_create_attach_s": round(ip_both_s, 3), "hotplug_over_ip": round(hot_s / ip_both_s, 2),
            "hotplug_after_create_s": round(after_s, 3), "hotplug_ip_batch_s": round(ip_s, 3),
            "hotplug_after_create_over_ip": round(after_s / ip_s, 2),
            "watch_rss_kib_before": rss_before, "watch_rss_kib_after": rss_after, "hotplug_load": round(os.getloadavg()[0], 2)}


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    ns = [r["n"] for r in rows]
    ax.plot(ns, [r["apply_s_per_iface"] * 1e3 for r in rows], "o-", label="offload apply")
    ax.plot(ns, [r["ip_s_per_iface"] * 1e3 for r in rows], "s--", label="ip -batch (same object)")
    ax.set_xscale("log")
    ax.set_xlabel("interfaces attached in one run")
    ax.set_ylabel("ms per interface")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def markdown(out: dict) -> str:
    apply = "`offload apply`" + (" (via link)" if out.get("via") == "link" else "")
    lines = [f"| interfaces | {apply} s | `ip -batch` s | ratio | apply ms/interface | ip ms/interface | load |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['n']} | {r['apply_s']:.3f} | {r['ip_batch_s']:.3f} | {r['apply_over_ip']}x | "
              f"{r['apply_s_per_iface'] * 1e3:.2f} | {r['ip_s_per_iface'] * 1e3:.2f} | {r['load']} |" for r in out["sizes"]]
    if "hotplug_s" in out:
        m = out["hotplug"]
        lines += ["", f"watch over {out['sizes'][-1]['n']} attached veths, a burst of {m} created with one `ip -batch` "
                  f"({out['hotplug_create_s']:.3f} s), {out['hotplug_attached']}/{m} attached. From the burst's start: "
                  f"{out['hotplug_s']:.3f} s, against one `ip -batch` creating the {m} and attaching to each "
                  f"{out['hotplug_ip_create_attach_s']:.3f} s ({out['hotplug_over_ip']}x). From the end of creation: "
                  f"{out['hotplug_after_create_s']:.3f} s, against `ip -batch` attaching to the {m} "
                  f"{out['hotplug_ip_batch_s']:.3f} s ({out['hotplug_after_create_over_ip']}x). watch RSS "
                  f"{out['watch_rss_kib_before']} KiB before, {out['watch_rss_kib_after']} KiB after (load "
                  f"{out['hotplug_load']})."]
    lines += ["", f"`offload attach` {out['attach_s']:.3f} s, `offload --version` {out['version_s']:.3f} s, "
              f"`python -c pass` {out['python_pass_s']:.3f} s (medians)."]
    return "\n".join(lines)


def targets(out: dict) -> list[tuple[str, bool]]:
    """Issue 24's targets this run measured, each with whether it was met."""
    rows = {r["n"]: r for r in out["sizes"]}
    got = [(f"apply over {n} at most 1.5x ip -batch ({rows[n]['apply_over_ip']}x)", rows[n]["apply_over_ip"] <= 1.5)
           for n in (1000, 5000) if n in rows]
    if 100 in rows and 5000 in rows:
        growth = rows[5000]["apply_s_per_iface"] / rows[100]["apply_s_per_iface"]
        got.append((f"seconds per interface at 5000 within 1.2x of 100 ({growth:.2f}x)", growth <= 1.2))
    if "hotplug_over_ip" in out:
        got.append((f"burst of {out['hotplug']} under watch within 2x of ip -batch, from the burst's start "
                    f"({out['hotplug_over_ip']}x)", out["hotplug_attached"] == out["hotplug"]
                    and out["hotplug_over_ip"] <= 2))
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sizes", nargs="*", type=int, default=[100])
    ap.add_argument("--hotplug", type=int, default=50, help="veths created at once under watch (0: none)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--plot", metavar="FILE.png", help="seconds per interface against interfaces, as a plot")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--ip-shared", action="store_true",
                    help="also ip -batch attaching one program loaded once by bpftool (the kernel's attach alone)")
    ap.add_argument("--ipv6-off", action="store_true", help="the veths made with IPv6 disabled in the namespace")
    ap.add_argument("--via", choices=["netlink", "link"], default="netlink",
                    help="how offload attaches (ip -batch is RTM_SETLINK either way)")
    args = ap.parse_args()

    byte_compile()   # as a wheel install would be
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))   # unwind: namespace, mount
    out: dict = {"sizes": [], "load_start": round(os.getloadavg()[0], 2), "ipv6": not args.ipv6_off, "via": args.via}
    tmp = Path(tempfile.mkdtemp(prefix="attach-scale-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        lab = Lab(stack, tmp, ipv6=not args.ipv6_off, via=args.via)
        for n in sorted(set(args.sizes)):
            lab.grow(n)
            out["sizes"].append(side_by_side(lab, args.repeat, args.ip_shared))
            row = out["sizes"][-1]
            shared = f", ip -batch one program loaded once {row['ip_shared_s']} s" if "ip_shared_s" in row else ""
            print(f"{n}: apply {row['apply_s']} s, ip -batch {row['ip_batch_s']} s{shared}", file=sys.stderr)
        out.update(one_attach(lab, args.repeat))
        if args.hotplug:
            out.update(hotplug(lab, args.hotplug))
    out["load_end"] = round(os.getloadavg()[0], 2)
    if args.plot:
        plot(out["sizes"], args.plot)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(markdown(out))
    for what, met in targets(out):
        print(f"target {what}: {'MET' if met else 'MISSED'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
