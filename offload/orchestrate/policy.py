"""Declarative policy: which program goes on which interfaces, in which modes (YAML, validated).

Errors name the file, the line and the field. Matching is a pure function over probe facts.
Input is bounded: at most MAX_BYTES of UTF-8 from a regular file, no anchors or aliases, no
duplicate keys, nesting at most MAX_DEPTH deep. Messages quote at most a short excerpt of a value,
and nothing of a file that is no policy at all (offload runs as root: `-f /etc/shadow` must not
print the hashes).
"""

from __future__ import annotations

import fnmatch
import itertools
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml
from yaml.composer import Composer, ComposerError
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent, NodeEvent

from offload.errors import UsageError, excerpt
from offload.kernel import fs
from offload.load import programs
from offload.probe.facts import DeviceFacts
from offload.probe.mode import AUTO, Mode


class PolicyError(UsageError):
    pass


MAX_BYTES = 1 << 20   # a policy is a few rules: 1 MiB is far beyond any real one
MAX_DEPTH = 32        # the schema is 5 levels deep; bounds recursion in the composer and the validator
_CLIP = 120           # longest message fragment (a field path, a YAML problem) in an error message
_MAX_ERRORS = 20      # schema errors looked at (the first by position is reported)

# libyaml scans and parses (fast); the composer is PyYAML's Python one, driven by libyaml's events,
# so it can refuse anchors and aliases (the billion-laughs expansion) before any node is built.
_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(Composer, _Base):  # type: ignore[valid-type,misc]
    def __init__(self, text: str) -> None:
        _Base.__init__(self, text)
        Composer.__init__(self)
        self._depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, AliasEvent) or (isinstance(event, NodeEvent) and event.anchor is not None):
            raise ComposerError(None, None, "YAML anchors and aliases (&, *) are not allowed in a policy",
                                event.start_mark)
        if getattr(event, "tag", None) is not None:  # !!timestamp x, !!int x: constructors that crash
            raise ComposerError(None, None, "YAML tags (!...) are not allowed in a policy", event.start_mark)
        if self._depth >= MAX_DEPTH:
            raise ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def flatten_mapping(self, node) -> None:
        # Merge keys (<<) exist to reuse anchored mappings; without anchors they only hide overrides.
        for key, _ in node.value:
            if key.tag == "tag:yaml.org,2002:merge":
                raise ConstructorError(None, None, "YAML merge keys (<<) are not allowed in a policy",
                                       key.start_mark)

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except ValueError as e:  # PyYAML's constructors raise it for 2024-02-30 or a 5000-digit int
            raise ConstructorError(None, None, _clip(str(e)), node.start_mark) from None

    def construct_mapping(self, node, deep=False):
        mapping = super().construct_mapping(node, deep)
        if len(mapping) < len(node.value):  # a key given twice: YAML would silently keep the last
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise ConstructorError(None, None, f"duplicate key {_quote(key)} (first at line {seen[key]})",
                                           key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
        return mapping


def _clip(text: str, limit: int = _CLIP) -> str:
    """A message fragment cut to its first `limit` characters: messages stay one short line."""
    return text if len(text) <= limit else text[:limit] + "…"


def _quote(value) -> str:
    """A value of the document, quoted for a message: a short excerpt of it."""
    return excerpt(value) if isinstance(value, str) else _clip(repr(value), 40)


class _Names:
    """What a rule, or a member of its chain, names: PROGRAM, its parameters, and which program of
    an object (like --prog / --section)."""

    program: str
    params: dict[str, str]
    prog: str | None
    section: str | None

    def resolve(self) -> "programs.Program":
        return programs.resolve(self.program, self.params, self.prog, self.section)


@dataclass(frozen=True)
class Member(_Names):
    """One program of a chain rule (`programs:`): a member of libxdp's dispatcher. `key` is its
    resolved name, unique in the rule: offload's record slot of it on each interface."""

    key: str
    program: str
    params: dict[str, str]
    priority: int
    chain: tuple[str, ...] = ("pass",)   # the actions on which the next program runs (libxdp's default)
    prog: str | None = None
    section: str | None = None


@dataclass(frozen=True)
class Rule(_Names):
    name: str
    match: dict
    exclude: dict
    program: str                   # one program alone; "" for a chain rule (`members`)
    params: dict[str, str]
    prefer: str = "auto"
    min: str | None = None
    prog: str | None = None        # which program of an object holding several (like --prog)
    section: str | None = None     # or the XDP program of this ELF section (like --section)
    members: tuple[Member, ...] = ()   # a chain in libxdp's dispatcher, in policy order
    allow_single: bool = False     # a chain of one: alone where the kernel cannot run a dispatcher
    via: str = "netlink"           # "link": attached through a pinned bpf_link (attach --via link)


@dataclass
class Policy:
    path: str
    rules: list[Rule] = field(default_factory=list)


@lru_cache(maxsize=1)
def _validator():
    from jsonschema import Draft202012Validator  # imported when first needed: ~0.1 s

    # complete as shipped: its mode enums are generated from probe.mode (probe/schemagen.py)
    return Draft202012Validator(json.loads(resources.files("offload").joinpath("schemas/policy.schema.json").read_text()))


def _line(node, path) -> int | None:
    """1-based line of the YAML node at `path` (keys and list indexes), as deep as it exists."""
    line = node.start_mark.line + 1
    for key in path:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == key:
                    node, line = v, k.start_mark.line + 1
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _field(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _param_value(v) -> str:
    return ",".join(v) if isinstance(v, list) else str(v)


def _compose(text: str, path: str):
    """(node, data) of the one YAML document in `text`, or PolicyError with the line."""
    try:
        size = len(text.encode())
    except UnicodeEncodeError as e:  # lone surrogates: only reachable through parse() with a str
        raise PolicyError(f"{path}: not valid Unicode text at character {e.start}") from None
    if size > MAX_BYTES:
        raise PolicyError(f"{path}: policy is {size} bytes; the limit is {MAX_BYTES} (1 MiB)")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else None)
    except yaml.YAMLError as e:
        raise PolicyError(f"{path}:{_yaml_where(e)}: not valid YAML: {_yaml_problem(e)}") from None
    finally:
        loader.dispose()


def _yaml_where(e: yaml.YAMLError) -> str:
    if isinstance(e, yaml.reader.ReaderError):
        return f"offset {e.position}"
    mark = getattr(e, "problem_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"


def _yaml_problem(e: yaml.YAMLError) -> str:
    """What PyYAML says is wrong, without its snippet of the document (str(e) quotes the lines
    around the error: the content of whatever file was given)."""
    if isinstance(e, yaml.reader.ReaderError):
        return _clip(e.reason)
    problem = " ".join(filter(None, [getattr(e, "context", None), getattr(e, "problem", None)]))
    return _clip(problem or type(e).__name__, 2 * _CLIP)


def _not_a_policy(data) -> str | None:
    """Why `data` is no policy at all (nothing of its content: it may be any file root can read)."""
    if not isinstance(data, dict):
        kind = {str: "a string", list: "a list", int: "a number", float: "a number"}.get(type(data), "not a mapping")
        return f"not a policy: its top level is {kind}, not a mapping with `rules:`"
    if "rules" not in data:
        return "not a policy: it has no `rules:` at its top level"
    return None


def _schema_message(e) -> str:
    """jsonschema's message with the document's values in it cut to excerpts: it repeats a whole
    value (a folded multi-line scalar, a long list), which may be a file's secret content."""
    if e.validator == "additionalProperties" and isinstance(e.instance, dict):
        extra = [k for k in e.instance if k not in e.schema.get("properties", {})]
        more = f"; and {len(extra) - 1} more" if len(extra) > 1 else ""
        return f"Additional properties are not allowed ({_quote(extra[0])} was unexpected{more})"
    if e.validator == "oneOf" and len(e.absolute_path) == 2:   # a rule: program xor programs
        return "a rule needs `program` (one program alone) or `programs` (a chain in libxdp's dispatcher), not both"
    return _clip(e.message.replace(repr(e.instance), _quote(e.instance)), 2 * _CLIP)


def parse(text: str, path: str = "<policy>") -> Policy:
    node, data = _compose(text, path)
    if node is None:
        raise PolicyError(f"{path}: empty policy: it needs `rules:`")
    why = _not_a_policy(data)
    if why:
        raise PolicyError(f"{path}: {why}")
    # The first few errors, not all: a large document can hold hundreds of thousands.
    errors = sorted(itertools.islice(_validator().iter_errors(data), _MAX_ERRORS),
                    key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        e = errors[0]
        more = (f" (and {len(errors) - 1} more)" if len(errors) < _MAX_ERRORS else " (and many more)") \
            if len(errors) > 1 else ""
        raise PolicyError(f"{path}:{_line(node, e.absolute_path)}: {_clip(_field(e.absolute_path))}: "
                          f"{_schema_message(e)}{more}")
    pol = Policy(path)
    names: set[str] = set()
    resolved: dict[tuple, str] = {}   # (program, params, prog, section) -> its resolved name
    for i, r in enumerate(data["rules"]):
        where = f"{path}:{_line(node, ['rules', i])}: rules[{i}] ({_clip(r['name'], 40)})"
        if r["name"] in names:
            raise PolicyError(f"{where}: duplicate rule name")
        names.add(r["name"])
        mode = r.get("mode") or {}
        prefer, floor = mode.get("prefer", "auto"), mode.get("min")
        if prefer != AUTO and not Mode(prefer).at_least(floor):
            raise PolicyError(f"{where}: mode.prefer {prefer} is below mode.min {floor}")
        if "programs" in r:
            if r.get("via") == "link":
                raise PolicyError(f"{where}: via link is for one `program:`; a chain rule (`programs:`) runs in "
                                  "libxdp's dispatcher, which libxdp attaches by netlink",
                                  hint="drop `via: link` from this rule, or attach one `program:` through a link")
            pol.rules.append(_chain_rule(r, i, where, node, path, resolved, prefer, floor))
            continue
        if r.get("allow_single"):
            raise PolicyError(f"{where}: allow_single is for a chain rule (`programs:`); a `program:` runs alone "
                              "anyway")
        params = {k: _param_value(v) for k, v in (r.get("params") or {}).items()}
        _resolve_once(r, params, ["rules", i], node, path, resolved, r["name"])
        pol.rules.append(Rule(r["name"], r["match"], r.get("exclude") or {}, r["program"], params, prefer, floor,
                              r.get("prog"), r.get("section"), via=r.get("via", "netlink")))
    return pol


def _resolve_once(spec: dict, params: dict[str, str], at: list, node, path: str, resolved: dict[tuple, str],
                  rule: str, chain: bool = False) -> str:
    """The resolved name of `spec`'s program: it exists and takes these parameters, filter
    prefixes parse (each program and parameters once per policy); PolicyError at its line."""
    key = (spec["program"], tuple(sorted(params.items())), spec.get("prog"), spec.get("section"))
    try:
        if key not in resolved:
            prog = programs.resolve(spec["program"], params, spec.get("prog"), spec.get("section"))
            if prog.library and prog.name == "filter" and params.get("prefixes"):
                from offload.load.filter import parse_prefixes

                parse_prefixes(params["prefixes"].split(","))
            resolved[key] = prog.name
            if chain:
                from offload.load.chain import joinable

                joinable(prog)
    except UsageError as e:
        line = _line(node, [*at, "params"] if "param" in e.message or "prefix" in e.message else [*at, "program"])
        raise PolicyError(f"{path}:{line}: {_field(at[:2])} ({_clip(rule, 40)})"
                          f"{': ' + _field(at[2:]) if at[2:] else ''}: {_clip(e.message, 2 * _CLIP)}", hint=e.hint) from None
    return resolved[key]


def _chain_rule(r: dict, i: int, where: str, node, path: str, resolved: dict[tuple, str], prefer: str,
                floor: str | None) -> Rule:
    """A rule listing several programs: a chain in libxdp's dispatcher, never in hw."""
    if Mode.HW in (prefer, floor):
        from offload.load.chain import NEVER_HW

        raise PolicyError(f"{where}: mode {'prefer' if prefer == Mode.HW else 'min'} hw: {NEVER_HW}",
                          hint="use mode prefer auto, native or generic for a `programs:` rule, or one `program:` "
                               "alone to offload it")
    members, keys = [], {}
    for k, m in enumerate(r["programs"]):
        params = {a: _param_value(v) for a, v in (m.get("params") or {}).items()}
        key = _resolve_once(m, params, ["rules", i, "programs", k], node, path, resolved, r["name"], chain=True)
        if key in keys:
            raise PolicyError(f"{path}:{_line(node, ['rules', i, 'programs', k])}: rules[{i}] ({_clip(r['name'], 40)})"
                              f": programs[{k}] is {key} again (as programs[{keys[key]}]): offload keeps one record "
                              "per program and interface", hint="list each program once in a rule")
        keys[key] = k
        members.append(Member(key, m["program"], params, m["priority"], tuple(dict.fromkeys(m.get("chain", ["pass"]))),
                              m.get("prog"), m.get("section")))
    if r.get("allow_single") and len(members) > 1:
        raise PolicyError(f"{where}: allow_single with {len(members)} programs: one program alone cannot run a "
                          "chain of several", hint="list one program in `programs:`, or drop allow_single")
    return Rule(r["name"], r["match"], r.get("exclude") or {}, "", {}, prefer, floor, members=tuple(members),
                allow_single=bool(r.get("allow_single")))


def load(path: str | Path) -> Policy:
    p = Path(path)
    raw = fs.read_regular(p, MAX_BYTES, "policy", PolicyError)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PolicyError(f"{p}: not UTF-8 text: invalid byte 0x{raw[e.start]:02x} at byte offset {e.start}"
                          ) from None
    return parse(text, str(p))


def _pci(f: DeviceFacts) -> str | None:
    if not f.pci:
        return None
    return f"{f.pci['vendor'].removeprefix('0x')}:{f.pci['device'].removeprefix('0x')}".lower()


def selects(sel: dict, f: DeviceFacts, capabilities: set[str]) -> bool:
    """All keys given must match (each key: any of its values)."""
    if "interfaces" in sel and not any(fnmatch.fnmatchcase(f.name, g) for g in sel["interfaces"]):
        return False
    if "drivers" in sel and f.driver not in sel["drivers"]:
        return False
    if "pci" in sel and _pci(f) not in {p.lower() for p in sel["pci"]}:
        return False
    if "kinds" in sel and f.kind not in sel["kinds"]:
        return False
    if "capabilities" in sel and not set(sel["capabilities"]) <= capabilities:
        return False
    return True


def matching_rules(pol: Policy, f: DeviceFacts, capabilities: set[str]) -> list[Rule]:
    """Every rule that selects `f`, in policy order (the first one wins)."""
    return [r for r in pol.rules
            if selects(r.match, f, capabilities) and not (r.exclude and _excluded(r.exclude, f, capabilities))]


def _excluded(sel: dict, f: DeviceFacts, caps: set[str]) -> bool:
    # an exclusion removes the interface when any one of its keys matches
    return any(selects({k: v}, f, caps) for k, v in sel.items())
