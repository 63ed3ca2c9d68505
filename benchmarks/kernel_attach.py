#!/usr/bin/env python3
"""The kernel's XDP attach against the number of interfaces, without offload (issue 24).

For each size N (ascending; the namespaces grow from one to the next), in namespaces of the
script's own holding N veth pairs each, one program (the library's count_drop.o) loaded once by
bpftool and pinned, the wall time of attaching it to the first K veths, interleaved --repeat
times (median), by three means:

- `netlink`: one `ip -batch` of `link set dev aI xdpdrv pinned P` (RTM_SETLINK with IFLA_XDP, as
  ip, libbpf's bpf_xdp_attach, libxdp and offload attach), taken off again after;
- `netlink-noipv6`: the same in a second namespace whose veths were made after
  net.ipv6.conf.{all,default}.disable_ipv6=1 (no IPv6 on them);
- `bpf_link`: BPF_LINK_CREATE (libbpf's bpf_link_create, attach type BPF_XDP) on the same K veths
  of the first namespace, the links closed after (which detaches).

RTM_SETLINK ends with a NETDEV_CHANGE notification of the device (rtnetlink's do_setlink marks
an IFLA_XDP change DO_SETLINK_NOTIFY); IPv6's addrconf answers it with a walk of the namespace's
whole IPv6 FIB (rt6_sync_up) and new MLD reports, both linear in the number of interfaces.
BPF_LINK_CREATE sends no such notification. The three columns separate that cost from the
attach itself. Everything is removed on every exit path.

With --perf PREFIX, one more `netlink` attach per size runs under `perf record -a -g` (the whole
machine: addrconf's MLD and DAD work runs in kworkers), written to PREFIX-N.data; read it with
`perf report -i PREFIX-N.data --no-children --sort sym`.

Usage: .venv/bin/python benchmarks/kernel_attach.py [N ...] [--attach K] [--repeat R] [--json]
       [--perf PREFIX]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from offload.kernel import bpfsys, netns  # noqa: E402
from offload.load import programs  # noqa: E402

BPF_XDP = 37   # enum bpf_attach_type: BPF_XDP, the attach type of an XDP link
METHODS = ("netlink", "netlink-noipv6", "bpf_link")


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def batch(ns: str, path: Path, lines: list[str], wrap: tuple[str, ...] = (), cpu: list[float] | None = None) -> float:
    """`ip -n NS -batch` of `lines` (under `wrap`, a command prefix): its wall seconds; its CPU
    seconds (user + system: the kernel's work done in ip's own context) appended to `cpu`."""
    path.write_text("".join(lines))
    c, t = children_cpu_s(), time.perf_counter()
    subprocess.run([*wrap, "ip", "-n", ns, "-batch", str(path)], check=True)
    wall = time.perf_counter() - t
    if cpu is not None:
        cpu.append(children_cpu_s() - c)
    return wall


class Lab:
    """Two namespaces of veth pairs a0/b0 ...: `ns` as made, `ns6off` with IPv6 off."""

    def __init__(self, stack: ExitStack, tmp: Path) -> None:
        self.tmp, self.n = tmp, 0
        self.ns, self.ns6off = f"ka{os.getpid() % 100000}", f"kb{os.getpid() % 100000}"
        (tmp / "bpf").mkdir()
        subprocess.run(["mount", "-t", "bpf", "bpffs", str(tmp / "bpf")], check=True)
        stack.callback(subprocess.run, ["umount", "-l", str(tmp / "bpf")], check=False)
        for ns in (self.ns, self.ns6off):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            stack.callback(subprocess.run, ["ip", "netns", "del", ns], check=False)
        subprocess.run(["ip", "netns", "exec", self.ns6off, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1"], check=True)
        self.pin = tmp / "bpf" / "count_drop"
        subprocess.run(["bpftool", "prog", "load", str(programs.library_object("count_drop")), str(self.pin),
                        "type", "xdp"], check=True)

    def grow(self, n: int) -> None:
        lines = [f"link add a{i} type veth peer name b{i}\nlink set a{i} up\nlink set b{i} up\n"
                 for i in range(self.n, n)]
        for ns in (self.ns, self.ns6off):
            batch(ns, self.tmp / "grow", lines)
        self.n = n

    def netlink(self, ns: str, k: int, perf: str | None = None, cpu: list[float] | None = None) -> float:
        secs = batch(ns, self.tmp / "att", [f"link set dev a{i} xdpdrv pinned {self.pin}\n" for i in range(k)],
                     ("perf", "record", "-q", "-a", "-g", "-o", perf, "--") if perf else (), cpu)
        batch(ns, self.tmp / "off", [f"link set dev a{i} xdpdrv off\n" for i in range(k)])
        return secs

    def bpf_link(self, k: int) -> float:
        """BPF_LINK_CREATE on a0 ... a<k-1> of `ns`; the links are closed after (which detaches)."""
        lib = bpfsys.libbpf()
        lib.bpf_link_create.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
        prog = bpfsys.obj_get(str(self.pin))
        links: list[int] = []
        try:
            with netns.inside(self.ns):
                ifindexes = [socket.if_nametoindex(f"a{i}") for i in range(k)]
                t = time.perf_counter()
                for ifindex in ifindexes:
                    fd = lib.bpf_link_create(prog, ifindex, BPF_XDP, None)
                    if fd < 0:
                        raise OSError(-fd, f"BPF_LINK_CREATE on ifindex {ifindex}: {os.strerror(-fd)}")
                    links.append(fd)
                return time.perf_counter() - t
        finally:
            for fd in [prog, *links]:
                os.close(fd)


def measure(lab: Lab, k: int, repeat: int) -> dict:
    runs: dict[str, list[float]] = {m: [] for m in METHODS}
    ip_cpu: list[float] = []
    for _ in range(repeat):   # interleaved: the machine's load moves between repeats, not between columns
        runs["netlink"].append(lab.netlink(lab.ns, k, cpu=ip_cpu))
        runs["netlink-noipv6"].append(lab.netlink(lab.ns6off, k))
        runs["bpf_link"].append(lab.bpf_link(k))
    # ip's own CPU against its wall time: the rest it waited (the RTNL lock, held by addrconf's workers)
    row: dict = {"n": lab.n, "attached": k, "load": round(os.getloadavg()[0], 2),
                 "netlink_ip_cpu_ms_per_attach": round(statistics.median(ip_cpu) * 1e3 / k, 3)}
    for m in METHODS:
        row[f"{m}_ms_per_attach"] = round(statistics.median(runs[m]) * 1e3 / k, 3)
        row[f"{m}_runs_s"] = [round(s, 3) for s in runs[m]]
    return row


def markdown(out: dict) -> str:
    lines = ["| veth pairs | netlink ms/attach | of which ip's CPU | netlink, no IPv6 ms/attach | bpf_link ms/attach | load |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['n']} | {r['netlink_ms_per_attach']:.3f} | {r['netlink_ip_cpu_ms_per_attach']:.3f} | "
              f"{r['netlink-noipv6_ms_per_attach']:.3f} | {r['bpf_link_ms_per_attach']:.3f} | {r['load']} |"
              for r in out["sizes"]]
    lines += ["", "growth from the smallest to the largest size: "
              + ", ".join(f"{m} {out['growth'][m]}x" for m in METHODS)]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sizes", nargs="*", type=int, default=[100, 5000])
    ap.add_argument("--attach", type=int, default=100, help="veths attached at each size (the first K)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--perf", metavar="PREFIX", help="also one netlink attach per size under perf record -a -g")
    args = ap.parse_args()
    if args.attach > min(args.sizes):
        ap.error("--attach must not exceed the smallest size")

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))   # unwind: namespaces, mount
    out: dict = {"sizes": [], "load_start": round(os.getloadavg()[0], 2)}
    tmp = Path(tempfile.mkdtemp(prefix="kernel-attach-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        lab = Lab(stack, tmp)
        for n in sorted(set(args.sizes)):
            lab.grow(n)
            out["sizes"].append(measure(lab, args.attach, args.repeat))
            if args.perf:
                lab.netlink(lab.ns, args.attach, f"{args.perf}-{n}.data")
            print(f"{n}: {out['sizes'][-1]}", file=sys.stderr)
    first, last = out["sizes"][0], out["sizes"][-1]
    out["growth"] = {m: round(last[f"{m}_ms_per_attach"] / first[f"{m}_ms_per_attach"], 2) for m in METHODS}
    out["load_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=2) if args.json else markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
