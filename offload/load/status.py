"""`offload status`: every XDP program on every interface of this namespace, ours or not."""

from __future__ import annotations

import os

from offload.errors import EnvironmentProblem, UsageError
from offload.kernel import bpfsys, clock, netns, rtnl, xdplink
from offload.load import dispatcher, ownership, pins
from offload.probe.mode import Mode


def _record(slot: pins.Slot, mine: list[int], warnings: list[str]) -> dict | None:
    """The record of our attached program, only if it describes that very program: a damaged
    record, or one an interrupted run left naming another program, is one warning, never shown."""
    if not mine:
        return None
    try:
        return slot.verified_meta(mine[0])
    except pins.StateError as e:
        warnings.append(e.message)
        return None


class _Via:
    """How each attached program is held, from the kernel: offload's own through its pinned link;
    another's by the kernel's list of XDP links, read once and only if a program is not ours."""

    def __init__(self) -> None:
        self._links: set[tuple[int, int]] | None = None

    def __call__(self, slot: pins.Slot | None, ifindex: int, prog_id: int) -> str:
        if slot is not None:
            fd = slot.holding_link(ifindex, prog_id)
            if fd is not None:
                os.close(fd)
            return "netlink" if fd is None else "link"
        if self._links is None:   # (a link's ifindex is per namespace: matched with its program too)
            self._links = {(k.ifindex, k.prog_id) for k in xdplink.all_links()}
        return "link" if (ifindex, prog_id) in self._links else "netlink"


def status() -> dict:
    ns = netns.current_name()
    rows, warnings = [], []
    try:
        pins.require_bpffs()
        have_pins = True
    except EnvironmentProblem as e:  # still list what is attached; only "ours" is unknown
        have_pins = False
        warnings.append(f"{e.message}: cannot tell which programs are offload's")
    slots = pins.by_interface(ns) if have_pins else {}
    via = _Via()
    for link in rtnl.dump_links():
        if not link.xdp_prog_ids:
            continue
        # ours: a slot's pinned program, or the staged one of a run killed mid-attach (gc finishes
        # it); the interface's own slot, and one per member of a policy's chain
        own: dict[int, pins.Slot] = {}
        for slot in slots.get(link.name, []):
            for pid in (slot.staged_prog_id(), slot.pinned_prog_id()):
                if pid is not None:
                    own[pid] = slot
        for m, pid in sorted(link.xdp_prog_ids.items(), key=lambda kv: -Mode(kv[0]).rank):
            info = bpfsys.prog_info(pid)
            disp = dispatcher.read(link.ifindex, info) if info else None
            # records read only beside a dispatcher (a killed run's leftovers), not per lone program
            stale = ownership.leftovers(disp["programs"], [ownership.view(s) for s in slots.get(link.name, [])]) \
                if disp and have_pins else {}
            for p in (disp or {}).get("programs", []):   # which of libxdp's programs are offload's
                left = stale.get(p["prog_id"])
                p["ours"] = (p["prog_id"] in own or left is not None) if have_pins else None
                meta = _record(own[p["prog_id"]], [p["prog_id"]], warnings) if p["ours"] and not left else None
                p["program"] = (meta or {}).get("program") if p["ours"] else None
                p["member"] = (left.slot if left else own[p["prog_id"]]).member if p["ours"] else None
                p["leftover"] = left.why if left else None
            mine = pid in own
            meta = _record(own[pid], [pid], warnings) if mine else None
            attached_at = (meta or {}).get("attached_at") if mine else None
            if attached_at is not None and clock.normalise(attached_at) is None:
                warnings.append(f"{link.name}: the record's attached_at {attached_at!r} is not a time; "
                                f"offload detach {link.name} and attach again to rewrite it")
            rows.append({"interface": link.name, "ifindex": link.ifindex, "mode": m,
                         **dispatcher.prog_fields(pid, info), "ours": mine if have_pins else None,
                         "program": (meta or {}).get("program") if mine else None,
                         "attached_at": clock.normalise(attached_at), "dispatcher": disp,
                         "via": via(own[pid] if mine else None, link.ifindex, pid)})
    held = {(r["interface"], p["member"]) for r in rows for p in (r["dispatcher"] or {}).get("programs", [])
            if p["ours"]} | {(r["interface"], None) for r in rows if r["ours"]}
    stale = sorted({s.iface for ss in slots.values() for s in ss if (s.iface, s.member) not in held})
    return {"netns": ns, "attachments": rows, "stale_pins": stale if have_pins else [], "warnings": warnings}


def status_all() -> dict:
    """status() in every namespace (the host's and each under /run/netns), and the orphans gc would
    free (records of namespaces or interfaces that are gone, programs no longer attached)."""
    from offload.load import gc

    per_ns = []
    for ns in netns.names():
        try:
            with netns.inside(ns):
                per_ns.append(status())
        except (OSError, UsageError) as e:   # a namespace removed while we walk: nothing to show for it
            per_ns.append({"netns": ns, "attachments": [], "stale_pins": [],
                           "warnings": [getattr(e, "message", None) or str(e)]})
    orphans = gc.collect(dry_run=True)
    return {"namespaces": per_ns, "orphans": orphans["freed"], "renamed": orphans["renamed"],
            "recovered": orphans["recovered"], "leftovers": orphans["leftovers"]}
