"""`info fault` and fault-watch's stop: one exception, from the frame the CPU pushed.

Pure: no gdb.  The command layer reads the frame at the handler's first
instruction (gdbext.x86.faults) and a snapshot of the vCPU there, and hands
both in with the instruction text gdb disassembled; everything else --
mode, descriptors, gates, the page walk of CR2 -- is decoded here from the
snapshot.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gdbext.model.linear import read_linear
from gdbext.model.snapshot import Snapshot, SnapshotError
from gdbext.views.common import Symbolizer, _no_symbols, hx, long_mode
from gdbext.views.gdt import _descriptor_summary
from gdbext.views.pagewalk import WalkReport, walk_report, walk_text
from gdbext.x86 import DecodeError
from gdbext.x86.bits import RFLAGS_AC, rflags_iopl, rflags_names
from gdbext.x86.descriptors import descriptor_at
from gdbext.x86.faults import (
    INVALID_OPCODE,
    PAGE_FAULT,
    InterruptFrame,
    PageFaultCode,
    SelectorCode,
    decode_error_code,
)
from gdbext.x86.idt import EXCEPTION_NAMES, decode_idt, vector_name
from gdbext.x86.paging import PagingContext, walk

SOURCE_IDT_BREAKPOINT = "idt-breakpoint"
BYTES_AT_RIP = 16


@dataclass(frozen=True)
class NamedDescriptor:
    """The GDT/LDT entry or IDT gate a selector error code designates.

    table "GDT" | "LDT" | "IDT"; found: within the table's limit and read;
    summary: one line in words; fields: the decoded descriptor or gate."""

    table: str
    index: int
    found: bool
    summary: str
    raw: int | None = None
    fields: dict | None = None


@dataclass(frozen=True)
class FaultReport:
    """One exception caught at its handler.

    vector: None when the handler serves several vectors and the frame cannot
    tell which (candidates lists them); error_code: None when the frame has
    none; cpl and mode: where the CPU was when it faulted (the saved CS's RPL,
    and its descriptor's L bit under EFER.LMA); cr2: for #PF; decoded: the
    error code's decode; walk: for #PF, CR2's walk for the access the error
    code describes; descriptor: for selector error codes; bytes_at_rip: for
    #UD (hex); resumed: for CPL-3 records, whether the kernel ran the faulting
    instruction again in the same address space (None: not tracked)."""

    vector: int | None
    name: str
    candidates: tuple[int, ...]
    error_code: int | None
    rip: int
    cs: int
    rflags: int
    rflags_flags: tuple[str, ...]
    iopl: int
    rsp: int
    ss: int
    cpl: int
    mode: str | None
    cr2: int | None
    cr3: int
    symbol: str | None
    instruction: str | None
    cpu: int
    source: str
    handler: int
    handler_symbol: str | None
    frame_address: int
    decoded: Any
    walk: WalkReport | None
    walk_verdict: str | None
    descriptor: NamedDescriptor | None
    bytes_at_rip: str | None
    notes: tuple[str, ...]
    resumed: bool | None = None


def fault_name(vector: int | None, candidates: tuple[int, ...]) -> str:
    if vector is None:
        return "one of " + ", ".join(f"{vector_name(v) or 'interrupt'} ({v})" for v in candidates)
    return vector_name(vector) or "interrupt"


def _gdt_bytes(snap: Snapshot) -> bytes | None:
    try:
        return read_linear(snap, snap.gdtr.base, snap.gdtr.limit + 1)
    except (SnapshotError, DecodeError):
        return None


def _mode(snap: Snapshot, frame: InterruptFrame, notes: list[str]) -> str | None:
    """64-bit or compatibility, from the GDT/LDT descriptor of the saved CS.

    The CS cache that was in force is gone (the handler's is loaded now), and
    SYSRET loads a fixed cache without reading the GDT, so a descriptor that
    is not code is said, not guessed at."""
    if not long_mode(snap):
        notes.append("EFER.LMA=0: not in IA-32e mode; this frame layout does not apply")
        return None
    if frame.cs & 4:
        table = _ldt_bytes(snap)
        limit = snap.ldtr.limit
    else:
        table = _gdt_bytes(snap)
        limit = snap.gdtr.limit
    if table is None:
        notes.append(f"mode unknown: the {'LDT' if frame.cs & 4 else 'GDT'} is not readable")
        return None
    try:
        d = descriptor_at(table, min(limit, 0xFFFF), frame.cs, long_mode=True, ldt=bool(frame.cs & 4))
    except DecodeError:
        d = None
    if d is None or not d.is_code:
        what = "past the table's limit" if d is None else f"a {d.kind} descriptor"
        notes.append(f"mode unknown: the saved CS {frame.cs:#x} selects {what} now "
                     "(SYSRET loads a fixed CS cache without reading the GDT)")
        return None
    return "64-bit" if d.long else "compatibility"


def _ldt_bytes(snap: Snapshot) -> bytes | None:
    if snap.ldtr.selector & ~7 == 0 or snap.ldtr.limit == 0:
        return None
    try:
        return read_linear(snap, snap.ldtr.base, snap.ldtr.limit + 1)
    except (SnapshotError, DecodeError):
        return None


def _descriptor(snap: Snapshot, code: SelectorCode) -> NamedDescriptor | None:
    if code.value & 0xFFFF == 0:
        return None
    if code.idt:
        return _gate(snap, code.index)
    table = _ldt_bytes(snap) if code.ti else _gdt_bytes(snap)
    limit = snap.ldtr.limit if code.ti else snap.gdtr.limit
    if table is None:
        return NamedDescriptor(code.table, code.index, False, f"the {code.table} is not readable")
    assert code.selector is not None
    d = descriptor_at(table, min(limit, 0xFFFF), code.selector, long_mode=long_mode(snap), ldt=code.ti)
    if d is None:
        return NamedDescriptor(code.table, code.index, False,
                               f"selector {code.selector:#x} is past the {code.table} limit {limit:#x}")
    fields = {"selector": d.selector, "kind": d.kind, "type": d.type, "type_words": d.type_words, "dpl": d.dpl,
              "present": d.present, "base": d.base, "limit": d.limit, "long": d.long, "db": d.db,
              "system": d.is_system}
    return NamedDescriptor(code.table, code.index, True,
                           f"{code.table}[{code.index}] selector {d.selector:#x}: {_descriptor_summary(d)} "
                           f"({d.type_words})", d.raw, fields)


def _gate(snap: Snapshot, vector: int) -> NamedDescriptor:
    size = 16 if long_mode(snap) else 8
    if (vector + 1) * size - 1 > snap.idtr.limit:
        return NamedDescriptor("IDT", vector, False,
                               f"vector {vector} is past the IDT limit {snap.idtr.limit:#x}")
    try:
        raw = read_linear(snap, snap.idtr.base + vector * size, size)
    except SnapshotError as exc:
        return NamedDescriptor("IDT", vector, False, f"the IDT gate is not readable: {exc}")
    g = decode_idt(b"\0" * (vector * size) + raw, (vector + 1) * size - 1, long_mode=long_mode(snap))[vector]
    fields = {"kind": g.kind, "selector": g.selector, "offset": g.offset, "ist": g.ist, "dpl": g.dpl,
              "present": g.present}
    state = "present" if g.present else "NOT present"
    return NamedDescriptor("IDT", vector, True,
                           f"IDT[{vector}] ({g.name or 'interrupt'}): {g.kind} {state}, DPL{g.dpl}, "
                           f"{g.selector:#x}:{g.offset:#x}" + (f", IST{g.ist}" if g.ist else ""),
                           g.raw, fields)


def _walk(snap: Snapshot, cr2: int, code: PageFaultCode, rflags: int,
          notes: list[str]) -> tuple[WalkReport | None, str | None]:
    try:
        ctx = PagingContext.from_snapshot(snap)
        w = walk(snap.read_phys, ctx, cr2)
    except (DecodeError, SnapshotError) as exc:
        return None, f"CR2 could not be walked: {exc}"
    mode = "user" if code.user else "supervisor"
    notes.append(f"CR2 walked with CR3={snap.cr3:#x} at the handler: delivery keeps CR3, "
                 "but the tables may have changed since")
    r = walk_report(w, ctx, modes=(mode,), accesses=(code.access,), rflags_ac=bool(rflags & RFLAGS_AC))
    access = r.access[mode][code.access]
    where = f" at the {r.problem_level}" if r.problem_level else ""
    if not access.faults:
        verdict = (f"the tables now allow a {mode} {code.access} of {cr2:#x}: they changed since the fault, "
                   "or the TLB held a stale entry")
    else:
        verdict = f"{mode} {code.access} refused{where}: {access.reason}"
        # Compare the bits the walk can predict (P, W/R, U/S, RSVD, I/D, PK).
        if access.error_code is not None and access.error_code != code.value & 0x3F:
            verdict += (f" (the walk now gives error code {access.error_code:#x}, not {code.value & 0x3F:#x}: "
                        "the tables changed since the fault)")
    return r, verdict


def fault_report(snap: Snapshot, frame: InterruptFrame, candidates: tuple[int, ...], handler: int, *,
                 symbolize: Symbolizer = _no_symbols, instruction: str | None = None,
                 source: str = SOURCE_IDT_BREAKPOINT, notes: tuple[str, ...] = ()) -> FaultReport:
    """The report of the exception whose frame is `frame`, caught at `handler`
    on the vCPU of `snap` (a snapshot taken at the handler's first instruction)."""
    note_list = list(notes)
    vector = candidates[0] if len(candidates) == 1 else None
    if vector is None:
        note_list.append(f"the handler {handler:#x} serves vectors {', '.join(map(str, candidates))}, and the frame "
                         f"({'with' if frame.error_code is not None else 'without'} an error code) does not tell "
                         "which one this was")
    decoded = None
    walk_r = verdict = None
    descriptor = None
    cr2 = None
    if vector is not None and frame.error_code is not None:
        try:
            decoded = decode_error_code(vector, frame.error_code)
        except DecodeError as exc:
            note_list.append(f"error code not decoded: {exc}")
    if vector == PAGE_FAULT:
        cr2 = snap.regs.get("cr2")
        if cr2 is not None and isinstance(decoded, PageFaultCode):
            walk_r, verdict = _walk(snap, cr2, decoded, frame.rflags, note_list)
    if isinstance(decoded, SelectorCode):
        descriptor = _descriptor(snap, decoded)
    bytes_at_rip = None
    if vector == INVALID_OPCODE or (vector is None and INVALID_OPCODE in candidates):
        try:
            bytes_at_rip = read_linear(snap, frame.rip, BYTES_AT_RIP).hex(" ")
        except SnapshotError as exc:
            note_list.append(f"the bytes at RIP are not readable: {exc}")
    mode = _mode(snap, frame, note_list)
    if mode == "compatibility":
        instruction = None
        note_list.append("no instruction shown: compatibility-mode code, which gdb would decode as 64-bit")
    return FaultReport(
        vector=vector, name=fault_name(vector, candidates), candidates=tuple(candidates),
        error_code=frame.error_code, rip=frame.rip, cs=frame.cs, rflags=frame.rflags,
        rflags_flags=tuple(rflags_names(frame.rflags)), iopl=rflags_iopl(frame.rflags), rsp=frame.rsp,
        ss=frame.ss, cpl=frame.cpl, mode=mode, cr2=cr2, cr3=snap.cr3, symbol=symbolize(frame.rip),
        instruction=instruction, cpu=snap.cpu, source=source, handler=handler,
        handler_symbol=symbolize(handler), frame_address=frame.rsp_at_entry, decoded=decoded,
        walk=walk_r, walk_verdict=verdict, descriptor=descriptor, bytes_at_rip=bytes_at_rip,
        notes=tuple(note_list))


def _long_name(r: FaultReport) -> str:
    if r.vector is None:
        return r.name
    words = EXCEPTION_NAMES.get(r.vector, ("", "reserved" if r.vector < 32 else "interrupt"))[1]
    return f"{r.name} ({words}, vector {r.vector})" if r.name != words else f"{words} (vector {r.vector})"


def _at(address: int, symbol: str | None) -> str:
    return hx(address) + (f" <{symbol}>" if symbol else "")


def fault_text(r: FaultReport, *, walk_levels: bool = True) -> str:
    code = "" if r.error_code is None else f" error code {hx(r.error_code)}"
    lines = [f"{_long_name(r)}{code} on vCPU {r.cpu}, caught at its handler {_at(r.handler, r.handler_symbol)}"]
    mode = r.mode or "mode unknown"
    lines.append(f"  at     {_at(r.rip, r.symbol)}  CPL {r.cpl}, {mode}, cs={hx(r.cs)}")
    if r.instruction:
        lines.append(f"         {r.instruction}")
    lines.append(f"  stack  rsp={hx(r.rsp)} ss={hx(r.ss)}")
    flags = " ".join(r.rflags_flags) or "none"
    lines.append(f"  rflags {hx(r.rflags)} [{flags}] IOPL={r.iopl}")
    d = r.decoded
    if isinstance(d, PageFaultCode):
        lines.append(f"  error  {hx(d.value)} [{' '.join(d.names) or 'none'}]: {d.summary}")
        for b in d.bits:
            if b.set or b.bit < 5:
                lines.append(f"         bit {b.bit:2} {b.name:4} = {int(b.set)}  {b.meaning}")
        if d.reserved_bits:
            lines.append(f"         undefined bits {hx(d.reserved_bits)} are set")
    elif isinstance(d, SelectorCode):
        lines.append(f"  error  {hx(d.value)}: EXT={int(d.ext)} IDT={int(d.idt)} TI={int(d.ti)} "
                     f"index={d.index}: {d.summary}")
    elif d is not None:
        lines.append(f"  error  {hx(d.value)}: {d.summary}")
    if r.cr2 is not None:
        lines.append(f"  cr2    {hx(r.cr2)}")
    if r.walk_verdict:
        lines.append(f"  walk   {r.walk_verdict}")
    if r.walk is not None and walk_levels:
        lines += ["    " + line for line in walk_text(r.walk).splitlines()[1:]]
    if r.descriptor is not None:
        lines.append(f"  names  {r.descriptor.summary}")
    if r.bytes_at_rip:
        lines.append(f"  bytes  at rip: {r.bytes_at_rip}")
    lines += [f"  note: {n}" for n in r.notes]
    if r.resumed is not None:
        lines.append("  resumed: " + ("yes: the faulting instruction ran again in the same address space"
                                      if r.resumed else "no"))
    return "\n".join(lines)


def fault_line(r: FaultReport) -> str:
    """One line per record, for `info fault --all` and the status."""
    code = "" if r.error_code is None else f"({hx(r.error_code)})"
    cr2 = "" if r.cr2 is None else f" cr2={hx(r.cr2)}"
    return f"vCPU {r.cpu} {r.name}{code} at {_at(r.rip, r.symbol)} CPL {r.cpl}{cr2}"
