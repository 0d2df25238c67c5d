"""Why each delivery failed: the explainer over real decoded tables.

Each test takes the Linux-like machine of tests.support.snapshots (GDT,
TSS and page tables in fake physical memory), puts IDT gates in it
(SDM Vol. 3A figure 6-8), breaks one thing, and has the events QEMU would
log for it (tests.support.qemulog, in QEMU 7.2's format) explained.  The
expected faults are those of SDM Vol. 3A 6.12.1, 6.14 and 6.15 with QEMU's
error codes (EXT clear), and the empty-IDT chain is QEMU's own log.
"""
from __future__ import annotations

from pathlib import Path

from gdbext.model.qemu_log import build_chain, parse_text, read_tail
from gdbext.model.snapshot import SegmentCache, Snapshot, TableRegister
from gdbext.rules.delivery import Fault, _view, explain, simulate
from tests.support import qemulog
from tests.support.fakemem import FakeMemory
from tests.support.snapshots import (
    GDT,
    KERNEL_RSP,
    KERNEL_TEXT,
    PA_GDT,
    PA_IDT,
    PA_TSS,
    TSS,
    UNMAPPED_KERNEL,
    USER_RIP,
    USER_RSP,
    Machine,
    baseline,
)

FIXTURES = Path(__file__).parent / "fixtures" / "qemu_log"
HANDLERS = KERNEL_TEXT + 0x400     # vector v's handler at HANDLERS + 16 * v (mapped kernel text)
USER_CS_ATTRS, USER_SS_ATTRS = 0x00A0FB00, 0x00C0F300
FLAT = 0xFFFFFFFF


def machine(*, gates: range = range(32), user: bool = False) -> Machine:
    m = baseline()
    for vector in gates:
        m.mem.write(PA_IDT + 16 * vector, qemulog.gate64(HANDLERS + 16 * vector))
    m.regs["rsp"] = KERNEL_RSP
    if user:
        m.regs.update(rip=USER_RIP, rsp=USER_RSP, cs=0x33, ss=0x2B)
        m.segments["cs"] = SegmentCache(0x33, 0, FLAT, USER_CS_ATTRS)
        m.segments["ss"] = SegmentCache(0x2B, 0, FLAT, USER_SS_ATTRS)
        m.cpl = 3
    return m


def set_gate(m: Machine, vector: int, **kw) -> None:
    m.mem.write(PA_IDT + 16 * vector, qemulog.gate64(kw.pop("offset", HANDLERS + 16 * vector), **kw))


def set_ist(m: Machine, n: int, value: int) -> None:
    m.mem.write(PA_TSS + 0x24 + 8 * (n - 1), value.to_bytes(8, "little"))


def step_of(m: Machine, vector: int, **kw):
    """simulate() of one event logged on machine `m`."""
    snap = m.snapshot()
    (record,) = parse_text(qemulog.record(snap, 0, vector, **kw)).records
    view, from_log = _view(record, snap)
    assert from_log
    return simulate(record, view)


def test_delivered_when_everything_is_right():
    step = step_of(machine(), 6)
    assert step.fault is None and step.known and step.handler == HANDLERS + 16 * 6
    assert step.reason.startswith(f"delivered to 0x0010:{HANDLERS + 96:#x} on the current stack")


def test_vector_past_the_long_mode_idt_limit():
    m = machine()
    m.idtr = TableRegister(m.idtr.base, 0xDF)             # vectors 0..13: 16-byte gates
    step = step_of(m, 14, cr2=0x1000)
    assert step.fault == Fault(13, 14 * 8 + 2)
    assert step.reason == "vector 14 is past the IDT limit 0xdf" and "0xef" in step.detail


def test_gate_not_present_is_np():
    m = machine()
    set_gate(m, 6, present=False)
    step = step_of(m, 6)
    assert step.fault == Fault(11, 0x32) and step.reason == "gate 6 is not present (P=0)"


def test_call_gate_type_in_the_idt_is_gp():
    m = machine()
    set_gate(m, 6, type_=0xC)
    step = step_of(m, 6)
    assert step.fault == Fault(13, 0x32) and "type 0xc" in step.reason


def test_software_interrupt_through_a_dpl0_gate_from_ring_3():
    m = machine(gates=range(256), user=True)
    step = step_of(m, 0x80, software=True)
    assert step.fault == Fault(13, 0x80 * 8 + 2) and "DPL 0" in step.reason
    set_gate(m, 0x80, dpl=3)
    assert step_of(m, 0x80, software=True).fault is None


def test_null_selector_is_gp0():
    m = machine()
    set_gate(m, 6, selector=0)
    step = step_of(m, 6)
    assert step.fault == Fault(13, 0) and "null" in step.reason


def test_selector_past_the_gdt_limit():
    m = machine()
    set_gate(m, 6, selector=0x80)                         # GDT limit 0x7f
    step = step_of(m, 6)
    assert step.fault == Fault(13, 0x80) and "past the GDT limit 0x7f" in step.reason


def test_selector_of_a_data_segment():
    m = machine()
    set_gate(m, 6, selector=0x18)                         # KERNEL_DS
    step = step_of(m, 6)
    assert step.fault == Fault(13, 0x18) and "not a code segment" in step.reason


def test_code_segment_not_present_is_np():
    m = machine()
    m.set_gdt_entry(7, 0x00AF1B000000FFFF)                # KERNEL_CS with P=0
    set_gate(m, 6, selector=0x38)
    step = step_of(m, 6)
    assert step.fault == Fault(11, 0x38) and "not present" in step.reason


def test_32_bit_code_segment_in_long_mode():
    m = machine()
    set_gate(m, 6, selector=0x08)                         # KERNEL32_CS: D=1, L=0
    step = step_of(m, 6)
    assert step.fault == Fault(13, 0x08) and "L=0, D=1" in step.reason


def test_non_canonical_handler():
    m = machine()
    set_gate(m, 6, offset=0x0000800000000000)
    step = step_of(m, 6)
    assert step.fault == Fault(13, 0) and "not canonical" in step.reason and step.notes


def test_unmapped_rsp0_from_ring_3_is_a_page_fault_near_it():
    m = machine(user=True)
    m.set_rsp0(UNMAPPED_KERNEL)
    step = step_of(m, 6)
    # Supervisor write to a not-present page (SDM 4.7: W/R=1, P=0, U/S=0); the
    # first push is the SS slot just below RSP0.
    assert step.fault == Fault(14, 0x2, UNMAPPED_KERNEL - 8)
    assert "RSP0" in step.reason and "not mapped" in step.reason


def test_non_canonical_rsp0_is_ss0():
    m = machine(user=True)
    m.set_rsp0(0x0000800000000000)
    assert step_of(m, 6).fault == Fault(12, 0)


def test_zero_ist_entry():
    m = machine()
    set_gate(m, 8, ist=1)
    step = step_of(m, 8)
    assert step.fault == Fault(14, 0x2, 0xFFFFFFFFFFFFFFF8) and "IST1 0x0 (zero" in step.reason


def test_read_only_ist_stack():
    m = machine()
    set_gate(m, 8, ist=2)
    set_ist(m, 2, GDT + 0x1000)                           # the top of the read-only GDT page
    step = step_of(m, 8)
    assert step.fault == Fault(14, 0x3, GDT + 0xFF8) and "not supervisor-writable" in step.reason


def test_tss_too_short_for_the_ist():
    m = machine()
    set_gate(m, 8, ist=1)
    m.tr = SegmentCache(m.tr.selector, TSS, 0x23, m.tr.attrs)
    step = step_of(m, 8)
    assert step.fault == Fault(10, 0x40) and "no IST1" in step.reason


def test_ring_3_int_with_unmapped_rsp0_ends_in_a_triple_fault():
    # int $0x80 (a DPL-3 gate) from ring 3 with RSP0 unmapped: each delivery
    # switches to RSP0 and faults on its first push.  QEMU logs #PF, #PF ->
    # #DF, then a #PF while delivering #DF.
    m = machine(gates=range(256), user=True)
    set_gate(m, 0x80, dpl=3)
    m.set_rsp0(UNMAPPED_KERNEL)
    snap = m.snapshot()
    cr2 = UNMAPPED_KERNEL - 8
    text = (qemulog.record(snap, 0, 0x80, software=True)
            + qemulog.record(snap, 1, 14, 0x2, cr2=cr2)
            + qemulog.record(snap, 2, 8, 0, old=14).replace("new 0x8", "new 0xe")
            + qemulog.triple_fault(14))
    chain = build_chain(parse_text(text))
    assert [r.vector for r in chain.records] == [0x80, 14, 8] and chain.triple_fault
    report = explain(chain, m.snapshot())
    outcomes = [e.outcome for e in report.explanations]
    assert outcomes == [f"#PF(error 0x2, CR2={cr2:#x})", "#DF", "shutdown"]
    assert all(e.matches_log for e in report.explanations)
    assert report.summary.startswith(f"INT 0x80 at {USER_RIP:#x} in ring 3; the frame goes on the TSS's RSP0")
    assert report.summary.endswith("#PF's RSP0 is not mapped: #DF; #DF's RSP0 is not mapped: shutdown")


def test_page_fault_then_gp_is_a_double_fault_that_is_delivered():
    m = machine(user=True)
    m.idtr = TableRegister(m.idtr.base, 0xDF)
    snap = m.snapshot()
    text = (qemulog.record(snap, 0, 14, 0x15, cr2=USER_RIP)
            + qemulog.record(snap, 1, 8, 0, old=14).replace("new 0x8", "new 0xd"))
    chain = build_chain(parse_text(text))
    assert [r.vector for r in chain.records] == [14, 8] and chain.delivery_failed == (True, False)
    report = explain(chain, m.snapshot())
    pf, df = report.explanations
    assert pf.raised == Fault(13, 0x72) and pf.outcome == "#DF" and pf.matches_log
    assert "while delivering a page fault" in pf.text
    assert df.outcome == "delivered" and "RSP0" in df.text
    assert any("EXT" in n for n in report.notes)


def test_tables_that_changed_since_are_said_to_disagree():
    # QEMU logged #NP for the gate of vector 6, but the gate in memory is fine now.
    m = machine()
    snap = m.snapshot()
    text = qemulog.record(snap, 0, 6) + qemulog.record(snap, 1, 11, 0x32)
    chain = build_chain(parse_text(text))
    ud, np_ = explain(chain, m.snapshot()).explanations
    assert np_.vector == 11 and np_.outcome == "delivered"
    assert ud.matches_log is False and any("trust the log" in n for n in ud.notes)


def test_record_without_dump_uses_the_live_tables():
    m = machine()
    set_gate(m, 6, present=False)
    snap = m.snapshot()
    line = qemulog.record(snap, 0, 6).splitlines(keepends=True)
    text = "".join(line[:2]) + "check_exception old: 0xffffffff new 0xb\n" + qemulog.record(snap, 1, 11, 0x32, check=False)
    chain = build_chain(parse_text(text))
    first = explain(chain, m.snapshot()).explanations[0]
    assert first.raised == Fault(11, 0x32) and first.matches_log
    assert any("no register dump" in n for n in first.notes)


def test_empty_idt_kernel_reads_as_the_manual_says():
    chain = build_chain(read_tail(FIXTURES / "empty_idt_qemu72.log"))
    mem = FakeMemory()
    # The live state after the triple fault (QEMU keeps it with -no-shutdown):
    # 32-bit protected mode, paging off.  Its tables come from the log anyway.
    snap = Snapshot(regs={"cr0": 0x11, "cr3": 0, "cr4": 0, "efer": 0, "rip": 0x100027, "rsp": 0x6F08,
                          "eflags": 6}, segments={}, gdtr=TableRegister(0xC02B8, 0x27),
                    idtr=TableRegister(0, 0), ldtr=SegmentCache(0, 0, 0xFFFF, 0x8200),
                    tr=SegmentCache(0, 0, 0xFFFF, 0x8B00), cpl=0, phys_reader=mem.read)
    report = explain(chain, snap)
    assert report.summary == ("#UD at 0x100027; vector 6 is past the IDT limit 0x0: #GP(0x32); "
                              "#GP's gate is past the IDT limit: #DF; #DF's gate is past the IDT limit: shutdown")
    assert [e.raised for e in report.explanations] == [Fault(13, 0x32), Fault(13, 0x6A), Fault(13, 0x42)]
    assert all(e.matches_log for e in report.explanations)
    # 8-byte gates outside IA-32e mode: vector 6 needs limit 6 * 8 + 7.
    assert "0x37" in report.explanations[0].text


def test_gdt_entry_read_from_memory_not_invented():
    # The same selector, once as data and once as 64-bit code, in the same slot.
    m = machine()
    set_gate(m, 6, selector=0x38)
    m.mem.write_u64(PA_GDT + 0x38, 0x00CF93000000FFFF)
    assert step_of(m, 6).fault == Fault(13, 0x38)
    m.mem.write_u64(PA_GDT + 0x38, 0x00AF9B000000FFFF)
    assert step_of(m, 6).fault is None
