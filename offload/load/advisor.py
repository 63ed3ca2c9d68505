"""The offload advisor: read a program once, without loading it, and say per interface (or per
driver profile) and per mode whether it would load, with every reason tied to the program's own
place and a fix. The rules are driver-profile data (`offload_rules`); judging is `load.advice`.

The program is read as libbpf would load it: its maps as libbpf declares them after open (type,
sizes, flags, inner map, pinning, the global-data maps), its code from the ELF with the
subprograms it calls (kernel.bpfelf), its prog_flags from its section. bcc C is compiled only at
load, so it is not read: its verdict in hw mode is unknown and attach tries it, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from offload.errors import UsageError
from offload.kernel import bpfelf, bpfnames, fs
from offload.kernel.bpfobj import BpfObject, MapDef, ObjectError
from offload.load import advice, programs
from offload.load.advice import Advice, MapFacts, Place, ProgramFacts, Use
from offload.load.stderr import captured_stderr
from offload.probe import profiles, verdicts

_ATOMIC_OPS = {0x00: "add", 0x40: "or", 0x50: "and", 0xA0: "xor", 0xE0: "xchg", 0xF0: "cmpxchg"}
_MOV_R0_IMM = {0xB7, 0xB4}          # BPF_ALU64|BPF_MOV|BPF_K, BPF_ALU|BPF_MOV|BPF_K
_cache: dict[tuple, ProgramFacts] = {}


# -- reading ------------------------------------------------------------------------------------------
def read(prog: programs.Program) -> ProgramFacts:
    """What `prog` holds, read once per process (apply and watch judge one program for many interfaces)."""
    key = (prog.kind, str(prog.object_path or prog.path), prog.entry, prog.sha256)
    if key not in _cache:
        _cache[key] = _read(prog)
    return _cache[key]


def _read(prog: programs.Program) -> ProgramFacts:
    facts = ProgramFacts(prog.name, prog.kind, prog.entry, prog.section)
    if prog.kind == "bcc":
        facts.read, facts.unread = False, ("bcc C is compiled at load, so the advisor cannot read it beforehand: "
                                           "hw mode is tried and the kernel decides")
        return facts
    path = str(prog.object_for(hw=True))
    data = fs.read_regular(path, programs.MAX_FILE, "object")
    try:
        code = bpfelf.read(path, data)
    except bpfelf.ElfReadError as e:
        facts.read, facts.unread = False, f"{path}: {e}"
        return facts
    maps, flags = _declared(prog, path)
    if bpfnames.frags_section(prog.section):   # libbpf adds SEC_XDP_FRAGS's flag only at load
        flags |= bpfnames.BPF_F_XDP_HAS_FRAGS
    refs = _walk(facts, code, prog.section or "", prog.entry or "")
    facts.maps = [_map_facts(m, _first_use(refs, facts.global_data, m)) for m in maps]
    facts.prog_flags = ["BPF_F_XDP_HAS_FRAGS"] if flags & bpfnames.BPF_F_XDP_HAS_FRAGS else ([hex(flags)] if flags else [])
    facts.btf, facts.line_info = code.has_btf, bool(code.lines)
    facts.core_relos = sum(code.core_relos.values())
    return facts


def _declared(prog: programs.Program, path: str) -> tuple[list[MapDef], int]:
    """The maps and the program's prog_flags, as libbpf declares them on open (no kernel call)."""
    if prog.legacy:
        from offload.kernel.legacyobj import LegacyObject

        obj = LegacyObject(path)
        return list(obj.maps), 0
    with captured_stderr():
        try:
            obj = BpfObject(path)
        except ObjectError as e:
            raise UsageError(f"{path}: libbpf cannot open it: {e.strerror}") from None
    with obj:
        return obj.map_defs(), obj.program_flags(prog.entry or "")


def _map_facts(m: MapDef, place: Place | None) -> MapFacts:
    return MapFacts(m.name, bpfnames.map_type_name(m.type), m.key_size, m.value_size, m.max_entries,
                    bpfnames.flag_names(m.flags), m.internal, m.pin_path,
                    bpfnames.map_type_name(m.inner.type) if m.inner else None, place)


def _first_use(refs: list[Use], data: list[Use], m: MapDef) -> Place | None:
    """Where the program first uses map `m` (a global-data map: any variable of its section)."""
    for u in data if m.internal else refs:
        if (m.internal and m.name.endswith(u.name.split(" ")[0])) or u.name == m.name:
            return u.place
    return None


def _place(code: bpfelf.ElfCode, section: str, index: int) -> Place:
    li = code.line_of(section, index)
    if li is None:
        return Place(section, index)
    return Place(section, index, li.file, li.line, li.text.strip() or None)


def _walk(facts: ProgramFacts, code: bpfelf.ElfCode, section: str, entry: str) -> list[Use]:
    """Follow the program from its entry through every subprogram it calls, as libbpf appends them;
    the maps it refers to, each with its first place."""
    start = next((f for f in code.functions if f.section == section and f.name == entry), None)
    if start is None:
        facts.read, facts.unread = False, f"no function {entry} in section {section} of {code.path}"
        return []
    seen, todo, found = {(start.section, start.value)}, [start], _Found()
    while todo:
        fn = todo.pop()
        facts.insns += max(fn.size, 8) // 8
        if fn is not start:
            facts.functions.append(fn.name)
        for callee in _scan(code, fn, found):
            if (callee.section, callee.value) not in seen:
                seen.add((callee.section, callee.value))
                todo.append(callee)
    facts.bpf_calls, facts.helpers, facts.kfuncs = found.calls, found.helpers, found.kfuncs
    facts.tail_calls = [u for u in found.helpers if u.name == "tail_call"]
    facts.atomics, facts.global_data, facts.returns = found.atomics, found.data, found.returns
    return found.maps


@dataclass
class _Found:
    """The first place of each distinct thing the walk meets."""

    calls: list[Use] = field(default_factory=list)
    helpers: list[Use] = field(default_factory=list)
    kfuncs: list[Use] = field(default_factory=list)
    atomics: list[Use] = field(default_factory=list)
    data: list[Use] = field(default_factory=list)
    maps: list[Use] = field(default_factory=list)
    returns: list[Use] = field(default_factory=list)

    @staticmethod
    def add(into: list[Use], name: str, place: Place) -> None:
        if all(u.name != name for u in into):
            into.append(Use(name, place))


def _scan(code: bpfelf.ElfCode, fn: bpfelf.Symbol, found: _Found) -> list[bpfelf.Symbol]:
    """One function's instructions: what it uses, and the functions it calls."""
    insns, relocs, callees = code.insns[fn.section], code.relocs.get(fn.section, {}), []
    i, end = fn.value // 8, (fn.value + max(fn.size, 8)) // 8
    while i < min(end, len(insns)):
        ins, rel = insns[i], relocs.get(i)
        where = _place(code, fn.section, i)
        if ins.is_call:
            _call(code, fn.section, i, ins, rel, where, found, callees)
        elif ins.code == bpfelf.LD_IMM64:
            _ld_imm64(code, ins, rel, where, found, callees)
            i += 1
        elif ins.is_atomic:
            op = _ATOMIC_OPS.get(ins.imm & ~1, hex(ins.imm))
            found.add(found.atomics, ("fetch_" if ins.imm & 1 and op in ("add", "or", "and", "xor") else "") + op,
                      where)
        elif ins.code in _MOV_R0_IMM and ins.dst == 0:
            found.add(found.returns, str(ins.imm), where)
        i += 1
    return callees


def _call(code: bpfelf.ElfCode, section: str, i: int, ins: bpfelf.Insn, rel: bpfelf.Symbol | None, where: Place,
          found: "_Found", callees: list[bpfelf.Symbol]) -> None:
    if rel is not None and not rel.section:                   # an extern function: a kfunc
        found.add(found.kfuncs, rel.name, where)
    elif ins.src == bpfelf.PSEUDO_CALL:
        target_sec = rel.section if rel is not None else section
        target = (rel.value // 8 if rel is not None else i) + ins.imm + 1
        callee = code.function_at(target_sec, target)
        if callee is not None:
            found.add(found.calls, callee.name, where)
            callees.append(callee)
    elif ins.src == bpfelf.PSEUDO_KFUNC_CALL:
        found.add(found.kfuncs, rel.name if rel is not None else f"btf#{ins.imm}", where)
    else:
        found.add(found.helpers, bpfnames.helper_name(ins.imm), where)


def _ld_imm64(code: bpfelf.ElfCode, ins: bpfelf.Insn, rel: bpfelf.Symbol | None, where: Place, found: "_Found",
              callees: list[bpfelf.Symbol]) -> None:
    if rel is None:
        return
    if rel.section in bpfelf.MAP_SECTIONS:
        found.add(found.maps, rel.name, where)
    elif rel.section in code.data_sections:
        found.add(found.data, rel.section if rel.kind == "SECTION" else f"{rel.section} {rel.name}", where)
    elif rel.section in code.insns and ins.src == bpfelf.PSEUDO_FUNC:   # a callback (bpf_loop, timers)
        callee = code.function_at(rel.section, rel.value // 8 + ins.imm)
        if callee is not None:
            found.add(found.calls, callee.name, where)
            callees.append(callee)


# -- judging ------------------------------------------------------------------------------------------
_BASE = {verdicts.SUPPORTED: advice.WOULD_LOAD, verdicts.UNSUPPORTED: advice.REFUSED,
         verdicts.BLOCKED: advice.REFUSED, verdicts.UNKNOWN: advice.UNKNOWN}


def for_device(facts: ProgramFacts, profile: profiles.Profile | None, judged: dict[str, verdicts.ModeVerdict],
               mode: str, extra: tuple = ()) -> Advice:
    """The verdict for one probed interface: the probe's for the mode, made worse by the program's findings."""
    v = judged[mode]
    rules = profile.offload_rules if profile is not None else []
    return advice.judge(facts, rules, mode, _BASE[v.status], v.reason, extra)


def for_driver(facts: ProgramFacts, profile: profiles.Profile, mode: str, extra: tuple = ()) -> Advice:
    """The verdict for a driver with no such device here: its profile's capability for the mode."""
    key = {"hw": "hw_offload", "native": "native"}.get(mode)
    cap = profile.capability(key) if key else {"supported": True}
    base = advice.WOULD_LOAD if cap.get("supported") else advice.REFUSED
    why = "" if cap.get("supported") else f"driver profile: {profile.driver} has no {mode} mode"
    return advice.judge(facts, profile.offload_rules, mode, base, why, extra)


def hw_refusal(prog: programs.Program, profile: profiles.Profile | None,
               judged: dict[str, verdicts.ModeVerdict]) -> Advice | None:
    """For attach and plan: the advice for hw when the device could take hw at all and the profile
    has offload rules (otherwise the program is not read: a veth or a virtio NIC never costs it)."""
    if profile is None or not profile.offload_rules or judged["hw"].status == verdicts.UNSUPPORTED:
        return None
    return for_device(read(prog), profile, judged, "hw")


# -- offload check ------------------------------------------------------------------------------------
def predicted(modes: dict[str, Advice]) -> tuple[str | None, list[dict]]:
    """The mode `attach --mode auto` would land in, and the modes it would pass over (with why)."""
    passed = []
    for m in verdicts.fallback_order(verdicts.AUTO):
        a = modes[str(m)]
        if a.status != advice.REFUSED:
            return str(m), passed
        passed.append({"mode": str(m), "reason": a.reason})
    return None, passed


def _target(name: str | None, driver: str | None, profile: profiles.Profile | None, modes: dict[str, Advice]) -> dict:
    mode, passed = predicted(modes)
    return {"interface": name, "driver": driver, "profile": profile.driver if profile else None,
            "modes": {m: a.to_dict() for m, a in modes.items()}, "predicted": mode, "not_tried": passed}


def in_chain(facts: ProgramFacts, mode: str) -> list[advice.Finding]:
    """A program joining libxdp's dispatcher (`attach --priority`): never in hw, which takes one program."""
    if mode != "hw":
        return []
    return [advice.Finding("chain", "program", "refuse", f"program {facts.program} in a dispatcher chain", None,
                           "a chain of programs runs through libxdp's dispatcher, whose members are freplace "
                           "extensions the JIT links in: a device runs one offloaded program, so a chain is never "
                           "offloaded", "attach without --priority to offload the program alone",
                           "libxdp (xdp-tools lib/libxdp/protocol.org); kernel/bpf/offload.c", "EINVAL")]


def check(prog: programs.Program, interfaces: list[str] | None = None, drivers: list[str] | None = None,
          chain: bool = False) -> dict:
    """`offload check`: the program read once, judged for each interface named (every one of this
    namespace when none is and no --driver is given) and each driver profile named; `chain`: as a
    member of libxdp's dispatcher (`attach --priority`)."""
    facts = read(prog)
    extra = (in_chain,) if chain else ()
    targets = []
    if drivers:
        profs, _ = profiles.load(drivers=set(drivers))
        missing = [d for d in drivers if d not in profs]
        if missing:
            known = ", ".join(sorted(profiles.load()[0]))
            raise UsageError(f"no driver profile for {', '.join(missing)}", hint=f"profiled drivers: {known}")
        for d in drivers:
            modes = {str(m): for_driver(facts, profs[d], m, extra) for m in verdicts.MODES}
            targets.append(_target(None, d, profs[d], modes))
    if interfaces or not drivers:
        from offload.probe.report import assess

        _, devices = assess(interfaces or None, include_loopback=bool(interfaces))
        for dev in devices:
            modes = {str(m): for_device(facts, dev.profile, dev.verdicts, m, extra) for m in verdicts.MODES}
            targets.append(_target(dev.facts.name, dev.facts.driver, dev.profile, modes))
    return {"program": {"name": prog.name, "kind": prog.kind, "path": str(prog.path), "entry": prog.entry,
                        "section": prog.section}, "facts": facts.to_dict(), "targets": targets}
