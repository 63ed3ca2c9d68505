"""Declarative policy: which program goes on which interfaces, in which modes (YAML, validated).

Errors name the file, the line and the field. Matching is a pure function over probe facts.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from offload.errors import UsageError
from offload.load import programs
from offload.probe import modes
from offload.probe.facts import DeviceFacts


class PolicyError(UsageError):
    pass


@dataclass(frozen=True)
class Rule:
    name: str
    match: dict
    exclude: dict
    program: str
    params: dict[str, str]
    prefer: str = "auto"
    min: str | None = None


@dataclass
class Policy:
    path: str
    rules: list[Rule] = field(default_factory=list)


@lru_cache(maxsize=1)
def _validator():
    from jsonschema import Draft202012Validator  # imported when first needed: ~0.1 s

    schema = json.loads(resources.files("offload").joinpath("schemas/policy.schema.json").read_text())
    # The mode vocabulary is the probe layer's: the schema's enums are filled from it.
    mode = schema["$defs"]["mode"]["properties"]
    mode["prefer"]["enum"], mode["min"]["enum"] = list(modes.CHOICES), list(modes.MODES)
    return Draft202012Validator(schema)


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


def parse(text: str, path: str = "<policy>") -> Policy:
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        raise PolicyError(f"{path}:{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    if node is None:
        raise PolicyError(f"{path}: empty policy: it needs `rules:`")
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        e = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise PolicyError(f"{path}:{_line(node, e.absolute_path)}: {_field(e.absolute_path)}: {e.message}{more}")
    pol = Policy(path)
    names = set()
    for i, r in enumerate(data["rules"]):
        where = f"{path}:{_line(node, ['rules', i])}: rules[{i}] ({r['name']})"
        if r["name"] in names:
            raise PolicyError(f"{where}: duplicate rule name")
        names.add(r["name"])
        params = {k: _param_value(v) for k, v in (r.get("params") or {}).items()}
        try:  # the program exists and takes these parameters; filter prefixes parse
            prog = programs.resolve(r["program"], params)
            if prog.library and prog.name == "filter" and params.get("prefixes"):
                from offload.load.filter import parse_prefixes

                parse_prefixes(params["prefixes"].split(","))
        except UsageError as e:
            line = _line(node, ["rules", i, "params"] if "param" in e.message or "prefix" in e.message
                         else ["rules", i, "program"])
            raise PolicyError(f"{path}:{line}: rules[{i}] ({r['name']}): {e.message}") from None
        mode = r.get("mode") or {}
        prefer, floor = mode.get("prefer", "auto"), mode.get("min")
        if prefer != modes.AUTO and not modes.Mode(prefer).at_least(floor):
            raise PolicyError(f"{where}: mode.prefer {prefer} is below mode.min {floor}")
        pol.rules.append(Rule(r["name"], r["match"], r.get("exclude") or {}, r["program"], params, prefer, floor))
    return pol


def load(path: str | Path) -> Policy:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise PolicyError(f"cannot read policy {p}: {e.strerror}") from None
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
