"""Fleet exports: a Node Feature Discovery feature file, node-exporter textfile metrics, a systemd
unit for `offload watch`; written atomically, and on a schedule with `--interval`."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterable

from offload.errors import OffloadError, UsageError
from offload.kernel import clock, fs, privileges
from offload.probe import verdicts
from offload.probe.facts import DeviceFacts

NFD_DEFAULT = "/etc/kubernetes/node-feature-discovery/features.d/offload"
PREFIX = "offload.xdp"   # a label namespace of our own: NFD keeps it as is
POLICY_DEFAULT = "/etc/offload/policy.yaml"
JOURNAL_DEFAULT = "/var/lib/offload/journal.jsonl"

# Kubernetes label syntax (NFD applies it to feature-file names): a name of at most 63
# characters, alphanumeric at both ends, '-', '_' and '.' inside; a prefix a DNS subdomain.
_NAME_MAX = 63
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


def write_file(path: str, text: str, what: str) -> None:
    """Replace file `path` atomically. Its directory is reached without following links others
    control and made if missing; the name is one plain component that readers do not skip."""
    directory, name = os.path.split(path)
    if not directory or not name or name.startswith("."):
        raise UsageError(f"{what} {path!r}: expected an absolute file path whose name does not start "
                         "with '.' (readers skip dot-files)")
    try:
        fs.replace_path(path, text.encode(), create_dirs=True)
    except OSError as e:   # a full disk, a read-only or kernel file system: said, never a traceback
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):   # exit 3 (4 read-only), naming what is lacking
            # a name made relative to the directory's fd (the temporary file, renamed after): joined to it
            e.filename = os.path.join(directory, os.fsdecode(e.filename)) if e.filename else directory
            raise privileges.explain_denied(e).within(f"{what} {path}") from None
        raise OffloadError(f"{what} {path}: cannot write it: {e.strerror} ({errno.errorcode.get(e.errno, e.errno)})"
                           ) from None


# -- Node Feature Discovery ---------------------------------------------------------------------
def bus_backed(d: DeviceFacts) -> bool:
    """A device with a parent bus device (a PCI NIC, an SR-IOV VF, virtio, an auxiliary device):
    what a node's hardware offers. The probe calls that kind "physical"; veth, bridge, tun, bond
    and every other software device have a kind of their own."""
    return d.kind == "physical"


def label_name(raw: str) -> str | None:
    """`raw` made a valid label name (characters outside the alphabet become '-'), or None if
    nothing valid of at most 63 characters remains."""
    name = re.sub(r"[^-A-Za-z0-9_.]", "-", raw).strip("-_.")
    return name if len(name) <= _NAME_MAX and _NAME.fullmatch(name) else None


def nfd_labels(assessed: Iterable[tuple[DeviceFacts, dict]], include_virtual: bool = False) -> dict:
    """Labels over the node's interfaces (pure): by default only bus-backed ones count, so a
    node whose only XDP-native links are a CNI's veths is not labelled native."""
    best = None
    labels: dict[str, str] = {}
    counted, ignored, warnings = [], [], []
    for d, judged in assessed:
        if d.kind == "loopback" or not (include_virtual or bus_backed(d)):
            ignored.append({"interface": d.name, "kind": d.kind})
            continue
        counted.append(d.name)
        rec = verdicts.recommend(judged)["mode"]
        best = verdicts.better(best, rec)
        if judged[verdicts.Mode.HW].status == verdicts.SUPPORTED:
            labels[f"{PREFIX}/hw-offload"] = "true"
        if judged[verdicts.Mode.NATIVE].status == verdicts.SUPPORTED:
            labels[f"{PREFIX}/native"] = "true"
        if rec in (verdicts.Mode.HW, verdicts.Mode.NATIVE) and d.driver:
            name = label_name(f"driver.{d.driver}")
            if name is None:
                warnings.append(f"{d.name}: driver {d.driver!r} cannot be a label name (at most {_NAME_MAX} "
                                "characters of A-Z a-z 0-9 - _ .): no driver label for it")
            else:
                labels[f"{PREFIX}/{name}"] = "true"
    labels[f"{PREFIX}/best-mode"] = str(best) if best else "none"
    return {"labels": dict(sorted(labels.items())), "counted": counted, "ignored": ignored, "warnings": warnings}


def nfd_text(labels: dict[str, str], expires: float | None = None) -> str:
    """A feature file: with `expires` (epoch seconds), NFD's `# +expiry-time=` directive first (NFD
    >= 0.14 drops the labels after it, so they vanish when the labeller stops rewriting them)."""
    head = f"# +expiry-time={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(expires))}\n" if expires else ""
    return head + "".join(f"{k}={v}\n" for k, v in labels.items())


def nfd_expiry(interval: float | None, expires_after: float | None) -> float | None:
    """Seconds a feature file stays valid: as asked, else three rounds of a labeller (a missed
    round or two must not drop a node's labels), else for ever (a file written once)."""
    if expires_after is not None:
        return expires_after
    return 3 * interval if interval else None


def export_nfd(path: str = NFD_DEFAULT, include_virtual: bool = False, expires_after: float | None = None) -> dict:
    from offload.probe.report import assess

    _, assessed = assess(include_loopback=False)
    res = nfd_labels(((a.facts, a.verdicts) for a in assessed), include_virtual)
    expires = time.time() + expires_after if expires_after else None
    write_file(path, nfd_text(res["labels"], expires), "--path")
    return {"path": path, "include_virtual": include_virtual, **res,
            "expires": None if expires is None else clock.rfc3339(int(expires))}


# -- node-exporter textfile ---------------------------------------------------------------------
def prometheus_path(path: str | None, directory: str | None) -> str:
    from offload.orchestrate.metrics import TEXTFILE_DIR, TEXTFILE_NAME

    if path and directory:
        raise UsageError("give --path or --textfile-dir, not both")
    path = path or os.path.join(directory or TEXTFILE_DIR, TEXTFILE_NAME)
    if not path.endswith(".prom"):
        raise UsageError(f"--path {path!r}: node-exporter's textfile collector reads only *.prom files")
    return path


MAX_BENCH_JSON = 4 << 20   # a bench result is a few KiB; a runaway one is no result


def read_bench(path: str) -> dict:
    """An `offload bench --json` result from regular file `path`, its shape checked against what the
    metric reads; bad input (exit 2) otherwise, quoting nothing of the file."""
    raw = fs.read_regular(path, MAX_BENCH_JSON, "--bench-json")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise UsageError(f"--bench-json {path}: not UTF-8 text (invalid byte at offset {e.start})") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"--bench-json {path}: not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise UsageError(f"--bench-json {path}: not an `offload bench --json` result: nested too deeply") from None
    problem = _bench_problem(doc)
    if problem:
        raise UsageError(f"--bench-json {path}: not an `offload bench --json` result: {problem}")
    return doc


def _bench_problem(doc) -> str | None:
    """What in `doc` the bench metric could not use, or None."""
    if not isinstance(doc, dict):
        return "not a JSON object"
    if not isinstance(doc.get("config"), dict) or not isinstance(doc["config"].get("program"), str):
        return "config.program is not a string"
    if not isinstance(doc.get("results"), list):
        return "results is not a list"
    for i, r in enumerate(doc["results"]):
        if not isinstance(r, dict) or not isinstance(r.get("mode"), str):
            return f"results[{i}].mode is not a string"
        if not isinstance(r.get("generator", ""), str):
            return f"results[{i}].generator is not a string"
        pps = r.get("rx_pps")
        if pps is not None and (isinstance(pps, bool) or not isinstance(pps, (int, float)) or not math.isfinite(pps)):
            return f"results[{i}].rx_pps is not a number"
    return None


def export_prometheus(path: str, bench_json: str | None = None, health=None) -> dict:
    from offload.orchestrate import metrics

    text = metrics.text(health, None if bench_json is None else read_bench(bench_json))
    write_file(path, text, "--path")
    return {"path": path, "samples": sum(1 for line in text.splitlines() if line and not line.startswith("#"))}


# -- systemd ------------------------------------------------------------------------------------
def entry_point() -> list[str]:
    """The command that runs this offload: the `offload` script by its absolute path where it was
    installed (a venv's bin/, /usr/local/bin, ...), else this interpreter with `-m offload`."""
    argv0 = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if os.path.basename(argv0) == "offload" and os.access(argv0, os.X_OK):
        return [argv0]
    return [os.path.abspath(sys.executable), "-m", "offload"]


def systemd_unit(policy: str = POLICY_DEFAULT, interval: float = 30.0, journal: str = JOURNAL_DEFAULT,
                 metrics_address: str | None = None, textfile_dir: str | None = None,
                 command: list[str] | None = None) -> str:
    """A unit for `offload watch` (systemd-analyze verify clean) that runs the offload installed here."""
    for what, p in (("--policy", policy), ("--journal", journal), ("--textfile-dir", textfile_dir)):
        if p is not None and (not os.path.isabs(p) or "\n" in p):
            raise UsageError(f"{what} {p!r}: systemd needs an absolute path")
    argv = [*(command or entry_point()), "watch", "-f", policy, "--interval", f"{interval:g}", "--journal", journal]
    if metrics_address:
        from offload.orchestrate.metrics import parse_address

        parse_address(metrics_address)
        argv += ["--metrics-address", metrics_address]
    if textfile_dir:
        argv += ["--textfile-dir", textfile_dir]
    # ProtectSystem=strict leaves writable only what the unit names: bpffs (pins) and the text-file
    # directory here; /run/offload, /var/lib/offload, /var/cache/offload as systemd's own dirs.
    writable = ["/sys/fs/bpf", *([textfile_dir] if textfile_dir else [])]
    inet = "AF_INET AF_INET6" if metrics_address else "AF_INET"
    # systemd's own quoting is close to the shell's; '%' and '$' would be specifiers and variables
    exec_start = " ".join(shlex.quote(a).replace("%", "%%").replace("$", "$$") for a in argv)
    return f"""\
[Unit]
Description=offload: keep XDP programs on this host's NICs as {policy} says
After=network-pre.target sys-fs-bpf.mount
Wants=network-pre.target

[Service]
Type=simple
ExecStart={exec_start}
# SIGTERM stops it cleanly; programs stay attached (add --detach-on-exit to remove them).
KillSignal=SIGTERM
Restart=on-failure
RestartSec=5
{_HARDENING.format(writable=" ".join(writable), inet=inet)}
[Install]
WantedBy=multi-user.target
"""


# `systemd-analyze security --offline=true` rates this 2.4 (OK; 7.4 before); test_unit_sandbox.py
# runs attach, stats, watch and /metrics under the same capabilities and read-only root.
_HARDENING = """\
# Root for its state (root-owned, never through a link), with only the capabilities XDP needs:
# CAP_SYS_ADMIN for BPF objects by id (status, stats, gc), CAP_PERFMON for BPF_PROG_RUN.
AmbientCapabilities=CAP_NET_ADMIN CAP_BPF CAP_SYS_ADMIN CAP_PERFMON
CapabilityBoundingSet=CAP_NET_ADMIN CAP_BPF CAP_SYS_ADMIN CAP_PERFMON
NoNewPrivileges=yes
# What it writes: pins, records and the lock, the journal, compiled objects; nothing else.
ProtectSystem=strict
ReadWritePaths={writable}
RuntimeDirectory=offload
RuntimeDirectoryPreserve=yes
StateDirectory=offload
CacheDirectory=offload
RuntimeDirectoryMode=0700
StateDirectoryMode=0700
CacheDirectoryMode=0700
UMask=0077
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
DevicePolicy=closed
PrivateMounts=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectKernelTunables=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
KeyringMode=private
RemoveIPC=yes
# netlink (links, XDP, ethtool, devlink), unix (udev), inet for the ethtool ioctls (an AF_INET
# datagram socket) and --metrics-address (AF_INET6 only then).
RestrictAddressFamilies=AF_NETLINK AF_UNIX {inet}
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
# The BPF JIT writes kernel memory, not ours; Python and libbpf need no writable code.
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service bpf perf_event_open
SystemCallFilter=~@mount @swap @reboot @raw-io @module @obsolete @cpu-emulation @debug @clock
SystemCallErrorNumber=EPERM
"""


def export_systemd(path: str | None = None, **kw) -> dict:
    unit = systemd_unit(**kw)
    if path is not None:
        if not path.endswith(".service"):
            raise UsageError(f"--path {path!r}: a unit file's name ends in .service")
        write_file(path, unit, "--path")
    return {"path": path, "unit": unit}


# -- on a schedule ------------------------------------------------------------------------------
def every(interval: float, fn: Callable[[], dict], log: Callable[[dict], None]) -> None:
    """Run `fn` now and every `interval` seconds until SIGTERM or SIGINT. A failed first round
    fails the command (a bad path is not worth retrying); a later failed round is logged and the
    next one tries again (a labeller must not crash-loop on one bad moment)."""
    from offload.errors import OffloadError

    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        log(fn())
        while True:
            deadline = time.monotonic() + interval
            while not stop["now"] and time.monotonic() < deadline:
                time.sleep(min(0.2, max(deadline - time.monotonic(), 0)))
            if stop["now"]:
                break
            try:
                log(fn())
            except OffloadError as e:
                log({"error": e.message, "hint": e.hint})
            except OSError as e:   # e.g. the disk is full for a moment
                log({"error": str(e), "hint": None})
    finally:
        for s, h in old.items():
            signal.signal(s, h)
