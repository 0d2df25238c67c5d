"""4-level and 5-level page tables: walk one address, dump every mapping.

Everything here is a pure function of a `read_phys(pa, size) -> bytes`
callable and the control registers, so the same code runs inside gdb, over a
saved snapshot, and over a fake memory in unit tests.

The rules follow Intel SDM Vol. 3A chapter 4 "Paging" (4.5 "4-Level Paging
and 5-Level Paging", 4.6 "Access Rights", 4.6.2 "Protection Keys", 4.7
"Page-Fault Exceptions") and AMD APM Vol. 2 chapter 5 "Page Translation and
Protection".  Where the two differ, the comment says which one is followed.
"""
from __future__ import annotations

from itertools import chain, repeat
from operator import add

import struct
from collections.abc import Callable
from dataclasses import dataclass, fields

from gdbext.x86 import DecodeError


class PagingError(DecodeError):
    """The walk or dump cannot be done (short read, unsupported paging mode)."""


ReadPhys = Callable[[int, int], bytes]
# dump()'s progress callback: (tables read so far, leaf entries found so far).
Progress = Callable[[int, int], None]

TABLE_SIZE = 4096
ENTRIES = 512
_UNPACK_TABLE = struct.Struct("<512Q").unpack


def table_entries(page: bytes) -> tuple[int, ...]:
    """The 512 little-endian 8-byte entries of a 4 KiB table."""
    return _UNPACK_TABLE(page)

# -- control-register bits the walk depends on ------------------------------
# Intel SDM Vol. 3A 2.5 "Control Registers", 4.1.1 "Four Paging Modes" and
# 2.2.1 "Extended Feature Enable Register".
from gdbext.x86.bits import (  # noqa: E402 - beside the comment that says why they matter
    CR0_PG,
    CR0_WP,
    CR4_LA57,
    CR4_PCIDE,
    CR4_PKE,
    CR4_PKS,
    CR4_SMAP,
    CR4_SMEP,
    EFER_LMA,
    EFER_NXE,
    MASK64,
    is_canonical,
)

# CR3 in 4-level and 5-level paging (SDM 4.5, Table 4-12/4-13): bits 51:12
# hold the root table's address; bits 11:0 are the PCID when CR4.PCIDE=1,
# else PWT (3) and PCD (4); bits 63:52 are reserved or LAM controls.
CR3_ROOT_MASK = 0x000F_FFFF_FFFF_F000

# -- paging-structure entry bits --------------------------------------------
# SDM 4.5, Tables 4-14 (PML5E) and 4-15 (PML4E) to 4-20 (PTE); AMD APM
# Vol. 2 5.3.3 "Page-Translation-Table Entry Fields".
PTE_P = 1 << 0
PTE_RW = 1 << 1
PTE_US = 1 << 2
PTE_PWT = 1 << 3
PTE_PCD = 1 << 4
PTE_A = 1 << 5
PTE_D = 1 << 6      # leaf entries only; ignored in a table pointer
PTE_PS = 1 << 7     # PDPTE/PDE: maps a 1 GiB/2 MiB page; reserved in PML5E/PML4E
PTE_PAT = 1 << 7    # in a PTE, bit 7 is the PAT bit instead of PS
PTE_G = 1 << 8      # leaf entries only; ignored in a table pointer
PTE_PAT_LARGE = 1 << 12  # PAT moves to bit 12 in 1 GiB and 2 MiB entries
PTE_XD = 1 << 63    # execute-disable; reserved when EFER.NXE=0
PTE_PK_SHIFT = 59   # bits 62:59, protection key of a leaf (SDM 4.6.2)
PTE_PK_MASK = 0xF << PTE_PK_SHIFT
ADDRESS_MASK = 0x000F_FFFF_FFFF_F000  # bits 51:12 at most; MAXPHYADDR trims it

# Bits software may use: 11:9 and 58:52 everywhere (SDM marks them
# "Ignored"), plus 6 and 8 in a table pointer, plus 62:59 when protection
# keys are off (then the CPU ignores them too).
_AVL_ALWAYS = (0x7 << 9) | (0x7F << 52)
_AVL_POINTER = _AVL_ALWAYS | PTE_D | PTE_G | PTE_PK_MASK

LEVELS_4 = ("PML4", "PDPT", "PD", "PT")
LEVELS_5 = ("PML5", "PML4", "PDPT", "PD", "PT")
_SHIFT = {"PML5": 48, "PML4": 39, "PDPT": 30, "PD": 21, "PT": 12}

# Reserved address bits inside a large-page frame (SDM Table 4-16 "Format of
# a Page-Directory-Pointer-Table Entry (PDPTE) that Maps a 1-GByte Page": bits
# 29:13; Table 4-18 "... a Page-Directory Entry that Maps a 2-MByte Page":
# bits 20:13).  Bit 12 is the PAT bit in both.
_LARGE_RSVD = {"PDPT": ((1 << 30) - 1) & ~0x1FFF, "PD": ((1 << 21) - 1) & ~0x1FFF}


@dataclass(frozen=True)
class PagingContext:
    """The registers that decide how a linear address is translated."""

    cr3: int
    cr0: int
    cr4: int
    efer: int
    pkru: int | None = None
    maxphyaddr: int = 52
    # IA32_PKRS (MSR 0x6E1) for supervisor protection keys; rarely known.
    pkrs: int | None = None

    @property
    def paging(self) -> bool:
        return bool(self.cr0 & CR0_PG)

    @property
    def long_mode(self) -> bool:
        return bool(self.efer & EFER_LMA)

    @property
    def la57(self) -> bool:
        return bool(self.cr4 & CR4_LA57)

    @property
    def nxe(self) -> bool:
        return bool(self.efer & EFER_NXE)

    @property
    def wp(self) -> bool:
        return bool(self.cr0 & CR0_WP)

    @property
    def smep(self) -> bool:
        return bool(self.cr4 & CR4_SMEP)

    @property
    def smap(self) -> bool:
        return bool(self.cr4 & CR4_SMAP)

    @property
    def pke(self) -> bool:
        return bool(self.cr4 & CR4_PKE)

    @property
    def pks(self) -> bool:
        return bool(self.cr4 & CR4_PKS)

    @property
    def pcide(self) -> bool:
        return bool(self.cr4 & CR4_PCIDE)

    @property
    def root(self) -> int:
        """Physical address of the PML5/PML4 table, PCID and PWT/PCD masked."""
        return self.cr3 & CR3_ROOT_MASK

    @property
    def level_names(self) -> tuple[str, ...]:
        return LEVELS_5 if self.la57 else LEVELS_4

    @property
    def va_bits(self) -> int:
        return 57 if self.la57 else 48

    @classmethod
    def from_snapshot(cls, snap, *, maxphyaddr: int | None = None,
                      pkru: int | None = None) -> PagingContext:
        """The context of a gdbext.model.snapshot.Snapshot.

        QEMU's gdb stub exposes neither PKRU nor CPUID, so both may be given
        here; PKRU is taken from the registers when a target supplies it.
        """
        regs = snap.regs
        if pkru is None:
            pkru = regs.get("pkru")
        return cls(cr3=snap.cr3, cr0=snap.cr0, cr4=snap.cr4, efer=snap.efer,
                   pkru=pkru, maxphyaddr=maxphyaddr if maxphyaddr else 52)


@dataclass(frozen=True)
class Level:
    """One paging-structure entry met on a walk."""

    name: str
    table: int      # physical address of the table holding the entry
    index: int
    entry: int      # raw 64-bit value
    present: bool
    flags: tuple[str, ...]
    reserved: int   # reserved bits that are set (a #PF with RSVD=1)
    leaf: bool

    @property
    def address(self) -> int:
        """Physical address of the entry itself."""
        return self.table + 8 * self.index


@dataclass(frozen=True)
class Walk:
    """What the CPU does with one linear address."""

    va: int
    canonical: bool
    levels: tuple[Level, ...]
    pa: int | None
    page_size: int | None
    user: bool
    writable: bool
    executable: bool
    global_: bool
    pkey: int | None
    problem: str | None


@dataclass(frozen=True)
class Access:
    """Would an access fault, with which #PF error code, and why."""

    faults: bool
    error_code: int | None   # None when the fault is not a #PF (#GP)
    reason: str


@dataclass(frozen=True)
class Range:
    """Linear pages with contiguous frames and equal effective rights."""

    va_start: int
    va_end: int     # exclusive
    pa_start: int
    page_size: int
    user: bool
    writable: bool
    executable: bool
    global_: bool
    pkey: int | None
    pages: int


# -- helpers shared by walk and dump -----------------------------------------

def _address_reserved(ctx: PagingContext) -> int:
    """Bits MAXPHYADDR..51 of an entry, plus XD when EFER.NXE=0 (SDM 4.5.4)."""
    maxphy = min(max(ctx.maxphyaddr, 12), 52)
    mask = ((1 << 52) - 1) & ~((1 << maxphy) - 1)
    if not ctx.nxe:
        mask |= PTE_XD
    return mask


def _reserved_mask(ctx: PagingContext, name: str, entry: int) -> int:
    """Reserved bits of a present entry at level `name`."""
    mask = _address_reserved(ctx)
    if name in ("PML5", "PML4"):
        # PS is reserved in PML5Es and PML4Es (SDM Tables 4-14 and 4-15,
        # "Reserved (must be 0)").  Older manuals drew bits 8:7 of a PML4E as
        # reserved; the current SDM and QEMU's walker reserve bit 7 only, and
        # so do we.
        mask |= PTE_PS
    elif name in _LARGE_RSVD and entry & PTE_PS:
        mask |= _LARGE_RSVD[name]
    return mask


def _is_leaf(name: str, entry: int) -> bool:
    return name == "PT" or (name in _LARGE_RSVD and bool(entry & PTE_PS))


def _pk_enabled(ctx: PagingContext) -> bool:
    # Bits 62:59 are a protection key only when CR4.PKE or CR4.PKS is set
    # (SDM 4.6.2); otherwise the CPU ignores them.
    return ctx.pke or ctx.pks


def entry_flags(ctx: PagingContext, name: str, entry: int) -> tuple[str, ...]:
    """The names of the set bits of a present entry, in bit order."""
    leaf = _is_leaf(name, entry)
    out = [n for bit, n in ((PTE_P, "P"), (PTE_RW, "RW"), (PTE_US, "US"),
                            (PTE_PWT, "PWT"), (PTE_PCD, "PCD"), (PTE_A, "A"))
           if entry & bit]
    if leaf and entry & PTE_D:
        out.append("D")
    if name in _LARGE_RSVD and entry & PTE_PS:
        out.append("PS")
    if leaf and entry & PTE_G:
        out.append("G")
    if (name == "PT" and entry & PTE_PAT) or (name != "PT" and leaf and entry & PTE_PAT_LARGE):
        out.append("PAT")
    if ctx.nxe and entry & PTE_XD:
        out.append("NX")
    pk = leaf and _pk_enabled(ctx)
    if pk:
        out.append(f"PK={(entry >> PTE_PK_SHIFT) & 0xF}")
    avl = entry & (_AVL_ALWAYS if pk else (_AVL_POINTER if not leaf else _AVL_ALWAYS | PTE_PK_MASK))
    if avl:
        out.append(f"AVL={avl:#x}")
    return tuple(out)


def _check_mode(ctx: PagingContext) -> None:
    if ctx.paging and not ctx.long_mode:
        raise PagingError("32-bit and PAE paging are not decoded (EFER.LMA=0 with CR0.PG=1)")


def _read_u64(read_phys: ReadPhys, pa: int) -> int:
    data = read_phys(pa, 8)
    if len(data) != 8:
        raise PagingError(f"short read of the paging entry at physical {pa:#x}")
    return int.from_bytes(data, "little")


# -- walk --------------------------------------------------------------------

def _unmapped(va: int, canonical: bool, levels: list[Level], problem: str) -> Walk:
    return Walk(va=va, canonical=canonical, levels=tuple(levels), pa=None, page_size=None,
                user=False, writable=False, executable=False, global_=False, pkey=None,
                problem=problem)


def walk(read_phys: ReadPhys, ctx: PagingContext, va: int) -> Walk:
    """Translate `va` as the CPU would (SDM 4.5.4, 4.6.1).

    Rights are effective ones: U/S and R/W ANDed over every level, XD ORed
    (only with EFER.NXE).  The walk stops at the first non-present entry or
    the first entry with reserved bits, like the CPU.  With CR0.PG=0 the
    linear address is the physical one.
    """
    va &= MASK64
    _check_mode(ctx)
    if not ctx.paging:
        return Walk(va=va, canonical=True, levels=(), pa=va, page_size=None, user=True,
                    writable=True, executable=True, global_=False, pkey=None, problem=None)
    if not is_canonical(va, ctx.va_bits):
        return _unmapped(va, False, [],
                         f"non-canonical address for {5 if ctx.la57 else 4}-level paging")
    table = ctx.root
    user, writable, nx = True, True, False
    levels: list[Level] = []
    for name in ctx.level_names:
        index = (va >> _SHIFT[name]) & 0x1FF
        entry = _read_u64(read_phys, table + 8 * index)
        if not entry & PTE_P:
            levels.append(Level(name, table, index, entry, False, (), 0, False))
            return _unmapped(va, True, levels, f"not present at {name} (entry {entry:#x})")
        leaf = _is_leaf(name, entry)
        reserved = entry & _reserved_mask(ctx, name, entry)
        levels.append(Level(name, table, index, entry, True, entry_flags(ctx, name, entry),
                            reserved, leaf))
        if reserved:
            return _unmapped(va, True, levels,
                             f"reserved bits {reserved:#x} set in {name} entry {entry:#x}")
        user = user and bool(entry & PTE_US)
        writable = writable and bool(entry & PTE_RW)
        nx = nx or (ctx.nxe and bool(entry & PTE_XD))
        if leaf:
            size = 1 << _SHIFT[name]
            frame = entry & ADDRESS_MASK & ~(size - 1)
            pkey = (entry >> PTE_PK_SHIFT) & 0xF if _pk_enabled(ctx) else None
            return Walk(va=va, canonical=True, levels=tuple(levels), pa=frame | (va & (size - 1)),
                        page_size=size, user=user, writable=writable, executable=not nx,
                        global_=bool(entry & PTE_G), pkey=pkey, problem=None)
        table = entry & ADDRESS_MASK
    raise AssertionError("the PT level is always a leaf")  # pragma: no cover


# -- access check ------------------------------------------------------------

ACCESSES = ("read", "write", "exec")

# Page-fault error code bits (SDM 4.7 "Page-Fault Exceptions", Figure 4-12).
PF_P = 1 << 0      # 0: not present; 1: protection violation
PF_WR = 1 << 1     # the access was a write
PF_US = 1 << 2     # the access was a user-mode access (CPL 3)
PF_RSVD = 1 << 3   # a reserved bit was set in some paging-structure entry
PF_ID = 1 << 4     # instruction fetch (only with SMEP or NXE)
PF_PK = 1 << 5     # protection-key violation
PF_SS = 1 << 6     # shadow-stack access (never produced here)


def _first_level_without(w: Walk, bit: int) -> str:
    return next((lv.name for lv in w.levels if not lv.entry & bit), "?")


def _first_level_with(w: Walk, bit: int) -> str:
    return next((lv.name for lv in w.levels if lv.entry & bit), "?")


def _rights_violation(w: Walk, ctx: PagingContext, access: str, user: bool,
                      ac: bool) -> str | None:
    """Why the ordinary access rights refuse the access (SDM 4.6.1), or None."""
    if user:
        if not w.user:
            return f"user-mode access to a supervisor-mode page (U/S=0 at {_first_level_without(w, PTE_US)})"
        if access == "write" and not w.writable:
            return f"user-mode write to a read-only page (R/W=0 at {_first_level_without(w, PTE_RW)})"
    elif access == "exec":
        if w.user and ctx.smep:
            return "supervisor-mode fetch from a user-mode page with CR4.SMEP=1"
    else:
        if w.user and ctx.smap and not ac:
            return "supervisor-mode data access to a user-mode page with CR4.SMAP=1 and EFLAGS.AC=0"
        if access == "write" and not w.writable and ctx.wp:
            return ("supervisor-mode write to a read-only page with CR0.WP=1 "
                    f"(R/W=0 at {_first_level_without(w, PTE_RW)})")
    if access == "exec" and not w.executable:
        return f"instruction fetch from a no-execute page (XD=1 at {_first_level_with(w, PTE_XD)})"
    return None


def _pkey_violation(w: Walk, ctx: PagingContext, access: str, user: bool) -> tuple[str | None, str]:
    """A protection-key refusal (SDM 4.6.2), and a note when it cannot be known.

    Keys govern data accesses only.  PKRU covers user-mode pages for any CPL;
    PKRS covers supervisor-mode pages.  WD stops supervisor-mode writes only
    when CR0.WP=1.
    """
    if access == "exec" or w.pkey is None:
        return None, ""
    if w.user and ctx.pke:
        reg, value = "PKRU", ctx.pkru
    elif not w.user and ctx.pks:
        reg, value = "PKRS", ctx.pkrs
    else:
        return None, ""
    if value is None:
        return None, f"; protection key {w.pkey} not checked ({reg} unknown)"
    k = w.pkey
    if (value >> (2 * k)) & 1:
        return f"{reg}.AD{k}=1 forbids data access to pages with protection key {k}", ""
    if access == "write" and (value >> (2 * k + 1)) & 1 and (user or ctx.wp):
        return f"{reg}.WD{k}=1 forbids writes to pages with protection key {k}", ""
    return None, ""


def check_access(w: Walk, ctx: PagingContext, access: str, *, user: bool,
                 rflags_ac: bool = False) -> Access:
    """Would `access` ("read", "write", "exec") to `w.va` fault, at CPL 3 if `user`?

    Models explicit accesses; implicit supervisor accesses (to the GDT, IDT,
    TSS...) ignore EFLAGS.AC under SMAP, so pass rflags_ac=False for them.
    The error code is the one the CPU pushes (SDM 4.7); shadow-stack and SGX
    bits are never set.
    """
    if access not in ACCESSES:
        raise PagingError(f"access must be one of {', '.join(ACCESSES)}, not {access!r}")
    if not w.canonical:
        return Access(True, None, f"{w.problem}: #GP (#SS for stack accesses), not #PF")
    code = (PF_WR if access == "write" else 0) | (PF_US if user else 0)
    if access == "exec" and (ctx.smep or ctx.nxe):
        code |= PF_ID
    if w.pa is None:
        last = w.levels[-1] if w.levels else None
        if last is not None and last.present and last.reserved:
            return Access(True, code | PF_P | PF_RSVD, w.problem or "reserved bit set")
        return Access(True, code, w.problem or "not present")
    if not w.levels:
        return Access(False, None, "allowed: paging is disabled")
    why = _rights_violation(w, ctx, access, user, rflags_ac)
    # SDM 4.7 defines the PK bit by the key and PKRU alone, so it is set even
    # when the ordinary rights refuse the access as well.
    pk_why, note = _pkey_violation(w, ctx, access, user)
    if why or pk_why:
        code |= PF_P | (PF_PK if pk_why else 0)
        return Access(True, code, "; ".join(r for r in (why, pk_why) if r))
    mode = "user" if user else "supervisor"
    return Access(False, None, f"allowed: {mode}-mode {access}{note}")


# -- dump --------------------------------------------------------------------

_RANGE_FIELDS = tuple(f.name for f in fields(Range))


def _new_range(values: tuple) -> Range:
    # Range's generated frozen __init__ costs ~1.3 us (one object.__setattr__
    # per field); a dump of a million scattered 4 KiB pages builds a million
    # Ranges, so fill the instance dict directly.  The result is an ordinary
    # frozen Range (equal, hashable, immutable).
    r = object.__new__(Range)
    r.__dict__.update(zip(_RANGE_FIELDS, values))
    return r


def _run_range(va: int, end: int, end_pa: int, size: int, a: tuple, pages: int) -> Range:
    """A Range from a run and its rights (user, writable, executable,
    global, pkey): _new_range with the dict written as a display, half the
    cost (0.3 us), which is much of a dump of 100,000 scattered pages."""
    r = object.__new__(Range)
    r.__dict__.update({"va_start": va, "va_end": end, "pa_start": end_pa - (end - va), "page_size": size,
                       "user": a[0], "writable": a[1], "executable": a[2], "global_": a[3],
                       "pkey": a[4], "pages": pages})
    return r


class _Replay:
    """One PT's runs relative to its first VA, by column, and its problems."""

    __slots__ = ("starts", "ends", "end_pas", "keys", "pages", "count", "found", "problems")

    def __init__(self, runs: list[int], problems: list | None):
        self.starts, self.ends, self.end_pas = runs[0::6], runs[1::6], runs[2::6]
        self.keys, self.pages = runs[4::6], runs[5::6]
        self.count = len(self.starts)
        self.found = sum(self.pages)
        self.problems = problems


class _Dumper:
    """Depth-first over the tables, merging leaves into runs as it goes.

    Every table is read once and its raw bytes kept, so a table reached again
    (shared by two slots, or a recursive slot that points back at an
    ancestor) costs no second read.  Such a table is still interpreted for
    every path that reaches it, because each path is a real mapping.
    Recursion cannot loop: a path is at most 4 (or 5) entries long, and a
    self-reference is just read as the next level down, as the CPU would read
    it.  A PML4 slot pointing at the PML4 therefore adds one 4 KiB page per
    table (and per large-page frame) to the dump, and nothing more.
    """

    def __init__(self, read_phys: ReadPhys, ctx: PagingContext, lo: int, hi: int,
                 problems: list | None, user_only: bool = False,
                 progress: Progress | None = None):
        self.read_phys = read_phys
        self.ctx = ctx
        self.lo, self.hi = lo, hi
        self.problems = problems
        # U/S must be set in every entry of a user page's walk (SDM 4.6.1):
        # with user_only, an entry with U/S=0 ends its whole subtree.
        self.need_us = PTE_US if user_only else 0
        self.progress = progress
        self.leaf_count = 0   # leaf entries found, for progress
        self.names = ctx.level_names
        self.tables: dict[int, bytes] = {}
        # (PT, U/S+R/W from above, XD from above) -> its runs relative to
        # its first VA (six ints each, as `runs`) and its problems.
        self.leaf_memo: dict[tuple[int, int, int], _Replay] = {}
        self.pk = _pk_enabled(ctx)
        # Bits of a leaf that make up its effective rights, besides U/S and
        # R/W which the upper levels may already have taken away.
        self.leaf_bits = PTE_G | (PTE_XD if ctx.nxe else 0) | (PTE_PK_MASK if self.pk else 0)
        self.nx_bit = PTE_XD if ctx.nxe else 0
        self.addr_rsvd = _address_reserved(ctx)
        # Finished runs, six ints each (va, end, end_pa, page_size, key,
        # pages): plain ints keep the cyclic GC out of a million-page dump.
        self.runs: list[int] = []
        # The open run: [va, end, end_pa, page_size, key, pages] or None.
        self.run: list[int] | None = None

    def table(self, pa: int) -> tuple[int, ...]:
        raw = self.tables.get(pa)
        if raw is None:
            raw = self.read_phys(pa, TABLE_SIZE)
            if len(raw) != TABLE_SIZE:
                raise PagingError(f"short read of the page table at physical {pa:#x}")
            self.tables[pa] = raw
        return _UNPACK_TABLE(raw)

    def problem(self, va: int, text: str) -> None:
        if self.problems is not None:
            self.problems.append((va, text))

    def descend(self, table: int, depth: int, va_base: int, keep: int, nx: int) -> None:
        """Interpret `table` at level `depth`; `keep` holds the U/S and R/W bits
        every level above granted, `nx` the XD bit if some level above set it."""
        name = self.names[depth]
        if name == "PT":
            self.leaves(table, va_base, keep, nx)
            return
        shift = _SHIFT[name]
        span = 1 << shift
        top = depth == 0
        sign = ~((1 << (shift + 9)) - 1) & MASK64
        lo, hi = self.lo, self.hi
        ctx = self.ctx
        # The reserved bits of this level's entries (see _reserved_mask), for
        # a pointer and for a large page, computed once per table.
        rsvd_pointer = _reserved_mask(ctx, name, 0)
        large = name in _LARGE_RSVD
        rsvd_large = _reserved_mask(ctx, name, PTE_PS) if large else 0
        large_mask = keep | self.leaf_bits
        frame = ADDRESS_MASK & ~(span - 1)
        need_us = self.need_us
        for i, e in enumerate(self.table(table)):
            if not e & PTE_P:
                continue  # the CPU ignores every other bit of a non-present entry
            if need_us and not e & need_us:
                continue  # supervisor-only below here (user_only)
            va = va_base + (i << shift)
            if top and i >= 256:
                va |= sign  # upper half: sign-extend to a canonical address
            if va + span <= lo or va >= hi:
                continue
            if large and e & PTE_PS:
                rsvd = e & rsvd_large
                if rsvd:
                    self.problem(va, f"reserved bits {rsvd:#x} set in {name} entry {e:#x}")
                    continue
                # One large page, merged into the open run when it continues
                # it (add(), inlined: a 4 GiB identity map is 2,048 of them).
                key = (e & large_mask) | nx
                pa = e & frame
                run = self.run
                if run is not None and va == run[1] and pa == run[2] and key == run[4] and run[3] == span:
                    run[1] += span
                    run[2] += span
                    run[5] += 1
                else:
                    if run is not None:
                        self.runs.extend(run)
                    self.run = [va, va + span, pa + span, span, key, 1]
                self.leaf_count += 1
                continue
            rsvd = e & rsvd_pointer
            if rsvd:
                self.problem(va, f"reserved bits {rsvd:#x} set in {name} entry {e:#x}")
                continue
            self.descend(e & ADDRESS_MASK, depth + 1, va, keep & e, nx | (e & self.nx_bit))
        if self.progress is not None:
            self.progress(len(self.tables), self.leaf_count)

    def leaves(self, table: int, va_base: int, keep: int, nx: int) -> None:
        """The 4 KiB pages of one PT, merged into the open run.

        A PT the window covers whole is interpreted once per (table, rights
        from above): the same PT reached again (Linux's ESPFIX area reaches
        a few tables thousands of times) gives the same runs at another VA,
        so its runs are kept relative to the table's start and replayed."""
        if not (va_base >= self.lo and va_base + (1 << 21) <= self.hi):
            self._scan_leaves(table, va_base, keep, nx)
            if self.progress is not None:
                self.progress(len(self.tables), self.leaf_count)
            return
        memo = self.leaf_memo.get((table, keep, nx))
        if memo is None:
            saved = self.run, self.runs, self.problems, self.leaf_count
            self.run, self.runs = None, []
            self.problems = [] if saved[2] is not None else None
            try:
                self._scan_leaves(table, 0, keep, nx, whole=True)
                if self.run is not None:
                    self.runs.extend(self.run)
                memo = self.leaf_memo[(table, keep, nx)] = _Replay(self.runs, self.problems)
            finally:
                self.run, self.runs, self.problems, self.leaf_count = saved
        if memo.problems:
            for va, text in memo.problems:
                self.problem(va_base + va, text)
        run = self.run
        if run is not None and run[3] != TABLE_SIZE:
            self.runs.extend(run)
            run = None
        n = memo.count
        if n:
            first = 0
            start = memo.starts[0] + va_base
            if run is not None and run[1] == start and run[2] == memo.end_pas[0] - memo.pages[0] * TABLE_SIZE \
                    and run[4] == memo.keys[0]:
                run[1] = memo.ends[0] + va_base      # the table's first run continues the open one
                run[2] = memo.end_pas[0]
                run[5] += memo.pages[0]
                first = 1
            if first < n:
                if run is not None:
                    self.runs.extend(run)
                last = n - 1
                if first < last:
                    # The runs in between, shifted to this VA, a column at a
                    # time in C (ESPFIX: 2,000 replays of 32 runs).
                    shift = repeat(va_base)
                    self.runs.extend(chain.from_iterable(zip(
                        map(add, memo.starts[first:last], shift), map(add, memo.ends[first:last], shift),
                        memo.end_pas[first:last], repeat(TABLE_SIZE, last - first), memo.keys[first:last],
                        memo.pages[first:last])))
                run = [memo.starts[last] + va_base, memo.ends[last] + va_base, memo.end_pas[last], TABLE_SIZE,
                       memo.keys[last], memo.pages[last]]
        self.run = run
        self.leaf_count += memo.found
        if self.progress is not None:
            self.progress(len(self.tables), self.leaf_count)

    def _scan_leaves(self, table: int, va_base: int, keep: int, nx: int, whole: bool = False) -> None:
        """The hot loop: every entry of one PT, merged into the open run."""
        mask = keep | self.leaf_bits
        rsvd = self.addr_rsvd
        lo, hi = self.lo, self.hi
        need_us = self.need_us
        found = 0
        runs = self.runs
        run = self.run
        if run is not None and run[3] == TABLE_SIZE:
            start, end, end_pa, _, cur, pages = run
        else:
            if run is not None:
                runs.extend(run)
            start = end = end_pa = cur = -1
            pages = 0
        for i, e in enumerate(self.table(table)):
            if not e & 1:
                continue
            va = va_base + (i << 12)
            if not whole and (va < lo or va >= hi):
                continue
            if need_us and not e & need_us:
                continue
            if e & rsvd:
                self.problem(va, f"reserved bits {e & rsvd:#x} set in PT entry {e:#x}")
                continue
            found += 1
            pa = e & ADDRESS_MASK
            key = (e & mask) | nx
            if va == end and pa == end_pa and key == cur:
                pages += 1
            else:
                if pages:
                    runs += (start, end, end_pa, TABLE_SIZE, cur, pages)
                start, cur, pages = va, key, 1
            end = va + TABLE_SIZE
            end_pa = pa + TABLE_SIZE
        self.run = [start, end, end_pa, TABLE_SIZE, cur, pages] if pages else None
        self.leaf_count += found

    def finish(self) -> "Dumped":
        if self.run is not None:
            self.runs.extend(self.run)
            self.run = None
        return Dumped(self.runs, self.pk)

    def ranges(self) -> list[Range]:
        return self.finish().ranges()


class Dumped:
    """A dump's runs, six ints each (va, end, end_pa, page_size, key, pages),
    made into Ranges only when asked: a Linux dump has 65,000 of them, most
    of them ESPFIX's one page repeated, which the text shows as one line."""

    def __init__(self, flat: list[int], pk: bool):
        self.flat = flat
        self.pk = pk
        self._attrs: dict[int, tuple] = {}

    def __len__(self) -> int:
        return len(self.flat) // 6

    def _attributes(self, key: int) -> tuple:
        a = self._attrs.get(key)
        if a is None:
            a = self._attrs[key] = (
                bool(key & PTE_US), bool(key & PTE_RW), not key & PTE_XD, bool(key & PTE_G),
                (key >> PTE_PK_SHIFT) & 0xF if self.pk else None)
        return a

    def _range(self, n: int) -> Range:
        va, end, end_pa, size, key, pages = self.flat[n:n + 6]
        return _run_range(va, end, end_pa, size, self._attributes(key), pages)

    def ranges(self) -> list[Range]:
        flat = iter(self.flat)
        attrs = self._attrs
        out = []
        for va, end, end_pa, size, key, pages in zip(flat, flat, flat, flat, flat, flat):
            a = attrs.get(key) or self._attributes(key)
            out.append(_run_range(va, end, end_pa, size, a, pages))
        return out

    def mapped_bytes(self) -> int:
        flat = self.flat
        return sum(flat[1::6]) - sum(flat[0::6])   # ends minus starts, summed in C

    def folded(self, least: int) -> list[tuple[Range, int, int]]:
        """Runs that map the same frames with the same rights at a fixed VA
        stride, `least` or more of them, as (first, count, stride); any other
        range as (range, 1, 0).  The same greedy grouping as views.ptdump's
        fold_repeats over ranges(), made on the ints; a group's end is found
        by comparing whole slices of it at once (_group_end), so ESPFIX's
        65,536 repeats cost a few slice comparisons, not a loop each."""
        flat = self.flat
        n = len(flat) // 6
        least = max(least, 2)
        out = []
        i = 0
        while i < n:
            b = 6 * i
            if i + 1 < n:
                va, end, end_pa, size, key = flat[b:b + 5]
                va2, end2, end_pa2, size2, key2 = flat[b + 6:b + 11]
                # The same kind: same length and end frame (so the same first
                # frame), page size and rights.
                if end2 - va2 == end - va and end_pa2 == end_pa and size2 == size and key2 == key:
                    stride = va2 - va
                    j = self._group_end(i, n, stride)
                    if j - i >= least:
                        out.append((self._range(b), j - i, stride))
                        i = j
                        continue
            out.append((self._range(b), 1, 0))
            i += 1
        return out

    def _members(self, i: int, first: int, count: int, stride: int) -> bool:
        """Whether runs first..first+count-1 are all of run i's kind, at its
        VA plus a multiple of stride (compared a column at a time, in C)."""
        flat = self.flat
        va, end, end_pa, size, key = flat[6 * i:6 * i + 5]
        b, e = 6 * first, 6 * (first + count)
        va0 = va + (first - i) * stride
        length = end - va
        return (flat[b + 2:e:6] == [end_pa] * count and flat[b + 4:e:6] == [key] * count
                and flat[b + 3:e:6] == [size] * count
                and flat[b:e:6] == list(range(va0, va0 + count * stride, stride))
                and flat[b + 1:e:6] == list(range(va0 + length, va0 + length + count * stride, stride)))

    def _group_end(self, i: int, n: int, stride: int) -> int:
        """One past the last run of the group that runs i and i+1 start:
        grown by doubling, then its end narrowed by halving."""
        good = 2          # runs i and i+1 are in it
        want = 2
        while True:
            want = min(want, n - i - good)
            if want <= 0:
                return i + good
            if not self._members(i, i + good, want, stride):
                break
            good += want
            want *= 2
        # Some run of [good, good + want) is not a member; the first one ends the group.
        while want > 1:
            half = want // 2
            if self._members(i, i + good, half, stride):
                good += half
                want -= half
            else:
                want = half
        return i + good


def dump(read_phys: ReadPhys, ctx: PagingContext, *, va_start: int = 0,
         va_end: int = 1 << 64, problems: list | None = None, user_only: bool = False,
         progress: Progress | None = None) -> list[Range]:
    """Every mapped page overlapping [va_start, va_end), merged into Ranges.

    Pages are merged while VA and PA stay contiguous and page size and
    effective rights (user, writable, executable, global, pkey) stay equal.
    Ranges are whole pages, so the first and last may stick out of the
    window.  VAs are canonical (sign-extended).  Entries with reserved bits
    are not mappings; each is reported in `problems` as (va, sentence) when
    a list is given.  See _Dumper for how shared and recursive tables are
    handled.

    user_only: only user-accessible pages (U/S=1 at every level, SDM
    4.6.1), found without descending below an entry with U/S=0: the same
    ranges as filtering a whole dump by Range.user, at the cost of the user
    part alone (the user tables of Linux's KPTI still map ~65,000 ESPFIX
    pages in their kernel half).  Reserved bits are then reported only in
    entries that could map user pages.

    progress(tables, leaves) is called after each table is interpreted, with
    the distinct tables read and the leaf entries found so far; it may raise
    (KeyboardInterrupt, say) to stop the dump.  The time a dump takes grows
    linearly with the entries present (plus 512 steps per table read).
    """
    _check_mode(ctx)
    if not ctx.paging:
        raise PagingError("paging is disabled (CR0.PG=0): there are no page tables to dump")
    return dump_runs(read_phys, ctx, va_start=va_start, va_end=va_end, problems=problems,
                     user_only=user_only, progress=progress).ranges()


def dump_runs(read_phys: ReadPhys, ctx: PagingContext, *, va_start: int = 0,
              va_end: int = 1 << 64, problems: list | None = None, user_only: bool = False,
              progress: Progress | None = None) -> Dumped:
    """dump(), with the ranges left as runs until asked for (Dumped)."""
    _check_mode(ctx)
    if not ctx.paging:
        raise PagingError("paging is disabled (CR0.PG=0): there are no page tables to dump")
    dumper = _Dumper(read_phys, ctx, va_start, va_end, problems, user_only, progress)
    dumper.descend(ctx.root, 0, 0, PTE_US | PTE_RW, 0)
    return dumper.finish()


def wx_ranges(ranges: list[Range]) -> list[Range]:
    """Ranges both writable and executable, user-mode ones first."""
    found = [r for r in ranges if r.writable and r.executable]
    return sorted(found, key=lambda r: not r.user)  # stable: VA order within each group


def find_phys(ranges: list[Range], pa: int) -> list[int]:
    """Every linear address that maps physical address `pa`."""
    out = []
    for r in ranges:
        offset = pa - r.pa_start
        if 0 <= offset < r.va_end - r.va_start:
            out.append(r.va_start + offset)
    return sorted(out)
