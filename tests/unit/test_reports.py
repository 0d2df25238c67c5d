"""The reports of gdbext.views are dataclasses; their JSON is dataclasses.asdict.

These pin the conventions that keep the JSON what it was when reports were
dicts: field order is key order, a keyword field loses its trailing "_", an
ABSENT field is left out, nested reports and dicts of them become dicts.
The JSON itself is compared as parsed back from to_json (tuples are arrays).
"""
from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from gdbext.model.snapshot import MSR_STAR
from gdbext.views.common import ABSENT, report_dict, to_json
from gdbext.views.cpl import CplReport, cpl_report
from gdbext.views.gdt import GdtEntry, GdtReport, gdt_report
from gdbext.views.idt import IdtGate, IdtReport
from gdbext.views.msr import MsrReport, NoDecoding, StarDecoding, msr_report
from gdbext.views.tss import TssReport, tss_report
from tests.support.snapshots import RSP0, USER_RSP, baseline


def test_absent_survives_copies():
    assert copy.copy(ABSENT) is ABSENT and copy.deepcopy(ABSENT) is ABSENT
    assert not ABSENT and repr(ABSENT) == "ABSENT"


def test_cpl_keys_in_order_with_if_unsuffixed():
    r = cpl_report(baseline().snapshot())
    assert isinstance(r, CplReport)
    doc = json.loads(to_json(r))
    assert list(doc) == ["cpu", "cpl", "mode", "iopl", "if", "rflags", "rflags_flags", "cs", "ss",
                         "halted", "rip"]
    assert doc["if"] is r.if_ is False  # RFLAGS 0x46: IF clear
    assert doc["rflags_flags"] == list(r.rflags_flags)
    assert doc == dict(report_dict(r), rflags_flags=list(r.rflags_flags), **{"if": r.if_})
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.cpl = 3  # type: ignore[misc]


def test_stack_user_key_only_once_mapped():
    m = baseline()
    m.set_rsp0(RSP0)
    r = tss_report(m.snapshot())
    assert isinstance(r, TssReport)
    stacks = report_dict(r)["stacks"]
    assert list(stacks) == [f"rsp{i}" for i in range(3)] + [f"ist{i}" for i in range(1, 8)]
    assert stacks["rsp0"] == {"value": RSP0, "canonical": True, "mapped": True, "supervisor_writable": True,
                              "problem": None, "user": False}
    assert stacks["ist1"] == {"value": 0, "canonical": True, "mapped": False, "supervisor_writable": False,
                              "problem": "unused"}
    m.set_rsp0(0x1234000)  # not mapped: no "user"
    unmapped = report_dict(tss_report(m.snapshot()))["stacks"]["rsp0"]
    assert list(unmapped) == ["value", "canonical", "mapped", "supervisor_writable", "problem"]
    assert unmapped["problem"] and unmapped["mapped"] is False
    m.set_rsp0(USER_RSP)  # a user page: mapped, a fault under SMAP, and "user" says why
    user = report_dict(tss_report(m.snapshot()))["stacks"]["rsp0"]
    assert (user["mapped"], user["supervisor_writable"], user["user"]) == (True, False, True)
    assert "SMAP" in user["problem"]


def test_msr_dicts_keyed_by_name_and_star_descriptors_only_with_a_gdt():
    m = baseline()
    r = msr_report(m.snapshot(), {"STAR": MSR_STAR, "0x10": 0x10})
    assert isinstance(r, MsrReport) and isinstance(r.decoded["STAR"], StarDecoding)
    doc = json.loads(to_json(r))
    assert list(doc) == ["cpu", "msrs", "numbers", "decoded", "errors", "notes"]
    assert list(doc["msrs"]) == ["STAR", "0x10"] and doc["msrs"]["0x10"] is None
    assert doc["numbers"] == {"STAR": MSR_STAR, "0x10": 0x10}
    assert "0x10" in doc["errors"] and "0x10" not in doc["decoded"]
    star = doc["decoded"]["STAR"]
    assert list(star)[:8] == ["syscall_cs", "syscall_ss", "sysret_base", "sysret_rpl", "sysret_cs64",
                              "sysret_ss", "sysret_cs32", "eip32"]
    assert [k for k in star if k.endswith("_descriptor")] == [
        "syscall_cs_descriptor", "syscall_ss_descriptor", "sysret_cs64_descriptor", "sysret_ss_descriptor",
        "sysret_cs32_descriptor"]
    bare = StarDecoding(syscall_cs=8, syscall_ss=16, sysret_base=0x1B, sysret_rpl=3, sysret_cs64=0x2B,
                        sysret_ss=0x23, sysret_cs32=0x1B, eip32=0)
    assert not any(k.endswith("_descriptor") for k in report_dict(bare))
    assert report_dict(NoDecoding()) == {}


def test_gdt_entries_and_notes_are_fields():
    r = gdt_report(baseline().snapshot(), notes=["a note"])
    assert isinstance(r, GdtReport) and all(isinstance(e, GdtEntry) for e in r.entries)
    doc = json.loads(to_json(r))
    assert list(doc) == ["cpu", "base", "limit", "long_mode", "entries", "warnings", "star", "notes"]
    assert doc["notes"] == ["a note"]
    assert list(doc["entries"][0]) == ["index", "selector", "size", "raw", "kind", "type", "type_words", "base",
                                       "limit", "dpl", "present", "long", "db", "granularity", "avl", "system",
                                       "used_by", "truncated"]
    assert doc["entries"][2]["used_by"] == ["CS", "syscall CS"]


def test_idt_gate_fields():
    gate = IdtGate(vector=14, name="#PF", kind="interrupt-gate", selector=0x10, handler=0xFFFFFFFF81000000,
                   symbol=None, ist=0, dpl=0, present=True, raw=0, problems=())
    doc = json.loads(to_json(IdtReport(cpu=0, base=0x1000, limit=0xFFF, long_mode=True, gates=(gate,), warnings=())))
    assert doc["gates"] == [{"vector": 14, "name": "#PF", "kind": "interrupt-gate", "selector": 0x10,
                             "handler": 0xFFFFFFFF81000000, "symbol": None, "ist": 0, "dpl": 0, "present": True,
                             "raw": 0, "problems": []}]


def test_a_plain_dict_passes_through():
    doc = {"findings": [], "address": 1}
    assert report_dict(doc) is doc
    assert to_json(doc) == json.dumps(doc) and "\n" not in to_json(doc)


def test_report_dict_equals_dataclasses_asdict_with_the_conventions():
    """The fast converter gives exactly what dataclasses.asdict gives, nested
    dataclasses, lists, tuples and dicts included."""
    import dataclasses

    from gdbext.views import common

    @dataclasses.dataclass(frozen=True)
    class Inner:
        a: int
        global_: bool
        maybe: object = common.ABSENT

    @dataclasses.dataclass(frozen=True)
    class Outer:
        inner: Inner
        items: tuple
        table: dict
        names: list

    r = Outer(Inner(1, True), (Inner(2, False, maybe=3), 4), {"x": Inner(5, True), "y": None}, ["a", Inner(6, False)])
    expected = dataclasses.asdict(r, dict_factory=lambda pairs: {
        (k[:-1] if k == "global_" else k): v for k, v in pairs if v is not common.ABSENT})
    assert common.report_dict(r) == expected
    assert list(common.report_dict(r)["inner"]) == ["a", "global"]


def test_gdt_marks_no_star_roles_when_star_has_no_selectors():
    """Before a kernel sets STAR (OVMF: 0), its roles would all land on the
    null entry and the one after it: none is marked, a warning says why."""
    machine = baseline()
    machine.msrs[MSR_STAR] = 0
    r = gdt_report(machine.snapshot())
    assert not any(role in used for e in r.entries for used in e.used_by
                   for role in ("syscall CS", "syscall SS", "sysret CS", "sysret SS", "sysret32 CS"))
    assert "STAR's selector fields are 0: SYSCALL and SYSRET have no segments yet" in r.warnings


def test_gdt_never_marks_the_null_entry_with_a_star_role():
    machine = baseline()
    machine.msrs[MSR_STAR] = (0x0000 << 48) | (0x0008 << 32)   # SYSRET base 0: its 32-bit CS is selector 3
    r = gdt_report(machine.snapshot())
    assert r.entries[0].used_by == ()
    assert "STAR's sysret32 CS 0x0003 is the null selector" in r.warnings


def test_pagewalk_text_with_paging_off_names_no_paging_mode():
    from gdbext.views.pagewalk import walk_report, walk_text
    from gdbext.x86.paging import PagingContext, walk

    ctx = PagingContext(cr3=0, cr0=0x60000011, cr4=0, efer=0)   # protected mode, CR0.PG=0
    text = walk_text(walk_report(walk(lambda pa, n: bytes(n), ctx, 0x1234), ctx))
    assert "level paging" not in text and "paging off (CR0.PG=0)" in text
    assert "paging is disabled (CR0.PG=0): the linear address is the physical address" in text


def test_idt_text_says_a_problem_shared_by_many_gates_once():
    from gdbext.views.idt import idt_text

    def gate(vector: int, problems: tuple) -> IdtGate:
        return IdtGate(vector=vector, name="", kind="interrupt-gate", selector=0x38, handler=0x7F000000 + vector,
                       symbol=None, ist=0, dpl=0, present=True, raw=0, problems=problems)

    bad = ("selector 0x38 is not a present 64-bit code segment (data)",)
    gates = tuple(gate(v, bad) for v in [*range(32), 128]) + (gate(200, ("handler 0x7f0000c8 is not mapped",)),)
    warnings = ("IDTR limit 0x1fff covers more than 256 gates; only 256 are decoded",) + tuple(
        f"vector {g.vector} (interrupt): {p}" for g in gates for p in g.problems)
    text = idt_text(IdtReport(cpu=0, base=0, limit=0xFFF, long_mode=True, gates=gates, warnings=warnings))
    lines = [line for line in text.splitlines() if line.startswith("warning:")]
    assert lines == [
        "warning: IDTR limit 0x1fff covers more than 256 gates; only 256 are decoded",
        f"warning: vectors 0-31, 128 (33 gates): {bad[0]}",
        "warning: vector 200 (interrupt): handler 0x7f0000c8 is not mapped",
    ]
