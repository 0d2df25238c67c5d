"""What each `info` command shows, as plain data (pure: no gdb).

Each report is a dict of JSON-ready values (integers stay integers) built
from a Snapshot.  The command prints it with `--json`, or as tables through
gdbext.render; both come from the same dict, so they cannot disagree.  Triage
builds the same reports from a live or a saved snapshot.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

from gdbext.decode import DecodeError
from gdbext.decode.bits import (
    EFER_LMA,
    EFER_SCE,
    cpu_mode,
    decode_star,
    efer_names,
    is_canonical,
    rflags_iopl,
    rflags_names,
    sfmask_names,
    RFLAGS_IF,
)
from gdbext.decode.descriptors import Descriptor, decode_table, descriptor_at
from gdbext.decode.idt import decode_idt
from gdbext.decode.paging import PagingContext, check_access
from gdbext.decode.tss import TSS64_SIZE, decode_tss64
from gdbext.memory import read_linear, translate
from gdbext.snapshot import (
    MSR_CSTAR,
    MSR_EFER,
    MSR_FS_BASE,
    MSR_GS_BASE,
    MSR_KERNEL_GS_BASE,
    MSR_LSTAR,
    MSR_SFMASK,
    MSR_STAR,
    SEGMENT_NAMES,
    Snapshot,
    SnapshotError,
)

Symbolizer = Callable[[int], Optional[str]]


class ReportError(Exception):
    """The report cannot be made; the message is one line for the user."""


def _no_symbols(_addr: int) -> Optional[str]:
    return None


def long_mode(snap: Snapshot) -> bool:
    return bool(snap.efer & EFER_LMA)


def va_bits(snap: Snapshot) -> int:
    return 57 if snap.cr4 & (1 << 12) else 48


# ---------------------------------------------------------------------------
# info cpl
# ---------------------------------------------------------------------------

def cpl_report(snap: Snapshot) -> dict:
    cs = snap.segments["cs"]
    rflags = snap.rflags
    return {
        "cpu": snap.cpu,
        "cpl": snap.cpl,
        "mode": cpu_mode(snap.cr0, snap.efer, cs.attrs, rflags),
        "iopl": rflags_iopl(rflags),
        "if": bool(rflags & RFLAGS_IF),
        "rflags": rflags,
        "rflags_flags": rflags_names(rflags),
        "cs": cs.selector,
        "ss": snap.segments["ss"].selector,
        "halted": snap.halted,
        "rip": snap.rip,
    }


# ---------------------------------------------------------------------------
# info msr
# ---------------------------------------------------------------------------

MSR_SET = (
    ("EFER", MSR_EFER), ("STAR", MSR_STAR), ("LSTAR", MSR_LSTAR), ("CSTAR", MSR_CSTAR),
    ("SFMASK", MSR_SFMASK), ("FS_BASE", MSR_FS_BASE), ("GS_BASE", MSR_GS_BASE),
    ("KERNEL_GS_BASE", MSR_KERNEL_GS_BASE),
)


def msr_report(snap: Snapshot, only: Optional[Dict[str, int]] = None,
               symbolize: Symbolizer = _no_symbols) -> dict:
    """Values and their meaning.  MSRs that cannot be read come back as null
    with the reason in "errors" (a halted vCPU cannot run rdmsr, for one)."""
    wanted = list(only.items()) if only else list(MSR_SET)
    msrs: Dict[str, Optional[int]] = {}
    errors: Dict[str, str] = {}
    decoded: Dict[str, dict] = {}
    for name, number in wanted:
        try:
            msrs[name] = snap.msr(number)
        except (SnapshotError, Exception) as exc:  # noqa: BLE001 - target errors are gdb.GdbError
            msrs[name] = None
            errors[name] = str(exc)
            continue
        decoded[name] = _decode_msr(snap, name, number, msrs[name], symbolize)
    notes = []
    if snap.woke_ns is not None:
        notes.append(f"vCPU {snap.cpu} was halted in HLT: guest time ran {snap.woke_ns / 1e6:.1f} ms to its LAPIC timer "
                     "interrupt, which woke it to run rdmsr; that interrupt is pending and is taken when the "
                     "guest resumes, as on any wake-up")
    return {"cpu": snap.cpu, "msrs": msrs, "numbers": {n: num for n, num in wanted},
            "decoded": decoded, "errors": errors, "notes": notes}


def _decode_msr(snap: Snapshot, name: str, number: int, value: int, symbolize: Symbolizer) -> dict:
    if number == MSR_EFER:
        return {"flags": efer_names(value)}
    if number == MSR_STAR:
        star = decode_star(value)
        out = {
            "syscall_cs": star.syscall_cs, "syscall_ss": star.syscall_ss,
            "sysret_base": star.sysret_base, "sysret_rpl": star.sysret_rpl,
            "sysret_cs64": star.sysret_cs64, "sysret_ss": star.sysret_ss,
            "sysret_cs32": star.sysret_cs32, "eip32": star.eip32,
        }
        table = _gdt_bytes(snap)
        if table is not None:
            for role in ("syscall_cs", "syscall_ss", "sysret_cs64", "sysret_ss", "sysret_cs32"):
                d = descriptor_at(table, snap.gdtr.limit, out[role], long_mode=long_mode(snap))
                out[role + "_descriptor"] = _descriptor_summary(d) if d else "past the GDT limit"
        return out
    if number in (MSR_LSTAR, MSR_CSTAR):
        return {"symbol": symbolize(value), "canonical": is_canonical(value, va_bits(snap))}
    if number == MSR_SFMASK:
        return {"clears": sfmask_names(value)}
    if number in (MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE):
        return {"canonical": is_canonical(value, va_bits(snap)), "half": "kernel" if value >> 63 else "user"}
    return {}


def _descriptor_summary(d: Descriptor) -> str:
    bits = [d.kind, f"DPL{d.dpl}"]
    if not d.present:
        bits.append("not present")
    if d.is_code:
        bits.append("64-bit" if d.long else ("32-bit" if d.db else "16-bit"))
    if d.is_data:
        bits.append("writable" if d.writable else "read-only")
    return " ".join(bits)


# ---------------------------------------------------------------------------
# info gdt
# ---------------------------------------------------------------------------

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


def gdt_report(snap: Snapshot, selector: Optional[int] = None, *, with_star: bool = True) -> dict:
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
    if star is not None:
        for role, sel in (("syscall CS", star.syscall_cs), ("syscall SS", star.syscall_ss),
                          ("sysret CS", star.sysret_cs64), ("sysret SS", star.sysret_ss),
                          ("sysret32 CS", star.sysret_cs32)):
            marks.setdefault(sel >> 3, []).append(role)
            if (sel >> 3) * 8 + 7 > snap.gdtr.limit:
                warnings.append(f"STAR's {role} {sel:#06x} points past the GDT limit {snap.gdtr.limit:#x}")

    rows = [_entry_json(d, marks.get(d.index, [])) for d in entries]
    if selector is not None:
        rows = [r for r in rows if r["index"] == selector >> 3]
        if not rows:
            raise ReportError(f"info gdt: selector {selector:#x} (index {selector >> 3}) is past the GDT limit {snap.gdtr.limit:#x}")
    return {"cpu": snap.cpu, "base": snap.gdtr.base, "limit": snap.gdtr.limit, "long_mode": lm,
            "entries": rows, "warnings": warnings, "star": star.raw if star else None}


def _entry_json(d: Descriptor, marks: List[str]) -> dict:
    return {
        "index": d.index, "selector": d.selector, "size": d.size, "raw": d.raw,
        "kind": d.kind, "type": d.type, "type_words": d.type_words,
        "base": d.base, "limit": d.limit, "dpl": d.dpl, "present": d.present,
        "long": d.long, "db": d.db, "granularity": d.granularity, "avl": d.avl,
        "system": d.is_system, "used_by": marks,
        "truncated": d.truncated,
    }


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


# ---------------------------------------------------------------------------
# info tss
# ---------------------------------------------------------------------------

def stack_state(snap: Snapshot, sp: int) -> dict:
    """Whether a stack pointer can take a push from the kernel now: the page
    holding sp-8 is present and supervisor-writable (SDM 4.6)."""
    canonical = is_canonical(sp, va_bits(snap))
    out = {"value": sp, "canonical": canonical, "mapped": False, "supervisor_writable": False, "problem": None}
    if not canonical:
        out["problem"] = "non-canonical"
        return out
    if sp == 0:
        out["problem"] = "zero"
        return out
    try:
        ctx = PagingContext.from_snapshot(snap)
        walk = translate(snap, (sp - 8) & 0xFFFFFFFFFFFFFFFF)
    except (SnapshotError, DecodeError) as exc:
        out["problem"] = str(exc)
        return out
    out["mapped"] = walk.pa is not None
    if walk.pa is None:
        out["problem"] = walk.problem or "not mapped"
        return out
    access = check_access(walk, ctx, "write", user=False)
    out["supervisor_writable"] = not access.faults
    if access.faults:
        out["problem"] = access.reason
    out["user"] = walk.user
    return out


def tss_report(snap: Snapshot) -> dict:
    tr = snap.tr
    if not long_mode(snap):
        raise ReportError("info tss: the vCPU is not in IA-32e mode; only the 64-bit TSS is decoded")
    if tr.selector & ~3 == 0:
        raise ReportError("info tss: TR is the null selector: no TSS has been loaded (LTR)")
    if tr.limit + 1 < TSS64_SIZE:
        raise ReportError(f"info tss: TR limit {tr.limit:#x} is smaller than a 64-bit TSS ({TSS64_SIZE - 1:#x})")
    try:
        data = read_linear(snap, tr.base, TSS64_SIZE)
    except SnapshotError as exc:
        raise ReportError(f"info tss: TSS at {tr.base:#x} is not readable: {exc}") from None
    tss = decode_tss64(data)
    # QEMU 7.2 keeps type 9 (available) in TR's cache after LTR and marks only
    # the GDT entry busy, so busy-ness is read from the table.
    table = _gdt_bytes(snap)
    entry = descriptor_at(table, snap.gdtr.limit, tr.selector, long_mode=True) if table else None
    stacks = {}
    for i, sp in enumerate(tss.rsp):
        stacks[f"rsp{i}"] = stack_state(snap, sp)
    for i, sp in enumerate(tss.ist):
        stacks[f"ist{i + 1}"] = stack_state(snap, sp) if sp else {"value": 0, "canonical": True, "mapped": False,
                                                                   "supervisor_writable": False, "problem": "unused"}
    iomap = tss.iomap_base
    return {
        "cpu": snap.cpu, "selector": tr.selector, "base": tr.base, "limit": tr.limit,
        "busy": entry is not None and entry.kind == "tss-busy",
        "gdt_kind": entry.kind if entry else None,
        "rsp": list(tss.rsp), "ist": list(tss.ist), "iomap_base": iomap,
        "iomap": "none (base beyond the limit)" if iomap > tr.limit else f"{tr.limit - iomap + 1} bytes",
        "stacks": stacks,
    }


# ---------------------------------------------------------------------------
# info idt
# ---------------------------------------------------------------------------

def idt_report(snap: Snapshot, vector: Optional[int] = None, symbolize: Symbolizer = _no_symbols,
               *, present_only: bool = False) -> dict:
    if not snap.cr0 & 1:
        raise ReportError(f"info idt: the vCPU is in real mode; IDTR is an interrupt vector table at {snap.idtr.base:#x}")
    lm = long_mode(snap)
    gate = 16 if lm else 8
    limit = min(snap.idtr.limit, 256 * gate - 1)
    warnings: List[str] = []
    if snap.idtr.limit > limit:
        warnings.append(f"IDTR limit {snap.idtr.limit:#x} covers more than 256 gates; only 256 are decoded")
    if snap.idtr.limit == 0:
        raise ReportError(f"info idt: IDTR limit is 0 (base={snap.idtr.base:#x}): no gates")
    try:
        table = read_linear(snap, snap.idtr.base, limit + 1)
    except SnapshotError as exc:
        raise ReportError(f"info idt: IDT at {snap.idtr.base:#x} is not readable: {exc}") from None
    gdt = _gdt_bytes(snap)
    ctx = None
    try:
        ctx = PagingContext.from_snapshot(snap)
    except DecodeError:
        pass
    rows = []
    for g in decode_idt(table, limit, long_mode=lm):
        if vector is not None and g.vector != vector:
            continue
        if present_only and not g.present:
            continue
        row = {"vector": g.vector, "name": g.name, "kind": g.kind, "selector": g.selector,
               "handler": g.offset, "symbol": symbolize(g.offset) if g.present else None,
               "ist": g.ist, "dpl": g.dpl, "present": g.present, "raw": g.raw, "problems": []}
        if g.present:
            row["problems"] = _gate_problems(snap, ctx, gdt, g, lm)
            warnings += [f"vector {g.vector} ({g.name or 'interrupt'}): {p}" for p in row["problems"]]
        rows.append(row)
    if vector is not None and not rows:
        raise ReportError(f"info idt: vector {vector} is past the IDT limit {snap.idtr.limit:#x}")
    return {"cpu": snap.cpu, "base": snap.idtr.base, "limit": snap.idtr.limit, "long_mode": lm,
            "gates": rows, "warnings": warnings}


def _gate_problems(snap, ctx, gdt, g, lm) -> List[str]:
    problems = []
    if g.kind == "reserved":
        problems.append("present but of a reserved type")
        return problems
    if gdt is not None:
        d = descriptor_at(gdt, snap.gdtr.limit, g.selector, long_mode=lm)
        if d is None:
            problems.append(f"selector {g.selector:#x} is past the GDT limit")
        elif not d.is_code or not d.present or (lm and not d.long):
            problems.append(f"selector {g.selector:#x} is not a present 64-bit code segment ({_descriptor_summary(d)})")
    if lm and ctx is not None:
        if not is_canonical(g.offset, va_bits(snap)):
            problems.append(f"handler {g.offset:#x} is non-canonical")
        else:
            walk = translate(snap, g.offset)
            if walk.pa is None:
                problems.append(f"handler {g.offset:#x} is not mapped ({walk.problem})")
            else:
                access = check_access(walk, ctx, "exec", user=False)
                if access.faults:
                    problems.append(f"handler {g.offset:#x} is not executable by the kernel: {access.reason}")
    return problems

