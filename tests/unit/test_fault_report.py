"""The fault report (gdbext.views.fault) over a hand-built machine
(tests/support/snapshots.py): the GDT, IDT and page tables are known, so
every decoded part of the report has one right answer."""
from __future__ import annotations

import json

from gdbext.views.common import to_json
from gdbext.views.fault import fault_report, fault_text
from gdbext.x86.faults import decode_frame
from tests.support.snapshots import (
    KERNEL_RSP,
    KERNEL_TEXT,
    USER_RIP,
    USER_RSP,
    baseline,
)

HANDLER = KERNEL_TEXT + 0x900


def words(*values: int) -> bytes:
    return b"".join(v.to_bytes(8, "little") for v in values)


def test_user_fetch_of_a_no_execute_page():
    m = baseline()
    m.regs["cr2"] = USER_RSP & ~0xFFF                      # the stack page is NX
    frame = decode_frame(words(0x15, USER_RSP & ~0xFFF, 0x33, 0x202, USER_RSP, 0x2B), KERNEL_RSP & ~0xF, True)
    r = fault_report(m.snapshot(), frame, (14,), HANDLER)
    assert (r.vector, r.name, r.error_code, r.cpl, r.mode, r.cr2) == (14, "#PF", 0x15, 3, "64-bit", m.regs["cr2"])
    assert r.decoded.names == ("P", "U/S", "I/D") and r.walk is not None
    assert r.walk_verdict.startswith("user exec refused") and "XD=1" in r.walk_verdict
    assert r.rflags_flags == ("IF",) and r.source == "idt-breakpoint"
    doc = json.loads(to_json(r))
    for key in ("vector", "name", "error_code", "rip", "cs", "rflags", "rsp", "ss", "cpl", "mode", "cr2",
                "symbol", "instruction", "cpu", "source", "handler", "decoded", "walk", "descriptor",
                "bytes_at_rip"):
        assert key in doc
    assert "#PF (Page Fault, vector 14) error code 0x15" in fault_text(r)


def test_gp_naming_a_data_descriptor_and_an_idt_gate():
    m = baseline()
    frame = decode_frame(words(0x28, KERNEL_TEXT + 0x10, 0x10, 0x46, KERNEL_RSP, 0x18), KERNEL_RSP & ~0xF, True)
    r = fault_report(m.snapshot(), frame, (13,), HANDLER)
    assert r.mode == "64-bit" and r.cpl == 0 and r.cr2 is None and r.walk is None
    assert r.descriptor.found and r.descriptor.table == "GDT" and r.descriptor.fields["kind"] == "data"
    assert r.descriptor.fields["dpl"] == 3
    # IDT=1: the code names vector 14's gate, which this IDT (all zeros) does not have.
    r = fault_report(m.snapshot(), decode_frame(words((14 << 3) | 2, KERNEL_TEXT, 0x10, 0x46, KERNEL_RSP, 0x18),
                                                 KERNEL_RSP & ~0xF, True), (13,), HANDLER)
    assert r.descriptor.table == "IDT" and "NOT present" in r.descriptor.summary
    # Past the GDT limit (0x7f).
    r = fault_report(m.snapshot(), decode_frame(words(0x100, KERNEL_TEXT, 0x10, 0x46, KERNEL_RSP, 0x18),
                                                 KERNEL_RSP & ~0xF, True), (13,), HANDLER)
    assert not r.descriptor.found and "past the GDT limit" in r.descriptor.summary


def test_mode_comes_from_the_saved_cs_descriptor():
    m = baseline()
    frame = decode_frame(words(USER_RIP, 0x23, 0x202, 0xFFFFD5CC, 0x2B), (KERNEL_RSP & ~0xF) + 8, False)
    r = fault_report(m.snapshot(), frame, (6,), HANDLER, instruction="call 0x1234")
    assert r.mode == "compatibility" and r.instruction is None and r.error_code is None
    assert r.bytes_at_rip is not None and len(r.bytes_at_rip.split()) == 16
    # 0x2b selects the user data descriptor: no mode, and the report says why.
    frame = decode_frame(words(USER_RIP, 0x2B, 0x202, USER_RSP, 0x2B), (KERNEL_RSP & ~0xF) + 8, False)
    r = fault_report(m.snapshot(), frame, (6,), HANDLER)
    assert r.mode is None and any("SYSRET loads a fixed CS cache" in n for n in r.notes)


def test_a_shared_handler_is_never_guessed():
    m = baseline()
    frame = decode_frame(words(0, KERNEL_TEXT, 0x10, 0x46, KERNEL_RSP, 0x18), KERNEL_RSP & ~0xF, True)
    r = fault_report(m.snapshot(), frame, (13, 14), HANDLER)
    assert r.vector is None and r.candidates == (13, 14) and r.decoded is None
    assert r.name == "one of #GP (13), #PF (14)" and any("does not tell" in n for n in r.notes)
