"""`pagewalk`: the CPU's walk of one address, level by level, and what each access does.

Pure: no gdb.  The report is data built from the decoders' results
(gdbext.x86.paging); the text is rendered from the same data."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gdbext.model.snapshot import PAGE, Snapshot
from gdbext.views.common import ABSENT, _Absent, hx
from gdbext.views.text import fit_lines, fit_table, simple_table
from gdbext.x86.bits import MASK64
from gdbext.x86.paging import (
    ACCESSES,
    PF_ID,
    PF_P,
    PF_PK,
    PF_RSVD,
    PF_US,
    PF_WR,
    PTE_P,
    PTE_PS,
    PagingContext,
    Walk,
    check_access,
    table_entries,
)

MODES = ("user", "supervisor")


# Text shows this many reserved-bit warnings; a page that is not a page
# table at all would otherwise print one per slot.
MAX_WARNINGS = 10


# #PF error-code bits by the names the SDM gives them (Vol. 3A 4.7,
# "Page-Fault Exceptions", Figure 4-12).
_PF_BITS = ((PF_P, "P"), (PF_WR, "W/R"), (PF_US, "U/S"), (PF_RSVD, "RSVD"), (PF_ID, "I/D"),
            (PF_PK, "PK"))


def pf_bits(code: int | None) -> list[str]:
    """The names of the set bits of a #PF error code."""
    if code is None:
        return []
    return [name for bit, name in _PF_BITS if code & bit]


def size_text(size: int | None) -> str:
    """4096 -> '4 KiB', 0x200000 -> '2 MiB', 0x3000 -> '12 KiB'."""
    if size is None:
        return "-"
    for shift, unit in ((40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} B"


@dataclass(frozen=True)
class ContextReport:
    """The registers that decide the translation, with the bits a reader needs."""

    cr0: int
    cr3: int
    cr4: int
    efer: int
    root: int
    pcid: int | None
    levels: int
    paging: bool
    wp: bool
    nxe: bool
    smep: bool
    smap: bool
    pke: bool
    pks: bool
    pkru: int | None


def context_report(ctx: PagingContext) -> ContextReport:
    """CR3 bits 11:0 are a PCID when CR4.PCIDE=1 (SDM Vol. 3A 4.10.1), else PWT
    and PCD; either way they are not part of the root table's address.
    """
    return ContextReport(
        cr0=ctx.cr0, cr3=ctx.cr3, cr4=ctx.cr4, efer=ctx.efer,
        root=ctx.root,
        pcid=ctx.cr3 & 0xFFF if ctx.pcide else None,
        levels=5 if ctx.la57 else 4,
        paging=ctx.paging,
        wp=ctx.wp, nxe=ctx.nxe, smep=ctx.smep, smap=ctx.smap,
        pke=ctx.pke, pks=ctx.pks,
        pkru=ctx.pkru,
    )


def _context_line(c: ContextReport) -> str:
    pcid = f" PCID={c.pcid:#x}" if c.pcid is not None else ""
    bits = " ".join(f"{name}={int(value)}" for name, value in (
        ("CR0.WP", c.wp), ("EFER.NXE", c.nxe), ("CR4.SMEP", c.smep), ("CR4.SMAP", c.smap),
        ("CR4.PKE", c.pke)))
    if not c.paging:
        return f"paging off (CR0.PG=0)  {bits}"
    return f"CR3={hx(c.cr3)} (root table {hx(c.root)}{pcid})  {c.levels}-level paging  {bits}"


def pkru_note(ctx: PagingContext) -> str | None:
    """Why protection keys of user pages could not be checked, or None."""
    if ctx.pke and ctx.pkru is None:
        return "PKRU unknown: QEMU's gdb stub does not expose it; give --pkru VALUE to check protection keys"
    return None


def _shift(ctx: PagingContext, depth: int) -> int:
    """VA bit where the index of level `depth` starts (SDM Vol. 3A 4.5,
    Figure 4-8/4-9: 9 index bits per level above the 12-bit page offset)."""
    return 12 + 9 * (len(ctx.level_names) - 1 - depth)


@dataclass(frozen=True)
class WalkLevel:
    """One table the CPU read.  page_size is in the JSON only for the leaf
    that maps the page (present, no reserved bits)."""

    name: str
    table: int
    index: int
    entry_address: int
    entry: int
    present: bool
    flags: tuple[str, ...]
    reserved: int
    leaf: bool
    span: int
    problem: str | None
    page_size: int | _Absent = ABSENT


@dataclass(frozen=True)
class Access:
    """One access checked: whether it faults, with the #PF error code (None
    for a #GP) and why."""

    faults: bool
    error_code: int | None
    error_bits: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class WalkReport:
    """`pagewalk`.  access[mode][kind]: mode "user"|"supervisor", kind
    "read"|"write"|"exec", as asked.  cpl and phys_source are the command's:
    the stopped vCPU's CPL and where physical memory was read from."""

    va: int
    canonical: bool
    pa: int | None
    page_size: int | None
    user: bool
    writable: bool
    executable: bool
    global_: bool               # JSON "global"
    pkey: int | None
    problem: str | None
    problem_level: str | None
    context: ContextReport
    rflags_ac: bool
    levels: tuple[WalkLevel, ...]
    access: dict[str, dict[str, Access]]
    notes: tuple[str, ...]
    cpl: int | None = None
    phys_source: str | None = None


def _level_report(ctx: PagingContext, depth: int, lv) -> WalkLevel:
    span = 1 << _shift(ctx, depth)
    problem = None
    page_size: int | _Absent = ABSENT
    if not lv.present:
        problem = "not present (P=0)"
    elif lv.reserved:
        problem = f"reserved bits {lv.reserved:#x} set"
    elif lv.leaf:
        page_size = span
    return WalkLevel(name=lv.name, table=lv.table, index=lv.index, entry_address=lv.address,
                     entry=lv.entry, present=lv.present, flags=tuple(lv.flags), reserved=lv.reserved,
                     leaf=lv.leaf, span=span, problem=problem, page_size=page_size)


def access_report(w: Walk, ctx: PagingContext, modes: Sequence[str], accesses: Sequence[str],
                  rflags_ac: bool) -> dict[str, dict[str, Access]]:
    """access[mode][kind]: what each access does."""
    out: dict[str, dict[str, Access]] = {}
    for mode in modes:
        out[mode] = {}
        for kind in accesses:
            a = check_access(w, ctx, kind, user=mode == "user", rflags_ac=rflags_ac)
            out[mode][kind] = Access(faults=a.faults, error_code=a.error_code,
                                     error_bits=tuple(pf_bits(a.error_code)), reason=a.reason)
    return out


def walk_report(w: Walk, ctx: PagingContext, *, modes: Sequence[str] = MODES,
                accesses: Sequence[str] = ACCESSES, rflags_ac: bool = False,
                notes: Iterable[str] = (), cpl: int | None = None,
                phys_source: str | None = None) -> WalkReport:
    """What the CPU does with `w.va`: every level, the frame, the rights, the accesses."""
    levels = tuple(_level_report(ctx, i, lv) for i, lv in enumerate(w.levels))
    note_list = list(notes)
    pk = pkru_note(ctx)
    if pk and w.pkey is not None and w.user:
        note_list.append(pk)
    return WalkReport(
        va=w.va,
        canonical=w.canonical,
        pa=w.pa,
        page_size=w.page_size,
        user=w.user,
        writable=w.writable,
        executable=w.executable,
        global_=w.global_,
        pkey=w.pkey,
        problem=w.problem,
        problem_level=_problem_level(w),
        context=context_report(ctx),
        rflags_ac=rflags_ac,
        levels=levels,
        access=access_report(w, ctx, modes, accesses, rflags_ac),
        notes=tuple(note_list),
        cpl=cpl,
        phys_source=phys_source,
    )


def _problem_level(w: Walk) -> str | None:
    if w.pa is not None or not w.levels:
        return None
    return w.levels[-1].name


def _rights_words(r: WalkReport) -> str:
    words = ["user" if r.user else "supervisor-only",
             "writable" if r.writable else "read-only",
             "executable" if r.executable else "no-execute"]
    if r.global_:
        words.append("global")
    if r.pkey is not None:
        words.append(f"protection key {r.pkey}")
    return ", ".join(words)


def _access_cell(a: Access) -> str:
    if not a.faults:
        return "ok"
    if a.error_code is None:
        return "#GP"
    bits = f" [{' '.join(a.error_bits)}]" if a.error_bits else ""
    return f"#PF {a.error_code:#x}{bits}"


def _access_lines(r: WalkReport) -> list[str]:
    acc = r.access
    kinds = [k for k in ACCESSES if any(k in acc[m] for m in acc)]
    rows = [[mode] + [_access_cell(acc[mode][k]) for k in kinds] for mode in acc]
    lines = [simple_table(rows, ["access"] + kinds)]
    # One line per distinct reason: a not-present walk refuses all six
    # accesses for the same reason, and saying it six times hides it.
    why: dict = {}
    for mode in acc:
        for k in kinds:
            a = acc[mode][k]
            if a.faults or "not checked" in a.reason:
                why.setdefault(a.reason, []).append(f"{mode} {k}")
    total = sum(len(acc[m]) for m in acc)
    for reason, who in why.items():
        label = "every access" if len(who) == total and total > 1 else ", ".join(who)
        lines.append(f"  {label}: {reason}")
    return lines


def walk_text(r: WalkReport, width: int | None = None) -> str:
    c = r.context
    head = f"pagewalk {hx(r.va)}  {_context_line(c)}"
    if not r.canonical:
        # One plain line: there is no walk to show.
        return "\n".join(fit_lines([
            f"pagewalk: {hx(r.va)} is not canonical for {c.levels}-level paging "
            f"(bits 63:{47 if c.levels == 4 else 56} must all equal bit "
            f"{47 if c.levels == 4 else 56}): any access raises #GP (#SS for stack accesses), not #PF"], width))
    lines = [head]
    if not c.paging:
        lines.append("paging is disabled (CR0.PG=0): the linear address is the physical address")
    rows = []
    for lv in r.levels:
        what = " ".join(lv.flags)
        if lv.problem:
            what = f"{what}  <- {lv.problem}" if what else f"<- {lv.problem}"
        elif lv.leaf:
            what += f"  -> {size_text(lv.page_size)} page"
        rows.append((lv.name, hx(lv.table), lv.index, hx(lv.entry, 16), what))
    if rows:
        lines.append(fit_table(("level", "table", "index", "entry", "flags"), rows, width, wrap=(4,), below=(4,)))
    if r.pa is None:
        lines.append(f"not mapped: {r.problem}")
    else:
        offset = r.va & ((r.page_size or 1) - 1)
        size = f"{size_text(r.page_size)} page" if r.page_size else "no paging"
        lines.append(f"=> physical {hx(r.pa)}  ({size}, offset {hx(offset)})")
        lines.append(f"effective rights: {_rights_words(r)}")
    lines += _access_lines(r)
    lines += [f"note: {n}" for n in r.notes]
    return "\n".join(fit_lines(lines, width))


_SIZES: dict = {}


_RIGHTS: dict = {}


# ---------------------------------------------------------------------------
# Which page tables (shared with ptdump)
# ---------------------------------------------------------------------------

# Linux's page-table isolation (KPTI) allocates the kernel's and the user's
# top-level tables as one 8 KiB pair and switches between them by flipping
# CR3 bit 12 (PTI_USER_PGTABLE_BIT in arch/x86/entry/calling.h).
KPTI_USER_BIT = 1 << 12


def paging_context(snap: Snapshot, cr3: int | None, kpti: bool, pkru: int | None,
                   notes: list[str]) -> PagingContext:
    """The snapshot's paging registers, with CR3 replaced or flipped as asked."""
    value = snap.cr3 if cr3 is None else cr3 & MASK64
    if kpti:
        value ^= KPTI_USER_BIT
        half = "user" if value & KPTI_USER_BIT else "kernel"
        notes.append(f"KPTI: walking the {half} half of the pair, CR3 {value:#x} "
                     f"(bit 12 flipped from {value ^ KPTI_USER_BIT:#x})")
    base = PagingContext.from_snapshot(snap, pkru=pkru)
    return PagingContext(cr3=value, cr0=base.cr0, cr4=base.cr4, efer=base.efer, pkru=base.pkru,
                         maxphyaddr=base.maxphyaddr, pkrs=base.pkrs)


def _check_kpti_root(snap: Snapshot, ctx: PagingContext, notes: list[str]) -> None:
    """Say so when the flipped CR3 does not point at a top-level table.

    Without KPTI the neighbouring 4 KiB page is anything at all.  A real
    PML4/PML5 has present entries and none with PS (bit 7) set, which is
    reserved at the top level (SDM Vol. 3A 4.5, Tables 4-14 and 4-15).
    """
    if not ctx.paging:
        return
    root = table_entries(snap.read_phys(ctx.root, PAGE))
    present = [e for e in root if e & PTE_P]
    bad = sum(1 for e in present if e & PTE_PS)
    if not present or bad:
        why = "has no present entry" if not present else f"has {bad} present entries with the reserved PS bit"
        notes.append(f"KPTI: the page at {ctx.root:#x} {why}: it is not a top-level page table, "
                     "so this kernel probably does not use page-table isolation")
