"""Compile and load an XDP program with bcc, keeping what the compiler and the verifier said.

bcc writes compiler diagnostics and the verifier log to the process's stderr from C++, so both
are captured at the file-descriptor level around each call.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from offload.errors import CompileError, LoadError, VerifierError
from offload.load.programs import Program

__all__ = ["CompileError", "LoadError", "VerifierError", "Loaded", "load"]


@contextmanager
def captured_stderr() -> Iterator[list[str]]:
    out: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode(errors="replace"))


@dataclass
class Loaded:
    bpf: object              # bcc.BPF: owns the program and map fds
    fn: object               # bcc.BPF.Function
    program: Program
    hw_device: str | None

    @property
    def fd(self) -> int:
        return self.fn.fd

    def maps(self) -> dict[str, int]:
        """map name -> fd, for every map of the program (bcc fills `tables` only on access)."""
        import ctypes

        from bcc.libbcc import lib

        # bcc_common.h's enumerators, which bcc's Python bindings do not declare.
        lib.bpf_num_tables.restype, lib.bpf_num_tables.argtypes = ctypes.c_size_t, [ctypes.c_void_p]
        lib.bpf_table_name.restype = ctypes.c_char_p
        lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        lib.bpf_table_fd_id.restype, lib.bpf_table_fd_id.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_size_t]
        mod = self.bpf.module
        return {lib.bpf_table_name(mod, i).decode(): lib.bpf_table_fd_id(mod, i)
                for i in range(lib.bpf_num_tables(mod))}

    def close(self) -> None:
        self.bpf.cleanup()


def _compiler_message(text: str, prog: Program) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    # bcc compiles from /virtual/main.c; name the user's file instead.
    lines = [ln.replace("/virtual/main.c", str(prog.path)) for ln in lines]
    errors = [ln for ln in lines if re.search(r":\d+:\d+: (fatal )?error:", ln)]
    return "\n".join(errors or lines[-10:])


def _verifier_tail(text: str, n: int = 12) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("HINT")]
    return "\n".join(lines[-n:])


def load(prog: Program, hw_device: str | None = None) -> Loaded:
    """Compile and load `prog` (bound to `hw_device` for hardware offload)."""
    from bcc import BPF  # imported here: bcc costs ~100 ms and is only needed to load

    device = hw_device.encode() if hw_device else None  # bcc wants bytes (bcc issue #3320)
    with captured_stderr() as log:
        try:
            bpf = BPF(text=prog.text.encode(), cflags=prog.cflags(hw=hw_device is not None), device=device)
        except Exception:
            bpf = None
    if bpf is None:
        if not re.search(r": (fatal )?error:", log[0]):  # compiled, but the kernel refused (e.g. maps)
            raise LoadError(f"the kernel refused {prog.name}'s maps"
                            + (f" for offload to {hw_device}" if hw_device else "")
                            + f": {_verifier_tail(log[0], 4) or 'no message'}")
        raise CompileError(f"{prog.path}: does not compile:\n{_compiler_message(log[0], prog)}",
                           hint="fix the C above; offload compiles with bcc (its map macros and helpers)")
    with captured_stderr() as log:
        try:
            fn = bpf.load_func(prog.entry.encode(), BPF.XDP, device=device)
            err = None
        except Exception as e:
            err = e
    if err is not None:
        bpf.cleanup()
        text = log[0]
        if "processed" in text or ("invalid" in text.lower() and "insn" in text):  # a verifier log
            raise VerifierError(f"the verifier rejected {prog.name}:\n{_verifier_tail(text)}",
                                hint="the last lines of the verifier log are above")
        raise LoadError(f"the kernel refused to load {prog.name}"
                        + (f" for offload to {hw_device}" if hw_device else "")
                        + f": {_strip_bcc(str(err))}" + (f"\n{_verifier_tail(text)}" if text.strip() else ""))
    return Loaded(bpf, fn, prog, hw_device)


def _strip_bcc(msg: str) -> str:
    return re.sub(r"^Failed to load BPF program b?'?\w+'?: ", "", msg)
