"""The program library (`bpf/`) and the user's own C: resolve a PROGRAM argument to source text
ready for bcc, with its parameters checked.

bcc's rewriter only sees the main file, so local `#include "x.h"` lines are inlined here (map
declarations and `.lookup()` calls in a header would otherwise not be rewritten).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from offload.errors import UsageError

USER_ENTRY = "xdp_prog"            # the function a user's C file exports; library programs use their name
ACTIONS = ("aborted", "drop", "pass", "tx", "redirect")   # XDP action values 0..4
_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    help: str
    required: bool = False


# Parameters the library's programs take (applied to maps after load, see loader).
LIBRARY_PARAMS: dict[str, tuple[ParamSpec, ...]] = {
    "count_drop": (),
    "count_pass": (),
    "reflect": (),
    "redirect": (ParamSpec("target", "interface to redirect every frame to", required=True),),
    "filter": (ParamSpec("prefixes", "comma-separated IPv4/IPv6 prefixes to drop, e.g. 192.0.2.0/24,2001:db8::/32"),),
}


@dataclass
class Program:
    name: str                      # library name, or the file's stem for user C
    path: Path
    text: str                      # source with local includes inlined
    library: bool
    params: dict[str, str] = field(default_factory=dict)

    @property
    def entry(self) -> str:
        return self.name if self.library else USER_ENTRY

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def cflags(self, hw: bool) -> list[str]:
        flags = ["-DOFFLOAD_HW"] if hw else []
        if not self.library:  # the user's own C sees its params as macros
            flags += [f"-D{k}={v}" for k, v in self.params.items()]
        return flags


def library_dir() -> Path:
    env = os.environ.get("OFFLOAD_BPF_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "bpf"


def library() -> list[str]:
    return sorted(p.stem for p in library_dir().glob("*.c"))


def summary(path: Path) -> str:
    """First line of the program's top comment."""
    m = re.match(r"\s*/\*\s*(?:[\w.-]+:\s*)?(.*?)\n", path.read_text())
    return m.group(1).strip() if m else ""


def catalogue() -> list[dict]:
    """The library, one row per program: name, summary, parameters."""
    return [{"name": n, "summary": summary(library_dir() / f"{n}.c"),
             "params": [p.name for p in LIBRARY_PARAMS.get(n, ())]} for n in library()]


def inline_includes(path: Path, _seen: frozenset[Path] = frozenset()) -> str:
    out = []
    for line in path.read_text().splitlines():
        m = _INCLUDE.match(line)
        if m:
            inc = (path.parent / m.group(1)).resolve()
            if inc in _seen:
                continue
            if not inc.is_file():
                raise UsageError(f"{path}: #include \"{m.group(1)}\" not found next to it")
            out.append(inline_includes(inc, _seen | {inc}))
            out.append(f'#line {len(out) + 1} "{path.name}"')
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def parse_params(items: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not _IDENT.match(key):
            raise UsageError(f"bad --param {item!r}: use KEY=VALUE with KEY a C identifier")
        params[key] = value
    return params


def resolve(spec: str, params: dict[str, str] | None = None) -> Program:
    """A library name (`count_drop`) or a path to a C file."""
    params = dict(params or {})
    lib = library_dir() / f"{spec}.c"
    if "/" not in spec and not spec.endswith(".c") and lib.is_file():
        allowed = {p.name: p for p in LIBRARY_PARAMS.get(spec, ())}
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise UsageError(f"program {spec} takes no parameter {', '.join(unknown)}"
                             + (f"; it takes: {', '.join(allowed)}" if allowed else "; it takes none"))
        missing = [p.name for p in allowed.values() if p.required and p.name not in params]
        if missing:
            raise UsageError(f"program {spec} needs --param {missing[0]}=...: {allowed[missing[0]].help}")
        return Program(spec, lib, inline_includes(lib), True, params)
    path = Path(spec)
    if not path.is_file():
        raise UsageError(f"program not found: {spec}",
                         hint=f"use a library program ({', '.join(library())}) or a path to your C file")
    text = inline_includes(path.resolve())
    if not re.search(rf"\b{USER_ENTRY}\s*\(", text):
        raise UsageError(f"{path}: no function {USER_ENTRY}(struct xdp_md *ctx): offload attaches that entry point")
    return Program(path.stem, path.resolve(), text, False, params)
