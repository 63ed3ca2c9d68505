"""offload's program in libxdp's multi-program dispatcher, beside other tools' programs: attach
with a run priority and chain-call actions, detach only ours. libxdp does the work (kernel.libxdp):
it builds a dispatcher with the programs already there plus ours, pins it under
`<bpffs>/xdp/dispatch-IFINDEX-ID/` (where xdp-loader and every libxdp user look) and swaps it in
atomically; offload pins its own program in its slot too, as for a lone attach, so `status`, `gc`
and `detach` know which member is offload's.

A chain is never offloaded (hw mode holds one program). Where the kernel refuses the dispatcher's
freplace programs, libxdp would quietly attach the program alone; offload says why and does that
only when asked (`allow_single`), through its own lone-program attach.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

from offload.errors import EnvironmentProblem, LoadError, NoModeError, OffloadError, RefusedError, UsageError
from offload.kernel import bpfsys, libxdp, netns, xdp
from offload.kernel.bpfobj import BpfObject, ObjectError
from offload.load import attach as single
from offload.load import dispatcher, guard, pins, programs
from offload.load.ownership import Held, leftovers, ownership, view
from offload.load.stderr import captured_stderr
from offload.probe import verdicts

DEFAULT_CHAIN = ("pass",)      # libxdp's default: the next program runs when this one passes
# why: the words `attach --priority`, a policy's validation and its plan all say
NEVER_HW = "a chain is never offloaded: hw mode runs one program and libxdp's dispatcher cannot take it"
CHAIN_MODES = ("native", "generic")


def parse_chain(text: str | None) -> tuple[str, ...]:
    """`--chain pass,drop`: the actions on which the next program runs (UsageError otherwise)."""
    if text is None:
        return DEFAULT_CHAIN
    names = tuple(dict.fromkeys(a.strip().lower() for a in text.split(",") if a.strip()))
    bad = [a for a in names if a not in libxdp.ACTIONS]
    if bad:
        raise UsageError(f"--chain: unknown action {bad[0][:20]!r}; use some of {','.join(libxdp.ACTIONS)}")
    return names


def check_priority(priority: int) -> int:
    if not 0 <= priority <= 0x7FFFFFFF:
        raise UsageError(f"--priority {priority}: use 0..2147483647 (lower runs first; libxdp's default is "
                         f"{libxdp.DEFAULT_PRIORITY})")
    return priority


def chain_modes(requested: str, current: str | None, min_mode: str | None = None) -> list[str]:
    """The modes a chain may go in, best first: never hw (one program only); at or above the
    floor; the mode of the dispatcher already there, which a second one beside it could not join."""
    if verdicts.Mode.HW in (requested, min_mode):
        raise UsageError(NEVER_HW, hint="attach it alone in hw (no --priority), or choose --mode native or generic")
    if requested not in (verdicts.AUTO, *CHAIN_MODES):
        raise UsageError(f"bad --mode {requested}: a chain runs in {' or '.join(CHAIN_MODES)}")
    wanted = [m for m in (CHAIN_MODES if requested == verdicts.AUTO else [requested])
              if verdicts.Mode(m).at_least(min_mode)]
    if not wanted:
        raise UsageError(f"--mode {requested} is below --min-mode {min_mode}")
    if current is not None:
        if current not in wanted:
            raise RefusedError(f"the interface's dispatcher runs in {current}, not in "
                               f"{' or '.join(wanted)}", hint=f"use --mode {current} (or auto) to join it")
        return [current]
    return wanted


def joinable(prog: programs.Program) -> None:
    """UsageError when `prog` cannot be a member of libxdp's dispatcher (policy validation)."""
    _object_of(prog)


def _object_of(prog: programs.Program) -> str:
    """The ELF object libxdp loads the program from: bcc and legacy-map objects cannot join."""
    if prog.kind == "bcc":
        raise UsageError(f"{prog.name}: a bcc program cannot join libxdp's dispatcher (libxdp loads ELF objects)",
                         hint="compile it as libbpf-style C, or attach it alone (no --priority)")
    if prog.legacy:
        raise UsageError(f"{prog.name}: an object with SEC(\"maps\") definitions cannot join libxdp's dispatcher",
                         hint="use BTF-defined maps, or attach it alone (no --priority)")
    if prog.library and (prog.params.get("target") or prog.params.get("prefixes")):
        raise UsageError(f"{prog.name}: parameters that live in maps (target, prefixes) are not set in a chain yet",
                         hint="attach it alone (no --priority)")
    return str(prog.object_for(hw=False))


def freplace_refusal() -> str | None:
    with captured_stderr():   # libbpf's diagnostics of the test load
        return libxdp.freplace_refusal()


def attach(iface: str, spec: str | programs.Program, priority: int, chain_call: tuple[str, ...] = DEFAULT_CHAIN,
           mode: str = verdicts.AUTO, params: dict[str, str] | None = None, allow_single: bool = False,
           force: bool = False, progress: Callable[[str], None] = lambda msg: None,
           managed_by: str | None = None, min_mode: str | None = None) -> single.Result:
    """Add `spec` to `iface`'s dispatcher at `priority` (made when there is none); the programs of
    other tools keep running. Replaces offload's own earlier program there, if any."""
    check_priority(priority)
    prog = spec if isinstance(spec, programs.Program) else programs.resolve(spec, params)
    chain_modes(mode, None, min_mode)   # bad input refused before anything is probed or loaded
    _object_of(prog)
    ifindex = single.ifindex_of(iface)
    single.require_privileges(f"attaching XDP to {iface}")
    pins.require_bpffs()
    guarded = single.refuse_protected(iface, force, guard.protected_interfaces())   # as a lone attach does
    refusal = freplace_refusal()
    if refusal is not None:
        return _alone(iface, prog, mode, refusal, allow_single, force, progress, managed_by)
    with pins.state_lock():
        slot = pins.Slot(netns.current_name(), iface)
        attached = xdp.attached_progs(ifindex)
        now = libxdp.chain(ifindex)
        if now.legacy or (attached and now.mode is None):
            _refuse_lone(iface, slot, attached)
        if len(now.members) >= libxdp.MAX_PROGS:
            raise RefusedError(f"{iface}: libxdp's dispatcher is full ({libxdp.MAX_PROGS} programs)")
        # libxdp's read of the dispatcher names its members: no second read through the pins
        mine = ownership(slot, attached, {m.prog_id: now.mode for m in now.members if now.mode}).mine
        m, (new_id, after), fallbacks = _join_first(slot, ifindex, prog, chain_modes(mode, now.mode, min_mode),
                                                    priority, chain_call, managed_by, mine.prog_id if mine else None,
                                                    progress)
        warnings = guarded + (_replace_earlier(iface, ifindex, mine, mine.prog_id in attached.values())
                              if mine is not None else [])
        return single.Result(iface, m, new_id, prog.name, fallbacks, replaced=mine.prog_id if mine else None,
                             warnings=warnings, chain=_chain_doc(after, priority, chain_call))


def _join_first(slot: pins.Slot, ifindex: int, prog: programs.Program, modes: list[str], priority: int,
                chain_call: tuple[str, ...], managed_by: str | None, replaces: int | None,
                progress: Callable[[str], None]) -> tuple[str, tuple[int, libxdp.Chain], list[dict]]:
    """`prog` into the dispatcher in the first of `modes` libxdp takes: (mode, what _join returns,
    the modes refused before it, recorded as fallbacks). NoModeError when none took it."""
    path, fallbacks = _object_of(prog), []
    for m in modes:
        progress(f"{slot.iface}: adding {prog.name} to the dispatcher ({m}, priority {priority})")
        try:
            return m, _join(slot, ifindex, prog, path, m, priority, chain_call, managed_by, fallbacks, replaces), \
                fallbacks
        except LoadError as e:
            fallbacks.append({"mode": m, "reason": e.message})
    listed = "; ".join(f"{f['mode']}: {f['reason']}" for f in fallbacks)
    raise NoModeError(f"{slot.iface}: libxdp could not add {prog.name} to a dispatcher: {listed}",
                      hint="nothing was attached or pinned; `offload status` shows the chain")


def _replace_earlier(iface: str, ifindex: int, mine: Held, alone: bool) -> list[str]:
    """Our earlier program leaves only once the new one runs (its pins went with the commit): where
    that fails, the new one stays and the operator learns how to remove the old one. `alone`: it
    was attached by itself (hw beside a chain), not a member of the dispatcher."""
    try:
        if alone:   # off the interface
            single.clear_prog_id(ifindex, mine.mode, mine.prog_id)
        else:
            _leave(ifindex, mine.mode, mine.prog_id)
        return []
    except (libxdp.LibxdpError, OSError) as e:
        return [f"offload's earlier program {mine.prog_id} is still on {iface} ({e.strerror or e}): "
                f"xdp-loader unload -i {mine.prog_id} {iface} removes it"]


def _refuse_lone(iface: str, slot: pins.Slot, attached: dict[str, int]) -> None:
    """A lone program (no dispatcher) holds the interface: libxdp cannot add beside it."""
    if ownership(slot, attached).mine is not None:
        raise RefusedError(f"{iface} carries offload's program alone, not in a dispatcher",
                           hint=f"offload detach {iface} first, then attach with --priority")
    desc = ", ".join(f"{m} prog {i}" for m, i in attached.items())
    raise RefusedError(f"{iface} carries a program outside libxdp's dispatcher ({desc}): a chain cannot be built "
                       "beside it", hint="load that program through libxdp (xdp-loader load) so it joins a "
                                         "dispatcher, or detach it with its owner's tool")


def _alone(iface: str, prog: programs.Program, mode: str, refusal: str, allow_single: bool, force: bool,
           progress: Callable[[str], None], managed_by: str | None) -> single.Result:
    """The kernel cannot run a dispatcher: the program alone, only when asked, saying why."""
    if not allow_single:
        raise EnvironmentProblem(f"{iface}: cannot add {prog.name} to libxdp's multi-program dispatcher: {refusal}; "
                                 "nothing was attached",
                                 hint="--allow-single attaches it alone instead (no chain: it then shares "
                                      "the interface with no other program)")
    progress(f"{iface}: no dispatcher on this kernel ({refusal}): attaching {prog.name} alone (--allow-single)")
    out = single.attach(iface, prog, mode, force=force, progress=progress, managed_by=managed_by)
    out.warnings.append(f"attached alone, not in a chain (--allow-single): {refusal}")
    return out


def _join(slot: pins.Slot, ifindex: int, prog: programs.Program, path: str, mode: str, priority: int,
          chain_call: tuple[str, ...], managed_by: str | None, fallbacks: list[dict] | None = None,
          replaces: int | None = None) -> tuple[int, libxdp.Chain]:
    """One libxdp attach as a transaction: libxdp loads, links and pins; offload pins the same
    program and records it; any failure after the attach takes it out again. Write-ahead: before
    libxdp adds it, the slot's staged record says what is coming (the members there before, its
    priority, actions and name) and which member it `replaces`, so that a run killed anywhere on
    the way leaves offload's program recognisable (load.ownership.leftovers), never foreign.
    Returns the new program's id and the chain as libxdp reads it back after the attach."""
    chained = {"priority": priority, "chain_call_actions": list(chain_call)}
    meta = single.record(slot, ifindex, prog, mode, 0, [], fallbacks or [], managed_by, chain=chained,
                         member=slot.member, replaces=replaces)
    with _opened(path, prog) as obj, libxdp.Program.from_object(obj.handle, prog.entry or "", path) as handle, \
            ExitStack() as undo:
        handle.configure(priority, chain_call)
        before = [m.prog_id for m in libxdp.chain(ifindex).members]
        undo.callback(slot.discard_stage)
        slot.stage_record({**meta, "pending": {"before": before, "name": _kernel_name(prog.entry)}})
        try:
            with captured_stderr():
                handle.attach(ifindex, mode)
        except libxdp.LibxdpError as e:
            verifier = obj.log(prog.entry or "").strip()
            raise LoadError(f"{e.strerror}; libxdp: {_said(e.log)}"
                            + (f"; verifier: {verifier.splitlines()[-1]}" if verifier else "")) from None
        new_id = handle.id
        undo.callback(_leave, ifindex, mode, new_id)
        maps = obj.map_fds()
        slot.stage(handle.fd, maps, {**meta, "prog_id": new_id, "maps": sorted(maps)})
        after = libxdp.chain(ifindex)
        if new_id not in {m.prog_id for m in after.members}:
            raise RuntimeError(f"{slot.iface}: libxdp reported success but program {new_id} is not in the dispatcher")
        slot.commit()
        undo.pop_all()
        return new_id, after


def _kernel_name(entry: str | None) -> str | None:
    """The name the kernel gives the program: its function's, cut to what fits beside the NUL."""
    return entry[:bpfsys.BPF_OBJ_NAME_LEN - 1] if entry else None


@contextmanager
def _opened(path: str, prog: programs.Program) -> Iterator[BpfObject]:
    """The program's object, opened for libxdp: only its program loads, its globals set, its maps
    pinned by offload (never by name where the object asks)."""
    try:
        with captured_stderr():
            obj = BpfObject(path)
    except ObjectError as e:
        raise UsageError(f"libbpf could not open {path}: {e.strerror}") from None
    with obj:
        obj.select(prog.entry or "")
        obj.no_auto_pinning()
        for var, raw in prog.globals:
            obj.set_global(var, raw)
        yield obj


def _chain_doc(now: libxdp.Chain, priority: int, chain_call: tuple[str, ...]) -> dict:
    """The chain as libxdp read it back after the attach, in run order."""
    return {"priority": priority, "chain_call_actions": list(chain_call), "dispatcher_id": now.main_prog_id,
            "members": [{"prog_id": m.prog_id, "name": m.name, "priority": m.priority,
                         "chain_call_actions": list(m.chain_call_actions)} for m in now.members]}


def _said(log: list[str]) -> str:
    useful = [line.strip() for line in log if not line.startswith(" libbpf")]
    return " / ".join(useful[-3:]) or "no message"


def _leave(ifindex: int, mode: str, prog_id: int) -> None:
    """Take program `prog_id` (and only it) out of the interface's dispatcher."""
    with libxdp.Program.from_id(prog_id) as handle, captured_stderr():
        handle.detach(ifindex, mode)


def detach(slot: pins.Slot, ifindex: int, mode: str, prog_id: int) -> dict:
    """Take offload's member out (the dispatcher goes with the last program) and its pins."""
    try:
        _leave(ifindex, mode, prog_id)
    except libxdp.LibxdpError as e:
        raise RefusedError(f"{slot.iface}: libxdp could not take program {prog_id} out of the dispatcher: "
                           f"{e.strerror}; libxdp: {_said(e.log)}",
                           hint="`offload status` and `xdp-loader status` show the chain") from None
    slot.remove()
    return {"interface": slot.iface, "detached": {"mode": mode, "prog_id": prog_id}, "removed_stale_pins": False}


# -- a policy's chain: several members of offload's, built as one transaction ---------------------------
@dataclass(frozen=True)
class Want:
    """One program a policy wants in an interface's dispatcher: its slot key, priority, actions."""

    key: str
    prog: programs.Program
    priority: int
    chain_call: tuple[str, ...] = DEFAULT_CHAIN


class Leave(NamedTuple):
    """A program of offload's that leaves the dispatcher once a run stands, by id: with `slot`, its
    pins and record go too; `stage_only`: only the slot's staging debris (a killed run's leftover
    beside the slot's live member, whose pins stay)."""

    prog_id: int
    slot: pins.Slot | None = None
    stage_only: bool = False


@dataclass
class Built:
    """A chain a policy built on one interface, not yet final: `roll_back` takes out every member
    this run added and puts back the pins they replaced; `finish` (once the whole run stands)
    takes out the members they replace and those the policy dropped."""

    iface: str
    ifindex: int
    mode: str | None = None
    added: list[dict] = field(default_factory=list)
    leaving: list[Leave] = field(default_factory=list)
    undo: ExitStack = field(default_factory=ExitStack)
    fds: list[int] = field(default_factory=list)
    retire: int | None = None   # the dispatcher a lone program replaced (make_way): off, its pins gone at the end

    def roll_back(self) -> None:
        self.undo.close()
        self.added.clear()

    def finish(self) -> list[str]:
        """The replaced and dropped members leave (only offload's, by id); the warnings of those
        that would not (a member someone else took out already is simply gone)."""
        warnings = []
        members = {m.prog_id for m in libxdp.chain(self.ifindex).members}
        for prog_id, slot, stage_only in self.leaving:
            try:
                if prog_id in members:
                    _leave(self.ifindex, self.mode or "native", prog_id)
                if slot is not None and stage_only:
                    slot.discard_stage()
                elif slot is not None:
                    slot.remove()
            except (libxdp.LibxdpError, OSError) as e:
                warnings.append(f"{self.iface}: offload's program {prog_id} stays in the dispatcher "
                                f"({e.strerror or e}): xdp-loader unload -i {prog_id} {self.iface} removes it")
        self.leaving.clear()
        if self.retire is not None:
            warnings += self._retire()
        self.undo.pop_all()
        return warnings

    def _retire(self) -> list[str]:
        """The dispatcher a lone program replaced: off the interface (still there when the program
        went in beside it, in hw) and libxdp's pins of it removed, so its links let go."""
        try:
            if xdp.attached_progs(self.ifindex).get(self.mode or "") == self.retire:
                single.clear_prog_id(self.ifindex, self.mode or "native", self.retire)
            dispatcher.forget(self.ifindex, self.retire)
            return []
        except OSError as e:
            return [f"{self.iface}: libxdp's pins of dispatcher {self.retire} stay ({e.strerror or e}): "
                    f"xdp-loader clean {self.iface} removes them"]

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()

    def to_dict(self) -> dict:
        return {"mode": self.mode, "added": self.added, "removed": [leave.prog_id for leave in self.leaving]}


def build(iface: str, add: list[Want], drop: list[Leave], modes: list[str],
          managed_by: str | None, progress: Callable[[str], None] = lambda msg: None,
          leftovers: tuple[Leave, ...] = ()) -> Built:
    """Add `add` to `iface`'s dispatcher (made when there is none), in their order, in the first
    of `modes` libxdp takes (a dispatcher there decides it), each in its own slot: one transaction.
    If member k fails, members 1..k-1 are taken out again and the pins they replaced put back,
    then the error is raised. Nothing leaves the dispatcher here: the members the new ones replace
    and `drop` leave in `Built.finish`. Programs of other tools are never touched. The caller
    holds the state lock and knows the kernel runs freplace (the plan).
    `leftovers` (a killed run's programs of offload's, no member of any chain) leave first, for
    good: a roll-back has no use for them, and could no longer tell them from another tool's."""
    ifindex = single.ifindex_of(iface)
    for gone in leftovers:
        _clear_leftover(iface, ifindex, gone, progress)
    now = libxdp.chain(ifindex)
    attached = xdp.attached_progs(ifindex)
    if now.legacy or (attached and now.mode is None):
        _refuse_lone(iface, pins.Slot(netns.current_name(), iface), attached)
    if len(now.members) + len(add) > libxdp.MAX_PROGS:
        raise RefusedError(f"{iface}: libxdp's dispatcher holds {len(now.members)} programs; {len(add)} more exceed "
                           f"its {libxdp.MAX_PROGS}", hint="the policy's chain must leave room for the others'")
    built = Built(iface, ifindex, now.mode)
    built.leaving += drop
    try:
        for n, want in enumerate(add):
            try:
                _add(built, want, modes if built.mode is None else [built.mode], managed_by, progress)
            except OffloadError as e:
                taken = f"; the {n} added before it taken out again" if n else ""
                raise type(e)(f"{iface}: could not add {want.prog.name} (priority {want.priority}) to the chain: "
                              f"{e.message}{taken}: the chain is as it was", hint=e.hint) from None
        return built
    except BaseException:
        built.roll_back()
        built.close()
        raise


def clear_leftovers(iface: str, ifindex: int, attached: dict[str, int], group: list[pins.Slot]) -> list[dict]:
    """Take out every leftover a killed run left in `iface`'s dispatcher (load.ownership.leftovers,
    over the interface's slots `group`): what `offload detach IFACE` does first."""
    progs = dispatcher.programs(ifindex, attached)
    found = leftovers([p for _, p in progs], [view(s) for s in group])
    modes = {p["prog_id"]: m for m, p in progs}
    for prog_id, left in found.items():
        _clear_leftover(iface, ifindex, Leave(prog_id, left.slot, left.stage), lambda msg: None)
    return [{"member": left.slot.member, "mode": modes[i], "prog_id": i, "leftover": left.why}
            for i, left in found.items()]


def make_way(iface: str, put_on: Callable[[int], single.Result], members: list[Leave]) -> tuple[Built, single.Result]:
    """offload's chain on `iface` (a dispatcher holding offload's `members` only) gives way to one
    program alone, as one transaction: `put_on` attaches it, given the dispatcher's id to let go
    (in the dispatcher's mode atomically in its place by netlink; through a link, the dispatcher
    off first: load.attach.replace_way's GAP; in hw beside it); the members' pins, the dispatcher
    and libxdp's pins of it leave in `Built.finish`, once the run stands. `roll_back` puts the
    dispatcher back: its freplace links stayed pinned all along, so the chain runs again as it
    was, ids and all."""
    ifindex = single.ifindex_of(iface)
    now = libxdp.chain(ifindex)
    if now.main_prog_id is None or now.mode is None or now.legacy:
        raise RefusedError(f"{iface}: libxdp's dispatcher is no longer there: nothing to make way",
                           hint="`offload plan` again shows what is attached now")
    others = {m.prog_id for m in now.members} - {leave.prog_id for leave in members}
    if others:
        raise RefusedError(f"{iface}: another tool's program ({', '.join(map(str, sorted(others)))}) joined the "
                           "dispatcher since the plan: offload's program alone would take it off; left alone",
                           hint="unload it with its tool, or keep `programs:` in the rule")
    fd = bpfsys.prog_fd_by_id(now.main_prog_id)
    built = Built(iface, ifindex, now.mode, fds=[fd], retire=now.main_prog_id)
    try:
        res = put_on(now.main_prog_id)
    except BaseException:
        built.close()
        raise
    built.undo.callback(_dispatcher_back, iface, ifindex, now.mode, fd, res)
    built.leaving += members
    return built, res


def _dispatcher_back(iface: str, ifindex: int, mode: str, fd: int, res: single.Result) -> None:
    """Undo make_way: the dispatcher back in its mode (atomically in place of the lone program
    where netlink put that in its place), the lone program off, its pins gone."""
    slot = pins.Slot(netns.current_name(), iface)
    if res.mode == mode and res.via == "netlink":
        single.swap(ifindex, fd, mode, res.prog_id)
    else:   # beside it (hw), or held by a link, which netlink cannot replace: off first
        single.take_off(slot, ifindex, res.mode, res.prog_id)
        if xdp.attached_progs(ifindex).get(mode) is None:
            single.swap(ifindex, fd, mode, None)
    slot.remove()


def _clear_leftover(iface: str, ifindex: int, gone: Leave, progress: Callable[[str], None]) -> None:
    progress(f"{iface}: taking out program {gone.prog_id}, left by a killed run")
    now = libxdp.chain(ifindex)
    try:
        if now.mode is not None and gone.prog_id in {m.prog_id for m in now.members}:
            _leave(ifindex, now.mode, gone.prog_id)
    except libxdp.LibxdpError as e:
        raise RefusedError(f"{iface}: libxdp could not take out program {gone.prog_id}, offload's, left by a killed "
                           f"run: {e.strerror}; libxdp: {_said(e.log)}",
                           hint=f"xdp-loader unload -i {gone.prog_id} {iface} removes it") from None
    if gone.slot is not None and gone.stage_only:
        gone.slot.discard_stage()


def _add(built: Built, want: Want, modes: list[str], managed_by: str | None, progress: Callable[[str], None]) -> None:
    """One member in its slot, with its undo registered (out again, the slot's earlier pins back)."""
    slot = pins.Slot(netns.current_name(), built.iface, want.key)
    earlier = _hold(slot, built)
    old = earlier[2]["prog_id"] if earlier else None
    m, (new_id, _), _ = _join_first(slot, built.ifindex, want.prog, modes, want.priority, want.chain_call,
                                    managed_by, old, progress)
    built.mode = m
    built.undo.callback(_unjoin, slot, built.ifindex, m, new_id, earlier)
    if old is not None:
        built.leaving.append(Leave(old))
    built.added.append({"member": want.key, "program": want.prog.name, "prog_id": new_id,
                        "priority": want.priority, "chain_call_actions": list(want.chain_call), "replaced": old})


def _hold(slot: pins.Slot, built: Built) -> tuple[int, dict[str, int], dict] | None:
    """The slot's pinned program, maps and record, held open (fds in `built`) to be put back."""
    prog_id = slot.pinned_prog_id()
    if prog_id is None:
        return None
    try:
        meta = slot.verified_meta(prog_id)
    except pins.StateError:   # its record is no use: the kernel's view is put back
        meta = None
    names = slot.pinned_maps()
    meta = meta or slot.kernel_record(prog_id, built.mode or "native", names, built.ifindex)
    prog_fd = slot.open_prog()
    built.fds.append(prog_fd)
    maps = {}
    for name in names:
        maps[name] = slot.open_map(name)
        built.fds.append(maps[name])
    return prog_fd, maps, {**meta, "maps": names}


def _unjoin(slot: pins.Slot, ifindex: int, mode: str, prog_id: int,
            earlier: tuple[int, dict[str, int], dict] | None) -> None:
    """Undo one member: out of the dispatcher, and its slot as it was."""
    try:
        _leave(ifindex, mode, prog_id)
    except (libxdp.LibxdpError, OSError):
        return   # still in the chain: its pins stay, so it stays offload's (the next apply takes it out)
    if earlier is None:
        slot.remove()
    else:
        slot.write(*earlier)
