"""Load a resolved program into the kernel, keeping what the compiler and the verifier said.

Objects (the library's, a user's, compiled libbpf C) load through libbpf: no compiler, no kernel
headers, a few milliseconds. bcc-dialect C compiles and loads through bcc, which writes compiler
diagnostics and the verifier log to stderr from C++: both are captured around each call.
"""

from __future__ import annotations

import errno
import os
import re
import socket
from dataclasses import dataclass

from offload.errors import CompileError, LoadError, UsageError, VerifierError
from offload.kernel.bpfobj import BpfObject, ObjectError
from offload.kernel.legacyobj import LegacyError, LegacyLoaded, LegacyObject
from offload.load.programs import Program
from offload.load.stderr import captured_stderr

__all__ = ["CompileError", "LoadError", "VerifierError", "Loaded", "load"]


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


def load(prog: Program, hw_device: str | None = None) -> Loaded:
    """Load `prog` (bound to `hw_device` for hardware offload)."""
    if prog.kind == "bcc":
        return _load_bcc(prog, hw_device)
    if prog.legacy:
        return _load_legacy(prog, hw_device)
    return load_object(prog, str(prog.object_for(hw=hw_device is not None)), hw_device)


def load_object(prog: Program, path: str, hw_device: str | None = None) -> ObjectLoaded:
    where = f" for offload to {hw_device}" if hw_device else ""
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
        if hw_device:
            try:
                obj.set_ifindex(socket.if_nametoindex(hw_device))
            except OSError:
                raise UsageError(f"no such interface in this network namespace: {hw_device}") from None
        with captured_stderr() as log:
            try:
                obj.load()
                err = None
            except ObjectError as e:
                err = e
        if err is not None:
            verifier = obj.log(prog.entry)
            code = err.errno or errno.EINVAL
            said = f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"
            if _is_verifier_log(verifier):
                raise VerifierError(f"the verifier rejected {prog.name}{where}: {said}\n{_verifier_tail(verifier)}",
                                    hint="the last lines of the verifier log are above")
            libbpf = _libbpf_said(log[0])
            raise LoadError(f"the kernel refused to load {prog.name}{where}: {said}"
                            + (f"; libbpf: {libbpf}" if libbpf else ""))
        return ObjectLoaded(obj, obj.prog_fd(prog.entry))
    except BaseException:
        obj.close()
        raise


def _load_legacy(prog: Program, hw_device: str | None) -> LegacyObjectLoaded:
    assert prog.entry and prog.object_path
    where = f" for offload to {hw_device}" if hw_device else ""
    ifindex = 0
    if hw_device:
        try:
            ifindex = socket.if_nametoindex(hw_device)
        except OSError:
            raise UsageError(f"no such interface in this network namespace: {hw_device}") from None
    try:
        return LegacyObjectLoaded(LegacyObject(str(prog.object_path)).load(prog.entry, ifindex))
    except LegacyError as e:
        code = e.errno or errno.EINVAL
        said = f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"
        verifier = getattr(e, "log", "")
        if _is_verifier_log(verifier):
            raise VerifierError(f"the verifier rejected {prog.name}{where}: {said}\n{_verifier_tail(verifier)}",
                                hint="the last lines of the verifier log are above")
        raise LoadError(f"the kernel refused to load {prog.name}{where}: {e.strerror}") from None


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


def _load_bcc(prog: Program, hw_device: str | None) -> BccLoaded:
    from bcc import (
        BPF,  # imported here: bcc costs ~100 ms and only bcc-dialect C needs it
    )

    assert prog.text is not None and prog.entry
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
        if "processed" in text or ("invalid" in text.lower() and "insn" in text):  # a verifier log
            raise VerifierError(f"the verifier rejected {prog.name}:\n{_verifier_tail(text)}",
                                hint="the last lines of the verifier log are above")
        raise LoadError(f"the kernel refused to load {prog.name}"
                        + (f" for offload to {hw_device}" if hw_device else "")
                        + f": {_strip_bcc(str(err))}" + (f"\n{_verifier_tail(text)}" if text.strip() else ""))
    return BccLoaded(bpf, fn)


def _strip_bcc(msg: str) -> str:
    return re.sub(r"^Failed to load BPF program b?'?\w+'?: ", "", msg)
