"""Where SYSRET and WRMSR instructions are, found by their bytes.

SYSRET is 0F 07 (Intel SDM Vol. 2B "SYSRET"): with REX.W (48 0F 07, AT&T
`sysretq`) it returns to 64-bit mode, without it (0F 07, `sysretl`) to
compatibility mode.  WRMSR is 0F 30 (SDM Vol. 2B "WRMSR").

x86 code cannot be cut into instructions without knowing where one starts,
so this is a byte-pattern scan, and it errs on the side of too many sites:

* Every start an instruction could have is a candidate.  For `48 0F 07` that
  is the 48 (a sysretq) and also the 0F, because the 48 might be the last
  byte of the previous instruction (`mov 0x48(%rsp),%rax` ends in 48), in
  which case the instruction really is a sysretl one byte later.  The later
  candidates are marked `shadowed`.
* A candidate that is really the middle of another instruction is harmless
  as a breakpoint: execution never starts there, so it never fires.  And a
  breakpoint that fires has RIP at a real instruction start, where
  `sysret_at` decodes the operand size again from the bytes.

Prefixes (SDM Vol. 2A 2.1.1, 2.2.1): REX (40-4F) counts only immediately
before the opcode; legacy prefixes (66 67 F2 F3 2E 36 3E 26 64 65) may come
before it and do not make SYSRET 64-bit; LOCK (F0) makes it #UD, so a LOCK
start is not a SYSRET.  An instruction is at most 15 bytes.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from os import PathLike

SYSRET_OPCODE = b"\x0f\x07"
GROUP6 = b"\x0f\x00"   # LTR is 0F 00 /3 (SDM Vol. 2A "LTR")
GROUP7 = b"\x0f\x01"   # LGDT is 0F 01 /2 with a memory operand (SDM Vol. 2A "LGDT/LIDT")
WRMSR_OPCODE = b"\x0f\x30"
LEGACY_PREFIXES = frozenset(b"\x66\x67\xf2\xf3\x2e\x36\x3e\x26\x64\x65")
REX_W = 0x08
MAX_INSTRUCTION = 15


def _is_rex(byte: int) -> bool:
    return 0x40 <= byte <= 0x4F


class SiteError(ValueError):
    """A file that cannot be scanned (not an x86 ELF, unreadable structure)."""


@dataclass(frozen=True)
class Site:
    """A place a SYSRET may execute from.

    opsize: 64 for sysretq (REX.W), 32 for sysretl.
    symbol: the label at that address, else the function containing it, if known.
    length: instruction length in bytes, prefixes included.
    shadowed: a later start inside a longer candidate (see the module docstring):
              a real instruction only if the earlier bytes end the previous one.
    """

    address: int
    opsize: int
    symbol: str | None = None
    length: int = 2
    shadowed: bool = False


def _opcode_after_prefixes(code: bytes) -> tuple[int, bool]:
    """(offset of the opcode, REX.W in effect), or (-1, False) past 15 bytes.

    LOCK (F0) is not taken as a prefix: it would make SYSRET and WRMSR #UD, so
    F0 simply is not their opcode.
    """
    i = 0
    rex_w = False
    while i < len(code) and i < MAX_INSTRUCTION - 2:
        byte = code[i]
        if byte in LEGACY_PREFIXES:
            rex_w = False          # a REX followed by a legacy prefix is ignored
        elif _is_rex(byte):
            rex_w = bool(byte & REX_W)
        else:
            return i, rex_w
        i += 1
    return (i, rex_w) if i < len(code) else (-1, False)


def sysret_at(code: bytes) -> int | None:
    """64 or 32 if `code` starts with a SYSRET (prefixes included), else None."""
    at, rex_w = _opcode_after_prefixes(code)
    if at < 0 or code[at:at + 2] != SYSRET_OPCODE:
        return None
    # REX counts only right before the opcode: _opcode_after_prefixes reset it otherwise.
    return 64 if rex_w else 32


def wrmsr_at(code: bytes) -> bool:
    """True if `code` starts with a WRMSR (prefixes, which it ignores, included)."""
    at, _ = _opcode_after_prefixes(code)
    return at >= 0 and code[at:at + 2] == WRMSR_OPCODE


def _starts(code: bytes, opcode_at: int, opcode_size: int = 2) -> list[int]:
    """Every offset an instruction ending at this opcode could start at, earliest first."""
    first = opcode_at
    while first > 0 and opcode_at - (first - 1) <= MAX_INSTRUCTION - opcode_size:
        byte = code[first - 1]
        if byte not in LEGACY_PREFIXES and not _is_rex(byte):
            break
        first -= 1
    return list(range(first, opcode_at + 1))


def _find(code: bytes, opcode: bytes) -> list[int]:
    out = []
    at = code.find(opcode)
    while at >= 0:
        out.append(at)
        at = code.find(opcode, at + 1)
    return out


def scan(code: bytes, base: int) -> list[Site]:
    """Candidate SYSRET sites in `code` loaded at `base`, by address."""
    sites = []
    for opcode_at in _find(code, SYSRET_OPCODE):
        for n, start in enumerate(_starts(code, opcode_at)):
            opsize = sysret_at(code[start:opcode_at + 2])
            if opsize is not None:
                sites.append(Site(base + start, opsize, None, opcode_at + 2 - start, n > 0))
    return sites


def scan_wrmsr(code: bytes, base: int) -> list[int]:
    """Candidate WRMSR addresses in `code` loaded at `base` (every possible start)."""
    return [base + start
            for opcode_at in _find(code, WRMSR_OPCODE)
            for start in _starts(code, opcode_at)]


def _modrm_reg(byte: int) -> int:
    return (byte >> 3) & 7


def scan_table_loads(code: bytes, base: int) -> list[int]:
    """Candidate LGDT and LTR addresses in `code` loaded at `base`.

    These change GDTR and TR, which the sysret watch keeps between stops.
    LGDT needs a memory operand: ModRM.mod 11 with reg 2 is another
    instruction (XGETBV, XSETBV, VMFUNC...).  LTR takes a register too.
    """
    out = []
    for opcode, reg, memory_only in ((GROUP7, 2, True), (GROUP6, 3, False)):
        for opcode_at in _find(code, opcode):
            if opcode_at + 2 >= len(code):
                continue
            modrm = code[opcode_at + 2]
            if _modrm_reg(modrm) != reg or (memory_only and modrm >> 6 == 3):
                continue
            out.extend(base + start for start in _starts(code, opcode_at))
    return sorted(out)


# --- ELF files ---------------------------------------------------------------

class _Symbols:
    """Symbol lookup by address, for one section (or one address space).

    The label exactly at the address, else the sized function containing it,
    else the nearest label before it (assembly routines often have no size).
    """

    def __init__(self) -> None:
        self.exact: dict[int, str] = {}
        self.funcs: list[tuple[int, int, str]] = []   # (start, end, name), sorted
        self.labels: list[tuple[int, str]] = []       # (address, name), sorted

    def add(self, address: int, size: int, name: str, kind: str) -> None:
        if kind not in ("FUNC", "NOTYPE"):
            return
        self.exact.setdefault(address, name)
        self.labels.append((address, name))
        if kind == "FUNC" and size > 0:
            self.funcs.append((address, address + size, name))

    def finish(self) -> None:
        self.funcs.sort()
        self.labels.sort()

    def name(self, address: int) -> str | None:
        if address in self.exact:
            return self.exact[address]
        i = bisect.bisect_right(self.funcs, (address, float("inf"), ""))
        for start, end, name in reversed(self.funcs[:i]):
            if start <= address < end:
                return name
        j = bisect.bisect_right(self.labels, (address, "\uffff"))
        return self.labels[j - 1][1] if j else None


def _symbol_kind(sym) -> str:
    kind = sym["st_info"]["type"]
    return kind[4:] if isinstance(kind, str) and kind.startswith("STT_") else str(kind)


def _symbols_by_section(elf, relocatable: bool) -> dict[int | None, _Symbols]:
    """Symbols per section index (None: every defined symbol, by absolute address)."""
    from elftools.elf.sections import SymbolTableSection

    tables: dict[int | None, _Symbols] = {None: _Symbols()}
    for section in elf.iter_sections():
        if not isinstance(section, SymbolTableSection):
            continue
        for sym in section.iter_symbols():
            shndx = sym["st_shndx"]
            if not sym.name or not isinstance(shndx, int):
                continue
            address = sym["st_value"]
            if relocatable:
                address += elf.get_section(shndx)["sh_addr"]
            kind = _symbol_kind(sym)
            tables.setdefault(shndx, _Symbols()).add(address, sym["st_size"], sym.name, kind)
            tables[None].add(address, sym["st_size"], sym.name, kind)
    for table in tables.values():
        table.finish()
    return tables


def _code_regions(elf) -> list[tuple[int | None, int, bytes]]:
    """(section index or None, address, bytes) of executable code.

    Executable sections (SHF_EXECINSTR) when the file has them, otherwise
    executable PT_LOAD segments (a stripped image with no section headers).
    """
    from elftools.elf.constants import P_FLAGS, SH_FLAGS

    regions: list[tuple[int | None, int, bytes]] = []
    for index, section in enumerate(elf.iter_sections()):
        if section["sh_flags"] & SH_FLAGS.SHF_EXECINSTR and section["sh_type"] != "SHT_NOBITS":
            regions.append((index, section["sh_addr"], section.data()))
    if regions:
        return regions
    for segment in elf.iter_segments():
        if segment["p_type"] == "PT_LOAD" and segment["p_flags"] & P_FLAGS.PF_X:
            regions.append((None, segment["p_vaddr"], segment.data()[:segment["p_filesz"]]))
    return regions


def sites_from_elf(path: str | PathLike, *, offset: int = 0) -> tuple[list[Site], list[int]]:
    """SYSRET sites and WRMSR addresses in an x86 ELF file, `offset` added to each address.

    offset is the load bias (a KASLR slide, or where a relocatable object sits).
    In a relocatable object (.o) addresses are section-relative.
    Raises SiteError for a file that is not an x86 ELF; OSError if it cannot be read.
    """
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        try:
            elf = ELFFile(f)
            if elf["e_machine"] not in ("EM_X86_64", "EM_386"):
                raise SiteError(f"{path}: {elf['e_machine']} is not an x86 ELF")
            relocatable = elf["e_type"] == "ET_REL"
            symbols = _symbols_by_section(elf, relocatable)
            regions = _code_regions(elf)
        except ELFError as exc:
            raise SiteError(f"{path}: not a readable ELF file: {exc}") from exc
    sites: list[Site] = []
    wrmsrs: list[int] = []
    for shndx, address, data in regions:
        # Per section: a .o's section-relative addresses collide across sections, and a
        # label in another section is never the one containing the site.
        names = symbols[None] if shndx is None else symbols.get(shndx, _Symbols())
        for site in scan(data, address):
            sites.append(Site(site.address + offset, site.opsize, names.name(site.address),
                              site.length, site.shadowed))
        wrmsrs.extend(a + offset for a in scan_wrmsr(data, address))
    sites.sort(key=lambda s: s.address)
    return sites, sorted(wrmsrs)


def code_from_elf(path: str | PathLike, *, offset: int = 0) -> list[tuple[int, bytes, list[int]]]:
    """(address, bytes, instruction starts) of each code region of an x86 ELF
    file, `offset` added: the starts are its function and label symbols,
    where decoding can begin (gdbext.x86.length.proven)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        try:
            elf = ELFFile(f)
            relocatable = elf["e_type"] == "ET_REL"
            symbols = _symbols_by_section(elf, relocatable)
            regions = _code_regions(elf)
        except ELFError as exc:
            raise SiteError(f"{path}: not a readable ELF file: {exc}") from exc
    out = []
    for shndx, address, data in regions:
        names = symbols[None] if shndx is None else symbols.get(shndx, _Symbols())
        starts = sorted({a + offset for a, _ in names.labels if address <= a < address + len(data)} | {address + offset})
        out.append((address + offset, data, starts))
    return out


def table_loads_from_elf(path: str | PathLike, *, offset: int = 0) -> list[int]:
    """LGDT and LTR candidate addresses in an x86 ELF file (see scan_table_loads)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        try:
            regions = _code_regions(ELFFile(f))
        except ELFError as exc:
            raise SiteError(f"{path}: not a readable ELF file: {exc}") from exc
    return sorted(a + offset for _, address, data in regions for a in scan_table_loads(data, address))


__all__ = ["Site", "SiteError", "code_from_elf", "scan", "scan_table_loads", "scan_wrmsr", "sites_from_elf",
           "sysret_at", "table_loads_from_elf", "wrmsr_at"]


# --- LIDT sites (appended: the IDT follower of fault-watch) -------------------

def _modrm_operand_length(code: bytes, modrm_at: int) -> int | None:
    """Bytes of ModRM, SIB and displacement starting at `modrm_at`
    (gdbext.x86.length decodes them), or None when `code` ends first."""
    from gdbext.x86.length import _modrm_tail

    n = _modrm_tail(code, modrm_at)
    return n if n is not None and modrm_at + n <= len(code) else None


def scan_lidt(code: bytes, base: int) -> list[tuple[int, int]]:
    """Candidate LIDT instructions in `code` loaded at `base`: (address, length).

    LIDT is 0F 01 /3 with a memory operand (SDM Vol. 2A "LGDT/LIDT"); ModRM.mod
    11 with reg 3 is another instruction (VMMCALL, VMLOAD...).  As with the other
    scans, every start an instruction could have is a candidate; the length
    lets a watcher stop right after the instruction, when IDTR holds the new
    value."""
    out = []
    for opcode_at in _find(code, GROUP7):
        modrm_at = opcode_at + 2
        if modrm_at >= len(code):
            continue
        modrm = code[modrm_at]
        if _modrm_reg(modrm) != 3 or modrm >> 6 == 3:
            continue
        operand = _modrm_operand_length(code, modrm_at)
        if operand is None:
            continue
        end = modrm_at + operand
        out.extend((base + start, end - start) for start in _starts(code, opcode_at))
    return sorted(out)


def lidt_from_elf(path: str | PathLike, *, offset: int = 0) -> list[tuple[int, int]]:
    """LIDT candidates (address, length) in an x86 ELF file (see scan_lidt)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        try:
            regions = _code_regions(ELFFile(f))
        except ELFError as exc:
            raise SiteError(f"{path}: not a readable ELF file: {exc}") from exc
    return sorted((a + offset, n) for _, address, data in regions for a, n in scan_lidt(data, address))



# --- IRET sites ----------------------------------------------------------------
# IRET is CF (SDM Vol. 2A "IRET/IRETD/IRETQ"): with REX.W it is iretq (five
# 8-byte slots), with neither REX.W nor 66 iretd (4-byte slots), with 66 alone
# the 16-bit iret.  CF is a common byte inside other instructions (an
# immediate, a displacement, a ModRM), so these candidates need the proof of
# gdbext.x86.length before a breakpoint goes there.

IRET_OPCODE = 0xCF


def iret_at(code: bytes) -> int | None:
    """64, 32 or 16 (the operand size) if `code` starts with an IRET, else None."""
    i = 0
    rex_w = opsize16 = False
    while i < len(code) and i < MAX_INSTRUCTION - 1:
        byte = code[i]
        if byte in LEGACY_PREFIXES:
            rex_w = False              # a REX followed by a legacy prefix is ignored
            opsize16 = opsize16 or byte == 0x66
        elif _is_rex(byte):
            rex_w = bool(byte & REX_W)
        elif byte == IRET_OPCODE:
            return 64 if rex_w else 16 if opsize16 else 32
        else:
            return None
        i += 1
    return None


def scan_iret(code: bytes, base: int) -> list[Site]:
    """Candidate IRET sites in `code` loaded at `base` (every start an
    instruction ending at a CF could have), by address; `opsize` as iret_at."""
    sites = []
    at = code.find(IRET_OPCODE)
    while at >= 0:
        for n, start in enumerate(_starts(code, at, 1)):
            opsize = iret_at(code[start:at + 1])
            if opsize is not None:
                sites.append(Site(base + start, opsize, None, at + 1 - start, n > 0))
        at = code.find(IRET_OPCODE, at + 1)
    return sites


__all__ += ["iret_at", "scan_iret"]
