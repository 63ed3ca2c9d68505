"""Compile libbpf-style C into BPF objects with clang, once: the program library at build time,
a user's C into a cache keyed by the content and the flags.

Standard library only: setup.py imports this file to build the library into the wheel.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

# A program's offloadable (hw) variant is the same source built with this define.
HW_DEFINE = "OFFLOAD_HW"


class CompileFailed(Exception):
    def __init__(self, src: str, message: str) -> None:
        super().__init__(message)
        self.src, self.message = src, message


def clang_flags(src: Path, defines: tuple[str, ...] = ()) -> list[str]:
    arch_inc = f"/usr/include/{platform.machine()}-linux-gnu"   # asm/types.h for linux/bpf.h
    return ["-O2", "-g", "-target", "bpf", "-Wall", "-Wno-unused-function", f"-I{arch_inc}",
            f"-I{src.parent}", *(f"-D{d}" for d in defines)]


def compile_object(src: Path, out: Path, defines: tuple[str, ...] = ()) -> None:
    """clang -O2 -g -target bpf -c SRC -o OUT, written atomically; CompileFailed with the
    compiler's errors (file:line) when it does not compile."""
    clang = shutil.which("clang")
    if not clang:
        raise CompileFailed(str(src), "clang is not installed: it compiles C into BPF objects "
                                      "(apt-get install clang libbpf-dev; scripts/setup does this)")
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".compile-", suffix=".o")
    os.close(fd)
    try:
        res = subprocess.run([clang, *clang_flags(src, defines), "-c", str(src), "-o", tmp],
                             capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
            errors = [ln for ln in lines if re.search(r":\d+:\d+: (fatal )?error:", ln)]
            raise CompileFailed(str(src), "\n".join(errors or lines[-10:]) or f"clang exited {res.returncode}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cached_object(src: Path, content: bytes, cache: Path, defines: tuple[str, ...] = ()) -> tuple[Path, bool]:
    """The object for `src` (whose text, local headers included, is `content`) in directory
    `cache`, compiled once per content, flags and compiler: (path, whether it was there)."""
    key = hashlib.sha256(content + repr((clang_flags(Path("."), defines), _clang_version())).encode())
    out = cache / f"{src.stem}-{key.hexdigest()[:24]}.o"
    if out.is_file():
        return out, True
    compile_object(src, out, defines)
    return out, False


def _clang_version() -> str:
    clang = shutil.which("clang")
    return os.path.realpath(clang) if clang else ""


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
