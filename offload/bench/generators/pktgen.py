"""The kernel's packet generator (/proc/net/pktgen): configure threads, run, parse results.

One kpktgend thread per CPU; each gets its own copy of the device (`DEV@N`), so the threads
transmit in parallel. Everything is plain procfs writes; the results are parsed into data.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from netaddr import AddrFormatError, IPAddress

from offload.errors import EnvironmentProblem, UsageError

PROC = Path(os.environ.get("OFFLOAD_PKTGEN_PROC", "/proc/net/pktgen"))
XMIT_MODES = ("start_xmit", "queue_xmit", "netif_receive")


@dataclass
class PktgenResult:
    device: str
    ok: bool
    usec: int | None = None
    packets: int | None = None          # packets sent (sofar)
    pkt_size: int | None = None
    pps: int | None = None
    mbps: int | None = None
    errors: int | None = None
    text: str = ""


_RESULT = re.compile(
    r"Result: OK: (?P<usec>\d+)\(c\d+\+d\d+\) usec, (?P<packets>\d+) \((?P<size>\d+)byte,\d+frags\)\s*"
    r"(?P<pps>\d+)pps (?P<mbps>\d+)Mb/sec \(\d+bps\) errors: (?P<errors>\d+)", re.S)


def parse_result(device: str, text: str) -> PktgenResult:
    """Parse a /proc/net/pktgen/DEV file's Result (and its pkts-sofar) into data."""
    m = _RESULT.search(text)
    if m:
        return PktgenResult(device, True, int(m["usec"]), int(m["packets"]), int(m["size"]), int(m["pps"]),
                            int(m["mbps"]), int(m["errors"]), text)
    sofar = re.search(r"pkts-sofar: (\d+)\s+errors: (\d+)", text)
    res = re.search(r"Result: (.*)", text)
    return PktgenResult(device, False, packets=int(sofar[1]) if sofar else None,
                        errors=int(sofar[2]) if sofar else None, text=res[1].strip() if res else text.strip())


@dataclass
class PktgenConfig:
    device: str
    threads: list[int]                  # CPUs, one kpktgend each
    pkt_size: int = 60
    count: int = 0                      # per thread; 0 = until stopped
    burst: int = 1
    clone_skb: int = 0
    dst_mac: str = "ff:ff:ff:ff:ff:ff"
    src_mac: str | None = None
    dst_min: str = "198.18.0.2"
    dst_max: str | None = None
    src_min: str = "198.18.0.1"
    src_max: str | None = None
    udp_src: tuple[int, int] = (9, 9)
    udp_dst: tuple[int, int] = (9, 9)
    xmit_mode: str = "start_xmit"
    rate_pps: int | None = None
    imix: list[tuple[int, int]] | None = None   # (frame size, weight): pktgen's imix_weights (Linux >= 5.9)
    extra: dict[str, str] = field(default_factory=dict)

    def commands(self, thread_dev: str) -> list[str]:
        if self.xmit_mode not in XMIT_MODES:
            raise UsageError(f"bad xmit_mode {self.xmit_mode}: use {', '.join(XMIT_MODES)}")
        for ip in (self.dst_min, self.dst_max, self.src_min, self.src_max):
            if ip is not None:
                try:
                    IPAddress(ip)  # checked before anything is written
                except (AddrFormatError, ValueError):
                    raise UsageError(f"bad pktgen address {ip!r}") from None
        cmds = [f"count {self.count}", f"pkt_size {self.pkt_size}", f"burst {self.burst}",
                f"clone_skb {self.clone_skb}", f"dst_mac {self.dst_mac}", f"dst_min {self.dst_min}",
                f"dst_max {self.dst_max or self.dst_min}", f"src_min {self.src_min}",
                f"src_max {self.src_max or self.src_min}", f"udp_src_min {self.udp_src[0]}",
                f"udp_src_max {self.udp_src[1]}", f"udp_dst_min {self.udp_dst[0]}",
                f"udp_dst_max {self.udp_dst[1]}", f"xmit_mode {self.xmit_mode}"]
        if self.src_mac:
            cmds.append(f"src_mac {self.src_mac}")
        if self.rate_pps:
            cmds.append(f"ratep {self.rate_pps}")
        if self.imix:
            cmds.append("imix_weights " + " ".join(f"{size},{weight}" for size, weight in self.imix))
        cmds += [f"{k} {v}" for k, v in self.extra.items()]
        return cmds


def available(load: bool = True) -> bool:
    """Is pktgen there? Tries to load the module once (`modprobe pktgen`) when it is not."""
    if (PROC / "pgctrl").exists():
        return True
    if load:
        # No library call loads a kernel module; modprobe is the tool for it (absent: no modules).
        try:
            subprocess.run(["modprobe", "pktgen"], capture_output=True, timeout=30)
        except (FileNotFoundError, subprocess.TimeoutExpired):
            pass
    return (PROC / "pgctrl").exists()


def _write(path: Path, cmd: str) -> None:
    with open(path, "w") as f:
        f.write(cmd + "\n")
    # pktgen reports a refused command in the file's Result line, not as a write error
    res = re.search(r"Result: (.*)", path.read_text()) if path.name != "pgctrl" else None
    if res and not res[1].startswith(("OK", "Idle")) and "pgctrl" not in str(path):
        msg = res[1].strip()
        if msg.lower().startswith(("no such", "error", "bad")):
            raise UsageError(f"pktgen refused '{cmd}' on {path.name}: {msg}")


class Pktgen:
    """Configure, run and always clean up pktgen threads for one device."""

    def __init__(self, cfg: PktgenConfig) -> None:
        if not available():
            raise EnvironmentProblem("pktgen is not available: /proc/net/pktgen is missing and "
                                     "`modprobe pktgen` did not load it",
                                     hint="use --generator live-frames, or a kernel with CONFIG_NET_PKTGEN")
        self.cfg = cfg
        self.devs = [f"{cfg.device}@{cpu}" for cpu in cfg.threads]

    def setup(self) -> None:
        self.reset()
        for cpu, dev in zip(self.cfg.threads, self.devs):
            thread = PROC / f"kpktgend_{cpu}"
            if not thread.exists():
                raise UsageError(f"no pktgen thread for CPU {cpu} (kpktgend_{cpu})")
            _write(thread, "rem_device_all")
            _write(thread, f"add_device {dev}")
            for cmd in self.cfg.commands(dev):
                _write(PROC / dev, cmd)

    def run(self) -> list[PktgenResult]:
        """Start every thread and wait (pgctrl `start` returns when all are done or stopped)."""
        _write(PROC / "pgctrl", "start")
        return self.results()

    def results(self) -> list[PktgenResult]:
        return [parse_result(dev, (PROC / dev).read_text()) for dev in self.devs if (PROC / dev).exists()]

    def stop(self) -> None:
        if (PROC / "pgctrl").exists():
            _write(PROC / "pgctrl", "stop")

    def reset(self) -> None:
        """Stop and remove every device from every thread: no pktgen thread keeps running."""
        if (PROC / "pgctrl").exists():
            _write(PROC / "pgctrl", "reset")
