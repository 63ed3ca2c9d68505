"""Where attachments live after the command exits: pinned program and maps under bpffs, and one
JSON metadata file per attachment.

bpffs holds only BPF objects (and refuses '.' in names), so the metadata lives under /run (gone
at reboot, like the pins) and names are escaped.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from offload.errors import EnvironmentProblem
from offload.kernel import bpfsys, fs

DEFAULT_BPFFS = "/sys/fs/bpf"
RUN = Path(os.environ.get("OFFLOAD_RUN_DIR", "/run/offload"))
BPFFS = Path(os.environ.get("OFFLOAD_BPFFS", DEFAULT_BPFFS))
_BPFFS_OK: Path | None = None


def _escape(name: str) -> str:
    return name.replace("%", "%25").replace(".", "%2e")


def _is_bpffs(mounts: str, where: str) -> bool:
    try:
        with open(mounts) as f:
            return any(len(p := line.split()) > 2 and p[1] == where and p[2] == "bpf" for line in f)
    except OSError:
        return False


def require_bpffs() -> None:
    """Make BPFFS point at the host's bpffs, or say how to mount it.

    `ip netns exec` gives the command a private mount namespace with a fresh /sys, without the
    host's bpffs; pins made in another bpffs instance would be invisible to the host, so the
    host's is reached through PID 1's root instead.
    """
    global BPFFS, _BPFFS_OK
    if _BPFFS_OK == BPFFS:  # checked already (every pin path asks)
        return
    if _is_bpffs("/proc/self/mounts", str(BPFFS)):
        _BPFFS_OK = BPFFS
        return
    if str(BPFFS) == DEFAULT_BPFFS and _is_bpffs("/proc/1/mounts", DEFAULT_BPFFS) \
            and os.path.isdir("/proc/1/root" + DEFAULT_BPFFS):
        BPFFS = _BPFFS_OK = Path("/proc/1/root" + DEFAULT_BPFFS)
        return
    if str(BPFFS) == DEFAULT_BPFFS and _is_bpffs("/proc/1/mounts", DEFAULT_BPFFS):  # the host's, hidden
        raise EnvironmentProblem(
            f"the host's bpffs ({DEFAULT_BPFFS}) is not visible here (`ip netns exec` gives a private /sys): "
            "pins made here would vanish with this command",
            hint="run `offload <command> --netns NS ...` instead of `ip netns exec NS offload ...`")
    raise EnvironmentProblem(f"bpffs is not mounted at {BPFFS}: offload pins what it attaches there",
                             hint=f"mount it: mount -t bpf bpffs {BPFFS} (scripts/setup does this)")


@dataclass(frozen=True)
class Slot:
    """The pins and metadata of one interface in one network namespace."""

    netns: str
    iface: str

    @property
    def pin_dir(self) -> Path:
        require_bpffs()
        return BPFFS / "offload" / _escape(self.netns) / _escape(self.iface)

    @property
    def meta_path(self) -> Path:
        return RUN / "attachments" / _escape(self.netns) / f"{_escape(self.iface)}.json"

    @property
    def prog_pin(self) -> Path:
        return self.pin_dir / "prog"

    def map_pin(self, name: str) -> Path:
        return self.pin_dir / f"map_{_escape(name)}"

    # -- reading ------------------------------------------------------------------------------------
    def meta(self) -> dict | None:
        try:
            return json.loads(self.meta_path.read_text())
        except FileNotFoundError:
            return None

    def pinned_prog_id(self) -> int | None:
        try:
            fd = bpfsys.obj_get(str(self.prog_pin))
        except OSError:
            return None
        try:
            return bpfsys.obj_info_id(fd)
        finally:
            os.close(fd)

    def open_map(self, name: str) -> int:
        return bpfsys.obj_get(str(self.map_pin(name)))

    # -- writing ------------------------------------------------------------------------------------
    def write(self, prog_fd: int, maps: dict[str, int], meta: dict) -> None:
        """Pin into a staging directory, then swap it in with one atomic exchange: a reader sees
        the old pins or the new, never half and never none."""
        staging = self.pin_dir.with_name(self.pin_dir.name + "%new")
        _rmtree(staging)
        staging.mkdir(parents=True)
        try:
            bpfsys.obj_pin(prog_fd, str(staging / "prog"))
            for name, fd in maps.items():
                bpfsys.obj_pin(fd, str(staging / f"map_{_escape(name)}"))
            if self.pin_dir.exists():
                fs.exchange(staging, self.pin_dir)   # staging now holds the old pins
            else:
                os.rename(staging, self.pin_dir)
        finally:
            _rmtree(staging)
        self.meta_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.meta_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp, self.meta_path)

    def remove(self) -> None:
        _rmtree(self.pin_dir)
        self.meta_path.unlink(missing_ok=True)
        for d in (self.pin_dir.parent, self.meta_path.parent):  # empty namespace directories too
            try:
                d.rmdir()
            except OSError:
                pass
        for d in (BPFFS / "offload", RUN / "attachments", RUN):
            try:
                d.rmdir()
            except OSError:
                pass


def _rmtree(path: Path) -> None:
    # bpffs entries are unlinked like files; shutil.rmtree works there too.
    if path.exists():
        shutil.rmtree(path)


def slots(netns: str) -> list[Slot]:
    """Every attachment recorded for namespace `netns`."""
    d = RUN / "attachments" / _escape(netns)
    if not d.is_dir():
        return []
    out = []
    for f in sorted(d.glob("*.json")):
        meta = json.loads(f.read_text())
        out.append(Slot(netns, meta["interface"]))
    return out


def remove_namespace(netns: str) -> None:
    """Forget every attachment of a namespace that is going away (its devices take their
    programs along; the pins would otherwise keep the programs and maps alive)."""
    for d in (RUN / "attachments" / _escape(netns),):
        _rmtree(d)
    try:
        require_bpffs()
    except EnvironmentProblem:
        return
    _rmtree(BPFFS / "offload" / _escape(netns))
    for d in (BPFFS / "offload", RUN / "attachments", RUN):
        try:
            d.rmdir()
        except OSError:
            pass
