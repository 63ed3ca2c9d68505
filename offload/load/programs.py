"""Resolve a PROGRAM argument into something the loader can load, with its parameters checked
before anything touches the kernel:

- a library name (`count_drop`): the program library's precompiled object (bpf/, package data);
- a compiled BPF ELF object (`drop.o`), as xdp-tools, Cilium or a user's Makefile make them;
- libbpf-style C (`SEC("xdp")`, `bpf_helpers.h`): compiled once with clang into a cache;
- bcc-dialect C (`BPF_ARRAY`, `.lookup()`, an `xdp_prog` function): compiled by bcc at load.

Objects and libbpf C take `--param NAME=VALUE` for their global variables (`const volatile`
ones are the libbpf way to parameterise); bcc C sees them as macros; library programs take the
parameters listed in LIBRARY_PARAMS.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from offload.data import LIBRARY, data_dir, owned_cache
from offload.errors import CompileError, EnvironmentProblem, OffloadError, UsageError, excerpt
from offload.kernel import bpfsys, fs
from offload.kernel.bpfobj import BpfObject, GlobalVar, ObjectError
from offload.load import compile as compile_mod
from offload.load.stderr import captured_stderr

if TYPE_CHECKING:
    from offload.kernel.legacyobj import LegacyObject

USER_ENTRY = "xdp_prog"            # the function a bcc-dialect file exports
ACTIONS = ("aborted", "drop", "pass", "tx", "redirect")   # XDP action values 0..4
DIALECTS = ("auto", "libbpf", "bcc")
MAX_FILE = 64 << 20                # larger is no BPF program anyone wrote
MAX_INCLUDE_DEPTH = 200            # clang's own limit on nested #includes
MAX_INCLUDES = 10_000              # #include lines expanded in all, for bcc C
MAX_KEY = 128                      # the kernel's limit on a BTF name (KSYM_NAME_LEN) in older kernels
EM_BPF = 247
_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LIBRARY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_BCC_MARKS = re.compile(r"\bBPF_(?:ARRAY|HASH|PERCPU_ARRAY|PERCPU_HASH|TABLE|DEVMAP|CPUMAP|XSKMAP|LPM_TRIE|"
                        r"PROG_ARRAY|PERF_OUTPUT|RINGBUF_OUTPUT|HISTOGRAM|QUEUE|STACK)\s*\(|\.(?:lookup|update|"
                        r"increment|redirect_map|lookup_or_try_init|perf_submit)\s*\(")
_LIBBPF_MARKS = re.compile(r'\bSEC\s*\(|#\s*include\s*<bpf/bpf_helpers\.h>')


@dataclass(frozen=True)
class ParamSpec:
    name: str
    help: str
    required: bool = False


# Parameters the library's programs take (applied to their maps after load, see attach).
LIBRARY_PARAMS: dict[str, tuple[ParamSpec, ...]] = {
    "count_drop": (),
    "count_pass": (),
    "reflect": (),
    "redirect": (ParamSpec("target", "interface to redirect every frame to", required=True),),
    "filter": (ParamSpec("prefixes", "comma-separated IPv4/IPv6 prefixes to drop, e.g. 192.0.2.0/24,2001:db8::/32"),),
}


# Library programs whose maps an operator edits per interface after the attach (`offload filter`):
# never shared between interfaces. The others keep only counters, per receiving interface
# (bpf/offload_stats.h), and their parameters (the redirect target) are the same for everyone
# attaching the same program with the same parameters.
PER_INTERFACE_MAPS = frozenset({"filter"})


@dataclass
class Program:
    name: str                      # library name, or the file's stem
    path: Path                     # what the user named (the library program's source)
    kind: str                      # library | object | libbpf | bcc
    params: dict[str, str] = field(default_factory=dict)
    sha256: str = ""               # of what defines the program: object bytes or source (+ the entry)
    entry: str | None = None       # the program's name inside the object, or bcc's function
    section: str | None = None
    object_path: Path | None = None            # object and libbpf kinds
    globals: list[tuple[GlobalVar, bytes]] = field(default_factory=list)   # params as initial values
    text: str | None = None        # bcc: source with local includes inlined
    legacy: bool = False           # object with `SEC("maps")` definitions (kernel.legacyobj loads it)

    @property
    def library(self) -> bool:
        return self.kind == "library"

    @property
    def shareable(self) -> bool:
        """One load of it may serve many interfaces (in native and generic mode): its counters
        are kept per interface and nothing else in its maps is an interface's own."""
        return self.library and self.name not in PER_INTERFACE_MAPS

    def cflags(self, hw: bool) -> list[str]:
        """bcc: the offloadable variant's define, and params as macros."""
        return (["-DOFFLOAD_HW"] if hw else []) + [f"-D{k}={v}" for k, v in self.params.items()]

    def object_for(self, hw: bool) -> Path:
        """The object to load: a library program's own per mode, else the resolved one."""
        if not self.library:
            assert self.object_path is not None
            return self.object_path
        return library_object(self.name, hw)


# -- the library --------------------------------------------------------------------------------------
def library_dir() -> Path:
    return data_dir(LIBRARY)


def library() -> list[str]:
    names = sorted(p.stem for p in library_dir().glob("*.c"))
    if not names:
        raise EnvironmentProblem(f"the program library {library_dir()} holds no programs",
                                 hint="reinstall offload, or point OFFLOAD_BPF_DIR at a directory of programs")
    return names


def library_object(name: str, hw: bool = False) -> Path:
    """The precompiled object of a library program (NAME.o, or NAME.hw.o for hardware offload)."""
    d = library_dir()
    return _prebuilt(d / f"{name}.c", d / "obj" / f"{name}{'.hw' if hw else ''}.o", hw)


def generator_object(name: str) -> Path:
    """The precompiled object of a packet generator's program (bpf/generators/NAME.c)."""
    d = library_dir()
    return _prebuilt(d / "generators" / f"{name}.c", d / "obj" / "generators" / f"{name}.o", False)


def _prebuilt(src: Path, built: Path, hw: bool) -> Path:
    """The wheel and scripts/setup build the library ahead of time; a checkout that was not set
    up compiles a program into the cache on first use (clang needed only then)."""
    if built.is_file():
        return built
    return compile_c(src, (compile_mod.HW_DEFINE,) if hw else ())


def compile_c(src: Path, defines: tuple[str, ...] = (), hint: str | None = None) -> Path:
    """libbpf-style C compiled into the cache (once per preprocessed text, flags and clang), after
    checking that every file it includes is C text (a binary or a /proc file is bad input)."""
    try:
        pre = compile_mod.preprocess(src, defines)
        for dep in pre.deps:
            _source_text(dep, str(dep))
        path, _ = compile_mod.cached_object(pre, owned_cache("objects"))
    except compile_mod.CompileFailed as e:
        raise CompileError(f"{e.src}: does not compile:\n{e.message}", hint=hint) from None
    return path


def checked_copy(data: bytes, named: Path) -> Path:
    """An object's bytes as read and checked, kept in offload's own cache under their digest:
    libbpf and every later load open this copy, never the user's path again (where a link could
    have been put since the check). Written once per content: its name is the digest."""
    out = owned_cache("objects") / f"{named.stem[:64]}-{hashlib.sha256(data).hexdigest()[:32]}.checked.o"
    if not compile_mod.ours(out):
        fs.replace_path(str(out), data)
    return out


def summary(path: Path) -> str:
    """The first sentence of the program's top comment (which may run over several lines)."""
    m = re.match(r"\s*/\*(.*?)(?:\*/|\n\s*\*?\s*\n)", path.read_text(), re.S)
    if not m:
        return ""
    text = " ".join(ln.strip().lstrip("*").strip() for ln in m.group(1).splitlines())
    text = re.sub(r"^[\w.-]+:\s*", "", text.strip())          # "reflect: ..." names the program
    return re.split(r"(?<=\.)\s", text, maxsplit=1)[0]


def catalogue() -> list[dict]:
    """The library, one row per program: name, summary, parameters."""
    return [{"name": n, "summary": summary(library_dir() / f"{n}.c"),
             "params": [p.name for p in LIBRARY_PARAMS.get(n, ())]} for n in library()]


def listing() -> dict:
    """`offload programs`: the catalogue as its document."""
    return {"programs": catalogue()}


def inline_includes(path: Path) -> str:
    """The source with its local `#include "x.h"` lines inlined: bcc's rewriter sees only the main
    file. Every file must be C text; nesting is bounded as clang bounds it, and so are the
    inclusions in all (headers included twice by each of their includers multiply)."""
    texts: dict[Path, list[str]] = {}
    budget = [MAX_INCLUDES]

    def inline(p: Path, seen: tuple[Path, ...]) -> list[str]:
        if len(seen) > MAX_INCLUDE_DEPTH:
            raise UsageError(f"{seen[0]}: #includes nest deeper than {MAX_INCLUDE_DEPTH} (clang's limit too), "
                             f"down to {p}")
        if p not in texts:
            texts[p] = _source_text(p, str(p)).splitlines()
        out = []
        for i, line in enumerate(texts[p]):
            m = _INCLUDE.match(line)
            if not m:
                out.append(line)
                continue
            inc = (p.parent / m.group(1)).resolve()
            if inc in seen:
                continue
            budget[0] -= 1
            if budget[0] < 0:
                raise UsageError(f"{seen[0]}: more than {MAX_INCLUDES} #includes in all: do they multiply?")
            if inc not in texts and not inc.exists():
                raise UsageError(f"{p}: #include \"{m.group(1)}\" not found next to it")
            out += inline(inc, (*seen, inc))
            out.append(f'#line {i + 2} "{p.name}"')
        return out

    text = "\n".join(inline(path, (path,))) + "\n"
    if len(text) > MAX_FILE:
        raise UsageError(f"{path}: with its #includes, larger than any BPF program ({MAX_FILE} bytes at most)")
    return text


def _source_text(path: Path, named: str) -> str:
    """A C file's text: a regular file of at most MAX_FILE bytes, UTF-8 without NUL bytes."""
    return c_text(fs.read_regular(path, MAX_FILE, "C source"), named)


def c_text(data: bytes, named: str, what: str = "not C source", hint: str | None = None) -> str:
    try:
        text = data.decode()
    except UnicodeDecodeError as e:
        raise UsageError(f"{named}: {what}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})",
                         hint=hint) from None
    if "\0" in text:
        raise UsageError(f"{named}: {what}: it holds NUL bytes", hint=hint)
    return text


def parse_params(items: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not _good_key(key):
            raise UsageError(f"bad --param {excerpt(item)}: use KEY=VALUE with KEY a C identifier "
                             f"(of at most {MAX_KEY} characters)")
        params[key] = value
    return params


def _good_key(key: str) -> bool:
    return bool(_IDENT.match(key)) and len(key) <= MAX_KEY


def check_params(params: dict[str, str]) -> None:
    """Names must be C identifiers; values text: a byte that is not UTF-8 (the shell's $'\\xff')
    reaches Python as a lone surrogate, which nothing after this could print, store or encode."""
    for key, value in params.items():
        if not _good_key(key):
            raise UsageError(f"bad parameter name {excerpt(key)}: a C identifier of at most {MAX_KEY} characters")
        try:
            value.encode()
        except UnicodeEncodeError as e:
            code = ord(value[e.start])
            what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
            raise UsageError(f"--param {excerpt(key)}: its value is not UTF-8 text ({what} at character {e.start})"
                             ) from None


# -- resolution ---------------------------------------------------------------------------------------
def resolve(spec: str, params: dict[str, str] | None = None, prog: str | None = None,
            section: str | None = None, dialect: str = "auto") -> Program:
    params = dict(params or {})
    check_params(params)
    if dialect not in DIALECTS:
        raise UsageError(f"bad --dialect {dialect}: use {', '.join(DIALECTS)}")
    if _LIBRARY_NAME.match(spec) and (library_dir() / f"{spec}.c").is_file():
        if prog or section:
            raise UsageError(f"--prog and --section choose inside an object file; {spec} is a library program")
        return _library_program(spec, params)
    path = Path(spec)
    if not path.exists():   # a link to nothing is missing too
        raise _not_found(spec, path)
    data = fs.read_regular(path, MAX_FILE, "program")
    if data.startswith(b"\x7fELF"):
        if dialect != "auto":
            raise UsageError(f"{spec}: --dialect is for C source; this is a compiled object")
        return _object_program(checked_copy(data, path), data, params, prog, section, "object", path)
    text = c_text(data, spec, "neither a BPF object (ELF) nor C source",
                  hint="give a library program name, an object made by clang -target bpf, or a C file")
    if dialect == "auto":
        dialect = detect_dialect(text)
    if dialect == "bcc":
        return _bcc_program(path, params)
    obj = compile_c(path.resolve(), hint="fix the C above (compiled as libbpf-style C: clang -O2 -g -target bpf); "
                                         "for bcc's dialect use --dialect bcc")
    return _object_program(obj, fs.read_regular(obj, MAX_FILE, "object"), params, prog, section, "libbpf", path)


def resolve_for(iface: str, spec: str, params: dict[str, str] | None = None, prog: str | None = None,
                section: str | None = None, dialect: str = "auto") -> Program:
    """`resolve` for an attach to `iface`: an error says which device the program was for."""
    try:
        return resolve(spec, params, prog, section, dialect)
    except OffloadError as e:
        raise e.within(f"{iface}: nothing attached") from None


def _not_found(spec: str, path: Path) -> UsageError:
    """A PROGRAM that is neither a library program nor a file: where it was looked for, and what to give."""
    choices = f"a library program ({', '.join(library())}), a BPF object (.o) or a C file"
    if _LIBRARY_NAME.match(spec):
        return UsageError(f"program not found: {spec}: no library program of that name, and no such file in the "
                          "current directory",
                          hint=f"use {choices}")
    if os.path.islink(path):
        what = f"a link to {excerpt(os.readlink(path), 200)}, which does not exist"
    else:
        what = "no such file" + ("" if path.is_absolute() else f" (looked for {excerpt(str(path.resolve()), 200)})")
    return UsageError(f"program not found: {spec}: {what}",
                      hint=f"use {choices}" + ("" if path.is_absolute() else
                                                "; a relative path is taken from the current directory"))


def detect_dialect(text: str) -> str:
    """libbpf style when the file says SEC(...) or includes bpf_helpers.h; bcc when it uses bcc's
    map macros or method calls; otherwise bcc (the dialect offload has always taken)."""
    if _LIBBPF_MARKS.search(text):
        return "libbpf"
    return "bcc"


def _library_program(name: str, params: dict[str, str]) -> Program:
    allowed = {p.name: p for p in LIBRARY_PARAMS.get(name, ())}
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise UsageError(f"program {name} takes no parameter {', '.join(unknown)}"
                         + (f"; it takes: {', '.join(allowed)}" if allowed else "; it takes none"))
    missing = [p.name for p in allowed.values() if p.required and p.name not in params]
    if missing:
        raise UsageError(f"program {name} needs --param {missing[0]}=...: {allowed[missing[0]].help}")
    src = library_dir() / f"{name}.c"
    return Program(name, src, "library", params, sha256=hashlib.sha256(inline_includes(src).encode()).hexdigest(),
                   entry=name, section="xdp")


def _bcc_program(path: Path, params: dict[str, str]) -> Program:
    if importlib.util.find_spec("bcc") is None:   # found, not imported: bcc costs ~100 ms
        raise EnvironmentProblem(
            f"{path}: bcc-dialect C needs bcc, which is not installed here",
            hint="install bcc and the kernel's headers (Debian: python3-bpfcc linux-headers-amd64; scripts/setup "
                 "does this; offload's container image has neither), or write the program in libbpf style "
                 "(SEC(\"xdp\")), compile it with clang -O2 -g -target bpf and attach the object")
    text = inline_includes(path.resolve())
    if not re.search(rf"\b{USER_ENTRY}\s*\(", text):
        raise UsageError(f"{path}: no function {USER_ENTRY}(struct xdp_md *ctx): offload attaches that entry "
                         "point of bcc-dialect C", hint="libbpf-style C names its program with SEC(\"xdp\")")
    return Program(path.stem, path.resolve(), "bcc", params, sha256=hashlib.sha256(text.encode()).hexdigest(),
                   entry=USER_ENTRY, text=text)


def _object_program(obj_path: Path, data: bytes, params: dict[str, str], prog: str | None, section: str | None,
                    kind: str, named: Path) -> Program:
    """Open the object (its bytes: `data`) once to choose its XDP program and turn the params into
    initial values."""
    _check_elf_machine(data, named)
    with captured_stderr() as log:
        try:
            obj = BpfObject(str(obj_path))
        except ObjectError as e:
            obj = None
            err = e
    if obj is None:
        detail = _libbpf_lines(log[0])
        if "legacy map definitions" in detail:
            return _legacy_program(obj_path, data, params, prog, section, kind, named)
        raise UsageError(f"{named}: libbpf cannot open it: {bpfsys.strerror(err.errno or errno.EINVAL)}"
                         + (f" ({detail})" if detail else ""), hint="is it an object made by clang -target bpf?")
    with obj:
        chosen = _choose(obj, named, prog, section)
        variables = obj.globals()
    values = []
    for k, v in params.items():
        if k not in variables:
            names = ", ".join(sorted(variables)) or "none"
            raise UsageError(f"{named}: no global variable {k} to set with --param (its globals: {names})")
        values.append((variables[k], encode_value(variables[k], v, named)))
    digest = hashlib.sha256(data + chosen.name.encode()).hexdigest()
    return Program(named.stem, named.resolve(), kind, params, sha256=digest, entry=chosen.name,
                   section=chosen.section, object_path=obj_path.resolve(), globals=values)


def _check_elf_machine(data: bytes, named: Path) -> None:
    hint = "compile with clang -O2 -g -target bpf -c FILE.c -o FILE.o"
    if len(data) < 20 or data[5] not in (1, 2):   # e_machine ends at byte 20; EI_DATA: 1 LSB, 2 MSB
        raise UsageError(f"{named}: a truncated or damaged ELF file ({len(data)} bytes), not a BPF object",
                         hint=hint)
    machine = int.from_bytes(data[18:20], "little" if data[5] == 1 else "big")
    if machine != EM_BPF:
        raise UsageError(f"{named}: an ELF file, but not a BPF object (machine {machine}, BPF is {EM_BPF})",
                         hint=hint)


def _legacy_program(obj_path: Path, data: bytes, params: dict[str, str], prog: str | None, section: str | None,
                    kind: str, named: Path) -> Program:
    """libbpf 1.x refuses `struct bpf_map_def SEC("maps")`; offload loads such objects itself."""
    from offload.kernel.legacyobj import LegacyError, LegacyObject

    try:
        obj = LegacyObject(str(obj_path))
    except LegacyError as e:
        raise UsageError(f"{named}: {e.strerror.removeprefix(f'{obj_path}: ')}",
                         hint="declare the maps as BTF maps in SEC(\".maps\") and rebuild") from None
    chosen = _choose(obj, named, prog, section)
    if problem := obj.problem(chosen.name):
        raise UsageError(f"{named}: {chosen.name} has legacy map definitions, and {problem}",
                         hint="declare the maps as BTF maps in SEC(\".maps\") and rebuild")
    if params:
        raise UsageError(f"{named}: has legacy map definitions and no global variables to set with --param "
                         f"({', '.join(params)})")
    digest = hashlib.sha256(data + chosen.name.encode()).hexdigest()
    return Program(named.stem, named.resolve(), kind, params, sha256=digest, entry=chosen.name,
                   section=chosen.section, object_path=obj_path.resolve(), legacy=True)


def _choose(obj: BpfObject | LegacyObject, named: Path, prog: str | None, section: str | None):
    progs = obj.programs()
    xdp = [p for p in progs if p.is_xdp]
    listed = ", ".join(f"{p.name} (section {p.section})" for p in xdp)
    if prog:
        match = [p for p in progs if p.name == prog]
        if not match:
            raise UsageError(f"{named}: no program named {prog}" + (f"; its XDP programs: {listed}" if xdp else ""))
        if not match[0].is_xdp:
            raise UsageError(f"{named}: {prog} (section {match[0].section}) is not an XDP program")
        return match[0]
    if section:
        xdp = [p for p in xdp if p.section == section]
        if not xdp:
            raise UsageError(f"{named}: no XDP program in section {section}; its XDP programs: {listed or 'none'}")
    if not xdp:
        others = ", ".join(f"{p.name} (section {p.section})" for p in progs) or "no programs at all"
        raise UsageError(f"{named}: holds no XDP program ({others})")
    if len(xdp) > 1:
        raise UsageError(f"{named}: holds several XDP programs: {', '.join(f'{p.name} (section {p.section})' for p in xdp)}",
                         hint="choose one with --prog NAME or --section SEC")
    return xdp[0]


def encode_value(var: GlobalVar, value: str, named: Path) -> bytes:
    """A --param value as the bytes of the global (host byte order), checked against its type."""
    where = f"{named}: --param {var.name}={excerpt(value)}"
    if var.kind == "char[]":
        raw = value.encode()
        if len(raw) >= var.size:
            raise UsageError(f"{where}: the string needs {len(raw) + 1} bytes and {var.name} holds {var.size}")
        return raw.ljust(var.size, b"\0")
    if var.kind == "bool":
        words = {"1": 1, "true": 1, "yes": 1, "on": 1, "0": 0, "false": 0, "no": 0, "off": 0}
        if value.lower() not in words:
            raise UsageError(f"{where}: {var.name} is a bool: use true or false")
        return words[value.lower()].to_bytes(var.size, sys.byteorder)
    if var.kind in ("int", "uint"):
        try:
            n = int(value, 0)
        except ValueError:
            raise UsageError(f"{where}: {var.name} is an integer") from None
        signed = var.kind == "int"
        lo, hi = (-(1 << (8 * var.size - 1)), (1 << (8 * var.size - 1)) - 1) if signed else (0, (1 << 8 * var.size) - 1)
        if not lo <= n <= hi:
            raise UsageError(f"{where}: out of range for {var.name} ({var.size}-byte {'signed' if signed else 'unsigned'}: "
                             f"{lo}..{hi})")
        return n.to_bytes(var.size, sys.byteorder, signed=signed)
    raise UsageError(f"{where}: {var.name} is not an integer, bool or char array; offload cannot set it")


def _libbpf_lines(text: str) -> str:
    lines = [ln.removeprefix("libbpf: ").strip() for ln in text.splitlines() if ln.strip()]
    return "; ".join(lines[-3:])
