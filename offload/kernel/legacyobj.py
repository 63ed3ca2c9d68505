"""BPF objects whose maps are legacy `struct bpf_map_def SEC("maps")` definitions.

libbpf dropped these in 1.0 (and with it `ip link ... obj` and xdp-loader), yet older XDP
projects and tutorials still ship them. Such an object is simple enough to load without libbpf's
object layer: read the ELF (pyelftools), create each map with bpf_map_create, point every map
relocation of the chosen program at its map's fd, and load the instructions with bpf_prog_load
(both libbpf's low-level API). What needs libbpf's linker — calls into `.text`, global data,
BTF-defined maps — is refused with a message saying so.
"""

from __future__ import annotations

import ctypes
import errno
import io
import os
import struct
import sys
from dataclasses import dataclass, field

from offload.kernel.bpfnames import BPF_F_XDP_HAS_FRAGS, OFFLOAD_NEUTRAL, frags_section
from offload.kernel.bpfobj import ElfProgram, MapDef
from offload.kernel.bpfsys import BPF_PROG_TYPE_XDP, libbpf

LEGACY_MAPS = "maps"
_DEF_FIELDS = 5                     # type, key_size, value_size, max_entries, map_flags
_ELF_MAP_SIZE = 36                  # iproute2's struct bpf_elf_map: + id, pinning, inner_id, inner_idx
R_BPF_64_64 = 1                     # ld_imm64 of a map (or data) address
BPF_PSEUDO_MAP_FD = 1
_MAP_IN_MAP = {12, 13}              # BPF_MAP_TYPE_ARRAY_OF_MAPS, HASH_OF_MAPS: need an inner map
OBJ_NAME_LEN = 16
LOG_SIZE = 1 << 20


class LegacyError(OSError):
    """The object cannot be loaded this way: errno and a sentence saying why."""


@dataclass(frozen=True)
class _Prog:
    info: ElfProgram
    insns: bytes
    relocs: tuple[tuple[int, str], ...]    # (instruction index, map name)
    problem: str = ""                      # why it cannot be loaded, if it cannot


class _map_opts(ctypes.Structure):       # struct bpf_map_create_opts (libbpf >= 0.7)
    _fields_ = [("sz", ctypes.c_size_t), ("btf_fd", ctypes.c_uint32), ("btf_key_type_id", ctypes.c_uint32),
                ("btf_value_type_id", ctypes.c_uint32), ("btf_vmlinux_value_type_id", ctypes.c_uint32),
                ("inner_map_fd", ctypes.c_uint32), ("map_flags", ctypes.c_uint32), ("map_extra", ctypes.c_uint64),
                ("numa_node", ctypes.c_uint32), ("map_ifindex", ctypes.c_uint32)]


class _prog_opts(ctypes.Structure):      # struct bpf_prog_load_opts (libbpf >= 0.7)
    _fields_ = [("sz", ctypes.c_size_t), ("attempts", ctypes.c_int), ("expected_attach_type", ctypes.c_int),
                ("prog_btf_fd", ctypes.c_uint32), ("prog_flags", ctypes.c_uint32), ("prog_ifindex", ctypes.c_uint32),
                ("kern_version", ctypes.c_uint32), ("attach_btf_id", ctypes.c_uint32),
                ("attach_prog_fd", ctypes.c_uint32), ("attach_btf_obj_fd", ctypes.c_uint32),
                ("fd_array", ctypes.c_void_p), ("func_info", ctypes.c_void_p), ("func_info_cnt", ctypes.c_uint32),
                ("func_info_rec_size", ctypes.c_uint32), ("line_info", ctypes.c_void_p),
                ("line_info_cnt", ctypes.c_uint32), ("line_info_rec_size", ctypes.c_uint32),
                ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32), ("log_buf", ctypes.c_char_p)]


def _lib() -> ctypes.CDLL:
    lib = libbpf()
    if not getattr(lib, "_offload_legacy_api", False):
        u32 = ctypes.c_uint32
        lib.bpf_map_create.restype = ctypes.c_int
        lib.bpf_map_create.argtypes = [ctypes.c_int, ctypes.c_char_p, u32, u32, u32, ctypes.POINTER(_map_opts)]
        lib.bpf_prog_load.restype = ctypes.c_int
        lib.bpf_prog_load.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p,
                                      ctypes.c_size_t, ctypes.POINTER(_prog_opts)]
        lib._offload_legacy_api = True
    return lib


def _prog_type(section: str) -> int:
    # The section names libbpf gives XDP (xdp, xdp/..., xdp.frags, xdp_devmap/...); the legacy
    # convention of any "xdp..." section is kept, as iproute2 did.
    return BPF_PROG_TYPE_XDP if section.startswith("xdp") else 0


class LegacyObject:
    """A parsed legacy object: its maps and programs, nothing loaded yet."""

    def __init__(self, path: str) -> None:
        # Only this rare path pays for pyelftools.
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile

        self.path = path
        try:
            with open(path, "rb") as f:     # callers bound the size (programs.MAX_FILE)
                data = f.read()
            # From memory: a section header's wild offset or size then reads short, not past a file.
            self._parse(ELFFile(io.BytesIO(data)))
        except LegacyError:
            raise
        except (ELFError, ValueError, LookupError, TypeError, struct.error, AttributeError, ArithmeticError,
                MemoryError) as e:
            # A malformed file: pyelftools reports it in several ways; each is the user's input.
            raise LegacyError(errno.EINVAL, f"{path}: a malformed ELF object ({type(e).__name__}: {e})") from None

    def _parse(self, elf) -> None:
        maps_sec = elf.get_section_by_name(LEGACY_MAPS)
        symtab = elf.get_section_by_name(".symtab")
        if maps_sec is None or symtab is None:
            raise LegacyError(errno.EINVAL, f"{self.path}: no legacy \"maps\" section and symbol table")
        maps_idx = elf.get_section_index(LEGACY_MAPS)
        lic = elf.get_section_by_name("license")
        self.license = lic.data().split(b"\0", 1)[0].decode(errors="replace") if lic is not None else ""
        self.maps = self._map_defs(maps_sec, maps_idx, symtab)
        by_offset = self._map_offsets
        self._progs: list[_Prog] = []
        for idx, sec in enumerate(elf.iter_sections()):
            if not sec["sh_flags"] & 0x4 or sec["sh_size"] == 0 or sec.name == ".text":   # SHF_EXECINSTR
                continue
            funcs = sorted((s["st_value"], s["st_size"], s.name) for s in symtab.iter_symbols()
                           if s["st_shndx"] == idx and s["st_info"]["type"] == "STT_FUNC"
                           and s["st_info"]["bind"] == "STB_GLOBAL")
            rels = [r for r in elf.iter_sections() if r["sh_type"] == "SHT_REL" and r["sh_info"] == idx]
            data = sec.data()
            for start, size, name in funcs:
                relocs, problem = [], ""
                for rel in rels:
                    for r in rel.iter_relocations():
                        off = r["r_offset"]
                        if not start <= off < start + size:
                            continue
                        sym = symtab.get_symbol(r["r_info_sym"])
                        target = sym["st_shndx"]
                        if (off - start) % 8 or size % 8:
                            problem = problem or f"a relocation at byte {off} is not on an instruction"
                        elif r["r_info_type"] == R_BPF_64_64 and target == maps_idx and sym["st_value"] in by_offset:
                            relocs.append(((off - start) // 8, by_offset[sym["st_value"]].name))
                        elif not problem:
                            where = (elf.get_section(target).name if isinstance(target, int) else str(target))
                            problem = (f"it refers to {sym.name or where} in section {where}: calls into .text "
                                       "and global data need libbpf's linker, which loads only BTF-defined maps")
                self._progs.append(_Prog(ElfProgram(name, sec.name, _prog_type(sec.name)),
                                         bytes(data[start:start + size]), tuple(relocs), problem))

    def _map_defs(self, sec, sec_idx: int, symtab) -> list[MapDef]:
        syms = sorted((s["st_value"], s.name) for s in symtab.iter_symbols()
                      if s["st_shndx"] == sec_idx and s.name and s["st_info"]["type"] in ("STT_OBJECT", "STT_NOTYPE"))
        data = sec.data()
        if not syms or len(data) % len(syms):
            raise LegacyError(errno.EINVAL, f"{self.path}: the \"maps\" section's {len(data)} bytes do not divide "
                                            f"into its {len(syms)} map symbols")
        size = len(data) // len(syms)
        if size < 4 * 4:
            raise LegacyError(errno.EINVAL, f"{self.path}: legacy map definitions of {size} bytes are too short")
        out, self._map_offsets = [], {}
        for off, name in syms:
            raw = data[off:off + size].ljust(4 * _DEF_FIELDS, b"\0")
            fields = struct.unpack_from(f"{'<' if sys.byteorder == 'little' else '>'}{_DEF_FIELDS}I", raw)
            extra = raw[4 * _DEF_FIELDS:]
            if extra.strip(b"\0"):
                if size != _ELF_MAP_SIZE:
                    raise LegacyError(errno.EINVAL, f"{self.path}: map {name}: a {size}-byte definition with fields "
                                                    "beyond struct bpf_map_def that offload does not know")
                _id, _pinning, inner_id, inner_idx = struct.unpack_from("=4I", extra)
                if inner_id or inner_idx:
                    raise LegacyError(errno.EOPNOTSUPP, f"{self.path}: map {name} is a map of maps (iproute2's "
                                                        "inner_id/inner_idx), which offload does not build")
                # iproute2's `pinning` asks for a pin under /sys/fs/bpf/tc/globals: offload pins each
                # attachment's maps in its own tree instead, so it is not honoured.
            d = MapDef(name, *fields)
            if d.type in _MAP_IN_MAP:
                raise LegacyError(errno.EOPNOTSUPP, f"{self.path}: map {name} is a map of maps, which needs an inner "
                                                    "map definition only BTF-defined maps can give")
            out.append(d)
            self._map_offsets[off] = d
        return out

    def programs(self) -> list[ElfProgram]:
        return [p.info for p in self._progs]

    def problem(self, name: str) -> str:
        """Why program `name` cannot be loaded without libbpf ("" if it can)."""
        return next((p.problem for p in self._progs if p.info.name == name), "")

    def load(self, name: str, ifindex: int = 0) -> "LegacyLoaded":
        """Create the maps the program uses and load it (bound to `ifindex` for hw offload).
        Raises LegacyError with the verifier log in `.log` when the kernel refuses."""
        prog = next((p for p in self._progs if p.info.name == name), None)
        if prog is None:
            raise LegacyError(errno.ENOENT, f"{self.path}: no program {name}")
        if prog.problem:
            raise LegacyError(errno.EOPNOTSUPP, f"{self.path}: {name} cannot be loaded without libbpf: {prog.problem}")
        lib, fds = _lib(), {}
        try:
            for d in self.maps:
                bound = 0 if d.type in OFFLOAD_NEUTRAL else ifindex   # a perf event array stays on the host
                opts = _map_opts(sz=ctypes.sizeof(_map_opts), map_flags=d.flags, map_ifindex=bound)
                ctypes.set_errno(0)
                fd = lib.bpf_map_create(d.type, d.name[:OBJ_NAME_LEN - 1].encode(), d.key_size, d.value_size,
                                        d.max_entries, ctypes.byref(opts))
                if fd < 0:
                    code = ctypes.get_errno() or -fd
                    raise LegacyError(code, f"the kernel refused map {d.name} (type {d.type}): {os.strerror(code)}")
                fds[d.name] = fd
            insns = bytearray(prog.insns)
            for i, map_name in prog.relocs:
                regs = insns[8 * i + 1]
                insns[8 * i + 1] = (regs & 0x0F) | (BPF_PSEUDO_MAP_FD << 4)   # src_reg: "imm is a map fd"
                struct.pack_into("=i", insns, 8 * i + 4, fds[map_name])
            fd, log = self._prog_load(lib, prog, bytes(insns), ifindex)
            return LegacyLoaded(fd, fds, log)
        except BaseException:
            for fd in fds.values():
                os.close(fd)
            raise

    def _prog_load(self, lib, prog: _Prog, insns: bytes, ifindex: int) -> tuple[int, str]:
        buf = ctypes.create_string_buffer(len(insns))
        ctypes.memmove(buf, insns, len(insns))
        flags = BPF_F_XDP_HAS_FRAGS if frags_section(prog.info.section) else 0
        name = prog.info.name[:OBJ_NAME_LEN - 1].encode()
        # First without a log (the fast path); on refusal again with one, for the verifier's words.
        for level in (0, 1):
            log = ctypes.create_string_buffer(LOG_SIZE) if level else None
            opts = _prog_opts(sz=ctypes.sizeof(_prog_opts), prog_flags=flags, prog_ifindex=ifindex,
                              log_level=level, log_size=LOG_SIZE if level else 0,
                              log_buf=ctypes.cast(log, ctypes.c_char_p) if level else None)
            ctypes.set_errno(0)
            fd = lib.bpf_prog_load(prog.info.type, name, self.license.encode(), buf, len(insns) // 8,
                                   ctypes.byref(opts))
            if fd >= 0:
                return fd, ""
            code = ctypes.get_errno() or -fd
            if level:
                err = LegacyError(code, os.strerror(code))
                err.log = log.value.decode(errors="replace")
                raise err
        raise AssertionError("unreachable")


@dataclass
class LegacyLoaded:
    fd: int
    map_fds: dict[str, int] = field(default_factory=dict)
    log: str = ""

    def close(self) -> None:
        for fd in [self.fd, *self.map_fds.values()]:
            if fd >= 0:
                os.close(fd)
        self.fd, self.map_fds = -1, {}
