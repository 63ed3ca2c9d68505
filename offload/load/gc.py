"""`offload gc`: find what offload keeps that nothing uses any more, and free it — like
`xdp-loader clean`, across namespaces.

Kept pins hold programs and maps in the kernel after their interface, namespace or attachment
is gone: they are found by comparing each record with the kernel, and removed (which lets the
kernel free the objects). A record whose interface was renamed follows the new name.
"""

from __future__ import annotations

import os
import socket
from enum import Enum
from typing import NamedTuple

from offload.kernel import clock, netns, xdp
from offload.load import pins
from offload.load.ownership import ownership


class Verdict(Enum):
    """What gc does with a slot that nothing uses as it is."""

    FREE = "free"          # remove its pins and record
    STAGE = "stage"        # discard the staging debris of an interrupted run, then judge again
    RECOVER = "recover"    # finish an attach killed after the kernel swap
    RENAMED = "renamed"    # follow its interface's new name


class Judgement(NamedTuple):
    verdict: Verdict
    detail: str            # why; for RENAMED, the interface's new name


def collect(dry_run: bool = False, only: str | None = None) -> dict:
    """Orphans in every namespace offload holds state for (or in `only`); removed unless dry_run."""
    freed, renamed, recovered, warnings = [], [], [], []
    for ns in pins.namespaces():
        if only is not None and ns != only:
            continue
        if not netns.exists(ns):
            freed += [{"netns": ns, "interface": s.iface, "reason": "its network namespace is gone"}
                      for s in pins.slots(ns)] or [{"netns": ns, "interface": None,
                                                    "reason": "its network namespace is gone"}]
            if not dry_run:
                pins.remove_namespace(ns)
            continue
        with netns.inside(ns):
            for slot in pins.slots(ns):
                judged = _judge(slot, warnings)
                if judged is None:
                    continue
                verdict, detail = judged
                if verdict is Verdict.STAGE:   # debris beside (or instead of) an attachment: judge again after
                    freed.append({"netns": ns, "interface": slot.iface, "reason": detail})
                    if dry_run:
                        continue
                    slot.discard_stage()
                    if not slot.exists():
                        continue
                    judged = _judge(slot, warnings)
                    if judged is None:
                        continue
                    verdict, detail = judged
                if verdict is Verdict.RECOVER:
                    recovered.append({"netns": ns, "interface": slot.iface, "reason": detail})
                    if not dry_run:
                        _recover(slot)
                    continue
                if verdict is Verdict.RENAMED:
                    renamed.append({"netns": ns, "interface": slot.iface, "now": detail})
                    if not dry_run:
                        _follow_rename(slot, detail)
                    continue
                freed.append({"netns": ns, "interface": slot.iface, "reason": detail})
                if not dry_run:
                    slot.remove()
    return {"dry_run": dry_run, "freed": freed, "renamed": renamed, "recovered": recovered, "warnings": warnings}


def _judge(slot: pins.Slot, warnings: list[str]) -> Judgement | None:
    """None: in use. Else what to do with it, and why (or the new name)."""
    pinned, staged = slot.pinned_prog_id(), slot.staged_prog_id()
    if staged is not None:
        try:
            attached = xdp.attached_progs(socket.if_nametoindex(slot.iface)).values()
        except OSError:
            attached = ()
        if staged in attached:
            return Judgement(Verdict.RECOVER, "a run was killed between the kernel swap and the pin swap")
        return Judgement(Verdict.STAGE, "a staged program of an interrupted run, never attached")
    try:
        meta = slot.meta()
    except pins.StateError as e:
        meta = None
        if pinned is None:
            return Judgement(Verdict.FREE, f"damaged record and no pinned program ({e.message})")
    try:
        ifindex = socket.if_nametoindex(slot.iface)
    except OSError:
        ifindex = None
    if ifindex is None:
        old = (meta or {}).get("ifindex")
        if old and pinned is not None:
            try:
                now = socket.if_indextoname(old)
            except OSError:
                now = None
            if now and pinned in xdp.attached_progs(old).values():
                return Judgement(Verdict.RENAMED, now)
        return Judgement(Verdict.FREE, "its interface is gone")
    if pinned is None:
        return Judgement(Verdict.FREE, "no pinned program (a run was killed before pinning)")
    if ownership(slot, xdp.attached_progs(ifindex)).mine is None:
        return Judgement(Verdict.FREE, f"its program (id {pinned}) is no longer attached")
    if meta is None:
        warnings.append(f"{slot.netns}/{slot.iface}: offload's program is attached but its record is damaged: "
                        f"offload detach {slot.iface} --netns {slot.netns}, then attach again")
    return None


def _recover(slot: pins.Slot) -> None:
    """Finish an attach that was killed after the kernel swap: promote the staged pins and record
    what is known (the program's record of the run is lost)."""
    staged = slot.staged_prog_id()
    ifindex = socket.if_nametoindex(slot.iface)
    mode = next(m for m, i in xdp.attached_progs(ifindex).items() if i == staged)
    try:
        old = slot.meta() or {}
    except pins.StateError:
        old = {}
    slot.commit({**old, "interface": slot.iface, "ifindex": ifindex, "netns": slot.netns, "mode": mode,
                 "prog_id": staged, "maps": slot.staged_maps(), "recovered": True,
                 "attached_at": clock.rfc3339(),
                 "program": old.get("program") or "unknown", "sha256": None, "managed_by": old.get("managed_by")})


def _follow_rename(slot: pins.Slot, now: str) -> None:
    """Re-key an attachment whose interface was renamed: same program and maps, new name."""
    meta = slot.meta() or {}
    prog_fd = slot.open_prog()
    maps: dict[str, int] = {}
    try:
        for name in meta.get("maps", []):
            maps[name] = slot.open_map(name)
        pins.Slot(slot.netns, now).write(prog_fd, maps, {**meta, "interface": now})
        slot.remove()
    finally:
        for fd in [prog_fd, *maps.values()]:
            os.close(fd)
