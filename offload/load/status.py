"""`offload status`: every XDP program on every interface of this namespace, ours or not."""

from __future__ import annotations

from offload.errors import EnvironmentProblem
from offload.kernel import bpfsys, netns, rtnl
from offload.load import pins
from offload.probe.modes import Mode


def status() -> dict:
    ns = netns.current_name()
    rows, warnings = [], []
    try:
        pins.require_bpffs()
        have_pins = True
    except EnvironmentProblem as e:  # still list what is attached; only "ours" is unknown
        have_pins = False
        warnings.append(f"{e.message}: cannot tell which programs are offload's")
    for link in rtnl.dump_links():
        if not link.xdp_prog_ids:
            continue
        slot = pins.Slot(ns, link.name)
        meta = slot.meta()
        pinned = slot.pinned_prog_id() if meta and have_pins else None
        for m, pid in sorted(link.xdp_prog_ids.items(), key=lambda kv: -Mode(kv[0]).rank):
            info = bpfsys.prog_info(pid)
            mine = pinned == pid
            rows.append({"interface": link.name, "ifindex": link.ifindex, "mode": m, "prog_id": pid,
                         "name": info.name if info else None, "ours": mine if have_pins else None,
                         "program": meta["program"] if mine else None,
                         "attached_at": meta["attached_at"] if mine else None})
    stale = [s.iface for s in pins.slots(ns) if s.iface not in {r["interface"] for r in rows if r["ours"]}]
    return {"netns": ns, "attachments": rows, "stale_pins": stale if have_pins else [], "warnings": warnings}
