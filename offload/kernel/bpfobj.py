"""BPF ELF objects through libbpf's object API (ctypes): open, choose the program, set globals
and offload ifindex, load, and hand out the program and map fds.

libbpf does what `ip link ... obj` and xdp-loader do with an object: BTF-defined and legacy maps,
`.rodata`/`.data`/`.bss` globals, relocations. Its diagnostics go to stderr, so callers capture
fd 2 around `open`/`load`; the verifier log goes into a buffer given per program.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from dataclasses import dataclass

from offload.kernel.bpfnames import OFFLOAD_NEUTRAL
from offload.kernel.bpfsys import BPF_PROG_TYPE_EXT, BPF_PROG_TYPE_XDP, libbpf, strerror

BTF_KIND_INT, BTF_KIND_ARRAY, BTF_KIND_TYPEDEF, BTF_KIND_VOLATILE, BTF_KIND_CONST = 1, 3, 8, 9, 10
BTF_KIND_ENUM, BTF_KIND_RESTRICT, BTF_KIND_VAR, BTF_KIND_DATASEC, BTF_KIND_TYPE_TAG = 6, 11, 14, 15, 18
_MODIFIERS = {BTF_KIND_TYPEDEF, BTF_KIND_VOLATILE, BTF_KIND_CONST, BTF_KIND_RESTRICT, BTF_KIND_TYPE_TAG}
DATA_SECTIONS = (".rodata", ".data", ".bss")
LOG_SIZE = 1 << 20


class ObjectError(OSError):
    """libbpf could not open or load the object: errno and what it was doing."""


class _btf_type(ctypes.Structure):      # struct btf_type (include/uapi/linux/btf.h)
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32), ("size_or_type", ctypes.c_uint32)]


def _lib() -> ctypes.CDLL:
    lib = libbpf()
    if getattr(lib, "_offload_obj_api", False):
        return lib
    vp, cp, i, u32 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32
    sigs = {
        "bpf_object__open_file": (vp, [cp, vp]),
        "bpf_object__close": (None, [vp]),
        "bpf_object__load": (i, [vp]),
        "bpf_object__next_program": (vp, [vp, vp]),
        "bpf_object__next_map": (vp, [vp, vp]),
        "bpf_object__btf": (vp, [vp]),
        "bpf_program__name": (cp, [vp]),
        "bpf_program__section_name": (cp, [vp]),
        "bpf_program__type": (i, [vp]),
        "bpf_program__fd": (i, [vp]),
        "bpf_program__set_autoload": (i, [vp, ctypes.c_bool]),
        "bpf_program__set_ifindex": (None, [vp, ctypes.c_uint32]),
        "bpf_program__set_log_buf": (i, [vp, vp, ctypes.c_size_t]),
        "bpf_map__name": (cp, [vp]),
        "bpf_map__fd": (i, [vp]),
        "bpf_map__set_ifindex": (i, [vp, u32]),
        "bpf_map__set_pin_path": (i, [vp, cp]),
        "bpf_map__initial_value": (vp, [vp, ctypes.POINTER(ctypes.c_size_t)]),
        "bpf_map__is_internal": (ctypes.c_bool, [vp]),
        "bpf_map__type": (i, [vp]),
        "bpf_map__key_size": (u32, [vp]),
        "bpf_map__value_size": (u32, [vp]),
        "bpf_map__max_entries": (u32, [vp]),
        "bpf_map__map_flags": (u32, [vp]),
        "bpf_map__numa_node": (u32, [vp]),
        "bpf_map__inner_map": (vp, [vp]),
        "bpf_map__pin_path": (cp, [vp]),
        "bpf_program__flags": (u32, [vp]),
        "bpf_program__set_type": (i, [vp, i]),
        "bpf_program__set_expected_attach_type": (i, [vp, i]),
        "bpf_program__set_attach_target": (i, [vp, i, cp]),
        "btf__find_by_name_kind": (i, [vp, cp, u32]),
        "btf__type_by_id": (ctypes.POINTER(_btf_type), [vp, u32]),
        "btf__name_by_offset": (cp, [vp, u32]),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    lib._offload_obj_api = True
    return lib


@dataclass(frozen=True)
class ElfProgram:
    """A program an ELF object declares (its name, section, type): bpfsys.LoadedProg is what the
    kernel says of a program once loaded."""

    name: str
    section: str
    type: int

    @property
    def is_xdp(self) -> bool:
        return self.type == BPF_PROG_TYPE_XDP


@dataclass(frozen=True)
class GlobalVar:
    name: str
    section: str      # .rodata, .data or .bss
    offset: int
    size: int
    kind: str         # "int", "uint", "bool", "char[]" or "other"


@dataclass(frozen=True)
class MapDef:
    """A map as the object declares it (libbpf's view after open, before any map exists)."""

    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    numa_node: int = 0
    internal: bool = False          # libbpf's map for .data/.rodata/.bss/.kconfig
    pin_path: str | None = None     # LIBBPF_PIN_BY_NAME: where libbpf would pin it
    inner: "MapDef | None" = None


class BpfObject:
    """One opened object. Close it (or use it as a context manager) to free it; the kernel objects
    live on while something (a pin, an attachment, an fd) holds them."""

    def __init__(self, path: str) -> None:
        lib = _lib()
        ctypes.set_errno(0)
        self._obj = lib.bpf_object__open_file(os.fsencode(path), None)
        if not self._obj:
            code = ctypes.get_errno() or errno.EINVAL
            raise ObjectError(code, f"libbpf could not open {path}: {strerror(code)}")
        self.path = path
        self._logs: dict[str, ctypes.Array] = {}

    @property
    def handle(self) -> int:
        """libbpf's struct bpf_object pointer, for a library that loads the object itself (libxdp)."""
        return self._obj

    # -- what is in it ------------------------------------------------------------------------------
    def _programs(self) -> list[tuple[int, ElfProgram]]:
        lib, out, p = _lib(), [], None
        while p := lib.bpf_object__next_program(self._obj, p):
            out.append((p, ElfProgram(lib.bpf_program__name(p).decode(), lib.bpf_program__section_name(p).decode(),
                                       lib.bpf_program__type(p))))
        return out

    def programs(self) -> list[ElfProgram]:
        return [info for _, info in self._programs()]

    def _maps(self) -> list[tuple[int, str]]:
        lib, out, m = _lib(), [], None
        while m := lib.bpf_object__next_map(self._obj, m):
            out.append((m, lib.bpf_map__name(m).decode()))
        return out

    def map_defs(self) -> list[MapDef]:
        """Every map the object declares, with what the kernel would be asked to create."""
        return [self._map_def(m, name) for m, name in self._maps()]

    @staticmethod
    def _map_def(m: int, name: str, depth: int = 0) -> MapDef:
        lib = _lib()
        inner = lib.bpf_map__inner_map(m) if depth == 0 else None
        pin = lib.bpf_map__pin_path(m)
        return MapDef(name, lib.bpf_map__type(m), lib.bpf_map__key_size(m), lib.bpf_map__value_size(m),
                      lib.bpf_map__max_entries(m), lib.bpf_map__map_flags(m), lib.bpf_map__numa_node(m),
                      bool(lib.bpf_map__is_internal(m)), pin.decode(errors="replace") if pin else None,
                      BpfObject._map_def(inner, f"{name}.inner", 1) if inner else None)

    def program_flags(self, name: str) -> int:
        """The prog_flags libbpf would load `name` with (its section's, e.g. xdp.frags)."""
        lib = _lib()
        for p, info in self._programs():
            if info.name == name:
                return lib.bpf_program__flags(p)
        raise KeyError(name)

    def globals(self) -> dict[str, GlobalVar]:
        """Variables of the data sections, from the object's BTF (what `--param K=V` can set)."""
        lib = _lib()
        btf = lib.bpf_object__btf(self._obj)
        out: dict[str, GlobalVar] = {}
        if not btf:
            return out
        for sec in DATA_SECTIONS:
            sid = lib.btf__find_by_name_kind(btf, sec.encode(), BTF_KIND_DATASEC)
            if sid <= 0:
                continue
            t = lib.btf__type_by_id(btf, sid).contents
            base = ctypes.addressof(t) + ctypes.sizeof(_btf_type)
            for k in range(t.info & 0xFFFF):
                var_id, offset, size = struct.unpack("=III", ctypes.string_at(base + 12 * k, 12))
                var = lib.btf__type_by_id(btf, var_id).contents
                if (var.info >> 24) & 0x1F != BTF_KIND_VAR:
                    continue
                name = lib.btf__name_by_offset(btf, var.name_off).decode()
                out[name] = GlobalVar(name, sec, offset, size, self._kind(btf, var.size_or_type))
        return out

    @staticmethod
    def _kind(btf: int, type_id: int) -> str:
        lib = _lib()
        for _ in range(32):  # follow const/volatile/typedef to the real type
            t = lib.btf__type_by_id(btf, type_id).contents
            kind = (t.info >> 24) & 0x1F
            if kind in _MODIFIERS:
                type_id = t.size_or_type
                continue
            if kind == BTF_KIND_INT:
                enc = ctypes.c_uint32.from_address(ctypes.addressof(t) + ctypes.sizeof(_btf_type)).value >> 24
                return "bool" if enc & 4 else ("int" if enc & 1 else "uint")
            if kind == BTF_KIND_ENUM:
                return "int"
            if kind == BTF_KIND_ARRAY:
                return "char[]"
            return "other"
        return "other"

    # -- preparing the load -------------------------------------------------------------------------
    def select(self, name: str) -> None:
        """Load only program `name` (others in the object stay unloaded)."""
        lib = _lib()
        for p, info in self._programs():
            lib.bpf_program__set_autoload(p, info.name == name)
            if info.name == name:
                log = ctypes.create_string_buffer(LOG_SIZE)
                self._logs[name] = log
                lib.bpf_program__set_log_buf(p, log, LOG_SIZE)

    def as_extension(self, name: str, target_fd: int, target: str) -> None:
        """Load program `name` as an extension (freplace, BPF_PROG_TYPE_EXT) of function `target`
        of the loaded program `target_fd`; raises OSError with libbpf's errno."""
        lib = _lib()
        p = next(p for p, info in self._programs() if info.name == name)
        lib.bpf_program__set_type(p, BPF_PROG_TYPE_EXT)
        lib.bpf_program__set_expected_attach_type(p, 0)
        if (ret := lib.bpf_program__set_attach_target(p, target_fd, target.encode())) < 0:
            raise OSError(-ret, os.strerror(-ret))

    def set_ifindex(self, ifindex: int) -> None:
        """Bind programs and maps to a device, for hardware offload. A perf event array stays on
        the host: the kernel lets an offloaded program use it unbound (bpf_map_offload_neutral()),
        and binding it would fail (no device creates one), as bpftool knows too."""
        lib = _lib()
        for p, _ in self._programs():
            lib.bpf_program__set_ifindex(p, ifindex)
        for m, _ in self._maps():
            if lib.bpf_map__type(m) not in OFFLOAD_NEUTRAL:
                lib.bpf_map__set_ifindex(m, ifindex)

    def no_auto_pinning(self) -> None:
        """Objects may ask libbpf to pin maps by name under /sys/fs/bpf (LIBBPF_PIN_BY_NAME):
        offload pins in its own tree instead, so nothing lands outside it."""
        lib = _lib()
        for m, _ in self._maps():
            lib.bpf_map__set_pin_path(m, None)

    def set_global(self, var: GlobalVar, value: bytes) -> None:
        """Write a global's initial value (before load; `.rodata` is frozen by the load)."""
        lib = _lib()
        for m, name in self._maps():
            if lib.bpf_map__is_internal(m) and name.endswith(var.section):
                size = ctypes.c_size_t()
                ptr = lib.bpf_map__initial_value(m, ctypes.byref(size))
                if not ptr or var.offset + len(value) > size.value:
                    raise ObjectError(errno.EINVAL, f"{var.section} of {self.path} cannot take {var.name}")
                ctypes.memmove(ptr + var.offset, value, len(value))
                return
        raise ObjectError(errno.ENOENT, f"{self.path} has no {var.section} map for {var.name}")

    # -- loading ------------------------------------------------------------------------------------
    def load(self) -> None:
        ret = _lib().bpf_object__load(self._obj)
        if ret < 0:
            raise ObjectError(-ret, strerror(-ret))

    def log(self, name: str) -> str:
        buf = self._logs.get(name)
        return buf.value.decode(errors="replace") if buf is not None else ""

    def prog_fd(self, name: str) -> int:
        lib = _lib()
        for p, info in self._programs():
            if info.name == name:
                return lib.bpf_program__fd(p)
        raise KeyError(name)

    def map_fds(self) -> dict[str, int]:
        """name -> fd of every map created by the load."""
        lib = _lib()
        return {name: fd for m, name in self._maps() if (fd := lib.bpf_map__fd(m)) >= 0}

    def close(self) -> None:
        if self._obj:
            _lib().bpf_object__close(self._obj)
            self._obj = None

    def __enter__(self) -> "BpfObject":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
