"""Load a resolved program into the kernel, keeping what the compiler and the verifier said.

Objects (the library's, a user's, compiled libbpf C) load through libbpf: no compiler, no kernel
headers, a few milliseconds. bcc-dialect C compiles and loads through bcc, which writes compiler
diagnostics and the verifier log to stderr from C++: both are captured around each call.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from typing import NamedTuple

from offload.errors import CompileError, LoadError, VerifierError
from offload.kernel import bcc as bcc_tables
from offload.kernel.bpfobj import BpfObject, ObjectError
from offload.kernel.legacyobj import LegacyError, LegacyLoaded, LegacyObject
from offload.load.programs import Program
from offload.load.stderr import captured_stderr

__all__ = ["CompileError", "HwDevice", "LoadError", "Loaded", "VerifierError", "load"]


class HwDevice(NamedTuple):
    """The NIC a program is loaded for (hardware offload): its name for bcc and for messages, its
    ifindex for libbpf and the legacy loader (the caller resolved it once)."""

    name: str
    ifindex: int


class Loaded:
    """A loaded program: its fd, its maps (name -> fd), and close() to let go of both (pins and
    attachments keep the kernel objects alive)."""

    fd: int

    def maps(self) -> dict[str, int]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


@dataclass
class ObjectLoaded(Loaded):
    obj: BpfObject
    fd: int

    def maps(self) -> dict[str, int]:
        return self.obj.map_fds()

    def close(self) -> None:
        self.obj.close()


@dataclass
class BccLoaded(Loaded):
    bpf: object              # bcc.BPF: owns the program and map fds
    fn: object               # bcc.BPF.Function

    @property
    def fd(self) -> int:     # type: ignore[override]
        return self.fn.fd

    def maps(self) -> dict[str, int]:
        """map name -> fd, for every map of the program (bcc fills `tables` only on access)."""
        return bcc_tables.table_fds(self.bpf.module)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.bpf.cleanup()


@dataclass
class LegacyObjectLoaded(Loaded):
    loaded: LegacyLoaded

    @property
    def fd(self) -> int:     # type: ignore[override]
        return self.loaded.fd

    def maps(self) -> dict[str, int]:
        return dict(self.loaded.map_fds)

    def close(self) -> None:
        self.loaded.close()


def load(prog: Program, hw: HwDevice | None = None) -> Loaded:
    """Load `prog` (bound to the `hw` device for hardware offload)."""
    if prog.kind == "bcc":
        return _load_bcc(prog, hw)
    if prog.legacy:
        return _load_legacy(prog, hw)
    return load_object(prog, str(prog.object_for(hw=hw is not None)), hw)


def load_object(prog: Program, path: str, hw: HwDevice | None = None) -> ObjectLoaded:
    with captured_stderr() as log:
        try:
            obj = BpfObject(path)
        except ObjectError as e:
            raise LoadError(f"libbpf could not open {path}: {e.strerror}") from None
    try:
        assert prog.entry
        obj.select(prog.entry)
        obj.no_auto_pinning()
        for var, raw in prog.globals:
            obj.set_global(var, raw)
        if hw:
            obj.set_ifindex(hw.ifindex)
        with captured_stderr() as log:
            try:
                obj.load()
                err = None
            except ObjectError as e:
                err = e
        if err is not None:
            code = err.errno or errno.EINVAL
            libbpf = _libbpf_said(log[0])
            raise _load_error(prog, hw, obj.log(prog.entry),
                              _strerror(code) + (f"; libbpf: {libbpf}" if libbpf else ""), code)
        return ObjectLoaded(obj, obj.prog_fd(prog.entry))
    except BaseException:
        obj.close()
        raise


def _load_legacy(prog: Program, hw: HwDevice | None) -> LegacyObjectLoaded:
    assert prog.entry and prog.object_path
    try:
        return LegacyObjectLoaded(LegacyObject(str(prog.object_path)).load(prog.entry, hw.ifindex if hw else 0))
    except LegacyError as e:
        raise _load_error(prog, hw, getattr(e, "log", ""), e.strerror, e.errno or errno.EINVAL) from None


def _where(hw: HwDevice | None) -> str:
    return f" for offload to {hw.name}" if hw else ""


def _strerror(code: int) -> str:
    return f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"


def _load_error(prog: Program, hw: HwDevice | None, log: str, refusal: str, code: int | None = None,
                verifier: bool | None = None) -> VerifierError | LoadError:
    """A failed load, in one shape for every loader: the verifier's rejection with the tail of its
    `log` (when `verifier` says, or the log reads like one), else the kernel's `refusal` in the
    loading tool's words. `code`: the errno, which bcc does not give."""
    if _is_verifier_log(log) if verifier is None else verifier:
        # bcc's rejection has always named neither the errno nor the device
        said = f"{_where(hw)}: {_strerror(code)}" if code is not None else ":"
        return VerifierError(f"the verifier rejected {prog.name}{said}\n{_verifier_tail(log)}",
                             hint="the last lines of the verifier log are above")
    return LoadError(f"the kernel refused to load {prog.name}{_where(hw)}: {refusal}")


def _is_verifier_log(text: str) -> bool:
    return bool(text.strip()) and ("processed" in text or "invalid" in text.lower() or "R0" in text
                                   or "unreachable" in text or "back-edge" in text)


def _libbpf_said(text: str) -> str:
    """libbpf's own account of a failed load, without the verifier log it may repeat."""
    lines = [ln.removeprefix("libbpf: ").strip() for ln in text.splitlines()
             if ln.startswith("libbpf: ") and "-- BEGIN" not in ln and "-- END" not in ln]
    return "; ".join(lines[-3:])


def _compiler_message(text: str, prog: Program) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    # bcc compiles from /virtual/main.c; name the user's file instead.
    lines = [ln.replace("/virtual/main.c", str(prog.path)) for ln in lines]
    errors = [ln for ln in lines if re.search(r":\d+:\d+: (fatal )?error:", ln)]
    return "\n".join(errors or lines[-10:])


def _verifier_tail(text: str, n: int = 12) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("HINT")]
    return "\n".join(lines[-n:])


def _load_bcc(prog: Program, hw: HwDevice | None) -> BccLoaded:
    from bcc import (
        BPF,  # imported here: bcc costs ~100 ms and only bcc-dialect C needs it
    )

    assert prog.text is not None and prog.entry
    device = hw.name.encode() if hw else None  # bcc wants bytes (bcc issue #3320)
    with captured_stderr() as log:
        try:
            bpf = BPF(text=prog.text.encode(), cflags=prog.cflags(hw=hw is not None), device=device)
        except Exception:
            bpf = None
    if bpf is None:
        if not re.search(r": (fatal )?error:", log[0]):  # compiled, but the kernel refused (e.g. maps)
            raise LoadError(f"the kernel refused {prog.name}'s maps{_where(hw)}: "
                            f"{_verifier_tail(log[0], 4) or 'no message'}")
        raise CompileError(f"{prog.path}: does not compile:\n{_compiler_message(log[0], prog)}",
                           hint="fix the C above; offload compiled it as bcc-dialect C (its map macros and "
                                "helpers); libbpf-style C names its program with SEC(\"xdp\")")
    with captured_stderr() as log:
        try:
            fn = bpf.load_func(prog.entry.encode(), BPF.XDP, device=device)
            err = None
        except Exception as e:
            err = e
    if err is not None:
        bpf.cleanup()
        text = log[0]
        # bcc's stderr carries more than the verifier's log: only its own marks make it one
        refusal = _strip_bcc(str(err)) + (f"\n{_verifier_tail(text)}" if text.strip() else "")
        raise _load_error(prog, hw, text, refusal,
                          verifier="processed" in text or ("invalid" in text.lower() and "insn" in text))
    return BccLoaded(bpf, fn)


def _strip_bcc(msg: str) -> str:
    return re.sub(r"^Failed to load BPF program b?'?\w+'?: ", "", msg)
