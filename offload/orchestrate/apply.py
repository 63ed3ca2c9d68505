"""plan / apply: make the host match a policy, transactionally.

apply takes a lock (one apply at a time), executes the plan, journals every step as a JSON line,
and on a failure puts back everything this run changed (unless best effort).
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from offload.errors import OffloadError, RefusedError, UsageError
from offload.kernel import bpfsys, clock, netns, xdp
from offload.load import attach as attach_mod
from offload.load import guard, pins
from offload.load.ownership import ownership
from offload.orchestrate import plan as plan_mod
from offload.orchestrate.policy import Policy
from offload.orchestrate.policy import load as load_policy
from offload.probe.facts import DeviceFacts
from offload.probe.report import assess

DEFAULT_JOURNAL = Path(os.environ.get("OFFLOAD_JOURNAL", "/var/lib/offload/journal.jsonl"))
LOCK = pins.RUN / "apply.lock"
MAX_JOURNAL = int(os.environ.get("OFFLOAD_JOURNAL_MAX", 16 << 20))


def current_state(devices: list[DeviceFacts]) -> dict[str, plan_mod.Current]:
    """What is attached on each device (from the probe's own dump), ours or not."""
    out = {}
    ns = netns.current_name()
    for d in devices:
        slot = pins.Slot(ns, d.name)
        own = ownership(slot, {a["mode"]: a["prog_id"] for a in d.attached})
        try:
            meta = slot.meta() if own.mine else None
        except pins.StateError:  # ours by its pin, record damaged: the plan re-attaches, which rewrites it
            meta = None
        if meta is not None:
            meta = {**meta, "mode": own.mine.mode}
        out[d.name] = plan_mod.Current(meta, own.foreign)
    return out


def compute_plan(pol: Policy) -> list[plan_mod.Item]:
    _, assessed = assess(include_loopback=False)
    return plan_mod.make_plan(pol, assessed, current_state([a.facts for a in assessed]))


def plan_document(policy_file: str) -> dict:
    """`offload plan`: the policy file as given and what apply would do, per interface."""
    return {"policy": policy_file, "plan": [i.to_dict() for i in compute_plan(load_policy(policy_file))]}


def apply_lock(timeout: float):
    # In offload's verified state tree, never through a link.
    return pins.locked("apply.lock", timeout, "another apply", "wait for it, or raise --lock-timeout")


class Journal:
    """Append-only JSON lines, one fsync per record: a record is on disk before the next kernel
    change, and a write that fails stops the run (which then rolls back)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path == DEFAULT_JOURNAL:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.run = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        self.interrupted = self._last_unfinished()
        self._started = False
        self.netns = netns.current_name()   # once: every record of a run is in one namespace

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise RefusedError(f"the journal {self.path} is a symbolic link: offload does not write through links",
                                   hint="give --journal a plain file") from None
            raise

    def _rotate(self) -> None:
        """Past MAX_JOURNAL bytes the journal moves to NAME.1 (one generation kept), at a run's start
        only, so one run's records stay in one file."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return
        if st.st_size > MAX_JOURNAL and not self._started:
            os.replace(self.path, f"{self.path}.1")
        self._started = True

    def _last_unfinished(self) -> str | None:
        """The run id of the journal's last run if it has a start and no end (it was killed)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - (256 << 10)))
            tail = f.read().decode(errors="replace").splitlines()
        last_run, ended = None, True
        for line in tail:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("event") == "start":
                last_run, ended = rec.get("run"), False
            elif rec.get("event") == "end" and rec.get("run") == last_run:
                ended = True
        return None if ended else last_run

    def write(self, event: str, **fields) -> None:
        first = not self._started
        self._rotate()
        rec = {"time": clock.rfc3339(), "run": self.run, "netns": self.netns,
               "event": event, **fields}
        fd = self._open()
        try:
            size = os.fstat(fd).st_size
            prefix = b""
            if first and size:  # a record an earlier run's crash cut short must not swallow this one
                with open(self.path, "rb") as r:
                    r.seek(size - 1)
                    prefix = b"" if r.read(1) == b"\n" else b"\n"
            os.write(fd, prefix + (json.dumps(rec) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)


def apply(pol: Policy, best_effort: bool = False, journal: Path | None = None, lock_timeout: float = 30.0,
          progress: Callable[[str], None] = lambda m: None) -> dict:
    """Make the interfaces match `pol`. Without best effort it is all or nothing: a failed step,
    and any error at all (the journal, the kernel, an interrupt), puts back what this run changed."""
    attach_mod.require_privileges("applying a policy")
    pins.require_bpffs()
    j = Journal(journal or DEFAULT_JOURNAL)
    with apply_lock(lock_timeout):
        items = compute_plan(pol)
        warnings = []
        if j.interrupted:
            warnings.append(f"the previous run {j.interrupted} in {j.path} has no end record: it was interrupted; "
                            "this run starts from what is attached now")
        j.write("start", policy=pol.path, best_effort=best_effort,
                plan=[i.to_dict() for i in items if i.action != "keep"],
                **({"previous_interrupted": j.interrupted} if j.interrupted else {}))
        done: list[tuple[plan_mod.Item, Saved | None]] = []
        results, failed = [], []
        protected = guard.protected_interfaces()   # once per run, not per interface
        try:
            for item in items:
                if item.action == "keep":
                    results.append({**item.to_dict(), "status": "kept"})
                    continue
                if item.action == "conflict":
                    failed.append({**item.to_dict(), "status": "failed", "error": item.reason})
                    j.write("step", interface=item.interface, action=item.action, status="failed", error=item.reason)
                    if not best_effort:
                        break
                    continue
                if not _step(item, j, done, results, failed, progress, protected) and not best_effort:
                    break
        except BaseException as e:   # not offload's own refusal: a bug, the journal, an interrupt
            _roll_back_all(done, j, progress)
            _close(done)
            try:
                j.write("end", outcome="failed", rolled_back=[i.interface for i, _ in done],
                        error=f"{type(e).__name__}: {e}")
            except OSError:
                pass
            raise
        rolled_back = _roll_back_all(done, j, progress) if failed and not best_effort else []
        _close(done)
        outcome = "failed" if failed and not best_effort else ("partial" if failed else "ok")
        for r in results:   # what was undone is not done
            if r["interface"] in rolled_back and r["status"] == "done":
                r["status"] = "rolled back"
        j.write("end", outcome=outcome, rolled_back=rolled_back)
        return {"outcome": outcome, "steps": results, "failed": failed, "rolled_back": rolled_back,
                "changed": sum(1 for r in results if r["status"] == "done"), "journal": str(j.path),
                "warnings": warnings}


def _step(item: plan_mod.Item, j: Journal, done: list, results: list, failed: list,
          progress: Callable[[str], None], protected: dict[str, str]) -> bool:
    """One change, journaled; False when offload (or the kernel, in words) refused it."""
    snap = save(item.interface)
    try:
        progress(f"{item.interface}: {item.action} {item.program or ''}".rstrip())
        if item.action == "detach":
            attach_mod.detach(item.interface)
            res = {"mode": item.mode}
        else:
            r = attach_mod.attach(item.interface, item.resolved or item.program, mode=item.prefer,
                                  min_mode=item.min, params=item.params, managed_by=item.rule,
                                  assessed=item.device, protected=protected)
            res = {"mode": r.mode, "prog_id": r.prog_id, "fallbacks": r.fallbacks}
    except OffloadError as e:
        if snap:
            snap.close()
        failed.append({**item.to_dict(), "status": "failed", "error": e.message})
        j.write("step", interface=item.interface, action=item.action, status="failed", error=e.message)
        return False
    except BaseException:
        if snap:
            snap.close()
        raise
    done.append((item, snap))   # before the journal write: if that fails, this change is undone too
    results.append({**item.to_dict(), **res, "status": "done"})
    j.write("step", interface=item.interface, action=item.action, status="done", **res)
    return True


def _roll_back_all(done: list, j: Journal, progress: Callable[[str], None]) -> list[str]:
    rolled = []
    for item, snap in reversed(done):
        progress(f"{item.interface}: rolling back {item.action}")
        _roll_back(item, snap)
        rolled.append(item.interface)
        try:
            j.write("rollback", interface=item.interface, action=item.action)
        except OSError:   # the kernel state matters more than the record of it
            pass
    return rolled


def _close(done: list) -> None:
    for _, snap in done:
        if snap:
            snap.close()


def _roll_back(item: plan_mod.Item, snap: Saved | None) -> None:
    if snap is not None:          # replace or detach: put the previous program back
        put_back(snap)
    else:                         # attach onto nothing: take ours off again
        try:
            attach_mod.detach(item.interface)
        except OffloadError:
            pass


@dataclass
class Saved:
    """What offload had on an interface, held open (fds) so a transaction can put it back."""

    slot: pins.Slot
    meta: dict
    mode: str
    prog_fd: int
    map_fds: dict[str, int]

    def close(self) -> None:
        for fd in [self.prog_fd, *self.map_fds.values()]:
            try:
                os.close(fd)
            except OSError:
                pass


def save(iface: str) -> Saved | None:
    slot = pins.Slot(netns.current_name(), iface)
    try:
        mine = ownership(slot, xdp.attached_progs(attach_mod.ifindex_of(iface))).mine
    except UsageError:
        return None
    if mine is None:
        return None
    meta = slot.meta()
    prog_fd = slot.open_prog()
    maps = {name: slot.open_map(name) for name in meta.get("maps", [])}
    return Saved(slot, meta, mine.mode, prog_fd, maps)


def put_back(snap: Saved) -> None:
    """Put the saved program back on its interface in its mode (atomically where the kernel
    allows), remove whatever of ours replaced it, and re-pin it with its metadata."""
    ifindex = attach_mod.ifindex_of(snap.slot.iface)
    now = xdp.attached_progs(ifindex)
    current = ownership(snap.slot, now).mine
    for mode, prog_id in now.items():  # ours in another mode: take it off first
        if current and prog_id == current.prog_id and mode != snap.mode:
            attach_mod.clear_prog_id(ifindex, mode, prog_id)
    holder = now.get(snap.mode)
    old_fd = bpfsys.prog_fd_by_id(holder) if holder else None
    try:
        xdp.set_prog(ifindex, snap.prog_fd, snap.mode, expected_fd=old_fd, no_replace=old_fd is None)
    finally:
        if old_fd is not None:
            os.close(old_fd)
    snap.slot.write(snap.prog_fd, snap.map_fds, snap.meta)
