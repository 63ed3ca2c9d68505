"""Load a resolved program into the kernel, keeping what the compiler and the verifier said.

Objects (the library's, a user's, compiled libbpf C) load through libbpf: no compiler, no kernel
headers, a few milliseconds. bcc-dialect C compiles and loads through bcc in a child process
(bccchild), which hands back the fds; the compiler's diagnostics and the verifier log it wrote come
back with them, and a crash of bcc's is the C's error, not offload's death.
"""

from __future__ import annotations

import errno
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

from offload.errors import CompileError, EnvironmentProblem, LoadError, UsageError, VerifierError
from offload.kernel import bpfsys
from offload.kernel.bpfobj import BpfObject, ObjectError
from offload.kernel.legacyobj import LegacyError, LegacyLoaded, LegacyObject
from offload.load import bccchild
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
    """What bcc's child process sent: the program's fd and its maps' (bcc itself died with it)."""

    fd: int
    map_fds: dict[str, int]

    def maps(self) -> dict[str, int]:
        return dict(self.map_fds)

    def close(self) -> None:
        fds, self.map_fds, self.fd = [self.fd, *self.map_fds.values()], {}, -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)


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


@dataclass
class Borrowed(Loaded):
    """A program a batch loaded once and lends to each attach (sharing()): close() leaves it to
    the batch, which closes it at its end (by then the pins of every interface hold it)."""

    of: Loaded

    @property
    def fd(self) -> int:     # type: ignore[override]
        return self.of.fd

    def maps(self) -> dict[str, int]:
        return self.of.maps()

    def close(self) -> None:
        pass


_shared = threading.local()   # the batch's loaded programs (sharing()): key -> [Loaded, interfaces lent to]
# A shared program counts for at most this many interfaces (bpf/offload_stats.h's
# OFFLOAD_MAX_IFACES, its counters map's size): past it, the batch loads another.
SHARED_BY = 1024


@contextmanager
def sharing() -> Iterator[None]:
    """For a batch of attaches (apply, watch's reconcile): a shareable program (Program.shareable,
    never bound to a device) is loaded once, with the same parameters, and attached to every
    interface the batch gives it; the kernel runs one program on many. Nested batches join."""
    if getattr(_shared, "cache", None) is not None:
        yield
        return
    _shared.cache = {}
    try:
        yield
    finally:
        cache, _shared.cache = _shared.cache, None
        for loaded, _ in cache.values():
            loaded.close()


def load(prog: Program, hw: HwDevice | None = None) -> Loaded:
    """Load `prog` (bound to the `hw` device for hardware offload); within a batch (sharing()),
    a shareable program is loaded once and lent (Borrowed) to every attach."""
    cache = getattr(_shared, "cache", None)
    if cache is None or hw is not None or not prog.shareable:
        return _load(prog, hw)
    key = (prog.name, prog.sha256, tuple(sorted(prog.params.items())))
    held = cache.get(key)
    if held is None or held[1] >= SHARED_BY:
        if held is not None:
            held[0].close()   # the interfaces it serves hold it (their pins)
        held = cache[key] = [_load(prog, None), 0]
    held[1] += 1
    return Borrowed(held[0])


def _load(prog: Program, hw: HwDevice | None) -> Loaded:
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
    return f"{bpfsys.strerror(code)} ({errno.errorcode.get(code, code)})"


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
    """bcc compiles and loads in a child process (bccchild): a C text that crashes bcc is the
    input's error, and offload lives on to say so (and, in an apply, to roll back)."""
    assert prog.text is not None and prog.entry
    try:
        out = bccchild.compile_and_load(prog.text, prog.cflags(hw=hw is not None), prog.entry,
                                        hw.name if hw else None)
    except bccchild.Crashed as e:
        raise UsageError(f"bcc crashed ({e.how}) while compiling {prog.path}: the program's C is what bcc "
                         "could not handle", hint=_BCC_BROKE) from None
    except bccchild.Hung as e:
        raise UsageError(f"bcc did not finish compiling {prog.path} within {e.timeout:g} s: offload stopped it",
                         hint=_BCC_BROKE) from None
    report, output = out.report, out.output
    if report["status"] == "ok":
        return BccLoaded(out.fds[0], dict(zip(report["maps"], out.fds[1:])))
    if report["status"] == "compile":
        raise _bcc_compile_error(prog, hw, output.decode(errors="replace"))
    if report["status"] == "load":
        text = output[report["load_at"]:].decode(errors="replace")
        # bcc's stderr carries more than the verifier's log: only its own marks make it one
        refusal = _strip_bcc(report["error"]) + (f"\n{_verifier_tail(text)}" if text.strip() else "")
        raise _load_error(prog, hw, text, refusal,
                          verifier="processed" in text or ("invalid" in text.lower() and "insn" in text))
    if report.get("type") in ("ImportError", "ModuleNotFoundError", "OSError"):
        raise EnvironmentProblem(f"{prog.path}: bcc could not be loaded: {report['error']}",
                                 hint="reinstall bcc (Debian: python3-bpfcc)")
    raise RuntimeError(f"bcc failed compiling {prog.path}: {report.get('type')}: {report.get('error')}")


_BCC_BROKE = ("bcc itself failed on this C (very long expressions or deep nesting can do it): simplify the "
              "construct, or write it in libbpf style (SEC(\"xdp\")), which clang compiles")


def _bcc_compile_error(prog: Program, hw: HwDevice | None, log: str) -> CompileError | LoadError:
    """BPF() failed: the compiler's errors, or, when it compiled, the kernel's refusal (e.g. maps)."""
    if not re.search(r": (fatal )?error:", log):
        return LoadError(f"the kernel refused {prog.name}'s maps{_where(hw)}: {_verifier_tail(log, 4) or 'no message'}")
    return CompileError(f"{prog.path}: does not compile:\n{_compiler_message(log, prog)}",
                        hint="fix the C above; offload compiled it as bcc-dialect C (its map macros and "
                             "helpers); libbpf-style C names its program with SEC(\"xdp\")")


def _strip_bcc(msg: str) -> str:
    return re.sub(r"^Failed to load BPF program b?'?\w+'?: ", "", msg)
