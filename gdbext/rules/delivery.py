"""Why each delivery in a fault chain failed, from the decoded IDT, GDT and TSS.

`explain(chain, snap)` walks each event of a chain read from QEMU's log
(gdbext.model.qemu_log) through the checks the CPU makes to deliver it, in
the order QEMU's TCG makes them (target/i386/tcg/seg_helper.c,
do_interrupt64 and do_interrupt_protected), which is the order of the
manuals:

  Intel SDM Vol. 3A 6.10 "Interrupt Descriptor Table", 6.11 "IDT
  Descriptors", 6.12.1 "Exception- or Interrupt-Handler Procedures"
  (6.12.1.1 protection, 6.12.1.2 stack switching), 6.13 "Error Code",
  6.14 "Exception and Interrupt Handling in 64-bit Mode" (6.14.1 the
  64-bit IDT, 6.14.4 stack switching, 6.14.5 IST), 6.15 "Interrupt 8
  Double Fault" (tables 6-4 and 6-5), 7.7 "Task Management in 64-bit
  Mode" (the TSS's RSPn and ISTn); AMD APM Vol. 2 8.2 "Vectors", 8.9
  "Long-Mode Interrupt Control Transfers".

    1. the gate must lie within IDTR.limit (16-byte gates in IA-32e mode,
       8-byte ones in protected mode), else #GP(vector*8+2+EXT);
    2. its type must be an interrupt or trap gate (or a task gate outside
       IA-32e mode), else #GP(same); INT n also needs gate DPL >= CPL;
    3. P=1, else #NP(same);
    4. its selector must not be null (#GP(0)), must lie within the GDT (or
       LDT) limit and name a present code segment with DPL <= CPL (#GP or
       #NP with the selector), a 64-bit one (L=1, D=0) in IA-32e mode;
    5. the handler's RIP must be canonical (#GP(0));
    6. with a privilege change, or a gate IST, a new stack comes from the
       TSS: RSPn or ISTn must lie within TR.limit (#TS(TR)) and be canonical
       (#SS(0)); the frame is pushed there (aligned down to 16 bytes in
       IA-32e mode), and an unmapped or read-only page is a #PF whose CR2 is
       the slot being written;
    7. a fault in steps 1-6 while delivering a contributory exception that
       is itself contributory, or any but a benign one while delivering a
       #PF, is a #DF; any fault while delivering the #DF is a shutdown (a
       triple fault).

The tables are read from memory now (the snapshot), with the registers
QEMU logged at each event (IDTR, GDTR, TR, CR0, CR3, CR4, EFER, CPL), so
the answer is about the state each delivery saw.  Where the tables in
memory no longer give what QEMU logged next, the explanation says so: the
log is the fact, the reason is the model.  No gdb import.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from gdbext.model.linear import read_linear, translate
from gdbext.model.qemu_log import (
    DOUBLE_FAULT,
    Chain,
    Escalation,
    Record,
    escalates,
    exception_class,
)
from gdbext.model.qemu_text import HmpRegisters
from gdbext.model.snapshot import SegmentCache, Snapshot, SnapshotError, TableRegister
from gdbext.x86 import DecodeError
from gdbext.x86.bits import CR0_PE, EFER_LMA, MASK64, is_canonical, va_bits
from gdbext.x86.descriptors import decode_descriptor
from gdbext.x86.idt import ERROR_CODE_VECTORS, decode_gate, vector_name
from gdbext.x86.paging import PagingContext, check_access

GP, NP, SS, TS, PF = 13, 11, 12, 10, 14


def mnemonic(vector: int) -> str:
    return vector_name(vector) or f"vector {vector:#x}"


def event_name(record: Record) -> str:
    """"#GP", "INT 0x80", "interrupt 0x20"."""
    if record.software:
        return f"INT {record.vector:#x}" if record.vector >= 32 else f"INT {mnemonic(record.vector)}"
    if record.hardware or record.vector >= 32:
        return f"interrupt {record.vector:#x}"
    return mnemonic(record.vector)


@dataclass(frozen=True)
class Fault:
    """What a delivery raised: vector, error code (None: it pushes none), CR2 for a #PF."""

    vector: int
    error_code: int | None
    cr2: int | None = None

    def text(self) -> str:
        name = mnemonic(self.vector)
        if self.vector == PF:
            return f"#PF(error {self.error_code:#x}, CR2={self.cr2:#x})"
        if self.vector == DOUBLE_FAULT or self.error_code is None:
            return name
        return f"{name}({self.error_code:#x})"


@dataclass(frozen=True)
class Step:
    """One delivery simulated: the fault it raised (None: delivered, or
    unknown when `known` is False), why, and a shorter why for a summary."""

    fault: Fault | None
    reason: str
    short: str
    known: bool = True
    handler: int | None = None
    notes: tuple[str, ...] = ()
    detail: str = ""

    @property
    def full(self) -> str:
        return f"{self.reason} ({self.detail})" if self.detail else self.reason


@dataclass(frozen=True)
class Explanation:
    """One chain entry explained.

    raised: the fault its delivery raised, as the tables explain it;
    outcome: what followed ("#GP(0x32)", "#DF", "shutdown", "delivered");
    matches_log: whether the tables give what QEMU logged next (None when
    there is nothing to compare or the model could not tell).
    """

    vector: int
    name: str
    reason: str
    short: str
    raised: Fault | None
    outcome: str
    matches_log: bool | None
    text: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeliveryReport:
    explanations: tuple[Explanation, ...]
    summary: str
    notes: tuple[str, ...] = field(default_factory=tuple)


# -- the CPU as each event saw it ---------------------------------------------------


def _no_memory(pa: int, size: int) -> bytes:
    raise SnapshotError("guest memory was not available")


def memory_only(read_phys=None) -> Snapshot:
    """A Snapshot of guest memory alone (no live registers), for explaining a
    log outside gdb (a shared RAM file) or with no target: every register the
    explainer needs comes from the log.  Without `read_phys`, reasons that
    need the tables say they cannot be told."""
    null = SegmentCache(0, 0, 0, 0)
    return Snapshot(regs={"cr0": 0, "cr3": 0, "cr4": 0, "efer": 0, "rip": 0, "rsp": 0, "eflags": 0},
                    segments={}, gdtr=TableRegister(0, 0), idtr=TableRegister(0, 0), ldtr=null, tr=null,
                    cpl=0, phys_reader=read_phys or _no_memory)


def _view(record: Record, snap: Snapshot) -> tuple[Snapshot, bool]:
    """A Snapshot with the registers QEMU logged at `record` and the live
    snapshot's memory; False when the log had no dump (the live registers
    are used then)."""
    regs: HmpRegisters | None = record.registers
    if regs is None:
        return snap, False
    values = dict(snap.regs)
    for name in ("cr0", "cr2", "cr3", "cr4", "efer"):
        if name in regs.regs:
            values[name] = regs.regs[name]
    values["rip"], values["rsp"], values["eflags"] = record.rip, record.rsp, regs.rflags
    view = Snapshot(regs=values, segments=dict(regs.segments), gdtr=regs.gdt, idtr=regs.idt, ldtr=regs.ldt,
                    tr=regs.tr, cpl=record.cpl, cpu=snap.cpu, phys_reader=snap.read_phys)
    return view, True


def _long_mode(view: Snapshot) -> bool:
    return bool(view.efer & EFER_LMA)


def _read(view: Snapshot, va: int, size: int, what: str) -> tuple[bytes | None, Step | None]:
    """Bytes at a linear address, or the Step of the #PF (or the doubt) reading them."""
    try:
        return read_linear(view, va, size), None
    except SnapshotError as exc:
        fault, _known = _page_fault(view, va, "read")
        if fault is not None:
            return None, Step(fault, f"{what} at {va:#x} is not mapped ({exc})", f"{what} not mapped")
        return None, Step(None, f"{what} at {va:#x} cannot be read: {exc}", f"{what} unreadable", known=False)
    except DecodeError as exc:
        return None, Step(None, f"{what} at {va:#x} cannot be read: {exc}", f"{what} unreadable", known=False)


def _page_fault(view: Snapshot, va: int, access: str) -> tuple[Fault | None, str | None]:
    """The #PF a supervisor access to `va` raises (SDM 4.7), or None if it
    does not; and why that cannot be told (32-bit paging, unreadable tables)."""
    try:
        walk = translate(view, va & MASK64)
        ctx = PagingContext.from_snapshot(view)
    except (SnapshotError, DecodeError) as exc:
        return None, str(exc)
    result = check_access(walk, ctx, access, user=False)
    if not result.faults or result.error_code is None:
        return None, None
    return Fault(PF, result.error_code, va & MASK64), None


# -- one delivery ---------------------------------------------------------------------


def _gate_error(vector: int) -> int:
    # SDM 6.13: IDT bit (1) set, the vector as the index; EXT is left to the caller.
    return vector * 8 + 2


def simulate(record: Record, view: Snapshot) -> Step:
    """Deliver `record`'s event on `view` as the CPU would; the Step says where it stops."""
    if not view.cr0 & CR0_PE:
        return Step(None, "the vCPU was in real mode (an interrupt vector table, not an IDT)", "real mode",
                    known=False)
    lm = _long_mode(view)
    vector = record.vector
    size = 16 if lm else 8
    need = vector * size + size - 1
    idtr = view.idtr
    if need > idtr.limit:
        return Step(Fault(GP, _gate_error(vector)), f"vector {vector} is past the IDT limit {idtr.limit:#x}",
                    "gate is past the IDT limit", detail=f"its {size}-byte gate needs a limit of {need:#x}")
    raw, failed = _read(view, idtr.base + vector * size, size, f"the IDT gate of vector {vector}")
    if failed is not None:
        return failed
    gate = decode_gate(raw, vector, long_mode=lm)
    if gate.kind == "reserved" or (lm and gate.kind not in ("interrupt-gate", "trap-gate")):
        return Step(Fault(GP, _gate_error(vector)),
                    f"gate {vector} has type {gate.type:#x}{' with S=1' if gate.raw >> 44 & 1 else ''}, "
                    f"not an interrupt or trap gate{' (IA-32e mode allows only 0xe and 0xf)' if lm else ''}",
                    "gate is not an interrupt or trap gate")
    if record.software and gate.dpl < record.cpl:
        return Step(Fault(GP, _gate_error(vector)),
                    f"INT {vector:#x} at CPL {record.cpl} through gate {vector} of DPL {gate.dpl} "
                    "(software interrupts need DPL >= CPL)", "gate DPL is below the CPL")
    if not gate.present:
        return Step(Fault(NP, _gate_error(vector)), f"gate {vector} is not present (P=0)", "gate is not present")
    if gate.kind == "task-gate":
        return Step(None, f"gate {vector} is a task gate: the task switch is not modelled here",
                    "task gate", known=False)
    step = _check_code_segment(record, view, gate.selector, lm)
    if step is not None:
        return step
    handler = gate.offset
    if lm and not is_canonical(handler, va_bits(view.cr4)):
        return Step(Fault(GP, 0), f"gate {vector}'s handler {handler:#x} is not canonical",
                    "handler is not canonical", handler=handler,
                    notes=(_NONCANONICAL_NOTE,))
    return _check_stack(record, view, gate, lm, handler)


_NONCANONICAL_NOTE = ("QEMU delivers to a non-canonical handler and faults on the fetch there, "
                      "so its log shows the #GP at the handler's address")


def _segment_table(view: Snapshot, selector: int) -> tuple[str, TableRegister | SegmentCache]:
    return ("LDT", view.ldtr) if selector & 4 else ("GDT", view.gdtr)


def _check_code_segment(record: Record, view: Snapshot, selector: int, lm: bool) -> Step | None:
    """SDM 6.12.1.1 / 6.14.1: the gate's selector must name a present code segment, 64-bit in IA-32e mode."""
    vector = record.vector
    error = selector & 0xFFFC
    if error == 0:
        return Step(Fault(GP, 0), f"gate {vector}'s selector {selector:#06x} is null", "gate selector is null")
    table, reg = _segment_table(view, selector)
    if table == "LDT" and isinstance(reg, SegmentCache) and reg.selector & 0xFFFC == 0:
        return Step(Fault(GP, error), f"gate {vector}'s selector {selector:#06x} names the LDT, and none is loaded",
                    "gate selector names no LDT")
    offset = selector & ~7
    if offset + 7 > reg.limit:
        return Step(Fault(GP, error),
                    f"gate {vector}'s selector {selector:#06x} is past the {table} limit {reg.limit:#x}",
                    f"gate selector is past the {table} limit")
    raw, failed = _read(view, reg.base + offset, 8, f"{table} entry {selector:#06x}")
    if failed is not None:
        return failed
    d = decode_descriptor(raw, offset // 8, long_mode=False)
    if not d.is_code:
        kind = d.type_words if d.kind != "null" else "a null descriptor"
        return Step(Fault(GP, error), f"gate {vector}'s selector {selector:#06x} names {kind}, not a code segment",
                    "gate selector is not a code segment")
    if d.dpl > record.cpl:
        return Step(Fault(GP, error),
                    f"gate {vector}'s code segment {selector:#06x} has DPL {d.dpl} > CPL {record.cpl}",
                    "handler segment DPL is above the CPL")
    if not d.present:
        return Step(Fault(NP, error), f"gate {vector}'s code segment {selector:#06x} is not present (P=0)",
                    "handler segment is not present")
    if lm and (not d.long or d.db):
        return Step(Fault(GP, error),
                    f"gate {vector}'s code segment {selector:#06x} is not 64-bit code "
                    f"(L={int(d.long)}, D={int(d.db)}; IA-32e mode needs L=1, D=0)",
                    "handler segment is not 64-bit code")
    return None


def _code_dpl(view: Snapshot, selector: int, cpl: int) -> int:
    _table, reg = _segment_table(view, selector)
    raw = read_linear(view, reg.base + (selector & ~7), 8)
    d = decode_descriptor(raw, (selector & ~7) // 8, long_mode=False)
    return cpl if d.conforming else d.dpl


def _frame_slots(record: Record, lm: bool, new_stack: bool) -> int:
    """The words pushed (SDM 6.12.1 figure 6-4, 6.14.2 figure 6-9)."""
    error = record.vector in ERROR_CODE_VECTORS and not record.software and not record.hardware
    if lm:
        return 5 + error
    return 3 + 2 * new_stack + error


def _check_stack(record: Record, view: Snapshot, gate, lm: bool, handler: int) -> Step:
    vector = record.vector
    try:
        dpl = _code_dpl(view, gate.selector, record.cpl)
    except (SnapshotError, DecodeError) as exc:
        return Step(None, f"gate {vector}'s code segment cannot be read: {exc}", "segment unreadable", known=False)
    switch = dpl < record.cpl or (lm and gate.ist != 0)
    if not switch:
        sp = record.rsp & ~0xF if lm else record.rsp
        where = f"the current stack (RSP {record.rsp:#x})"
        short = "current stack"
    elif not lm:
        return Step(None, f"gate {vector} changes privilege to ring {dpl}: the 32-bit TSS's SS:ESP is not "
                    "checked here", "privilege change", known=False, handler=handler)
    else:
        level = gate.ist + 3 if gate.ist else dpl
        name = f"IST{gate.ist}" if gate.ist else f"RSP{dpl}"
        index = 8 * level + 4                      # SDM figure 8-11: RSP0 at 4, IST1 at 0x24
        tr = view.tr
        if tr.selector & 0xFFFC == 0 or index + 7 > tr.limit:
            return Step(Fault(TS, tr.selector & 0xFFFC),
                        f"the TSS (TR {tr.selector:#06x}, limit {tr.limit:#x}) has no {name} "
                        f"(needs limit {index + 7:#x})", f"TSS has no {name}")
        raw, failed = _read(view, tr.base + index, 8, f"the TSS's {name}")
        if failed is not None:
            return failed
        stack = int.from_bytes(raw, "little")
        if not is_canonical(stack, va_bits(view.cr4)):
            return Step(Fault(SS, 0), f"the TSS's {name} {stack:#x} is not canonical", f"{name} is not canonical")
        sp = stack & ~0xF
        where = f"the TSS's {name} {stack:#x}" + (" (zero: never set?)" if stack == 0 else "")
        short = name
    slot = 8 if lm else (2 if gate.kind.endswith("16") else 4)
    for n in range(1, _frame_slots(record, lm, switch) + 1):
        address = (sp - slot * n) & MASK64
        fault, doubt = _page_fault(view, address, "write")
        if doubt is not None:
            return Step(None, f"the frame goes on {where}; whether {address:#x} can be written is not known: "
                        f"{doubt}", "stack unknown", known=False, handler=handler)
        if fault is not None:
            problem, detail = _walk_problem(view, address)
            return Step(fault, f"the frame goes on {where}, and {address:#x} is {problem}",
                        f"{short} is {problem}", handler=handler, detail=detail)
    return Step(None, f"delivered to {gate.selector:#06x}:{handler:#x} on {where}", "delivered", handler=handler)


def _walk_problem(view: Snapshot, va: int) -> tuple[str, str]:
    """(what is wrong with the page at va, the walk's words for it)."""
    try:
        walk = translate(view, va)
    except (SnapshotError, DecodeError) as exc:
        return "unreadable", str(exc)
    if walk.pa is None:
        return "not mapped", walk.problem or ""
    access = check_access(walk, PagingContext.from_snapshot(view), "write", user=False)
    return "not supervisor-writable", access.reason


# -- the chain --------------------------------------------------------------------------


def _logged_next(chain: Chain, i: int) -> tuple[Escalation | None, Record | None]:
    """What QEMU logged after records[i]: the check_exception of the next
    record (and the record), or the line before `Triple fault`."""
    records = chain.records
    if i + 1 < len(records) and chain.delivery_failed[i]:
        return records[i + 1].escalation, records[i + 1]
    if i == len(records) - 1 and chain.triple_fault:
        return chain.final, None
    return None, None


def _compare(step: Step, logged: Escalation | None, nxt: Record | None) -> bool | None:
    if logged is None or step.fault is None or not step.known:
        return None
    if logged.new != step.fault.vector:
        return False
    if nxt is not None and nxt.vector != DOUBLE_FAULT:
        if step.fault.error_code is not None and nxt.error_code != step.fault.error_code:
            return False
        if step.fault.vector == PF and nxt.cr2 != step.fault.cr2:
            return False
    return True


def _class_words(vector: int) -> str:
    return "a page fault" if exception_class(vector) == "page fault" else f"a {exception_class(vector)} exception"


def _outcome(record: Record, fault: Fault) -> tuple[str, str]:
    """(what followed, why) for `fault` raised while delivering `record` (SDM 6.15 table 6-5)."""
    first = record.vector if record.exception else -1
    if record.exception and first == DOUBLE_FAULT:
        return "shutdown", f"{fault.text()} while delivering #DF: shutdown (a triple fault; SDM Vol. 3A 6.15)"
    if record.exception and escalates(first, fault.vector) == "double fault":
        return "#DF", (f"{fault.text()}, {_class_words(fault.vector)} while delivering "
                       f"{_class_words(first)}: #DF (SDM Vol. 3A 6.15, table 6-5)")
    return fault.text(), fault.text()


def explain(chain: Chain, snap: Snapshot) -> DeliveryReport:
    """Each entry of `chain` explained against the tables in `snap`'s memory."""
    explanations: list[Explanation] = []
    notes: list[str] = []
    ext_codes = False
    for i, record in enumerate(chain.records):
        view, logged_regs = _view(record, snap)
        entry_notes: list[str] = []
        if not logged_regs:
            entry_notes.append("the log has no register dump for this event: the live IDTR, GDTR and TR were used")
        failed = chain.delivery_failed[i] if i < len(chain.delivery_failed) else False
        try:
            step = simulate(record, view)
        except (SnapshotError, DecodeError) as exc:
            step = Step(None, f"the tables cannot be read: {exc}", "tables unreadable", known=False)
        entry_notes.extend(step.notes)
        logged, nxt = _logged_next(chain, i)
        matches = _compare(step, logged, nxt)
        if step.fault is not None and step.known:
            outcome, why = _outcome(record, step.fault)
            text = f"{step.full}: {why}"
            if step.fault.vector in (GP, NP, TS) and step.fault.error_code and not record.software:
                ext_codes = True
        elif failed and logged is not None:
            seen = Fault(logged.new, nxt.error_code if nxt is not None and nxt.vector != DOUBLE_FAULT else None,
                         nxt.cr2 if nxt is not None and logged.new == PF else None)
            outcome, why = _outcome(record, seen)
            if step.known:
                text = f"QEMU logged {why} while delivering it, but the tables in memory now say: {step.full}"
                matches = False
            else:
                text = f"QEMU logged {why} while delivering it; gdbext cannot tell why: {step.full}"
                matches = None
        else:
            outcome, text = ("delivered" if step.known else "unknown"), step.reason
            if failed:
                text += "; yet QEMU logged a fault during this delivery"
                matches = False
        if matches is False:
            entry_notes.append(_mismatch(logged, nxt, step))
        explanations.append(Explanation(
            vector=record.vector, name=event_name(record), reason=step.reason, short=step.short,
            raised=step.fault, outcome=outcome, matches_log=matches, text=text, notes=tuple(entry_notes)))
    if ext_codes:
        notes.append("on hardware these error codes have EXT (bit 0) set, as each fault came while an event "
                     "was being delivered (SDM Vol. 3A 6.13); QEMU's TCG leaves EXT clear, and so does "
                     "this explanation")
    return DeliveryReport(explanations=tuple(explanations), summary=_summary(chain, explanations),
                          notes=tuple(notes))


def _mismatch(logged: Escalation | None, nxt: Record | None, step: Step) -> str:
    seen = "nothing" if logged is None else mnemonic(logged.new)
    if nxt is not None and nxt.vector != DOUBLE_FAULT and logged is not None:
        seen = f"{mnemonic(logged.new)}({nxt.error_code:#x})"
    predicted = step.fault.text() if step.fault else "a successful delivery"
    return (f"QEMU logged {seen} next, not {predicted}: the tables in memory now are not the ones this "
            "delivery read, or this model is wrong here; trust the log")


def _summary(chain: Chain, explanations: list[Explanation]) -> str:
    """One line: '#UD at 0x100027; vector 6 is past the IDT limit 0x0: #GP(0x32); ...'."""
    if not chain.records:
        return "no exception in the log" + (" before the triple fault" if chain.triple_fault else "")
    first = chain.records[0]
    head = f"{event_name(first)} at {first.rip:#x}"
    if first.vector == PF and first.cr2 is not None:
        head += f" (CR2={first.cr2:#x})"
    if first.cpl == 3:
        head += " in ring 3"
    parts = [head]
    for i, (record, e) in enumerate(zip(chain.records, explanations)):
        failed = chain.delivery_failed[i] if i < len(chain.delivery_failed) else False
        if e.outcome in ("delivered", "unknown") and not failed:
            if i == len(chain.records) - 1 or e.outcome == "unknown":
                parts.append(f"{e.name}: {e.reason}")
            continue
        why = e.reason if i == 0 else f"{e.name}'s {e.short}"
        parts.append(f"{why}: {e.outcome}")
    return "; ".join(parts)
