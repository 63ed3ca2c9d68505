"""Compile libbpf-style C into BPF objects with clang, once: the program library at build time,
a user's C into a cache.

The cache key is the preprocessed source (every header's text, however it was included, and every
define), the flags and clang's version; the object is compiled from that very text, so what is
keyed is what is built. Which files clang read is reported too (its depfile), for the caller to
check. The caller gives a cache directory it has checked belongs to it alone (offload.data).

Standard library only: setup.py imports this file to build the library into the wheel.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import re
import resource
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

# A program's offloadable (hw) variant is the same source built with this define.
HW_DEFINE = "OFFLOAD_HW"
CODEGEN = ["-O2", "-g", "-target", "bpf", "-Wall", "-Wno-unused-function"]
MAX_OUTPUT = 256 << 20          # preprocessed text or object: larger is includes that multiply
PREPROCESS_TIMEOUT = 60         # seconds: more is an #include of a FIFO or a device, not C
COMPILE_TIMEOUT = 300
_ERROR_LINES, _LINE_CHARS = 20, 300
_DEP_TARGET = "offload-deps"


class CompileFailed(Exception):
    def __init__(self, src: str, message: str) -> None:
        super().__init__(message)
        self.src, self.message = src, message


class Preprocessed(NamedTuple):
    """A source as clang sees it: the text after the preprocessor, and the files it read. (Not a
    dataclass: setup.py loads this file outside sys.modules, where dataclasses cannot look.)"""

    src: Path
    defines: tuple[str, ...]
    text: bytes
    deps: tuple[Path, ...]


def clang_flags(src: Path, defines: tuple[str, ...] = ()) -> list[str]:
    arch_inc = f"/usr/include/{platform.machine()}-linux-gnu"   # asm/types.h for linux/bpf.h
    return [*CODEGEN, f"-I{arch_inc}", f"-I{src.parent}", *(f"-D{d}" for d in defines)]


def compile_object(src: Path, out: Path, defines: tuple[str, ...] = ()) -> None:
    """clang -O2 -g -target bpf -c SRC -o OUT, written atomically; CompileFailed with the
    compiler's errors (file:line) when it does not compile."""
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _compile_into(out, src, [*clang_flags(src, defines), "-c", str(src)])


def preprocess(src: Path, defines: tuple[str, ...] = ()) -> Preprocessed:
    """`clang -E` of `src` with the flags it is compiled with, and the files it read (-MD)."""
    with tempfile.TemporaryDirectory(prefix="offload-deps-") as d:
        depfile = Path(d) / "deps"
        text = _clang([*clang_flags(src, defines), "-E", "-MD", "-MF", str(depfile), "-MT", _DEP_TARGET,
                       str(src)], src, PREPROCESS_TIMEOUT)
        deps = parse_depfile(depfile.read_text(errors="surrogateescape"))
    return Preprocessed(src, defines, text, tuple(Path(p) for p in deps))


def parse_depfile(text: str) -> list[str]:
    """The prerequisites of a make rule as clang writes it (`T: a.c b.h \\` continued, spaces as `\\ `)."""
    body = text.replace("\\\n", " ").partition(":")[2]
    words = re.findall(r"(?:\\.|[^\s\\])+", body)
    return [re.sub(r"\\(.)", r"\1", w).replace("$$", "$") for w in words]


def cache_key(pre: Preprocessed) -> str:
    parts = [b"offload-objects-2", pre.text, "\0".join(clang_flags(Path("."), pre.defines)).encode(),
             _clang_version().encode()]
    return hashlib.sha256(b"\0\0".join(parts)).hexdigest()[:32]


def cached_object(pre: Preprocessed, cache: Path) -> tuple[Path, bool]:
    """The object for a preprocessed source in directory `cache` (checked by the caller), compiled
    once per text, flags and compiler: (path, whether it was there)."""
    out = cache / f"{pre.src.stem}-{cache_key(pre)}.o"
    if ours(out):
        return out, True
    _compile_into(out, pre.src, [*CODEGEN, "-x", "cpp-output", "-c", "-"], stdin=pre.text)
    return out, False


def ours(path: Path) -> bool:
    """A regular file of ours that no one else may write (never followed if a link): anything else
    in its place is compiled over, not used."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _compile_into(out: Path, src: Path, args: list[str], stdin: bytes = b"") -> None:
    """clang ARGS -o OUT, through a temporary file in OUT's directory renamed into place."""
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".compile-", suffix=".o")
    os.close(fd)
    try:
        _clang([*args, "-o", tmp], src, COMPILE_TIMEOUT, stdin)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _clang(args: list[str], src: Path, timeout: float, stdin: bytes = b"") -> bytes:
    """clang ARGS: its standard output; CompileFailed with its errors, or when it runs out of time
    or output."""
    clang = shutil.which("clang")
    if not clang:
        raise CompileFailed(str(src), "clang is not installed: it compiles C into BPF objects "
                                      "(apt-get install clang libbpf-dev; scripts/setup does this)")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([clang, *args], stdin=subprocess.PIPE, stdout=out, stderr=err)
        # a file grown past MAX_OUTPUT ends clang (SIGXFSZ) instead of filling the disk; set from
        # here, not in a preexec_fn (unsafe beside the threads watch runs), before clang has read a line
        with contextlib.suppress(ProcessLookupError):   # ended already: nothing left to bound
            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (MAX_OUTPUT, MAX_OUTPUT))
        try:
            proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise CompileFailed(str(src), f"clang did not finish in {timeout} s: does the C #include a FIFO "
                                          "or a device?") from None
        res = proc
        err.seek(0)
        errors = err.read(1 << 20).decode(errors="replace")
        if res.returncode == -25:   # SIGXFSZ
            raise CompileFailed(str(src), f"clang's output passed {MAX_OUTPUT >> 20} MiB: do its "
                                          "#includes multiply?")
        if res.returncode != 0:
            raise CompileFailed(str(src), _error_lines(errors) or f"clang exited {res.returncode}")
        out.seek(0)
        return out.read()


def _error_lines(stderr: str) -> str:
    """clang's `file:line:col: error:` lines (else its last lines), each cut short and printable:
    an #include of a binary file puts its bytes in the messages."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.search(r":\d+:\d+: (fatal )?error:", ln)] or lines[-10:]
    shown = ["".join(c if c.isprintable() else "?" for c in ln[:_LINE_CHARS])
             + ("…" if len(ln) > _LINE_CHARS else "") for ln in errors[:_ERROR_LINES]]
    if len(errors) > _ERROR_LINES:
        shown.append(f"(and {len(errors) - _ERROR_LINES} more errors)")
    return "\n".join(shown)


@functools.lru_cache(maxsize=1)
def _clang_version() -> str:
    clang = shutil.which("clang")
    if not clang:
        return ""
    res = subprocess.run([clang, "--version"], capture_output=True, text=True, timeout=60)
    return f"{os.path.realpath(clang)}\n{res.stdout}"


def build_library(src_dir: Path, out_dir: Path) -> list[Path]:
    """Every library program, and its offloadable variant, into `out_dir` (NAME.o, NAME.hw.o);
    the generators' programs too (generators/NAME.o)."""
    built = []
    for src in sorted(src_dir.glob("*.c")):
        for defines, suffix in (((), ".o"), ((HW_DEFINE,), ".hw.o")):
            out = out_dir / f"{src.stem}{suffix}"
            compile_object(src, out, defines)
            built.append(out)
    for src in sorted((src_dir / "generators").glob("*.c")):
        out = out_dir / "generators" / f"{src.stem}.o"
        compile_object(src, out)
        built.append(out)
    return built


if __name__ == "__main__":  # python -m offload.load.compile SRC_DIR OUT_DIR (scripts/setup)
    import sys

    try:
        for p in build_library(Path(sys.argv[1]), Path(sys.argv[2])):
            print(p)
    except CompileFailed as e:
        sys.exit(f"{e.src}: does not compile:\n{e.message}")
