"""The hardened systemd unit (`offload export systemd`) leaves offload able to do its job: attach,
stats, watch with `/metrics`, detach, under the unit's own restrictions.

PID 1 here is not systemd, so `systemd-run` cannot apply them; this is the stand-in the issue
names: the unit's capability bounding set through `setpriv` (no-new-privs, the same capabilities
bounding, inheritable and ambient, nothing else), its UMask, and ProtectSystem=strict as a private
mount namespace in which every mount but /proc and /dev is read-only except the paths the unit makes
writable (ReadWritePaths, RuntimeDirectory, StateDirectory, CacheDirectory), each mapped to a
directory of this test's own (a fresh bpffs instance for /sys/fs/bpf); PrivateTmp as a writable
directory of its own named by TMPDIR (a tmpfs on /tmp would hide this test's files);
MemoryDenyWriteExecute as the kernel's own form of it, prctl(PR_SET_MDWE), which execve keeps (what
systemd 254 and later use where the kernel has it). Not covered by the stand-in: the system call
filter, the address families and RestrictNamespaces (seccomp, which setpriv does not apply);
`systemd-analyze security` rates those (test_metrics.py)."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from lib.cli import OFFLOAD
from lib.kernel import kernel_xdp

from test_metrics import labels_of, scrape, stop

pytestmark = pytest.mark.root

# What each writable path of the unit is, here (offload's own environment variables move them).
UNIT_PATHS = {"/sys/fs/bpf": "bpffs", "/run/offload": "run", "/var/lib/offload": "state",
              "/var/cache/offload": "cache", "PrivateTmp": "tmp"}
DIRECTORIES = {"RuntimeDirectory": "/run", "StateDirectory": "/var/lib", "CacheDirectory": "/var/cache"}

# MemoryDenyWriteExecute: no mapping may become writable and executable, in this process and after exec.
MDWE = ("import ctypes, os, sys; libc = ctypes.CDLL(None, use_errno=True); "
        "assert libc.prctl(65, 1, 0, 0, 0) == 0, os.strerror(ctypes.get_errno()); "   # PR_SET_MDWE, REFUSE_EXEC_GAIN
        "os.execvp(sys.argv[1], sys.argv[1:])")

# ProtectSystem=strict as mounts: the writable paths bound onto themselves (mounts of their own),
# then every other mount remounted read-only; then the unit's umask.
SCRIPT = r"""
set -e
umask_=$1; n=$2; shift 2
rw=" "
while [ "$n" -gt 0 ]; do mount --bind "$1" "$1"; rw="$rw$1 "; shift; n=$((n - 1)); done
findmnt -rn -o TARGET | while read -r m; do
  case "$rw" in *" $m "*) continue ;; esac
  case "$m" in /proc|/proc/*|/dev|/dev/*) continue ;; esac
  mount -o remount,bind,ro "$m" 2>/dev/null || echo "sandbox: $m stays writable" >&2
done
umask "$umask_"
exec "$@"
"""


def settings(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, val in re.findall(r"^(\w+)=(.*)$", unit, re.M):
        out.setdefault(key, []).append(val)
    return out


class Sandbox:
    def __init__(self, base: Path, unit: str) -> None:
        s = settings(unit)
        self.caps = [c.removeprefix("CAP_").lower() for c in s["CapabilityBoundingSet"][0].split()]
        self.umask = s["UMask"][0]
        self.mdwe = s.get("MemoryDenyWriteExecute") == ["yes"]
        paths = [p for line in s.get("ReadWritePaths", []) for p in line.split()]
        paths += [f"{DIRECTORIES[k]}/{v[0]}" for k, v in s.items() if k in DIRECTORIES]
        paths += ["PrivateTmp"] if s.get("PrivateTmp") == ["yes"] else []
        assert sorted(paths) == sorted(UNIT_PATHS), f"the unit writes where this stand-in does not map: {paths}"
        self.dirs = {p: base / name for p, name in UNIT_PATHS.items()}
        for d in self.dirs.values():
            d.mkdir(mode=0o700)
        self.bpffs = self.dirs["/sys/fs/bpf"]
        subprocess.run(["mount", "-t", "bpf", "bpffs", str(self.bpffs)], check=True)
        self.env = {**os.environ, "OFFLOAD_BPFFS": str(self.bpffs), "OFFLOAD_RUN_DIR": str(self.dirs["/run/offload"]),
                    "OFFLOAD_CACHE_DIR": str(self.dirs["/var/cache/offload"]), "TMPDIR": str(self.dirs["PrivateTmp"])}

    def close(self) -> None:
        subprocess.run(["umount", str(self.bpffs)], check=True)

    def argv(self, *cmd: str, caps: list[str] | None = None, writable: list[Path] | None = None) -> list[str]:
        caps = self.caps if caps is None else caps
        writable = list(self.dirs.values()) if writable is None else writable
        allowed = ",".join(["-all", *(f"+{c}" for c in caps)])
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", SCRIPT, "sandbox", self.umask,
                str(len(writable)), *map(str, writable), "setpriv", "--no-new-privs", "--bounding-set", allowed,
                "--inh-caps", allowed, "--ambient-caps", allowed,
                *(["/usr/bin/python3", "-c", MDWE] if self.mdwe else []), *cmd]

    def run(self, *cmd: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*cmd, **kw), capture_output=True, text=True, timeout=300, env=self.env)

    def offload_json(self, *args: str) -> dict:
        res = self.run(OFFLOAD, *args, "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        return json.loads(res.stdout)


@pytest.fixture
def sandbox(tmp_path):
    unit = subprocess.run([OFFLOAD, "export", "systemd", "--metrics-address", "127.0.0.1:9477"], check=True,
                          capture_output=True, text=True).stdout
    box = Sandbox(tmp_path, unit)
    yield box
    box.close()


def test_the_stand_in_is_read_only_but_where_the_unit_writes(sandbox):
    """The stand-in holds: writing outside the unit's paths fails, inside them works, with the
    unit's capabilities only and its umask."""
    run_dir = sandbox.dirs["/run/offload"]
    res = sandbox.run("sh", "-c", f"touch {run_dir}/a && ls -l {run_dir}/a && grep CapEff /proc/self/status; "
                                  f"touch {run_dir.parent}/b")
    assert res.returncode != 0 and "Read-only file system" in res.stderr, res.stderr
    assert res.stdout.startswith("-rw-------"), res.stdout
    assert int(res.stdout.split()[-1], 16) == sum(1 << n for n in (12, 21, 38, 39))   # NET_ADMIN SYS_ADMIN PERFMON BPF
    assert "stays writable" not in res.stderr, res.stderr
    assert sandbox.mdwe
    res = sandbox.run("/usr/bin/python3", "-c", "import mmap; mmap.mmap(-1, 4096, prot=7)")   # PROT_READ|WRITE|EXEC
    assert res.returncode != 0 and "Permission denied" in res.stderr, res.stderr


def test_attach_stats_watch_and_metrics_work_under_the_unit(sandbox, env, tmp_path):
    out = sandbox.offload_json("attach", env.ifname, "count_drop", "--netns", env.netns)
    assert kernel_xdp(env.ifname, env.netns) == {out["mode"]: out["prog_id"]}
    pins = [p for p in sandbox.bpffs.rglob("*") if p.is_file() and not p.name.endswith(".debug")]
    assert pins and all(p.stat().st_uid == 0 for p in pins)
    stats = sandbox.offload_json("stats", env.ifname, "--netns", env.netns)
    assert stats["mode"] == out["mode"]
    status = sandbox.offload_json("status", "--netns", env.netns)
    assert [a["prog_id"] for a in status["attachments"]] == [out["prog_id"]]
    assert sandbox.offload_json("detach", env.ifname, "--netns", env.netns)["detached"]

    pol = tmp_path / "policy.yaml"
    pol.write_text(f"rules:\n  - name: t\n    match: {{interfaces: [\"{env.ifname}\"]}}\n    program: count_drop\n")
    journal = sandbox.dirs["/var/lib/offload"] / "journal.jsonl"
    proc = subprocess.Popen(sandbox.argv(OFFLOAD, "watch", "-f", str(pol), "--interval", "60", "--journal",
                                         str(journal), "--metrics-address", "127.0.0.1:0", "--netns", env.netns),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=sandbox.env)
    try:
        line = ""
        while "metrics=" not in line and proc.poll() is None:
            line = proc.stdout.readline()
        url = re.search(r"metrics=(http://\S+)", line)
        assert url, f"watch did not serve: {line!r}"
        samples = {}
        for _ in range(600):
            _, samples = scrape(url.group(1))
            if labels_of(samples, "offload_xdp_packets_total"):
                break
        assert labels_of(samples, "offload_xdp_packets_total"), "watch attached nothing"
        version = subprocess.run([OFFLOAD, "--version"], capture_output=True, text=True).stdout.split()[-1]
        assert labels_of(samples, "offload_build_info") == [{"version": version}]
        assert samples[("process_resident_memory_bytes", ())] > 0 and samples[("process_open_fds", ())] > 0
        assert len(kernel_xdp(env.ifname, env.netns)) == 1
    finally:
        code, output = stop(proc)
    assert code == 0, output
    assert journal.stat().st_mode & 0o077 == 0 and journal.read_text().strip()
    assert sandbox.offload_json("detach", env.ifname, "--netns", env.netns)["detached"]
    assert kernel_xdp(env.ifname, env.netns) == {}


def test_a_path_the_unit_does_not_make_writable_is_named(sandbox, env):
    """Records with no writable run directory: the error names the directory and what is missing."""
    writable = [d for p, d in sandbox.dirs.items() if p != "/run/offload"]
    res = sandbox.run(OFFLOAD, "attach", env.ifname, "count_drop", "--netns", env.netns, writable=writable)
    assert res.returncode in (3, 4), res.stdout + res.stderr
    assert str(sandbox.dirs["/run/offload"]) in res.stderr and "read-only" in res.stderr.lower(), res.stderr
    assert "needs root" not in res.stderr
    assert kernel_xdp(env.ifname, env.netns) == {}


def in_netns(env, argv: list[str]) -> list[str]:
    """`argv` inside the lab's namespace from the start: no --netns (setns needs CAP_SYS_ADMIN)."""
    return ["ip", "netns", "exec", env.netns, *argv]


def test_a_missing_capability_is_named(sandbox, env):
    """Without CAP_SYS_ADMIN, attach works (CAP_BPF loads), but detach must open the program by id
    (BPF_PROG_GET_FD_BY_ID): the kernel's EPERM is said with the capability, not as "root" or exit 70."""
    caps = [c for c in sandbox.caps if c != "sys_admin"]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(in_netns(env, sandbox.argv(OFFLOAD, *args, caps=caps)), capture_output=True, text=True,
                              timeout=300, env=sandbox.env)

    res = run("attach", env.ifname, "count_drop")
    assert res.returncode == 0, res.stderr
    attached = kernel_xdp(env.ifname, env.netns)
    assert len(attached) == 1
    res = run("detach", env.ifname)
    assert res.returncode == 3, res.stderr
    assert "lacks CAP_SYS_ADMIN" in res.stderr and "needs root" not in res.stderr, res.stderr
    assert kernel_xdp(env.ifname, env.netns) == attached     # nothing half done
    assert sandbox.offload_json("detach", env.ifname, "--netns", env.netns)["detached"]
