"""`info tss`: the 64-bit TSS and whether each stack is usable now."""
from __future__ import annotations

from dataclasses import dataclass

from gdbext.model.linear import read_linear
from gdbext.model.snapshot import (
    Snapshot,
    SnapshotError,
)
from gdbext.views.common import (
    ReportError,
    StackState,
    _yes,
    hx,
    long_mode,
    stack_state,
)
from gdbext.views.gdt import _gdt_bytes
from gdbext.views.text import fit_lines, fit_table
from gdbext.x86.descriptors import descriptor_at
from gdbext.x86.tss import TSS64_SIZE, decode_tss64

# An IST slot holding 0: no stack switch, nothing to check.
_UNUSED = StackState(value=0, canonical=True, problem="unused")


@dataclass(frozen=True)
class TssReport:
    """`info tss`.  stacks: "rsp0".."rsp2", "ist1".."ist7", each checked."""

    cpu: int
    selector: int
    base: int
    limit: int
    busy: bool
    gdt_kind: str | None
    rsp: tuple[int, ...]
    ist: tuple[int, ...]
    iomap_base: int
    iomap: str
    stacks: dict[str, StackState]


def tss_report(snap: Snapshot) -> TssReport:
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
    stacks: dict[str, StackState] = {}
    for i, sp in enumerate(tss.rsp):
        stacks[f"rsp{i}"] = stack_state(snap, sp)
    for i, sp in enumerate(tss.ist):
        stacks[f"ist{i + 1}"] = stack_state(snap, sp) if sp else _UNUSED
    iomap = tss.iomap_base
    return TssReport(
        cpu=snap.cpu, selector=tr.selector, base=tr.base, limit=tr.limit,
        busy=entry is not None and entry.kind == "tss-busy",
        gdt_kind=entry.kind if entry else None,
        rsp=tuple(tss.rsp), ist=tuple(tss.ist), iomap_base=iomap,
        iomap="none (base beyond the limit)" if iomap > tr.limit else f"{tr.limit - iomap + 1} bytes",
        stacks=stacks,
    )


def tss_text(r: TssReport, width: int | None = None) -> str:
    head = (f"TSS selector={hx(r.selector, 4)} base={hx(r.base)} limit={hx(r.limit)}"
            f"{' busy' if r.busy else ''}  I/O map base={hx(r.iomap_base)} ({r.iomap})")
    rows = []
    for name, s in r.stacks.items():
        if s.problem == "unused":
            rows.append((name.upper(), hx(0), "", "", "(unused)"))
            continue
        rows.append((name.upper(), hx(s.value, 16), _yes(s.canonical), _yes(s.mapped),
                     "yes" if s.supervisor_writable else f"no: {s.problem}"))
    table = fit_table(("stack", "pointer", "canonical", "mapped", "supervisor-writable"), rows, width,
                      wrap=(4,), below=(4,))
    return "\n".join(fit_lines([head], width) + [table])
