"""What a BPF ELF object says about its code, read without the kernel: each function's
instructions, the relocations that tie calls, maps and global data to symbols, and the object's
BTF line info and CO-RE relocations (.BTF.ext).

libbpf applies the relocations only while loading (bpf_object__load), so before a load its
bpf_program__insns() shows the entry function alone, without the subprograms it will append.
The advisor needs the program as the kernel would see it without asking the kernel, so the ELF
is read here (struct over the ELF64 headers) the way libbpf reads it: a call relocated to `sym` lands on instruction
sym.st_value / 8 + imm + 1 (libbpf's bpf_object__reloc_code), an ld_imm64 relocated to a symbol
of `.maps`/`maps` is a map, to a data section global data, and a call to an undefined symbol a
kfunc. No decisions.
"""

from __future__ import annotations

import bisect

import struct
from dataclasses import dataclass, field

BPF_JMP, BPF_JMP32, BPF_STX = 0x05, 0x06, 0x03
BPF_CALL, BPF_EXIT, BPF_ATOMIC_MODE = 0x80, 0x90, 0xC0
LD_IMM64 = 0x18
PSEUDO_CALL, PSEUDO_KFUNC_CALL, PSEUDO_FUNC = 1, 2, 4
MAP_SECTIONS = (".maps", "maps")
BTF_MAGIC = 0xEB9F
SHT_PROGBITS, SHT_SYMTAB, SHT_NOBITS, SHT_REL = 1, 2, 8, 9
SHF_ALLOC, SHF_EXECINSTR = 0x2, 0x4
_STT = {0: "NOTYPE", 1: "OBJECT", 2: "FUNC", 3: "SECTION", 4: "FILE"}


class ElfReadError(ValueError):
    """The file is not an ELF BPF object this reader understands (the reason in words)."""


@dataclass(frozen=True)
class Insn:
    code: int
    dst: int
    src: int
    off: int
    imm: int

    @property
    def is_call(self) -> bool:
        return self.code == BPF_JMP | BPF_CALL

    @property
    def is_atomic(self) -> bool:
        return self.code & 0x07 == BPF_STX and self.code & 0xE0 == BPF_ATOMIC_MODE


@dataclass(frozen=True)
class Symbol:
    name: str
    section: str          # "" for an undefined (extern) symbol
    value: int
    size: int
    kind: str             # FUNC, OBJECT, SECTION, NOTYPE


@dataclass(frozen=True)
class LineInfo:
    insn_off: int         # bytes from the start of its section
    file: str
    line: int
    col: int
    text: str             # the source line as BTF keeps it


@dataclass
class ElfCode:
    """One object's code: sections of instructions, the symbols and relocations that point out of
    them, and what .BTF.ext says of them."""

    path: str
    insns: dict[str, list[Insn]] = field(default_factory=dict)           # exec section -> instructions
    relocs: dict[str, dict[int, Symbol]] = field(default_factory=dict)   # section -> insn index -> symbol
    functions: list[Symbol] = field(default_factory=list)                # FUNC symbols in exec sections
    lines: dict[str, list[LineInfo]] = field(default_factory=dict)       # section -> sorted by insn_off
    core_relos: dict[str, int] = field(default_factory=dict)             # section -> CO-RE relocations
    data_sections: list[str] = field(default_factory=list)               # .data, .rodata*, .bss...
    has_btf: bool = False

    def function_at(self, section: str, index: int) -> Symbol | None:
        """The function whose body holds instruction `index` of `section`."""
        off = index * 8
        for f in self.functions:
            if f.section == section and f.value <= off < f.value + max(f.size, 8):
                return f
        return None

    def line_of(self, section: str, index: int) -> LineInfo | None:
        """BTF's line info for instruction `index` of `section` (the closest entry at or before it)."""
        lines = self.lines.get(section, [])   # sorted by insn_off: a look-up per instruction stays cheap
        i = bisect.bisect_right(lines, index * 8, key=lambda li: li.insn_off)
        return lines[i - 1] if i else None


def _decode(data: bytes) -> list[Insn]:
    out = []
    for code, regs, off, imm in struct.iter_unpack("<BBhi", data[: len(data) // 8 * 8]):
        out.append(Insn(code, regs & 0x0F, regs >> 4, off, imm))
    return out


def read(path: str, data: bytes) -> ElfCode:
    """Read the object at `path` whose bytes are `data` (read once by the caller)."""
    try:
        return _read(path, _Elf(data))
    except (struct.error, IndexError, KeyError, UnicodeDecodeError) as e:
        raise ElfReadError(f"damaged ELF: {e}") from None


@dataclass(frozen=True)
class _Section:
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int


class _Elf:
    """The few parts of an ELF64 little-endian file a BPF object needs (section headers, the
    symbol table, REL relocations), read with struct: pyelftools' import alone costs more than
    the whole read, and attach pays this read on every hw-capable device."""

    def __init__(self, data: bytes) -> None:
        if data[:4] != b"\x7fELF" or data[4] != 2:
            raise ElfReadError("not a 64-bit ELF file (BPF objects are ELF64)")
        if data[5] != 1:
            raise ElfReadError("a big-endian BPF object (offload reads little-endian ones)")
        self.data = data
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        raw = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
        names = self.bytes_of(raw[shstrndx][4], raw[shstrndx][5]) if shnum else b""
        self.sections = [_Section(_cstr(names, r[0]), r[1], r[2], r[4], r[5], r[6], r[7]) for r in raw]

    def bytes_of(self, offset: int, size: int) -> bytes:
        if offset + size > len(self.data):
            raise ElfReadError("a section runs past the end of the file (truncated?)")
        return self.data[offset: offset + size]

    def section_data(self, s: _Section) -> bytes:
        return b"" if s.type == SHT_NOBITS else self.bytes_of(s.offset, s.size)

    def by_name(self, name: str) -> _Section | None:
        return next((s for s in self.sections if s.name == name), None)


def _cstr(table: bytes, off: int) -> str:
    end = table.find(b"\0", off)
    return table[off: end if end >= 0 else len(table)].decode()


def _read(path: str, elf: _Elf) -> ElfCode:
    out = ElfCode(path)
    names = [s.name for s in elf.sections]
    for s in elf.sections:
        if s.type == SHT_PROGBITS and s.flags & SHF_EXECINSTR:
            out.insns[s.name] = _decode(elf.section_data(s))
        elif s.name.startswith((".data", ".rodata", ".bss")) and s.flags & SHF_ALLOC:
            out.data_sections.append(s.name)
    symtab = next((s for s in elf.sections if s.type == SHT_SYMTAB), None)
    syms = _symbols(elf, symtab, names) if symtab is not None else []
    out.functions = [s for s in syms if s.kind == "FUNC" and s.section in out.insns]
    for s in elf.sections:
        if s.type == SHT_REL and s.info < len(names) and names[s.info] in out.insns:
            rels = struct.iter_unpack("<QQ", elf.section_data(s))
            out.relocs[names[s.info]] = {off // 8: syms[info >> 32] for off, info in rels if info >> 32 < len(syms)}
    btf, ext = elf.by_name(".BTF"), elf.by_name(".BTF.ext")
    out.has_btf = btf is not None
    if btf is not None and ext is not None:
        strings = _btf_strings(elf.section_data(btf))
        out.lines, out.core_relos = _btf_ext(elf.section_data(ext), strings)
    return out


def _symbols(elf: _Elf, symtab: _Section, names: list[str]) -> list[Symbol]:
    strtab = elf.section_data(elf.sections[symtab.link])
    out = []
    for name_off, info, _other, shndx, value, size in struct.iter_unpack("<IBBHQQ", elf.section_data(symtab)):
        section = names[shndx] if 0 < shndx < len(names) else ""    # SHN_UNDEF, SHN_ABS...: none
        kind = _STT.get(info & 0xF, "NOTYPE")
        name = _cstr(strtab, name_off) or (section if kind == "SECTION" else "")
        out.append(Symbol(name, section, value, size, kind))
    return out


def _btf_strings(btf: bytes) -> bytes:
    magic, _ver, _flags, hdr_len, _toff, _tlen, str_off, str_len = struct.unpack_from("<HBBIIIII", btf)
    if magic != BTF_MAGIC:
        raise ElfReadError(".BTF has a bad magic number")
    return btf[hdr_len + str_off: hdr_len + str_off + str_len]


def _string(strings: bytes, off: int) -> str:
    end = strings.find(b"\0", off)
    return strings[off: end if end >= 0 else len(strings)].decode(errors="replace")


def _btf_ext(ext: bytes, strings: bytes) -> tuple[dict[str, list[LineInfo]], dict[str, int]]:
    """struct btf_ext_header (tools/lib/bpf/libbpf_internal.h), then the line_info and core_relo
    blocks: a record size, then per section its name, a count and the records."""
    magic, _ver, _flags, hdr_len = struct.unpack_from("<HBBI", ext)
    if magic != BTF_MAGIC:
        raise ElfReadError(".BTF.ext has a bad magic number")
    fields = struct.unpack_from("<IIII", ext, 8)
    line_off, line_len = fields[2], fields[3]
    core_off, core_len = struct.unpack_from("<II", ext, 24) if hdr_len >= 32 else (0, 0)
    lines: dict[str, list[LineInfo]] = {}
    for sec, recs in _blocks(ext, hdr_len + line_off, line_len, strings):
        lines[sec] = sorted((LineInfo(r[0], _string(strings, r[1]), r[3] >> 10, r[3] & 0x3FF, _string(strings, r[2]))
                             for r in recs), key=lambda li: li.insn_off)
    core = {sec: len(recs) for sec, recs in _blocks(ext, hdr_len + core_off, core_len, strings)}
    return lines, core


def _blocks(ext: bytes, start: int, length: int, strings: bytes):
    if length < 4:
        return
    (rec_size,) = struct.unpack_from("<I", ext, start)
    pos, end = start + 4, start + length
    while pos + 8 <= end and rec_size >= 16:
        name_off, count = struct.unpack_from("<II", ext, pos)
        pos += 8
        recs = [struct.unpack_from("<IIII", ext, pos + k * rec_size) for k in range(count)]
        pos += count * rec_size
        yield _string(strings, name_off), recs
