"""Attach a program in the best mode an interface takes — hw, then native, then generic — with the
kernel's reason for every step down, a floor the operator sets, atomic replacement, and nothing
left attached or pinned when it fails. Also detach and status."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

from . import bpfsys, guard, loader, modes, netns, pins, programs, xdp
from .errors import EnvironmentProblem, NoModeError, NotAttachedError, RefusedError, UsageError
from .privileges import CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN, effective, require
from .probe import assess
from .profiles import load as load_profiles

RANK = {m: i for i, m in enumerate(reversed(modes.MODES))}   # generic 0 < native 1 < hw 2


@dataclass
class Result:
    interface: str
    mode: str
    prog_id: int
    program: str
    fallbacks: list[dict] = field(default_factory=list)
    replaced: int | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"interface": self.interface, "mode": self.mode, "prog_id": self.prog_id,
                "program": self.program, "fallbacks": self.fallbacks, "replaced": self.replaced,
                "warnings": self.warnings}


def require_privileges(action: str) -> None:
    caps = effective()
    # CAP_BPF arrived in 5.8; CAP_SYS_ADMIN covers it on older kernels.
    bpf_cap = CAP_BPF if caps >> CAP_BPF & 1 else CAP_SYS_ADMIN
    require(CAP_NET_ADMIN, bpf_cap, action=action)


def _ifindex(iface: str) -> int:
    try:
        return socket.if_nametoindex(iface)
    except OSError:
        raise UsageError(f"no such interface in this network namespace: {iface}",
                         hint="list them with `offload probe`") from None


def ours(slot: pins.Slot, attached: dict[str, int]) -> tuple[str, int] | None:
    """(mode, prog id) of our program on the interface, if the pinned program is attached."""
    meta = slot.meta()
    pid = slot.pinned_prog_id()
    if meta is None or pid is None:
        return None
    for mode, prog_id in attached.items():
        if prog_id == pid:
            return mode, prog_id
    return None


def candidates(requested: str, min_mode: str | None, verdicts: dict[str, modes.ModeVerdict]
               ) -> tuple[list[str], list[dict]]:
    """Modes to try, best first, and the ones passed over without trying (with the reason)."""
    floor = RANK[min_mode] if min_mode else 0
    if requested != "auto":
        if min_mode and RANK[requested] < floor:
            raise UsageError(f"--mode {requested} is below --min-mode {min_mode}")
        return [requested], []
    tryit, skipped = [], []
    for m in modes.MODES:
        if RANK[m] < floor:
            continue
        v = verdicts[m]
        if v.status == modes.UNSUPPORTED:
            skipped.append({"mode": m, "reason": f"not tried: {v.reason}"})
        else:  # supported, unknown, and blocked too: the kernel has the last word, in its own words
            tryit.append(m)
    return tryit, skipped


def attach(iface: str, spec: str, mode: str = "auto", min_mode: str | None = None,
           params: dict[str, str] | None = None, force: bool = False,
           progress=lambda msg: None, managed_by: str | None = None) -> Result:
    if mode not in ("auto",) + modes.MODES:
        raise UsageError(f"bad --mode {mode}: use auto, hw, native or generic")
    if min_mode and min_mode not in modes.MODES:
        raise UsageError(f"bad --min-mode {min_mode}: use hw, native or generic")
    prog = programs.resolve(spec, params)
    ifindex = _ifindex(iface)
    require_privileges(f"attaching XDP to {iface}")
    pins.require_bpffs()
    warnings: list[str] = []
    protected = guard.protected_interfaces()
    if iface in protected:
        if not force:
            raise RefusedError(f"refusing to attach to {iface}: {protected[iface]}; a mistake here cuts this host off",
                               hint="use --force if you mean it")
        warnings.append(f"{iface}: {protected[iface]}; attaching anyway (--force)")

    _, ((facts, verdicts),) = assess([iface])
    slot = pins.Slot(netns.current_name(), iface)
    attached = {a["mode"]: a["prog_id"] for a in facts.attached}   # read with the probe's dump
    mine = ours(slot, attached)
    foreign = {m: i for m, i in attached.items() if not mine or i != mine[1]}
    if foreign and not force:
        desc = ", ".join(f"{m} prog {i} ({(bpfsys.prog_info(i) or bpfsys.ProgInfo(i, '?', '', 0)).name})"
                         for m, i in foreign.items())
        raise RefusedError(f"{iface} carries XDP that offload did not attach: {desc}",
                           hint="leave it, detach it with its owner's tool, or replace it with --force")

    order, fallbacks = candidates(mode, min_mode, verdicts)
    for m in order:
        progress(f"{iface}: trying {m}")
        holder = mine[1] if mine and mine[0] == m else foreign.get(m)
        try:
            loaded = loader.load(prog, hw_device=iface if m == "hw" else None)
        except (loader.VerifierError, loader.LoadError) as e:
            if m != "hw":
                raise  # native and generic run the same verifier: no lower mode will take it
            limit = modes.offload_map_limit(_profile(facts.driver))
            fallbacks.append({"mode": m, "reason": e.message + (f"; driver profile: {limit}" if limit else "")})
            progress(f"{iface}: {m} refused: {e.message.splitlines()[0]}")
            continue
        try:
            new_id = bpfsys.obj_info_id(loaded.fd)
            old_fd = bpfsys.prog_fd_by_id(holder) if holder else None
            try:
                xdp.attach(ifindex, loaded.fd, m, expected_fd=old_fd, no_replace=old_fd is None)
            finally:
                if old_fd is not None:
                    os.close(old_fd)
        except xdp.KernelRefusal as e:
            reason = str(e)
            if verdicts[m].status == modes.BLOCKED:
                reason += f" (the probe had flagged: {verdicts[m].reason})"
            fallbacks.append({"mode": m, "reason": reason})
            progress(f"{iface}: {m} refused: {reason}")
            loaded.close()
            continue
        try:
            _confirm(ifindex, iface, m, new_id)
            meta = {"interface": iface, "ifindex": ifindex, "netns": slot.netns, "program": prog.name,
                    "path": str(prog.path), "library": prog.library, "sha256": prog.sha256,
                    "params": prog.params, "mode": m, "prog_id": new_id, "maps": sorted(loaded.maps()),
                    "attached_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "fallbacks": fallbacks,
                    "managed_by": managed_by}
            _apply_params(prog, loaded)
            slot.write(loaded.fd, loaded.maps(), meta)
        except BaseException:
            _undo(ifindex, m, loaded.fd, holder)
            if not mine:  # a replaced program keeps its own pins (written only after success)
                slot.remove()
            raise
        if mine and mine[0] != m:  # ours moved between coexisting modes (hw <-> native/generic)
            _detach_id(ifindex, mine[0], mine[1])
        return Result(iface, m, new_id, prog.name, fallbacks, replaced=holder, warnings=warnings)

    listed = "; ".join(f"{f['mode']}: {f['reason']}" for f in fallbacks) or "no mode to try"
    floor = f" at or above --min-mode {min_mode}" if min_mode else ""
    raise NoModeError(f"{iface}: could not attach {prog.name} in any acceptable mode{floor}: {listed}",
                      hint="nothing was attached or pinned; see `offload probe -v " + iface + "`")


def _profile(driver: str | None):
    return load_profiles(drivers={driver})[0].get(driver) if driver else None


def _confirm(ifindex: int, iface: str, mode: str, prog_id: int) -> None:
    """Read back from rtnetlink that the program sits in the mode we asked for."""
    now = xdp.attached(ifindex)
    if now.get(mode) != prog_id:
        raise RuntimeError(f"{iface}: the kernel accepted the attach but reports {now or 'nothing'} instead of "
                           f"{mode} prog {prog_id}")


def _undo(ifindex: int, mode: str, new_fd: int, holder: int | None) -> None:
    """Put back what was there: the previous program (atomically), or nothing."""
    if holder:
        fd = bpfsys.prog_fd_by_id(holder)
        try:
            xdp.attach(ifindex, fd, mode, expected_fd=new_fd)
        finally:
            os.close(fd)
    else:
        xdp.detach(ifindex, mode, expected_fd=new_fd)


def _detach_id(ifindex: int, mode: str, prog_id: int) -> None:
    fd = bpfsys.prog_fd_by_id(prog_id)
    try:
        xdp.detach(ifindex, mode, expected_fd=fd)
    finally:
        os.close(fd)


def _apply_params(prog: programs.Program, loaded: loader.Loaded) -> None:
    """Library parameters that live in maps: the redirect target, the filter's blocklist."""
    if not prog.library:
        return
    if prog.name == "redirect":
        target = _ifindex(prog.params["target"])
        fd = loaded.maps()["tx_port"]
        bpfsys.map_update(fd, (0).to_bytes(4, "little"), target.to_bytes(4, "little"))
    elif prog.name == "filter" and prog.params.get("prefixes"):
        from .filter import add_to_maps, parse_prefixes

        m = loaded.maps()
        add_to_maps(m["blocklist_v4"], m["blocklist_v6"], parse_prefixes(prog.params["prefixes"].split(",")))


def detach(iface: str, mode: str | None = None) -> dict:
    """Remove our program from `iface` (in `mode`, or wherever it is) and its pins."""
    require_privileges(f"detaching XDP from {iface}")
    slot = pins.Slot(netns.current_name(), iface)
    try:
        ifindex = socket.if_nametoindex(iface)
    except OSError:  # the device is gone, and its program with it: only our records remain
        if slot.meta() is not None or slot.pin_dir.exists():
            slot.remove()
            return {"interface": iface, "detached": None, "removed_stale_pins": True}
        raise UsageError(f"no such interface in this network namespace: {iface}",
                         hint="list them with `offload probe`") from None
    attached = xdp.attached(ifindex)
    mine = ours(slot, attached)
    if mine is None:
        stale = slot.meta() is not None or slot.pin_dir.exists()
        slot.remove()
        if stale:
            return {"interface": iface, "detached": None, "removed_stale_pins": True}
        raise NotAttachedError(f"{iface}: no program of offload's is attached"
                               + (f" (attached: {attached})" if attached else ""),
                               hint="`offload status` lists what is attached")
    if mode and mine[0] != mode:
        raise NotAttachedError(f"{iface}: offload's program is attached in {mine[0]}, not {mode}")
    _detach_id(ifindex, mine[0], mine[1])
    slot.remove()
    return {"interface": iface, "detached": {"mode": mine[0], "prog_id": mine[1]}, "removed_stale_pins": False}


def status() -> dict:
    """Every XDP program on every interface of this namespace, ours or not."""
    from .netlink import rtnl

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
        for m, pid in sorted(link.xdp_prog_ids.items(), key=lambda kv: -RANK[kv[0]]):
            info = bpfsys.prog_info(pid)
            mine = pinned == pid
            rows.append({"interface": link.name, "ifindex": link.ifindex, "mode": m, "prog_id": pid,
                         "name": info.name if info else None, "ours": mine if have_pins else None,
                         "program": meta["program"] if mine else None,
                         "attached_at": meta["attached_at"] if mine else None})
    stale = [s.iface for s in pins.slots(ns) if s.iface not in {r["interface"] for r in rows if r["ours"]}]
    return {"netns": ns, "attachments": rows, "stale_pins": stale if have_pins else [], "warnings": warnings}


@dataclass
class Snapshot:
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


def snapshot(iface: str) -> Snapshot | None:
    slot = pins.Slot(netns.current_name(), iface)
    try:
        mine = ours(slot, xdp.attached(_ifindex(iface)))
    except UsageError:
        return None
    if mine is None:
        return None
    meta = slot.meta()
    prog_fd = bpfsys.obj_get(str(slot.prog_pin))
    maps = {name: slot.open_map(name) for name in meta.get("maps", [])}
    return Snapshot(slot, meta, mine[0], prog_fd, maps)


def restore(snap: Snapshot) -> None:
    """Put the snapshot's program back on its interface in its mode (atomically where the kernel
    allows), remove whatever of ours replaced it, and re-pin it with its metadata."""
    ifindex = _ifindex(snap.slot.iface)
    now = xdp.attached(ifindex)
    current = ours(snap.slot, now)
    for mode, prog_id in now.items():  # ours in another mode: take it off first
        if current and prog_id == current[1] and mode != snap.mode:
            _detach_id(ifindex, mode, prog_id)
    holder = now.get(snap.mode)
    old_fd = bpfsys.prog_fd_by_id(holder) if holder else None
    try:
        xdp.attach(ifindex, snap.prog_fd, snap.mode, expected_fd=old_fd, no_replace=old_fd is None)
    finally:
        if old_fd is not None:
            os.close(old_fd)
    snap.slot.write(snap.prog_fd, snap.map_fds, snap.meta)
