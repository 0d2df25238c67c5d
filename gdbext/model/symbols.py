"""Symbols from an ELF file (pyelftools), for kernels gdb has no symbols for.

`gdbext-symbols FILE [OFFSET]` loads one; lookups then fall back to it when
gdb itself knows no symbol at an address.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import List, Optional, Tuple


class SymbolError(Exception):
    pass


@dataclass
class SymbolTable:
    path: str
    offset: int
    starts: List[int]
    entries: List[Tuple[int, int, str]]   # (address, size, name), sorted by address

    @classmethod
    def from_elf(cls, path: str, offset: int = 0) -> "SymbolTable":
        try:
            from elftools.common.exceptions import ELFError
            from elftools.elf.elffile import ELFFile
            from elftools.elf.sections import SymbolTableSection
        except ImportError as exc:  # pragma: no cover - init.py checks this first
            raise SymbolError(f"pyelftools is missing: {exc}") from None
        entries = []
        try:
            with open(path, "rb") as fh:
                elf = ELFFile(fh)
                for section in elf.iter_sections():
                    if not isinstance(section, SymbolTableSection):
                        continue
                    for sym in section.iter_symbols():
                        kind = sym["st_info"]["type"]
                        if kind not in ("STT_FUNC", "STT_OBJECT", "STT_NOTYPE") or not sym.name:
                            continue
                        if sym["st_shndx"] == "SHN_UNDEF" or sym.name.startswith("$"):
                            continue
                        entries.append(((sym["st_value"] + offset) & (2**64 - 1), sym["st_size"], sym.name))
        except OSError as exc:
            raise SymbolError(f"cannot read {path}: {exc.strerror}") from None
        except ELFError as exc:
            raise SymbolError(f"{path} is not an ELF file: {exc}") from None
        entries.sort()
        return cls(path, offset, [e[0] for e in entries], entries)

    def lookup(self, address: int) -> Optional[str]:
        i = bisect.bisect_right(self.starts, address) - 1
        while i >= 0:
            start, size, name = self.entries[i]
            if address == start:
                return name
            if start < address < start + max(size, 1) or (size == 0 and address - start < 0x1000
                                                           and i == len(self.entries) - 1):
                return f"{name}+{address - start:#x}"
            if size:
                return None
            i -= 1
            if i >= 0 and self.entries[i][0] != start:
                # a size-less label (assembly): the nearest one before is the answer
                return f"{name}+{address - start:#x}" if address - start < 0x10000 else None
        return None

    def address_of(self, name: str) -> Optional[int]:
        for start, _size, sym in self.entries:
            if sym == name:
                return start
        return None

    def __len__(self) -> int:
        return len(self.entries)
