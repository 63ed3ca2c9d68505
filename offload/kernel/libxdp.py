"""libxdp (Debian's libxdp1) through ctypes: the multi-program dispatcher protocol, used, never
reimplemented. Programs join or leave an interface's dispatcher through libxdp, which builds the
new dispatcher, re-links the programs already in it (freplace), pins everything under
`<bpffs>/xdp/dispatch-IFINDEX-ID/` and swaps it in atomically, under its own lock; so offload's
programs and xdp-loader's (or any libxdp user's) share the interface.

libxdp falls back, silently unless one reads its log, to attaching a lone program without a
dispatcher when the kernel refuses its freplace programs; `freplace_refusal()` asks the kernel the
same question first (the check libxdp runs, libxdp_check_kern_compat, is not exported), so the
caller decides. libxdp's log lines are captured per call (`libxdp_set_print`), not printed.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

from offload.kernel import bpfsys


# enum xdp_attach_mode (libxdp.h)
MODE_NATIVE, MODE_SKB, MODE_HW = 1, 2, 3
MODES = {"native": MODE_NATIVE, "generic": MODE_SKB, "hw": MODE_HW}
_MODE_NAMES = {v: k for k, v in MODES.items()}
ACTIONS = ("aborted", "drop", "pass", "tx", "redirect")   # XDP_ABORTED.. XDP_REDIRECT = 0..4
DEFAULT_PRIORITY = 50                                     # libxdp's XDP_DEFAULT_RUN_PRIO
MAX_PROGS = 10
_DISPATCHER_OBJ = "xdp-dispatcher.o"
_OBJ_DIRS = ("/usr/lib/x86_64-linux-gnu/bpf", "/usr/lib/bpf", "/usr/local/lib/bpf")

_LIBXDP_INFO = 1        # enum libxdp_print_level: WARN 0, INFO 1, DEBUG 2
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


class LibxdpError(OSError):
    """libxdp refused: errno, what was asked, and libxdp's own log lines of the call."""

    def __init__(self, code: int, what: str, log: list[str]) -> None:
        super().__init__(code, f"{what}: {os.strerror(code)}")
        self.log = log


@dataclass(frozen=True)
class Member:
    """One program in a dispatcher, as libxdp reads it back."""

    prog_id: int
    name: str
    priority: int
    chain_call_actions: tuple[str, ...]


@dataclass(frozen=True)
class Chain:
    """What libxdp sees on an interface: a dispatcher (`members` in run order), a lone program
    (`legacy`), or nothing."""

    mode: str | None
    main_prog_id: int | None
    legacy: bool
    members: tuple[Member, ...]


class _program_opts(ctypes.Structure):   # struct xdp_program_opts (libxdp.h, 1.3)
    _fields_ = [("sz", ctypes.c_size_t), ("obj", ctypes.c_void_p), ("opts", ctypes.c_void_p),
                ("prog_name", ctypes.c_char_p), ("find_filename", ctypes.c_char_p),
                ("open_filename", ctypes.c_char_p), ("pin_path", ctypes.c_char_p), ("id", ctypes.c_uint32),
                ("fd", ctypes.c_int)]


_log: list[str] = []


@_PRINT_FN
def _print(level: int, fmt: bytes, args: int) -> int:
    """libxdp's print callback: format with the C library (va_list passes through) and keep its
    warnings and notes (LIBXDP_WARN, LIBXDP_INFO), not its debug lines."""
    if level > _LIBXDP_INFO:
        return 0
    buf = ctypes.create_string_buffer(1024)
    _libc().vsnprintf(buf, len(buf), fmt, args)
    _log.extend(line for line in buf.value.decode(errors="replace").splitlines() if line.strip())
    return 0


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None)
    libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
    return libc


@lru_cache(maxsize=1)
def lib() -> ctypes.CDLL:
    """libxdp.so.1 with the signatures offload uses; an EnvironmentError names the package."""
    try:
        so = ctypes.CDLL("libxdp.so.1", use_errno=True)
    except OSError as e:
        raise FileNotFoundError(errno.ENOENT, f"libxdp is not installed (Debian: apt-get install libxdp1): {e}") \
            from None
    vp, i, u32, cp = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_char_p
    sigs = {
        "libxdp_set_print": (vp, [_PRINT_FN]),
        "libxdp_get_error": (ctypes.c_long, [vp]),
        "xdp_program__create": (vp, [vp]),
        "xdp_program__from_id": (vp, [u32]),
        "xdp_program__close": (None, [vp]),
        "xdp_program__id": (u32, [vp]),
        "xdp_program__name": (cp, [vp]),
        "xdp_program__fd": (i, [vp]),
        "xdp_program__run_prio": (ctypes.c_uint, [vp]),
        "xdp_program__set_run_prio": (i, [vp, ctypes.c_uint]),
        "xdp_program__chain_call_enabled": (ctypes.c_bool, [vp, ctypes.c_uint]),
        "xdp_program__set_chain_call_enabled": (i, [vp, ctypes.c_uint, ctypes.c_bool]),
        "xdp_program__attach": (i, [vp, i, i, ctypes.c_uint]),
        "xdp_program__detach": (i, [vp, i, i, ctypes.c_uint]),
        "xdp_multiprog__get_from_ifindex": (vp, [i]),
        "xdp_multiprog__close": (None, [vp]),
        "xdp_multiprog__next_prog": (vp, [vp, vp]),
        "xdp_multiprog__main_prog": (vp, [vp]),
        "xdp_multiprog__is_legacy": (ctypes.c_bool, [vp]),
        "xdp_multiprog__attach_mode": (i, [vp]),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(so, name)
        fn.restype, fn.argtypes = res, args
    so.libxdp_set_print(_print)
    return so


@contextmanager
def _logged() -> Iterator[list[str]]:
    """libxdp's log lines of the calls in the block."""
    lib()
    start = len(_log)
    out: list[str] = []
    try:
        yield out
    finally:
        out.extend(_log[start:])
        del _log[start:]


def _ptr_error(ptr: int | None) -> int:
    """libxdp returns pointers that may encode -errno (or NULL with errno set)."""
    if not ptr:
        return ctypes.get_errno() or errno.ENOENT
    err = lib().libxdp_get_error(ptr)
    return -err if err else 0


class Program:
    """An xdp_program handle: a file's program to attach, or a loaded one by id (to detach)."""

    def __init__(self, ptr: int) -> None:
        self._ptr = ptr

    @classmethod
    def from_object(cls, obj: int, prog_name: str, what: str) -> "Program":
        """Program `prog_name` of an opened, not yet loaded bpf_object (libbpf's pointer), which
        stays the caller's (to close after this handle): its globals, autoload and pinning are
        set the caller's way; libxdp loads it, as an extension, when it attaches."""
        opts = _program_opts(sz=ctypes.sizeof(_program_opts), obj=obj, prog_name=prog_name.encode())
        with _logged() as log:
            ctypes.set_errno(0)
            ptr = lib().xdp_program__create(ctypes.byref(opts))
            code = _ptr_error(ptr)
        if code:
            raise LibxdpError(code, f"libxdp could not take program {prog_name} of {what}", log)
        return cls(ptr)

    @classmethod
    def from_id(cls, prog_id: int) -> "Program":
        with _logged() as log:
            ctypes.set_errno(0)
            ptr = lib().xdp_program__from_id(prog_id)
            code = _ptr_error(ptr)
        if code:
            raise LibxdpError(code, f"libxdp could not open program {prog_id}", log)
        return cls(ptr)

    def configure(self, priority: int, chain_call: tuple[str, ...]) -> None:
        """Run priority and the actions on which the next program runs (before the attach:
        libxdp reads the object's `.xdp_run_config` defaults at open, these override them)."""
        so = lib()
        if so.xdp_program__set_run_prio(self._ptr, priority):
            raise ValueError(f"priority {priority} refused by libxdp")
        for n, action in enumerate(ACTIONS):
            so.xdp_program__set_chain_call_enabled(self._ptr, n, action in chain_call)

    @property
    def id(self) -> int:
        return lib().xdp_program__id(self._ptr)

    @property
    def fd(self) -> int:
        return lib().xdp_program__fd(self._ptr)

    def attach(self, ifindex: int, mode: str) -> list[str]:
        """Add to the interface's dispatcher (made when there is none): libxdp's log lines."""
        return self._call(lib().xdp_program__attach, ifindex, mode, f"attach {self.name} to")

    def detach(self, ifindex: int, mode: str) -> list[str]:
        """Take this program (and only it) out of the interface's dispatcher."""
        return self._call(lib().xdp_program__detach, ifindex, mode, f"detach program {self.id} from")

    def _call(self, fn, ifindex: int, mode: str, what: str) -> list[str]:
        """One libxdp attach or detach call: its log lines, or LibxdpError with them."""
        with _logged() as log:
            ret = fn(self._ptr, ifindex, MODES[mode], 0)
        if ret:
            raise LibxdpError(-ret, f"libxdp could not {what} ifindex {ifindex} ({mode})", log)
        return log

    @property
    def name(self) -> str:
        return (lib().xdp_program__name(self._ptr) or b"?").decode(errors="replace")

    def close(self) -> None:
        if self._ptr:
            lib().xdp_program__close(self._ptr)
            self._ptr = 0

    def __enter__(self) -> "Program":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def chain(ifindex: int) -> Chain:
    """What libxdp reads on `ifindex`: its dispatcher's programs in run order, or a lone program."""
    so = lib()
    with _logged():
        ctypes.set_errno(0)
        mp = so.xdp_multiprog__get_from_ifindex(ifindex)
        code = _ptr_error(mp)
    if code:
        return Chain(None, None, False, ())
    try:
        mode = _MODE_NAMES.get(so.xdp_multiprog__attach_mode(mp))
        main = so.xdp_multiprog__main_prog(mp)
        main_id = so.xdp_program__id(main) if main else None
        if so.xdp_multiprog__is_legacy(mp):
            return Chain(mode, main_id, True, ())
        members, p = [], None
        while p := so.xdp_multiprog__next_prog(p, mp):
            members.append(Member(so.xdp_program__id(p), (so.xdp_program__name(p) or b"?").decode(errors="replace"),
                                  so.xdp_program__run_prio(p),
                                  tuple(a for n, a in enumerate(ACTIONS) if so.xdp_program__chain_call_enabled(p, n))))
        return Chain(mode, main_id, False, tuple(members))
    finally:
        so.xdp_multiprog__close(mp)


def dispatcher_object() -> str | None:
    """The dispatcher object libxdp ships ($LIBXDP_OBJECT_PATH first, as libxdp looks)."""
    dirs = ([os.environ["LIBXDP_OBJECT_PATH"]] if os.environ.get("LIBXDP_OBJECT_PATH") else []) + list(_OBJ_DIRS)
    return next((f"{d}/{_DISPATCHER_OBJ}" for d in dirs if os.path.isfile(f"{d}/{_DISPATCHER_OBJ}")), None)


def freplace_refusal() -> str | None:
    """None when this kernel loads and attaches freplace (BPF_PROG_TYPE_EXT) programs to an XDP
    program, as libxdp's dispatcher needs; else the kernel's reason. The same test libxdp runs
    before it falls back to a lone program: its xdp-dispatcher.o's `xdp_pass` loaded as XDP, and
    again as an extension replacing it. libbpf writes its diagnostics to stderr."""
    from offload.kernel.bpfobj import BpfObject, ObjectError

    path = dispatcher_object()
    if path is None:
        return f"libxdp's {_DISPATCHER_OBJ} is missing (Debian: apt-get install libxdp1)"
    try:
        with BpfObject(path) as target, BpfObject(path) as ext:
            target.select("xdp_pass")
            target.load()
            ext.select("xdp_pass")
            try:
                ext.as_extension("xdp_pass", target.prog_fd("xdp_pass"), "xdp_pass")
            except OSError as e:
                return f"libbpf could not aim an extension at an XDP program: {e.strerror}"
            try:
                ext.load()
            except ObjectError as e:
                said = [ln for ln in ext.log("xdp_pass").splitlines() if ln.strip()]
                return (f"the kernel refuses to load BPF_PROG_TYPE_EXT (freplace) programs: {os.strerror(e.errno)}"
                        + (f" (verifier: {said[-1].strip()})" if said else "")
                        + (" (they need CONFIG_BPF_JIT and the kernel's BTF, CONFIG_DEBUG_INFO_BTF)"
                           if e.errno == errno.EINVAL else ""))
            link = _raw_tracepoint_open(ext.prog_fd("xdp_pass"))
            if link < 0:
                code = ctypes.get_errno() or -link
                return f"the kernel refuses to attach freplace programs: {os.strerror(code)}"
            os.close(link)
    except ObjectError as e:
        return f"could not load libxdp's {path} as a test target: {os.strerror(e.errno)}"
    return None


def _raw_tracepoint_open(prog_fd: int) -> int:
    """libbpf's bpf_raw_tracepoint_open(NULL, fd): how libxdp attaches an extension to its target."""
    so = bpfsys.libbpf()
    fn = so.bpf_raw_tracepoint_open
    fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_char_p, ctypes.c_int]
    return fn(None, prog_fd)
