"""plan / apply: make the host match a policy, transactionally.

apply takes a lock (one apply at a time), executes the plan, journals every step as a JSON line,
and on a failure puts back everything this run changed (unless best effort).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from offload.errors import OffloadError, RefusedError, UsageError
from offload.kernel import bpfsys, netns, xdp
from offload.load import attach as attach_mod
from offload.load import pins
from offload.load.ownership import ownership
from offload.orchestrate import plan as plan_mod
from offload.orchestrate.policy import Policy
from offload.probe.facts import DeviceFacts
from offload.probe.report import assess

DEFAULT_JOURNAL = Path(os.environ.get("OFFLOAD_JOURNAL", "/var/lib/offload/journal.jsonl"))
LOCK = pins.RUN / "apply.lock"


def current_state(devices: list[DeviceFacts]) -> dict[str, plan_mod.Current]:
    """What is attached on each device (from the probe's own dump), ours or not."""
    out = {}
    ns = netns.current_name()
    for d in devices:
        slot = pins.Slot(ns, d.name)
        own = ownership(slot, {a["mode"]: a["prog_id"] for a in d.attached})
        meta = slot.meta() if own.mine else None
        if meta is not None:
            meta = {**meta, "mode": own.mine[0]}
        out[d.name] = plan_mod.Current(meta, own.foreign)
    return out


def compute_plan(pol: Policy) -> list[plan_mod.Item]:
    _, assessed = assess(include_loopback=False)
    return plan_mod.make_plan(pol, assessed, current_state([a.facts for a in assessed]))


@contextmanager
def apply_lock(timeout: float):
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "a+") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    f.seek(0)
                    holder = f.read().strip() or "?"
                    raise RefusedError(f"another apply holds {LOCK} (pid {holder}) and did not finish within "
                                       f"{timeout:g}s", hint="wait for it, or raise --lock-timeout")
                time.sleep(0.05)
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.run = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"

    def write(self, event: str, **fields) -> None:
        rec = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "run": self.run, "netns": netns.current_name(),
               "event": event, **fields}
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")


def apply(pol: Policy, best_effort: bool = False, journal: Path | None = None, lock_timeout: float = 30.0,
          progress: Callable[[str], None] = lambda m: None) -> dict:
    attach_mod.require_privileges("applying a policy")
    pins.require_bpffs()
    j = Journal(journal or DEFAULT_JOURNAL)
    with apply_lock(lock_timeout):
        items = compute_plan(pol)
        j.write("start", policy=pol.path, best_effort=best_effort,
                plan=[i.to_dict() for i in items if i.action != "keep"])
        done: list[tuple[plan_mod.Item, Saved | None]] = []
        results, failed = [], []
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
            snap = save(item.interface)
            try:
                progress(f"{item.interface}: {item.action} {item.program or ''}".rstrip())
                if item.action == "detach":
                    attach_mod.detach(item.interface)
                    res = {"mode": item.mode}
                else:
                    r = attach_mod.attach(item.interface, item.resolved or item.program, mode=item.prefer,
                                          min_mode=item.min,
                                          params=item.params, managed_by=item.rule)
                    res = {"mode": r.mode, "prog_id": r.prog_id, "fallbacks": r.fallbacks}
                done.append((item, snap))
                results.append({**item.to_dict(), **res, "status": "done"})
                j.write("step", interface=item.interface, action=item.action, status="done", **res)
            except OffloadError as e:
                if snap:
                    snap.close()
                failed.append({**item.to_dict(), "status": "failed", "error": e.message})
                j.write("step", interface=item.interface, action=item.action, status="failed", error=e.message)
                if not best_effort:
                    break
        rolled_back = []
        if failed and not best_effort:
            for item, snap in reversed(done):
                progress(f"{item.interface}: rolling back {item.action}")
                _roll_back(item, snap)
                rolled_back.append(item.interface)
                j.write("rollback", interface=item.interface, action=item.action)
        for _, snap in done:
            if snap:
                snap.close()
        outcome = "failed" if failed and not best_effort else ("partial" if failed else "ok")
        j.write("end", outcome=outcome, rolled_back=rolled_back)
        return {"outcome": outcome, "steps": results, "failed": failed, "rolled_back": rolled_back,
                "changed": sum(1 for r in results if r["status"] == "done") if not rolled_back else 0,
                "journal": str(j.path)}


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
    prog_fd = bpfsys.obj_get(str(slot.prog_pin))
    maps = {name: slot.open_map(name) for name in meta.get("maps", [])}
    return Saved(slot, meta, mine[0], prog_fd, maps)


def put_back(snap: Saved) -> None:
    """Put the saved program back on its interface in its mode (atomically where the kernel
    allows), remove whatever of ours replaced it, and re-pin it with its metadata."""
    ifindex = attach_mod.ifindex_of(snap.slot.iface)
    now = xdp.attached_progs(ifindex)
    current = ownership(snap.slot, now).mine
    for mode, prog_id in now.items():  # ours in another mode: take it off first
        if current and prog_id == current[1] and mode != snap.mode:
            attach_mod.clear_prog_id(ifindex, mode, prog_id)
    holder = now.get(snap.mode)
    old_fd = bpfsys.prog_fd_by_id(holder) if holder else None
    try:
        xdp.set_prog(ifindex, snap.prog_fd, snap.mode, expected_fd=old_fd, no_replace=old_fd is None)
    finally:
        if old_fd is not None:
            os.close(old_fd)
    snap.slot.write(snap.prog_fd, snap.map_fds, snap.meta)
