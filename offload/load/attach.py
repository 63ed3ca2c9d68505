"""Attach a program in the best mode an interface takes — hw, then native, then generic — with the
kernel's reason for every step down, a floor the operator sets, atomic replacement, and nothing
left attached or pinned when it fails. Also detach."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

from offload.errors import NoModeError, NotAttachedError, RefusedError, UsageError
from offload.kernel import bpfsys, clock, netns, xdp, xdplink
from offload.kernel.names import ifindex_of
from offload.kernel.privileges import (
    CAP_BPF,
    CAP_NET_ADMIN,
    CAP_SYS_ADMIN,
    effective,
    require,
)
from offload.load import advice, advisor, dispatcher, guard, loader, pins, programs
from offload.load.ownership import Ownership, ownership
from offload.probe import verdicts
from offload.probe.report import Assessed, assess


@dataclass
class Result:
    interface: str
    mode: str
    prog_id: int
    program: str
    fallbacks: list[dict] = field(default_factory=list)
    replaced: int | None = None
    warnings: list[str] = field(default_factory=list)
    chain: dict | None = None     # in libxdp's dispatcher: priority, actions, the members in run order
    via: str = "netlink"          # "link": held by the bpf_link pinned in the slot
    link_id: int | None = None

    def to_dict(self) -> dict:
        return {"interface": self.interface, "mode": self.mode, "prog_id": self.prog_id,
                "program": self.program, "fallbacks": self.fallbacks, "replaced": self.replaced,
                "warnings": self.warnings, "chain": self.chain, "via": self.via, "link_id": self.link_id}


class _Refused(NamedTuple):
    """One mode that would not take the program: the reason recorded, and its one-line summary."""

    reason: str
    brief: str


@dataclass(frozen=True)
class _Target:
    """What every mode attempt of one attach shares."""

    iface: str
    ifindex: int
    prog: programs.Program
    dev: Assessed
    slot: pins.Slot
    own: Ownership
    fallbacks: list[dict]      # grows as modes are refused; recorded with the one that takes it
    warnings: list[str]
    managed_by: str | None
    via: str = "netlink"       # how a new attachment is made: RTM_SETLINK, or a pinned bpf_link
    displace: int | None = None   # a netlink-held program the caller lets go where a link goes in (GAP)

    def holder(self, mode: str) -> int | None:
        """The program now in `mode`, which an attach there replaces."""
        mine = self.own.mine
        return mine.prog_id if mine and mine.mode == mode else self.own.foreign.get(mode)


def require_privileges(action: str) -> None:
    caps = effective()
    # CAP_BPF arrived in 5.8; CAP_SYS_ADMIN covers it on older kernels.
    bpf_cap = CAP_BPF if caps >> CAP_BPF & 1 else CAP_SYS_ADMIN
    require(CAP_NET_ADMIN, bpf_cap, action=action)


def candidates(requested: str, min_mode: str | None, judged: dict[str, verdicts.ModeVerdict],
               hw_advice: advice.Advice | None = None) -> tuple[list[str], list[dict]]:
    """Modes to try, best first, and the ones passed over without trying (with the reason). hw is
    passed over too when the advisor says the program would be refused there (`hw_advice`)."""
    if requested != verdicts.AUTO:
        if not verdicts.Mode(requested).at_least(min_mode):
            raise UsageError(f"--mode {requested} is below --min-mode {min_mode}")
        return [requested], []
    tryit, skipped = [], []
    for m in verdicts.fallback_order(verdicts.AUTO, min_mode):
        v = judged[m]
        if v.status == verdicts.UNSUPPORTED:
            skipped.append({"mode": m, "reason": f"not tried: {v.reason}"})
        elif m == verdicts.Mode.HW and advice.refused(hw_advice):
            skipped.append({"mode": m, "reason": f"not tried: the program would be refused: {hw_advice.reason} "
                                                 "(offload check says more; --try-hw tries anyway)"})
        else:  # supported, unknown, and blocked too: the kernel has the last word, in its own words
            tryit.append(m)
    return tryit, skipped


def attach(iface: str, spec: str | programs.Program, mode: str = verdicts.AUTO, min_mode: str | None = None,
           params: dict[str, str] | None = None, force: bool = False,
           progress: Callable[[str], None] = lambda msg: None, managed_by: str | None = None,
           assessed: Assessed | None = None, protected: dict[str, str] | None = None,
           try_hw: bool = False, via: str = "netlink", displace: int | None = None) -> Result:
    """Attach `spec` (a PROGRAM argument, or a program resolved already) to `iface`. With `--mode
    auto`, hw is not tried when the advisor says the program would be refused there (`try_hw`
    tries it anyway).

    A caller attaching to many interfaces (apply, watch) passes what it probed once: the
    interface's `assessed` facts and verdicts, and the `protected` links; otherwise each attach
    probes the whole namespace, which makes N attaches cost N probes of N interfaces.

    `via` "link" attaches native and generic through a bpf_link pinned in the slot (hw stays
    netlink: see via_for). `displace`: the id of a netlink-held program (not offload's) that may
    come off first where the link goes in its mode (replace_way's GAP: load.chain.make_way's
    dispatcher), and goes back if the link cannot be made."""
    if via not in VIAS:
        raise UsageError(f"bad --via {via}: use {', '.join(VIAS)}")
    if mode not in verdicts.CHOICES:
        raise UsageError(f"bad --mode {mode}: use {', '.join(verdicts.CHOICES)}")
    if min_mode and min_mode not in verdicts.MODES:
        raise UsageError(f"bad --min-mode {min_mode}: use {', '.join(verdicts.MODES)}")
    prog = spec if isinstance(spec, programs.Program) else programs.resolve_for(iface, spec, params)
    ifindex = ifindex_of(iface)
    _check_params(prog)   # before anything is loaded or swapped
    require_privileges(f"attaching XDP to {iface}")
    pins.require_bpffs()
    with pins.state_lock():   # what is attached is read and changed by one command at a time
        warnings = refuse_protected(iface, force, guard.protected_interfaces() if protected is None else protected)
        dev = assessed if assessed is not None and assessed.facts.name == iface else assess([iface])[1][0]
        slot = pins.Slot(netns.current_name(), iface)
        own = ownership(slot, {a["mode"]: a["prog_id"] for a in dev.facts.attached})   # the probe's own dump
        if own.foreign and not force:
            _refuse_foreign(iface, own.foreign)
        hw_advice = None if try_hw or mode != verdicts.AUTO else advisor.hw_refusal(prog, dev.profile, dev.verdicts)
        order, fallbacks = candidates(mode, min_mode, dev.verdicts, hw_advice)
        target = _Target(iface, ifindex, prog, dev, slot, own, fallbacks, warnings, managed_by, via, displace)
        for m in order:
            progress(f"{iface}: trying {m}")
            out = _try_mode(target, m)
            if isinstance(out, Result):
                return out
            fallbacks.append({"mode": m, "reason": out.reason})
            progress(f"{iface}: {m} refused: {out.brief}")
        listed = "; ".join(f"{f['mode']}: {f['reason']}" for f in fallbacks) or "no mode to try"
        floor = f" at or above --min-mode {min_mode}" if min_mode else ""
        raise NoModeError(f"{iface}: could not attach {prog.name} in any acceptable mode{floor}: {listed}",
                          hint="nothing was attached or pinned; see `offload probe -v " + iface + "`")


VIAS = ("netlink", "link")


def refuse_mixed(iface: str, via: str, held_by_link: bool) -> None:
    """The kernel will not put a link over a netlink attachment nor netlink over a link (EBUSY):
    say so before anything is loaded, with the way out."""
    if via == "link" and not held_by_link:
        raise RefusedError(f"{iface}: the program there was attached by netlink; the kernel will not put a "
                           "bpf_link over it (EBUSY)",
                           hint=f"offload detach {iface} first, then attach --via link")
    if via == "netlink" and held_by_link:
        raise RefusedError(f"{iface}: offload's program there is held by a bpf_link; netlink cannot replace "
                           "it (EBUSY)", hint=f"attach --via link to replace it, or offload detach {iface} first")


def refuse_protected(iface: str, force: bool, protected: dict[str, str]) -> list[str]:
    """Refuse an interface this host depends on (say so and go on with --force): the warnings."""
    if iface not in protected:
        return []
    if not force:
        raise RefusedError(f"refusing to attach to {iface}: {protected[iface]}; a mistake here cuts this host off",
                           hint="use --force if you mean it")
    return [f"{iface}: {protected[iface]}; attaching anyway (--force)"]


def _refuse_foreign(iface: str, foreign: dict[str, int]) -> None:
    desc = ", ".join(f"{m} prog {i} ({(bpfsys.prog_info(i) or bpfsys.LoadedProg(i, '?', '', 0)).name})"
                     for m, i in foreign.items())
    raise RefusedError(f"{iface} carries XDP that offload did not attach: {desc}",
                       hint="leave it, detach it with its owner's tool, or replace it with --force")


def _try_mode(t: _Target, m: str) -> Result | _Refused:
    """One mode, as a transaction (`_transact`): through netlink, or a bpf_link; then ours taken
    off the mode it left, if it moved (hw <-> native/generic)."""
    holder = t.holder(m)
    mine = t.own.mine
    # offload's link holding the program there (the kernel's view; pinned, or staged by a killed run)
    held = t.slot.holding_link(t.ifindex, mine.prog_id) if holder is not None and mine else None
    try:
        way = SET if holder is None else replace_way(t.iface, t.via, m, held is not None, holder == t.displace)
        res = _transact(t, m, via_for(t.via, m), _put_on(t, m, way, holder, held))
    finally:
        if held is not None:
            os.close(held)
    if isinstance(res, Result):
        _leave_mode(t, m)
        if way == GAP:
            res.warnings.append(f"{t.iface}: program {holder} came off {m} before offload's link was made (the "
                                "kernel puts no bpf_link in a netlink program's place): for a moment no XDP ran")
    return res


SET, SWAP, UPDATE, GAP = "set", "swap", "update", "gap"   # how a program goes in: see replace_way


def replace_way(iface: str, requested: str, mode: str, held_by_link: bool, let_go: bool = False) -> str:
    """How an attach `requested` through netlink or a link takes the place of the program in
    `mode` (pure): SWAP, netlink in netlink's place, atomically; UPDATE, offload's link updated,
    atomically; GAP, a netlink-held program the caller lets go (`let_go`: make_way's dispatcher)
    taken off first, then the link made: not atomic, the kernel puts no bpf_link in a netlink
    program's place (EBUSY). Any other mix is refused before anything is loaded (refuse_mixed)."""
    via = via_for(requested, mode)
    if via == "link" and not held_by_link and let_go:
        return GAP
    refuse_mixed(iface, via, held_by_link)
    return UPDATE if via == "link" else SWAP


def via_for(requested: str, mode: str) -> str:
    """How an attach in `mode` is made. hw stays netlink: the kernel's flag check takes
    XDP_FLAGS_HW_MODE for links (dev_xdp_attach refuses only flags outside XDP_FLAGS_MODES), but no
    offloading NIC or netdevsim here has proved it, so a link is made only where it was tested."""
    return "netlink" if mode == verdicts.Mode.HW else requested


def _leave_mode(t: _Target, m: str) -> None:
    """Ours moved between coexisting modes: the program left in the old one comes off, unless the
    commit already took it (its link's pin went with the old pins, and with it the link)."""
    mine = t.own.mine
    if mine and mine.mode != m and xdp.attached_progs(t.ifindex).get(mine.mode) == mine.prog_id:
        clear_prog_id(t.ifindex, mine.mode, mine.prog_id)


def _load(t: _Target, m: str) -> loader.Loaded | _Refused:
    try:
        return loader.load(t.prog, loader.HwDevice(t.iface, t.ifindex) if m == verdicts.Mode.HW else None)
    except (loader.VerifierError, loader.LoadError) as e:
        if m != verdicts.Mode.HW:
            raise  # native and generic run the same verifier: no lower mode will take it
        limit = verdicts.offload_map_limit(t.dev.profile)
        return _Refused(e.message + (f"; driver profile: {limit}" if limit else ""), e.message.splitlines()[0])


# put the loaded program's fd on the interface, its undos on `undo` and what must be closed either
# way on `after`: the id of the link that holds it, or None (netlink)
PutOn = Callable[[int, ExitStack, ExitStack], "int | None"]


def _transact(t: _Target, m: str, via: str, put_on: PutOn) -> Result | _Refused:
    """One mode, as a transaction: load, fill the maps, stage pins and record (never attached
    unpinned, never attached unknown), put on (netlink or a link: `put_on`), read back, commit.
    Each undo is registered as it becomes needed; on success they are dropped, on any failure they
    run (newest first) and leave the interface and the pins as they were."""
    loaded = _load(t, m)   # a link is never made in hw (via_for): no device bound
    if isinstance(loaded, _Refused):
        return loaded
    with closing(loaded), ExitStack() as after, ExitStack() as undo:   # after a commit, the pins hold it
        new_id = bpfsys.obj_info_id(loaded.fd)
        _apply_params(t.prog, loaded)            # maps filled before the program sees a frame
        undo.callback(t.slot.discard_stage)
        rec = _record(t, m, new_id, sorted(loaded.maps()), **({"via": via} if via == "link" else {}))
        t.slot.stage(loaded.fd, loaded.maps(), rec)
        try:
            link_id = put_on(loaded.fd, undo, after)
        except xdp.KernelRefusal as e:
            return _refusal(t, m, e)
        _confirm(t.ifindex, t.iface, m, new_id)
        t.slot.commit(dict(rec, link_id=link_id) if via == "link" else None)
        undo.pop_all()   # committed
    return Result(t.iface, m, new_id, t.prog.name, t.fallbacks, replaced=t.holder(m), warnings=t.warnings,
                  via=via, link_id=link_id)


def _put_on(t: _Target, m: str, way: str, holder: int | None, held: int | None) -> PutOn:
    """The way's own step of `_transact` (replace_way; SET: nothing there)."""
    link = via_for(t.via, m) == "link"

    def by_netlink(fd: int, undo: ExitStack, after: ExitStack) -> None:
        swap(t.ifindex, fd, m, holder)   # atomically in holder's place, or only where nothing is
        undo.pop_all()   # swapped: the stage may go only once the program is off again
        undo.callback(_unswap, t, m, fd, holder)
        return None

    def by_link(fd: int, undo: ExitStack, after: ExitStack) -> int | None:
        if way == UPDATE:   # pinned in the stage before the update: a kill after it, and gc's
            t.slot.stage_link(held)   # recovery commits the stage with the link in it
            link_swap(held, fd, holder)
            undo.callback(_link_put_back, held, holder, fd)
            return _link_id(held)
        if way == GAP:
            _let_go(t, m, holder, undo, after)
        link_fd = xdplink.create(fd, t.ifindex, m)
        after.callback(os.close, link_fd)   # the pin holds it once committed
        undo.callback(xdplink.detach, link_fd)
        t.slot.stage_link(link_fd)   # until here only this process's fd held it: a kill detached it
        return _link_id(link_fd)

    return by_link if link else by_netlink


def _let_go(t: _Target, m: str, holder: int, undo: ExitStack, after: ExitStack) -> None:
    """GAP: the program the caller lets go off first (the kernel puts no link in its place), and
    back, where nothing is, if the link cannot be made."""
    fd = bpfsys.prog_fd_by_id(holder)
    after.callback(os.close, fd)
    xdp.clear_prog(t.ifindex, m, expected_fd=fd)
    undo.callback(swap, t.ifindex, fd, m, None)


def _link_id(link_fd: int) -> int | None:
    link = xdplink.info(link_fd)
    return link.id if link else None


def link_swap(link_fd: int, fd: int, holder: int | None) -> None:
    """Put `fd` in the link in place of program `holder`, atomically, only if that is the one there."""
    with _prog_fd(holder) as old_fd:
        xdplink.update(link_fd, fd, old_fd)


def _link_put_back(link_fd: int, holder: int | None, new_fd: int) -> None:
    """Undo a link update that cannot be completed: the previous program back, atomically."""
    with _prog_fd(holder) as old_fd:
        xdplink.update(link_fd, old_fd, new_fd)


def _refusal(t: _Target, m: str, e: xdp.KernelRefusal) -> _Refused:
    reason = str(e)
    if t.dev.verdicts[m].status == verdicts.BLOCKED:
        reason += f" (the probe had flagged: {t.dev.verdicts[m].reason})"
    return _Refused(reason, reason)


def _record(t: _Target, m: str, prog_id: int, maps: list[str], **extra) -> dict:
    """The attachment's metadata, as pins.Slot.stage writes it."""
    return record(t.slot, t.ifindex, t.prog, m, prog_id, maps, t.fallbacks, t.managed_by, **extra)


def record(slot: pins.Slot, ifindex: int, prog: programs.Program, mode: str, prog_id: int, maps: list[str],
           fallbacks: list[dict], managed_by: str | None, **extra) -> dict:
    """A record of offload's program on an interface (a lone attach's, or a chain member's with
    `extra`: its chain and member key), as pins.Slot.stage writes it."""
    return {"interface": slot.iface, "ifindex": ifindex, "netns": slot.netns, "program": prog.name,
            "path": str(prog.path), "library": prog.library, "kind": prog.kind, "entry": prog.entry,
            "section": prog.section, "sha256": prog.sha256,
            "params": prog.params, "mode": mode, "prog_id": prog_id, "maps": maps,
            "attached_at": clock.rfc3339(), "fallbacks": fallbacks,
            "managed_by": managed_by, **extra}


@contextmanager
def _prog_fd(prog_id: int | None) -> Iterator[int | None]:
    """An fd for program `prog_id` (None for None), closed afterwards."""
    fd = bpfsys.prog_fd_by_id(prog_id) if prog_id else None
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


def swap(ifindex: int, fd: int, mode: str, holder: int | None) -> None:
    """Put `fd` in `mode` by netlink: atomically in place of `holder`, or only where nothing is attached."""
    with _prog_fd(holder) as old_fd:
        xdp.set_prog(ifindex, fd, mode, expected_fd=old_fd, no_replace=old_fd is None)


def _confirm(ifindex: int, iface: str, mode: str, prog_id: int) -> None:
    """Read back from rtnetlink that the program sits in the mode we asked for."""
    now = xdp.attached_progs(ifindex)
    if now.get(mode) != prog_id:
        raise RuntimeError(f"{iface}: the kernel accepted the attach but reports {now or 'nothing'} instead of "
                           f"{mode} prog {prog_id}")


def _unswap(t: _Target, m: str, fd: int, holder: int | None) -> None:
    """Undo a swap that cannot be completed, then the pins it made. When the put-back fails, our
    program stays attached, and so do its staged pins: still recognisably ours (gc recovers it)."""
    _put_back(t.ifindex, m, fd, holder)
    t.slot.discard_stage()
    if not t.own.mine:   # a replaced program of ours keeps its own pins (committed only after success)
        t.slot.remove()


def _put_back(ifindex: int, mode: str, new_fd: int, holder: int | None) -> None:
    """Undo a swap that cannot be completed: the previous program back (atomically), or nothing."""
    if holder:
        with _prog_fd(holder) as fd:
            xdp.set_prog(ifindex, fd, mode, expected_fd=new_fd)
    else:
        xdp.clear_prog(ifindex, mode, expected_fd=new_fd)


def clear_prog_id(ifindex: int, mode: str, prog_id: int) -> None:
    """Take program `prog_id` off `ifindex` in `mode`, only if it is still the one there."""
    with _prog_fd(prog_id) as fd:
        xdp.clear_prog(ifindex, mode, expected_fd=fd)


def _check_params(prog: programs.Program) -> None:
    """Library parameters that are applied after the swap, checked before it: the redirect target
    exists here, the prefixes parse and fit the filter's maps."""
    if not prog.library:
        return
    if prog.name == "redirect":
        ifindex_of(prog.params["target"])
    elif prog.name == "filter" and prog.params.get("prefixes"):
        from offload.load.filter import MAX_ENTRIES, parse_prefixes

        nets = parse_prefixes(prog.params["prefixes"].split(","))
        for version in (4, 6):
            n = len({n for n in nets if n.version == version})
            if n > MAX_ENTRIES:
                raise UsageError(f"filter: {n} IPv{version} prefixes; its blocklist holds at most {MAX_ENTRIES}")


def _apply_params(prog: programs.Program, loaded: loader.Loaded) -> None:
    """Library parameters that live in maps: the redirect target, the filter's blocklist."""
    if not prog.library:
        return
    if prog.name == "redirect":
        target = ifindex_of(prog.params["target"])
        fd = loaded.maps()["tx_port"]
        bpfsys.map_update(fd, (0).to_bytes(4, "little"), target.to_bytes(4, "little"))
    elif prog.name == "filter" and prog.params.get("prefixes"):
        from offload.load.filter import add_to_maps, parse_prefixes

        m = loaded.maps()
        add_to_maps(m["blocklist_v4"], m["blocklist_v6"], parse_prefixes(prog.params["prefixes"].split(",")))


def detach(iface: str, mode: str | None = None, group: list[pins.Slot] | None = None) -> dict:
    """Remove our program from `iface` (in `mode`, or wherever it is) and its pins. `group`: the
    interface's slots, when the caller listed every interface's once already (watch's exit)."""
    slot = pins.Slot(netns.current_name(), iface)   # validates the name before anything else
    require_privileges(f"detaching XDP from {iface}")
    with pins.state_lock():   # not under an attach or a gc in progress
        try:
            ifindex = socket.if_nametoindex(iface)
        except OSError:  # the device is gone, and its program with it: only our records remain
            if slot.exists():
                slot.remove()
                return {"interface": iface, "detached": None, "removed_stale_pins": True}
            raise netns.no_such_interface(iface) from None
        attached = xdp.attached_progs(ifindex)
        group = pins.interface_slots(slot.netns, iface) if group is None else group
        gone = _leftovers_out(iface, ifindex, attached, group)
        if gone:   # libxdp rebuilt the dispatcher: read again
            attached = xdp.attached_progs(ifindex)
        members = dispatcher.members(ifindex, attached)
        chained = [s for s in group if s.member is not None]
        if chained or gone:   # a policy's chain members (each its own slot): all of offload's leave, no other
            return _detach_members(slot, chained, ifindex, attached, members, mode, gone)
        mine = ownership(slot, attached, members).mine
        if mine is None:
            stale = slot.exists()
            slot.remove()
            if stale:
                return {"interface": iface, "detached": None, "removed_stale_pins": True}
            raise NotAttachedError(f"{iface}: no program of offload's is attached"
                                   + (f" (attached: {attached})" if attached else ""),
                                   hint="`offload status` lists what is attached")
        if mode and mine.mode != mode:
            raise NotAttachedError(f"{iface}: offload's program is attached in {mine.mode}, not {mode}")
        if mine.prog_id not in attached.values():   # a member of libxdp's dispatcher: only it leaves
            from offload.load import chain

            return chain.detach(slot, ifindex, mine.mode, mine.prog_id)
        via = take_off(slot, ifindex, mine.mode, mine.prog_id)
        slot.remove()
        return {"interface": iface, "detached": mine._asdict(), "removed_stale_pins": False, "via": via}


def take_off(slot: pins.Slot, ifindex: int, mode: str, prog_id: int) -> str:
    """Take offload's program `prog_id` off: through the slot's pinned link when that link holds
    it there (the kernel's view), else by netlink, only if it is still the one there. A link that
    is not offload's is never touched: netlink's EBUSY is said as such. How it was held."""
    fd = slot.holding_link(ifindex, prog_id)
    if fd is not None:
        try:
            xdplink.detach(fd)
        finally:
            os.close(fd)
        return "link"
    try:
        clear_prog_id(ifindex, mode, prog_id)
    except xdp.KernelRefusal as e:
        if e.code == errno.EBUSY:
            raise RefusedError(f"{slot.iface}: {mode} prog {prog_id} is held by a bpf_link that is not offload's "
                               f"pinned one: {e}", hint="its owner takes it off (closing or unpinning the link)"
                               ) from None
        raise
    return "netlink"


def _leftovers_out(iface: str, ifindex: int, attached: dict[str, int], group: list[pins.Slot]) -> list[dict]:
    """A killed run's leftovers in the dispatcher (offload's, no slot's member) leave first."""
    if not group or not attached:
        return []
    from offload.load import chain

    return chain.clear_leftovers(iface, ifindex, attached, group)


def _detach_members(slot: pins.Slot, chained: list[pins.Slot], ifindex: int, attached: dict[str, int],
                    members: dict[int, str], mode: str | None, gone: list[dict]) -> dict:
    """Every program of offload's on the interface: its own slot's and each chain member's (by
    id, through libxdp); the other tools' programs stay in the dispatcher."""
    from offload.load import chain

    out: list[dict] = list(gone)
    stale = False
    for s in [slot, *chained]:
        mine = ownership(s, attached, members).mine
        if mine is None or (mode and mine.mode != mode):
            stale = stale or (mine is None and s.exists())
            if mine is None:
                s.remove()
            continue
        if mine.prog_id in attached.values():
            take_off(s, ifindex, mine.mode, mine.prog_id)
            s.remove()
        else:
            chain.detach(s, ifindex, mine.mode, mine.prog_id)
        out.append({"member": s.member, "mode": mine.mode, "prog_id": mine.prog_id})
    if not out and not stale:
        raise NotAttachedError(f"{slot.iface}: no program of offload's is attached"
                               + (f" in {mode}" if mode else ""), hint="`offload status` lists what is attached")
    first = {"mode": out[0]["mode"], "prog_id": out[0]["prog_id"]} if out else None
    return {"interface": slot.iface, "detached": first, "removed_stale_pins": stale, "members": out}
