"""`offload gc`: find what offload keeps that nothing uses any more, and free it — like
`xdp-loader clean`, across namespaces.

Kept pins hold programs and maps in the kernel after their interface, namespace or attachment
is gone: they are found by comparing each record with the kernel, and removed (which lets the
kernel free the objects). A record whose interface was renamed follows the new name.
"""

from __future__ import annotations

import contextlib
import os
import socket
from enum import Enum
from typing import NamedTuple

from offload.errors import OffloadError
from offload.kernel import netns, xdp
from offload.load import dispatcher, pins
from offload.load.ownership import leftovers, ownership, view


class Verdict(Enum):
    """What gc does with a slot that nothing uses as it is."""

    FREE = "free"          # remove its pins and record
    STAGE = "stage"        # discard the staging debris of an interrupted run, then judge again
    RECOVER = "recover"    # finish an attach killed after the kernel swap
    RENAMED = "renamed"    # follow its interface's new name
    REPAIR = "repair"      # rewrite a record that does not name the pinned, attached program


class Judgement(NamedTuple):
    verdict: Verdict
    detail: str            # why; for RENAMED, the interface's new name


def collect(dry_run: bool = False, only: str | None = None) -> dict:
    """Orphans in every namespace offload holds state for (or in `only`); removed unless dry_run.
    One slot that cannot be judged or repaired is a warning: the others are still collected."""
    with contextlib.nullcontext() if dry_run else pins.state_lock():   # never frees an attach in progress
        return _collect(dry_run, only)


def _collect(dry_run: bool, only: str | None) -> dict:
    out: dict = {"dry_run": dry_run, "freed": [], "renamed": [], "recovered": [], "leftovers": [], "warnings": []}
    for ns in pins.namespaces():
        if only is not None and ns != only:
            continue
        if not netns.exists(ns):
            out["freed"] += [{"netns": ns, "interface": s.iface, "reason": "its network namespace is gone"}
                             for s in pins.slots(ns)] or [{"netns": ns, "interface": None,
                                                           "reason": "its network namespace is gone"}]
            if not dry_run:
                pins.remove_namespace(ns)
            continue
        with netns.inside(ns):
            for iface, group in pins.by_interface(ns).items():
                evidence = _name_leftovers(ns, iface, group, out)
                for slot in group:
                    if slot in evidence:   # its staging names a leftover: the next apply or detach clears both
                        continue
                    try:
                        _collect_slot(slot, dry_run, out)
                    except (OffloadError, OSError) as e:
                        out["warnings"].append(f"{ns}/{slot.iface}: {getattr(e, 'message', None) or e}")
    return out


def _name_leftovers(ns: str, iface: str, group: list[pins.Slot], out: dict) -> set[pins.Slot]:
    """offload's programs a killed run left in `iface`'s dispatcher (load.ownership.leftovers):
    named, never freed here (they run; `offload apply` or `offload detach IFACE` takes them out).
    Returns the slots whose staging is the evidence, which gc must keep."""
    try:
        ifindex = socket.if_nametoindex(iface)
        progs = [p for _, p in dispatcher.programs(ifindex, xdp.attached_progs(ifindex))]
    except OSError:
        return set()
    if not progs:
        return set()
    found = leftovers(progs, [view(s) for s in group])
    for prog_id, left in found.items():
        out["leftovers"].append({"netns": ns, "interface": iface, "member": left.slot.member, "prog_id": prog_id,
                                 "reason": left.why})
    return {left.slot for left in found.values() if left.stage}


def _collect_slot(slot: pins.Slot, dry_run: bool, out: dict) -> None:
    where = {"netns": slot.netns, "interface": slot.iface}
    judged = _judge(slot)
    if judged is not None and judged.verdict is Verdict.STAGE:
        # debris beside (or instead of) an attachment: judge again once it is gone
        out["freed"].append({**where, "reason": judged.detail})
        if dry_run:
            return
        slot.discard_stage()
        judged = _judge(slot) if slot.exists() else None
    if judged is None:
        return
    verdict, detail = judged
    if verdict is Verdict.RENAMED:
        out["renamed"].append({**where, "now": detail})
    else:
        out["recovered" if verdict in (Verdict.RECOVER, Verdict.REPAIR) else "freed"].append(
            {**where, "reason": detail})
    if not dry_run:
        _ACT[verdict](slot, detail)


def _judge(slot: pins.Slot) -> Judgement | None:
    """None: in use. Else what to do with it, and why (or the new name)."""
    pinned, staged = slot.pinned_prog_id(), slot.staged_prog_id()
    if staged is not None:
        try:
            attached = _attached_ids(socket.if_nametoindex(slot.iface))
        except OSError:
            attached = set()
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
            if now and pinned in _attached_ids(old):
                return Judgement(Verdict.RENAMED, now)
        return Judgement(Verdict.FREE, "its interface is gone")
    if pinned is None:
        return Judgement(Verdict.FREE, "no pinned program (a run was killed before pinning)")
    attached = xdp.attached_progs(ifindex)
    # the dispatcher's members are read only when the slot's program is not attached directly
    if ownership(slot, attached).mine is None and ownership(slot, attached,
                                                             dispatcher.members(ifindex, attached)).mine is None:
        return Judgement(Verdict.FREE, f"its program (id {pinned}) is no longer attached")
    if meta is not None and meta["prog_id"] == pinned:
        return _staged_record_left(slot)
    return Judgement(Verdict.REPAIR, "its record did not name the pinned, attached program (id "
                                     f"{pinned}): rewritten from the run's staged record, else from the kernel")


def _attached_ids(ifindex: int) -> set[int]:
    """The programs attached to `ifindex`, and those in libxdp's dispatcher there."""
    attached = xdp.attached_progs(ifindex)
    return set(attached.values()) | set(dispatcher.members(ifindex, attached))


def _staged_record_left(slot: pins.Slot) -> Judgement | None:
    """A staged record beside a sound one: an attach killed before its kernel swap left it."""
    try:
        staged = slot.staged_meta()
    except pins.StateError:
        staged = {}
    return None if staged is None else Judgement(Verdict.STAGE, "a staged record of an interrupted run")


def _recover(slot: pins.Slot) -> None:
    """Finish an attach that was killed after the kernel swap: promote the staged pins, with the
    record the attach staged beside them (or, where that is lost, what the kernel says)."""
    staged = slot.staged_prog_id()
    record = _staged_record_of(slot, staged)
    slot.commit(None if record is not None else _from_kernel(slot, staged, slot.staged_maps()))


def _repair(slot: pins.Slot) -> None:
    """Rewrite a record that names another program than the pinned, attached one: the staged
    record of the attach that was killed before putting it in place, else the kernel's view."""
    pinned = slot.pinned_prog_id()
    if _staged_record_of(slot, pinned) is not None:
        slot.put_record()
    else:
        slot.put_record(_from_kernel(slot, pinned, slot.pinned_maps()))


def _staged_record_of(slot: pins.Slot, prog_id: int | None) -> dict | None:
    try:
        staged = slot.staged_meta()
    except pins.StateError:
        return None
    return staged if staged is not None and staged["prog_id"] == prog_id else None


def _from_kernel(slot: pins.Slot, prog_id: int | None, maps: list[str]) -> dict:
    ifindex = socket.if_nametoindex(slot.iface)
    attached = xdp.attached_progs(ifindex)
    mode = next((m for m, i in attached.items() if i == prog_id), None) \
        or dispatcher.members(ifindex, attached).get(prog_id)
    if mode is None:   # taken off since it was judged: nothing to record (the next gc frees it)
        raise pins.StateError(f"{slot.iface}: program {prog_id} is no longer attached; run offload gc again")
    return slot.kernel_record(prog_id, mode, maps, ifindex)


def _follow_rename(slot: pins.Slot, now: str) -> None:
    """Re-key an attachment whose interface was renamed: same program and maps, new name."""
    meta = slot.meta() or {}
    prog_fd = slot.open_prog()
    maps: dict[str, int] = {}
    link_fd: int | None = None
    try:
        for name in meta.get("maps", []):
            maps[name] = slot.open_map(name)
        link_fd = slot.pinned_link()   # a bpf_link follows too: unpinned, it would detach the program
        pins.Slot(slot.netns, now, slot.member).write(prog_fd, maps, {**meta, "interface": now}, link_fd)
        slot.remove()
    finally:
        for fd in [prog_fd, *maps.values()] + ([link_fd] if link_fd is not None else []):
            os.close(fd)


def _free(slot: pins.Slot) -> None:
    """Remove the slot, and an empty staging directory a run killed before its first pin left."""
    slot.discard_stage()
    slot.remove()


_ACT = {
    Verdict.FREE: lambda slot, detail: _free(slot),
    Verdict.RECOVER: lambda slot, detail: _recover(slot),
    Verdict.REPAIR: lambda slot, detail: _repair(slot),
    Verdict.RENAMED: _follow_rename,
}
