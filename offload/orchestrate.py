"""plan / apply / watch: make the host match a policy, transactionally, and keep it so.

apply takes a lock (one apply at a time), executes the plan, journals every step as a JSON line,
and on a failure puts back everything this run changed (unless best effort).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from . import attach as attach_mod
from . import netns, pins, plan as plan_mod
from .errors import OffloadError, RefusedError
from .facts import DeviceFacts
from .policy import Policy
from .probe import assess

DEFAULT_JOURNAL = Path(os.environ.get("OFFLOAD_JOURNAL", "/var/lib/offload/journal.jsonl"))
LOCK = pins.RUN / "apply.lock"


def current_state(devices: list[DeviceFacts]) -> dict[str, plan_mod.Current]:
    """What is attached on each device (from the probe's own dump), ours or not."""
    out = {}
    ns = netns.current_name()
    for d in devices:
        attached = {a["mode"]: a["prog_id"] for a in d.attached}
        slot = pins.Slot(ns, d.name)
        mine = attach_mod.ours(slot, attached)
        meta = slot.meta() if mine else None
        if meta is not None:
            meta = {**meta, "mode": mine[0]}
        foreign = {m: i for m, i in attached.items() if not mine or i != mine[1]}
        out[d.name] = plan_mod.Current(meta, foreign)
    return out


def compute_plan(pol: Policy) -> list[plan_mod.Item]:
    _, evaluated = assess(include_loopback=False)
    return plan_mod.make_plan(pol, evaluated, current_state([d for d, _ in evaluated]))


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
        done: list[tuple[plan_mod.Item, attach_mod.Snapshot | None]] = []
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
            snap = attach_mod.snapshot(item.interface)
            try:
                progress(f"{item.interface}: {item.action} {item.program or ''}".rstrip())
                if item.action == "detach":
                    attach_mod.detach(item.interface)
                    res = {"mode": item.mode}
                else:
                    r = attach_mod.attach(item.interface, item.program, mode=item.prefer, min_mode=item.min,
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
                _undo(item, snap)
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


def _undo(item: plan_mod.Item, snap: attach_mod.Snapshot | None) -> None:
    if snap is not None:          # replace or detach: put the previous program back
        attach_mod.restore(snap)
    else:                         # attach onto nothing: take ours off again
        try:
            attach_mod.detach(item.interface)
        except OffloadError:
            pass


def watch(pol: Policy, interval: float = 30.0, detach_on_exit: bool = False, journal: Path | None = None,
          log: Callable[[str], None] = print, stop_after: float | None = None) -> None:
    """Apply, then re-apply on every link appearing or vanishing (rtnetlink notifications, which
    work inside a network namespace) and every `interval` seconds (drift). SIGTERM ends it."""
    from pyroute2.netlink.rtnl import RTMGRP_LINK

    stopping = {"now": False}

    def on_term(signum, frame):
        stopping["now"] = True

    old = signal.signal(signal.SIGTERM, on_term)

    def reconcile(why: str) -> None:
        try:
            res = apply(pol, best_effort=True, journal=journal)
        except OffloadError as e:
            log(f"offload-watch: reconcile={why} error={e.message!r}")
            return
        for s in res["steps"]:
            if s["status"] == "done":
                log(f"offload-watch: reconcile={why} iface={s['interface']} action={s['action']} "
                    f"program={s['program']} mode={s.get('mode')}")
        for s in res["failed"]:
            log(f"offload-watch: reconcile={why} iface={s['interface']} action={s['action']} error={s['error']!r}")

    # A plain NETLINK_ROUTE socket subscribed to link events (decoded with pyroute2's ifinfmsg):
    # pyroute2's IPRoute buffers notifications inside its event loop, out of select()'s sight.
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        sock.bind((0, RTMGRP_LINK))
        log(f"offload-watch: start policy={pol.path} netns={netns.current_name()} interval={interval:g}s")
        reconcile("start")
        from .netlink import rtnl

        known = {link.name for link in rtnl.dump_links()}
        began = last = time.monotonic()
        while not stopping["now"]:
            if stop_after is not None and time.monotonic() - began > stop_after:
                break
            changed = False
            for event, name in _link_events(sock, 0.2):
                if event == "new" and name not in known:
                    known.add(name)
                    log(f"offload-watch: event=add iface={name}")
                    changed = True
                elif event == "del" and name in known:
                    known.discard(name)
                    log(f"offload-watch: event=remove iface={name}")
                    _forget(name)
                    changed = True
            if changed:
                reconcile("link-change")
                last = time.monotonic()
            elif time.monotonic() - last >= interval:
                reconcile("periodic")
                last = time.monotonic()
    finally:
        sock.close()
        signal.signal(signal.SIGTERM, old)
        if detach_on_exit:
            for slot in pins.slots(netns.current_name()):
                meta = slot.meta() or {}
                if meta.get("managed_by"):
                    try:
                        attach_mod.detach(slot.iface)
                        log(f"offload-watch: exit iface={slot.iface} action=detach")
                    except OffloadError:
                        pass
        log("offload-watch: stopped")


def _link_events(sock: socket.socket, timeout: float) -> list[tuple[str, str]]:
    """(new|del, ifname) for every link notification waiting (after up to `timeout` s)."""
    import select
    import struct

    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    out = []
    r, _, _ = select.select([sock], [], [], timeout)
    while r:
        data = sock.recv(1 << 16)
        off = 0
        while off + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, off)
            if kind in (16, 17):  # RTM_NEWLINK, RTM_DELLINK
                msg = ifinfmsg(data[off:off + length])
                msg.decode()
                name = msg.get_attr("IFLA_IFNAME")
                if name:
                    out.append(("new" if kind == 16 else "del", name))
            off += (length + 3) & ~3
        r, _, _ = select.select([sock], [], [], 0)
    return out


def _forget(iface: str) -> None:
    """A vanished interface took its program along: drop our records of it."""
    slot = pins.Slot(netns.current_name(), iface)
    if slot.meta() is not None or slot.pin_dir.exists():
        slot.remove()


