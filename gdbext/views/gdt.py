"""`info gdt`: every descriptor decoded, the live selectors and STAR's roles marked."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Dict, List, Optional

from gdbext.model.linear import read_linear
from gdbext.model.snapshot import (
    MSR_STAR,
    SEGMENT_NAMES,
    Snapshot,
    SnapshotError,
)
from gdbext.views.common import ReportError, _warnings, hx, long_mode
from gdbext.views.text import fit_lines, fit_table
from gdbext.x86 import DecodeError
from gdbext.x86.bits import (
    decode_star,
)
from gdbext.x86.descriptors import Descriptor, decode_table, descriptor_at


def _descriptor_summary(d: Descriptor) -> str:
    bits = [d.kind, f"DPL{d.dpl}"]
    if not d.present:
        bits.append("not present")
    if d.is_code:
        bits.append("64-bit" if d.long else ("32-bit" if d.db else "16-bit"))
    if d.is_data:
        bits.append("writable" if d.writable else "read-only")
    return " ".join(bits)


@dataclass(frozen=True)
class GdtEntry:
    """One descriptor as `info gdt` shows it; used_by: the live registers and
    STAR roles that select it."""

    index: int
    selector: int
    size: int
    raw: int
    kind: str
    type: int
    type_words: str
    base: int
    limit: int
    dpl: int
    present: bool
    long: bool
    db: bool
    granularity: bool
    avl: bool
    system: bool
    used_by: tuple[str, ...]
    truncated: bool


@dataclass(frozen=True)
class GdtReport:
    """`info gdt`.  star: STAR's value, None where it was not read; notes:
    why something is not shown (STAR unreadable)."""

    cpu: int
    base: int
    limit: int
    long_mode: bool
    entries: tuple[GdtEntry, ...]
    warnings: tuple[str, ...]
    star: int | None
    notes: tuple[str, ...] = ()


def _gdt_bytes(snap: Snapshot) -> Optional[bytes]:
    try:
        return read_linear(snap, snap.gdtr.base, snap.gdtr.limit + 1)
    except (SnapshotError, DecodeError):
        return None


def _star_or_none(snap: Snapshot):
    try:
        return decode_star(snap.msr(MSR_STAR))
    except Exception:  # noqa: BLE001 - rdmsr may be refused (halted vCPU, compat mode)
        return None


def gdt_report(snap: Snapshot, selector: Optional[int] = None, *, with_star: bool = True,
               notes: Sequence[str] = ()) -> GdtReport:
    if not snap.cr0 & 1:
        raise ReportError("info gdt: the vCPU is in real mode; segment registers do not use the GDT "
                          f"(GDTR base={snap.gdtr.base:#x} limit={snap.gdtr.limit:#x})")
    if snap.gdtr.limit == 0:
        raise ReportError(f"info gdt: GDTR limit is 0 (base={snap.gdtr.base:#x}): the GDT is empty")
    try:
        table = read_linear(snap, snap.gdtr.base, snap.gdtr.limit + 1)
    except SnapshotError as exc:
        raise ReportError(f"info gdt: GDT at {snap.gdtr.base:#x} is not readable: {exc}") from None
    lm = long_mode(snap)
    entries = decode_table(table, snap.gdtr.limit, long_mode=lm)

    marks: Dict[int, List[str]] = {}
    warnings: List[str] = []
    live = {name: snap.segments[name] for name in SEGMENT_NAMES if name in snap.segments}
    live["tr"] = snap.tr
    live["ldtr"] = snap.ldtr
    for name, cache in live.items():
        sel = cache.selector
        if sel & ~3 == 0 or sel & 4:
            continue
        marks.setdefault(sel >> 3, []).append(name.upper())
        desc = descriptor_at(table, snap.gdtr.limit, sel, long_mode=lm)
        if desc is None:
            warnings.append(f"{name.upper()}={sel:#06x} points past the GDT limit {snap.gdtr.limit:#x}")
            continue
        warnings += _cache_mismatch(name, cache, desc, lm)

    star = _star_or_none(snap) if with_star else None
    if star is not None and star.raw >> 32 == 0:
        # Before a kernel sets STAR its selectors are all 0: no roles to mark
        # (they would land on the null entry and the one after it).
        warnings.append("STAR's selector fields are 0: SYSCALL and SYSRET have no segments yet")
    elif star is not None:
        for role, sel in (("syscall CS", star.syscall_cs), ("syscall SS", star.syscall_ss),
                          ("sysret CS", star.sysret_cs64), ("sysret SS", star.sysret_ss),
                          ("sysret32 CS", star.sysret_cs32)):
            if sel >> 3 == 0:
                warnings.append(f"STAR's {role} {sel:#06x} is the null selector")
                continue
            marks.setdefault(sel >> 3, []).append(role)
            if (sel >> 3) * 8 + 7 > snap.gdtr.limit:
                warnings.append(f"STAR's {role} {sel:#06x} points past the GDT limit {snap.gdtr.limit:#x}")

    rows = [_entry(d, marks.get(d.index, [])) for d in entries]
    if selector is not None:
        rows = [r for r in rows if r.index == selector >> 3]
        if not rows:
            raise ReportError(f"info gdt: selector {selector:#x} (index {selector >> 3}) is past the GDT limit {snap.gdtr.limit:#x}")
    return GdtReport(cpu=snap.cpu, base=snap.gdtr.base, limit=snap.gdtr.limit, long_mode=lm,
                     entries=tuple(rows), warnings=tuple(warnings), star=star.raw if star else None,
                     notes=tuple(notes))


def _entry(d: Descriptor, marks: List[str]) -> GdtEntry:
    return GdtEntry(
        index=d.index, selector=d.selector, size=d.size, raw=d.raw,
        kind=d.kind, type=d.type, type_words=d.type_words,
        base=d.base, limit=d.limit, dpl=d.dpl, present=d.present,
        long=d.long, db=d.db, granularity=d.granularity, avl=d.avl,
        system=d.is_system, used_by=tuple(marks),
        truncated=d.truncated,
    )


_ACCESSED = 1 << 8


def _cache_mismatch(name: str, cache, desc: Descriptor, lm: bool) -> List[str]:
    """The live (hidden) segment cache against the table entry it came from.
    The accessed bit is set by the CPU on load, so it is not compared."""
    out = []
    if name in ("tr", "ldtr"):
        # The CPU marks a loaded TSS busy in the table; the cache keeps its own type.
        want_attrs = desc.attrs & ~0x200
        have_attrs = cache.attrs & ~0x200
    else:
        want_attrs = desc.attrs & ~_ACCESSED
        have_attrs = cache.attrs & ~_ACCESSED
    fs_gs_base = lm and name in ("fs", "gs")  # their bases live in MSRs in 64-bit mode
    if have_attrs != want_attrs:
        out.append(f"{name.upper()}={cache.selector:#06x}: live attributes {cache.attrs:#010x} differ from the "
                   f"GDT entry's {desc.attrs:#010x} ({_attr_diff(have_attrs ^ want_attrs)}); a reload of the "
                   f"selector would change them")
    if not fs_gs_base and cache.base != desc.base and not (lm and name in ("cs", "ss", "ds", "es")):
        out.append(f"{name.upper()}={cache.selector:#06x}: live base {cache.base:#x} differs from the GDT entry's {desc.base:#x}")
    if not lm and cache.limit != desc.limit:
        out.append(f"{name.upper()}={cache.selector:#06x}: live limit {cache.limit:#x} differs from the GDT entry's {desc.limit:#x}")
    return out


_ATTR_BITS = ((8, "A"), (9, "R/W"), (10, "C/E"), (11, "code"), (12, "S"), (13, "DPL"), (14, "DPL"),
              (15, "P"), (20, "AVL"), (21, "L"), (22, "D/B"), (23, "G"))


def _attr_diff(diff: int) -> str:
    names = []
    for bit, name in _ATTR_BITS:
        if diff & (1 << bit) and name not in names:
            names.append(name)
    return ", ".join(names) or f"{diff:#x}"


def gdt_text(r: GdtReport, width: Optional[int] = None) -> str:
    """The table, its warnings and its notes."""
    rows = []
    for e in r.entries:
        if e.kind == "null" and not e.used_by:
            rows.append((e.index, hx(e.selector, 4), "null", "", "", "", "", "", ""))
            continue
        flags = []
        if e.long:
            flags.append("L")
        if e.db:
            flags.append("D/B")
        if e.granularity:
            flags.append("G")
        if e.avl:
            flags.append("AVL")
        rows.append((
            e.index, hx(e.selector, 4), e.kind + (" (16B)" if e.size == 16 else ""),
            hx(e.base), hx(e.limit), e.dpl, "P" if e.present else "not present",
            " ".join(flags) + ("  " if flags else "") + e.type_words, ", ".join(e.used_by),
        ))
    head = f"GDT base={hx(r.base)} limit={hx(r.limit)}"
    table = fit_table(("#", "sel", "kind", "base", "limit", "DPL", "P", "flags / type", "used by"), rows, width,
                      wrap=(2, 7, 8), below=(7, 8))
    return "\n".join([head, table] + fit_lines(_warnings(list(r.warnings)) + [f"note: {n}" for n in r.notes], width))
