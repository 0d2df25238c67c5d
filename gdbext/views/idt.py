"""`info idt`: every gate decoded, with its handler checked."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

from gdbext.model.linear import read_linear, translate
from gdbext.model.snapshot import (
    Snapshot,
    SnapshotError,
)
from gdbext.views.common import (
    ReportError,
    Symbolizer,
    _no_symbols,
    _warnings,
    hx,
    long_mode,
    va_bits,
)
from gdbext.views.gdt import _descriptor_summary, _gdt_bytes
from gdbext.views.text import fit_lines, fit_table
from gdbext.x86 import DecodeError
from gdbext.x86.bits import (
    is_canonical,
)
from gdbext.x86.descriptors import descriptor_at
from gdbext.x86.idt import decode_idt
from gdbext.x86.paging import PagingContext, check_access


@dataclass(frozen=True)
class IdtGate:
    """One gate as `info idt` shows it; symbol and problems only for a present gate."""

    vector: int
    name: str
    kind: str
    selector: int
    handler: int
    symbol: str | None
    ist: int
    dpl: int
    present: bool
    raw: int
    problems: tuple[str, ...]


@dataclass(frozen=True)
class IdtReport:
    cpu: int
    base: int
    limit: int
    long_mode: bool
    gates: tuple[IdtGate, ...]
    warnings: tuple[str, ...]


def idt_report(snap: Snapshot, vector: Optional[int] = None, symbolize: Symbolizer = _no_symbols,
               *, present_only: bool = False) -> IdtReport:
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
    descriptors: dict = {}   # selector -> its GDT entry: 256 gates name one or two
    for g in decode_idt(table, limit, long_mode=lm):
        if vector is not None and g.vector != vector:
            continue
        if present_only and not g.present:
            continue
        problems = _gate_problems(snap, ctx, gdt, g, lm, descriptors) if g.present else []
        warnings += [f"vector {g.vector} ({g.name or 'interrupt'}): {p}" for p in problems]
        rows.append(IdtGate(vector=g.vector, name=g.name, kind=g.kind, selector=g.selector,
                            handler=g.offset, symbol=symbolize(g.offset) if g.present else None,
                            ist=g.ist, dpl=g.dpl, present=g.present, raw=g.raw, problems=tuple(problems)))
    if vector is not None and not rows:
        raise ReportError(f"info idt: vector {vector} is past the IDT limit {snap.idtr.limit:#x}")
    return IdtReport(cpu=snap.cpu, base=snap.idtr.base, limit=snap.idtr.limit, long_mode=lm,
                     gates=tuple(rows), warnings=tuple(warnings))


def _gate_problems(snap, ctx, gdt, g, lm, descriptors: dict) -> List[str]:
    problems = []
    if g.kind == "reserved":
        problems.append("present but of a reserved type")
        return problems
    if gdt is not None:
        if g.selector not in descriptors:
            descriptors[g.selector] = descriptor_at(gdt, snap.gdtr.limit, g.selector, long_mode=lm)
        d = descriptors[g.selector]
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


def idt_text(r: IdtReport, width: Optional[int] = None) -> str:
    rows = []
    for g in r.gates:
        if not g.present:
            continue
        sym = g.symbol or ""
        rows.append((g.vector, g.name, g.kind, hx(g.selector, 4), hx(g.handler, 16), sym,
                     g.ist or "", g.dpl))
    absent = sum(1 for g in r.gates if not g.present)
    head = f"IDT base={hx(r.base)} limit={hx(r.limit)}  ({len(r.gates)} gates, {absent} not present)"
    table = fit_table(("vec", "name", "type", "sel", "handler", "symbol", "IST", "DPL"), rows, width,
                      wrap=(1, 2, 5), below=(5,))
    return "\n".join(fit_lines([head], width) + [table] + fit_lines(_warnings(_grouped_warnings(r)), width))


def _grouped_warnings(r: IdtReport) -> List[str]:
    """The warnings, with one line per problem shared by several gates (OVMF's
    34 handlers on one selector are one line, not 34); JSON keeps every one."""
    general = [w for w in r.warnings if not w.startswith("vector ")]
    by_problem: Dict[str, List[IdtGate]] = {}
    for g in r.gates:
        for problem in g.problems:
            by_problem.setdefault(problem, []).append(g)
    lines = []
    for problem, gates in by_problem.items():
        if len(gates) == 1:
            lines.append(f"vector {gates[0].vector} ({gates[0].name or 'interrupt'}): {problem}")
        else:
            lines.append(f"vectors {_spans([g.vector for g in gates])} ({len(gates)} gates): {problem}")
    return general + lines


def _spans(vectors: List[int]) -> str:
    """[0, 1, 2, 3, 128] -> '0-3, 128'."""
    out, start = [], None
    for i, v in enumerate(vectors):
        if start is None:
            start = v
        if i + 1 == len(vectors) or vectors[i + 1] != v + 1:
            out.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(out)
