"""A fake physical memory and a builder of x86_64 page tables for tests.

The builder writes entries the way a kernel would (Intel SDM Vol. 3A 4.5):
table pointers get P, plus RW and US unless the test asks otherwise, so the
leaf decides the rights; tests that need a restrictive upper level poke the
entry with `set_entry`.
"""
from __future__ import annotations

from collections import Counter

from gdbext.x86.bits import CR0_PG, CR0_WP, CR4_LA57, CR4_PAE, EFER_LMA, EFER_NXE
from gdbext.x86.paging import (
    PTE_G,
    PTE_P,
    PTE_PK_SHIFT,
    PTE_PS,
    PTE_RW,
    PTE_US,
    PTE_XD,
    PagingContext,
)

PAGE = 4096
MASK64 = (1 << 64) - 1
ADDR = 0x000F_FFFF_FFFF_F000
SHIFTS = {"PML5": 48, "PML4": 39, "PDPT": 30, "PD": 21, "PT": 12}
LEVEL_FOR_SIZE = {1 << 30: "PDPT", 1 << 21: "PD", 1 << 12: "PT"}

# Long mode with NXE, as every 64-bit kernel runs.
EFER_LONG = EFER_LMA | (1 << 8) | EFER_NXE
CR0_LONG = CR0_PG | CR0_WP | 1  # PG, WP, PE
CR4_LONG = CR4_PAE


class FakeMemory:
    """Sparse guest-physical memory: unbacked pages read as zeros, like QEMU 7.2."""

    def __init__(self) -> None:
        self.pages: dict[int, bytearray] = {}
        self.reads: Counter = Counter()  # page-aligned address of each 4 KiB read

    def read(self, pa: int, size: int) -> bytes:
        if size == PAGE and pa % PAGE == 0:
            self.reads[pa] += 1
        out = bytearray()
        while size > 0:
            pfn, off = divmod(pa, PAGE)
            n = min(size, PAGE - off)
            page = self.pages.get(pfn)
            out += page[off:off + n] if page is not None else bytes(n)
            pa += n
            size -= n
        return bytes(out)

    def write(self, pa: int, data: bytes) -> None:
        while data:
            pfn, off = divmod(pa, PAGE)
            n = min(len(data), PAGE - off)
            page = self.pages.setdefault(pfn, bytearray(PAGE))
            page[off:off + n] = data[:n]
            pa += n
            data = data[n:]

    def read_u64(self, pa: int) -> int:
        return int.from_bytes(self.read(pa, 8), "little")

    def write_u64(self, pa: int, value: int) -> None:
        self.write(pa, (value & MASK64).to_bytes(8, "little"))


class PageTables:
    """Builds 4-level (or 5-level) tables in a FakeMemory.

    Tables are allocated from `alloc_base` upwards, one page each.
    """

    def __init__(self, mem: FakeMemory | None = None, *, levels: int = 4,
                 alloc_base: int = 0x10_0000, pointer_flags: int = PTE_P | PTE_RW | PTE_US):
        assert levels in (4, 5)
        self.mem = mem if mem is not None else FakeMemory()
        self.names = ("PML5", "PML4", "PDPT", "PD", "PT")[5 - levels:]
        self.next_table = alloc_base
        self.pointer_flags = pointer_flags
        self.root = self.alloc_table()

    def alloc_table(self) -> int:
        pa = self.next_table
        self.next_table += PAGE
        self.mem.write(pa, bytes(PAGE))
        return pa

    def entry_address(self, va: int, level: str) -> int:
        """Physical address of the `level` entry for `va`, creating tables above it."""
        table = self.root
        for name in self.names:
            slot = table + 8 * ((va >> SHIFTS[name]) & 0x1FF)
            if name == level:
                return slot
            entry = self.mem.read_u64(slot)
            if not entry & PTE_P:
                entry = self.alloc_table() | self.pointer_flags
                self.mem.write_u64(slot, entry)
            assert not entry & PTE_PS or name in ("PML5", "PML4"), "a large page is in the way"
            table = entry & ADDR
        raise KeyError(level)

    def set_entry(self, va: int, level: str, value: int) -> None:
        self.mem.write_u64(self.entry_address(va, level), value)

    def get_entry(self, va: int, level: str) -> int:
        return self.mem.read_u64(self.entry_address(va, level))

    def map(self, va: int, pa: int, size: int = PAGE, *, user: bool = False,
            writable: bool = True, nx: bool = False, global_: bool = False,
            pkey: int = 0, extra: int = 0) -> int:
        """Map one page of `size` (4 KiB, 2 MiB or 1 GiB); returns the entry written."""
        level = LEVEL_FOR_SIZE[size]
        assert va % size == 0 and pa % size == 0
        entry = pa | PTE_P | extra | (pkey << PTE_PK_SHIFT)
        entry |= (PTE_US if user else 0) | (PTE_RW if writable else 0)
        entry |= (PTE_XD if nx else 0) | (PTE_G if global_ else 0)
        if size != PAGE:
            entry |= PTE_PS
        self.set_entry(va, level, entry)
        return entry

    def map_range(self, va: int, pa: int, length: int, size: int = PAGE, **kw) -> None:
        for off in range(0, length, size):
            self.map(va + off, pa + off, size, **kw)

    def ctx(self, *, cr0: int = CR0_LONG, cr4: int = CR4_LONG, efer: int = EFER_LONG,
            cr3_low: int = 0, **kw) -> PagingContext:
        if len(self.names) == 5:
            cr4 |= CR4_LA57
        return PagingContext(cr3=self.root | cr3_low, cr0=cr0, cr4=cr4, efer=efer, **kw)


def canonical(va: int, bits: int = 48) -> int:
    """Sign-extend a `bits`-wide linear address to 64 bits."""
    va &= (1 << bits) - 1
    if va >> (bits - 1):
        va |= MASK64 & ~((1 << bits) - 1)
    return va
