"""Will a program load in a mode on a device? Pure functions over plain data: what the program
holds (`ProgramFacts`, read by `load.advisor`), the driver profile's `offload_rules` (each with
its source in the kernel tree) and the probe's verdict for the device.

A rule names a check (`CHECKS`); a check returns the program's places that break it. Rules that
are not driver data — a program shape the whole tool refuses in a mode, say — join through
`extra`: callables given the facts and the mode, returning findings of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from offload.kernel import bpfnames

WOULD_LOAD, REFUSED, UNKNOWN = "would_load", "refused", "unknown"
XDP_ACTIONS = {0: "XDP_ABORTED", 1: "XDP_DROP", 2: "XDP_PASS", 3: "XDP_TX", 4: "XDP_REDIRECT"}
# Maps an offloaded program uses from the host, unbound: the loader leaves them so too (the same
# kernel.bpfnames.OFFLOAD_NEUTRAL), so no device rule applies to them.
OFFLOAD_NEUTRAL = {bpfnames.map_type_name(t) for t in bpfnames.OFFLOAD_NEUTRAL}


@dataclass(frozen=True)
class Place:
    """Where in the program: the source line from BTF line info when the object has it, else the
    section and instruction index."""

    section: str
    insn: int
    file: str | None = None
    line: int | None = None
    text: str | None = None

    def __str__(self) -> str:
        if self.file and self.line:
            return f"{self.file}:{self.line}"
        return f"section {self.section}, instruction {self.insn}"


@dataclass(frozen=True)
class Use:
    """One thing the program does (a helper, kfunc, call, atomic, return value, global) and where it
    first does it."""

    name: str
    place: Place | None = None


@dataclass(frozen=True)
class MapFacts:
    name: str
    type: str
    key_size: int
    value_size: int
    max_entries: int
    flags: list[str]
    internal: bool            # libbpf's global-data map (.data, .rodata, .bss)
    pinning: str | None
    inner: str | None         # the inner map's type, for a map of maps
    place: Place | None       # where the program first uses it


@dataclass
class ProgramFacts:
    program: str
    kind: str
    entry: str | None
    section: str | None
    read: bool = True
    unread: str = ""                     # why the program could not be read, when it could not
    insns: int = 0                       # after relocation: the entry and every subprogram it reaches
    functions: list[str] = field(default_factory=list)
    bpf_calls: list[Use] = field(default_factory=list)
    helpers: list[Use] = field(default_factory=list)
    kfuncs: list[Use] = field(default_factory=list)
    tail_calls: list[Use] = field(default_factory=list)
    atomics: list[Use] = field(default_factory=list)
    maps: list[MapFacts] = field(default_factory=list)
    global_data: list[Use] = field(default_factory=list)
    returns: list[Use] = field(default_factory=list)      # constants moved into r0
    prog_flags: list[str] = field(default_factory=list)
    btf: bool = False
    line_info: bool = False
    core_relos: int = 0

    @property
    def frags(self) -> bool:
        return "BPF_F_XDP_HAS_FRAGS" in self.prog_flags

    def helper_names(self) -> set[str]:
        return {u.name for u in self.helpers}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["frags"] = self.frags
        d["redirects"] = sorted(n for n in self.helper_names() if n.startswith("redirect"))
        d["adjusts"] = sorted(n for n in self.helper_names() if n.startswith("xdp_adjust_"))
        return d


@dataclass(frozen=True)
class Finding:
    rule: str
    origin: str        # kernel | driver | firmware | device | program
    effect: str        # refuse | unknown | warn | note
    what: str          # the program's part that meets the rule
    where: str | None  # its place
    why: str
    fix: str
    source: str
    errno: str | None = None
    kernels: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Advice:
    mode: str
    status: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def reason(self) -> str:
        """One line: the deciding findings, each with its place."""
        decisive = [f for f in self.findings if f.effect == "refuse"] or \
                   [f for f in self.findings if f.effect == "unknown"]
        return "; ".join(f"{f.what}" + (f" ({f.where})" if f.where else "") + f": {f.why}" for f in decisive)

    def to_dict(self) -> dict:
        return {"mode": self.mode, "status": self.status, "reason": self.reason,
                "findings": [f.to_dict() for f in self.findings]}


Hit = tuple[str, "Place | None"]     # what, where


def _maps(rule: dict, f: ProgramFacts, bad: Callable[[MapFacts], str | None]) -> list[Hit]:
    hits = []
    for m in f.maps:
        if m.internal or m.type in OFFLOAD_NEUTRAL:   # global data: its own rule names the variable
            continue
        for part in (m, m.inner and MapFacts(f"{m.name} (inner map)", m.inner, 0, 0, 0, [], False, None, None,
                                             m.place)):
            if part and (why := bad(part)):
                hits.append((f"map {part.name}: {why}", m.place))
    return hits


def _map_types(rule: dict, f: ProgramFacts) -> list[Hit]:
    return _maps(rule, f, lambda m: None if m.type in rule["allowed"] else f"type {m.type}")


def _map_max_entries(rule: dict, f: ProgramFacts) -> list[Hit]:
    return _maps(rule, f, lambda m: f"max_entries {m.max_entries} (at most {rule['max']})"
                 if m.max_entries > rule["max"] else None)


def _map_flags(rule: dict, f: ProgramFacts) -> list[Hit]:
    def bad(m: MapFacts) -> str | None:
        extra = [x for x in m.flags if x not in rule["allowed"]]
        return f"map_flags {'|'.join(extra)}" if extra else None
    return _maps(rule, f, bad)


def _uses(items: Iterable[Use], label: str) -> list[Hit]:
    return [(f"{label} {u.name}" if u.name else label, u.place) for u in items]


def _helpers(rule: dict, f: ProgramFacts) -> list[Hit]:
    return _uses([u for u in f.helpers if u.name not in rule["allowed"]], "helper")


def _uses_helpers(rule: dict, f: ProgramFacts) -> list[Hit]:
    return _uses([u for u in f.helpers if u.name in rule["allowed"]], "helper")


def _atomics(rule: dict, f: ProgramFacts) -> list[Hit]:
    return _uses([u for u in f.atomics if u.name not in rule["allowed"]], "atomic")


def _returns(rule: dict, f: ProgramFacts) -> list[Hit]:
    bad = {str(v) for v in rule["refused_values"]}
    return [(f"returns {XDP_ACTIONS.get(int(u.name), u.name)}", u.place) for u in f.returns if u.name in bad]


def _global_data(rule: dict, f: ProgramFacts) -> list[Hit]:
    hits = _uses(f.global_data, "global")
    used = {u.name.split(" ")[0] for u in f.global_data}
    for m in f.maps:   # data sections nothing refers to still become maps (libbpf creates them all)
        if m.internal and not any(m.name.endswith(s) for s in used):
            hits.append((f"global-data map {m.name} ({'|'.join(m.flags) or 'no flags'})", m.place))
    return hits


CHECKS: dict[str, Callable[[dict, ProgramFacts], list[Hit]]] = {
    "map_types": _map_types,
    "map_max_entries": _map_max_entries,
    "map_flags": _map_flags,
    "prog_flags": lambda r, f: [(f"prog_flags {'|'.join(f.prog_flags)} (section {f.section})", None)]
    if f.prog_flags else [],
    "tail_calls": lambda r, f: _uses(f.tail_calls, "tail call"),
    "kfuncs": lambda r, f: _uses(f.kfuncs, "kfunc"),
    "bpf_calls": lambda r, f: _uses(f.bpf_calls, "BPF-to-BPF call to"),
    "helpers": _helpers,
    "uses_helpers": _uses_helpers,
    "atomics": _atomics,
    "returns": _returns,
    "global_data": _global_data,
    "has_maps": lambda r, f: [(f"{len(f.maps)} map(s)", None)] if f.maps else [],
    "always": lambda r, f: [(f"{f.insns} BPF instructions", None)],
}

Extra = Callable[[ProgramFacts, str], list[Finding]]


def findings(facts: ProgramFacts, rules: list[dict], mode: str, extra: Iterable[Extra] = ()) -> list[Finding]:
    """Every rule of `rules` (a profile's offload_rules) for `mode`, and the extra checks, met by the program."""
    out = []
    for rule in rules:
        if mode not in rule.get("modes", ["hw"]):
            continue
        for what, where in CHECKS[rule["check"]](rule, facts):
            out.append(Finding(rule["id"], rule["origin"], rule["effect"], what, str(where) if where else None,
                               rule["why"], rule["fix"], rule["source"], rule.get("errno"), rule.get("kernels")))
    for fn in extra:
        out.extend(fn(facts, mode))
    return out


def judge(facts: ProgramFacts, rules: list[dict], mode: str, base: str, base_reason: str = "",
          extra: Iterable[Extra] = ()) -> Advice:
    """The verdict for `mode`: `base` is what the device (or the driver profile) says of the mode
    regardless of the program (WOULD_LOAD, REFUSED or UNKNOWN, with `base_reason`); the program's
    findings can only make it worse."""
    found = []
    if base != WOULD_LOAD:
        found.append(Finding("device", "device", "refuse" if base == REFUSED else "unknown", "the device",
                             None, base_reason, "see `offload probe -v`", "offload probe"))
    if not facts.read and rules and mode == "hw":
        found.append(Finding("unread", "program", "unknown", f"program {facts.program}", None, facts.unread,
                             "attach an ELF object (or libbpf-style C) to have it judged before loading",
                             "offload check"))
    found += findings(facts, rules, mode, extra)
    effects = {f.effect for f in found}
    status = REFUSED if "refuse" in effects else UNKNOWN if "unknown" in effects else WOULD_LOAD
    return Advice(mode, status, found)


def refused(advice: Advice | None) -> bool:
    return advice is not None and advice.status == REFUSED
