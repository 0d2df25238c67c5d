"""The IRET rules on hand-built snapshots: a correct iretq to ring 3, then one change at a time.

Each test changes one thing in the baseline (tests/support/snapshots.py
iret_baseline: the frame an interrupt from ring 3 pushed, about to be
popped) and asserts that exactly the expected rules report, with the
expected status and fault, and that every other rule passes (or is skipped
where the test says why).
"""
from __future__ import annotations

import json
import random

import pytest

from gdbext.model.snapshot import SegmentCache
from gdbext.rules.iret import (
    ERROR,
    PASS,
    RING3_ONLY,
    RULES,
    RULES_BY_ID,
    SKIPPED,
    WARNING,
    Frame,
    IretReport,
    evaluate,
)
from tests.support.snapshots import (
    COMPAT_ESP,
    COMPAT_RIP,
    GDT_LIMIT,
    IRET_RSP,
    KERNEL_RSP,
    PERCPU,
    PTE_P,
    PTE_US,
    PTE_XD,
    UNMAPPED_KERNEL,
    USER_DS,
    USER_RFLAGS,
    USER_RIP,
    USER_RSP,
    code_descriptor,
    compat_caller,
    iret_baseline,
    kernel_return,
    write_frame,
)

RULE_IDS = [rule.id for rule in RULES]
RANK = {PASS: 0, SKIPPED: 0, WARNING: 1, ERROR: 2}
USER_CS_INDEX, USER_DS_INDEX = 6, 5


def worst(report: IretReport) -> dict[str, str]:
    out: dict[str, str] = {}
    for r in report.results:
        if r.rule not in out or RANK[r.status] > RANK[out[r.rule]]:
            out[r.rule] = r.status
    return out


def assert_only(report: IretReport, expected: dict[str, str], skipped: tuple[str, ...] = ()) -> None:
    got = worst(report)
    assert set(got) == set(RULE_IDS), "every rule gives a result"
    findings = {rule: status for rule, status in got.items() if status in (ERROR, WARNING)}
    assert findings == expected, [r for r in report.results if r.status != PASS]
    skips = {r.rule for r in report.results if r.status == SKIPPED}
    assert skips == set(skipped), [r for r in report.results if r.status == SKIPPED]


def text(report: IretReport, rule: str) -> str:
    """Messages and consequences of one rule, one string."""
    return " | ".join(f"{r.message} -> {r.consequence}" for r in report.by_rule(rule))


def frame(m, **slots):
    base = {"rip": USER_RIP, "cs": 0x33, "rflags": USER_RFLAGS, "rsp": USER_RSP, "ss": 0x2B}
    base.update(slots)
    write_frame(m, **base)
    return m


def run(m, **kw) -> IretReport:
    return evaluate(m.snapshot(), **kw)


# --- the table and the baseline -----------------------------------------------------

def test_rules_are_data():
    assert RULE_IDS[:4] == ["IR-MODE", "IR-OPSIZE", "IR-NT", "IR-FRAME"]
    assert len(set(RULE_IDS)) == len(RULE_IDS)
    for rule in RULES:
        assert rule.id.startswith("IR-") and rule.severity in (ERROR, WARNING)
        assert rule.title and rule.intel and rule.amd and rule.qemu
        assert RULES_BY_ID[rule.id] is rule


@pytest.mark.parametrize("la57", [False, True], ids=["4-level", "5-level"])
def test_baseline_passes_every_rule(la57):
    report = run(iret_baseline(la57=la57))
    assert [r.status for r in report.results] == [PASS] * len(RULES), report.results
    assert report.frame == Frame(IRET_RSP, 8, USER_RIP, 0x33, USER_RFLAGS, USER_RSP, 0x2B)
    assert report.ring3 and report.ok(warnings=True)


def test_json_shape():
    m = frame(iret_baseline(), rflags=0x2)     # IF clear: a warning
    report = run(m)
    assert report.ok() and not report.ok(warnings=True)
    doc = json.loads(json.dumps(report.to_json()))
    assert doc["frame"] == {"at": IRET_RSP, "slot": 8, "rip": USER_RIP, "cs": 0x33,
                            "rflags": 0x2, "rsp": USER_RSP, "ss": 0x2B}
    assert doc["returns_to_cpl"] == 3 and doc["ring3"] is True
    assert [f["rule"] for f in doc["findings"]] == ["IR-RFLAGS"]
    assert [c["rule"] for c in doc["checked"]] == RULE_IDS


def test_messages_are_one_line():
    m = frame(iret_baseline(), cs=0x30, rflags=0x3002, ss=0x28)
    for r in run(m).results:
        assert "\n" not in r.message and "\n" not in r.consequence


# --- the CPU state at the iretq ---------------------------------------------------------

def test_not_in_64_bit_mode_skips_everything():
    m = iret_baseline()
    m.segments["cs"] = SegmentCache(0x08, 0, 0xFFFFFFFF, 0x00C09B00)   # 32-bit code
    report = run(m)
    assert_only(report, {}, skipped=tuple(RULE_IDS))
    assert "64-bit" in text(report, "IR-MODE")


def test_nt_set_now():
    m = iret_baseline()
    m.regs["eflags"] = 0x46 | (1 << 14)
    report = run(m)
    assert_only(report, {"IR-NT": ERROR})
    assert "#GP(0)" in text(report, "IR-NT")


def test_iretd_reads_4_byte_slots():
    # The same 8-byte frame read as iretd: RIP = low half of RIP, CS = high half = 0.
    report = run(iret_baseline(), opsize=32)
    assert report.frame.slot == 4 and report.frame.rip == USER_RIP and report.frame.cs == 0
    assert worst(report)["IR-OPSIZE"] == WARNING
    assert worst(report)["IR-CS"] == ERROR and "null" in text(report, "IR-CS")


def test_opsize_must_be_16_32_or_64():
    with pytest.raises(ValueError):
        run(iret_baseline(), opsize=8)


# --- the frame ---------------------------------------------------------------------------

def test_frame_not_mapped():
    m = iret_baseline()
    m.regs["rsp"] = UNMAPPED_KERNEL
    report = run(m)
    skipped = tuple(r.id for r in RULES[4:])
    assert_only(report, {"IR-FRAME": ERROR}, skipped=skipped)
    assert "#PF(0x0)" in text(report, "IR-FRAME") and report.frame is None


def test_frame_rsp_not_canonical():
    m = iret_baseline()
    m.regs["rsp"] = 0x0000800000000000
    report = run(m)
    assert worst(report)["IR-FRAME"] == ERROR and "#SS(0)" in text(report, "IR-FRAME")


# --- CS --------------------------------------------------------------------------------

def test_cs_rpl_0_on_the_user_code_descriptor():
    # The seed-003 mistake: the user code selector without its RPL bits.
    report = run(frame(iret_baseline(), cs=0x30))
    # SS.RPL 3 is now != CS.RPL 0 too; the CPU faults on CS first.
    assert_only(report, {"IR-CS-RPL": ERROR, "IR-SS": ERROR})
    assert "#GP(0x30)" in text(report, "IR-CS-RPL") and "RPL 3" in text(report, "IR-CS-RPL")
    assert report.ring3, "a DPL-3 code descriptor: the frame was meant for ring 3"


def test_cs_null():
    report = run(frame(iret_baseline(), cs=0x3))
    assert worst(report)["IR-CS"] == ERROR and "#GP(0)" in text(report, "IR-CS")


def test_cs_past_the_gdt_limit():
    sel = (GDT_LIMIT + 1) | 3
    report = run(frame(iret_baseline(), cs=sel))
    assert worst(report)["IR-CS"] == ERROR
    assert f"#GP({sel & ~3:#x})" in text(report, "IR-CS") and "GDT limit" in text(report, "IR-CS")


def test_cs_in_the_ldt_without_one():
    report = run(frame(iret_baseline(), cs=0x37))
    assert worst(report)["IR-CS"] == ERROR and "no LDT" in text(report, "IR-CS")


def test_gdt_order_user_code_and_data_swapped():
    m = iret_baseline()
    m.swap_gdt_entries(USER_DS_INDEX, USER_CS_INDEX)
    report = run(m)
    assert_only(report, {"IR-CS": ERROR, "IR-SS": ERROR}, skipped=("IR-CS-RPL",))
    assert "#GP(0x30)" in text(report, "IR-CS") and "not code" in text(report, "IR-CS")
    assert "#GP(0x28)" in text(report, "IR-SS")


def test_cs_32_bit_code_returns_to_compatibility_mode():
    m = compat_caller(iret_baseline())
    m.regs["rsp"] = IRET_RSP              # compat_caller moved it: the frame is the kernel's
    frame(m, cs=0x23, rip=COMPAT_RIP, rsp=COMPAT_ESP)
    report = run(m)
    assert_only(report, {})
    assert "compatibility mode" in text(report, "IR-CS")


def test_compatibility_mode_rip_above_the_limit():
    m = compat_caller(iret_baseline())
    m.regs["rsp"] = IRET_RSP
    m.set_gdt_entry(4, code_descriptor(3, long=False) & ~(1 << 55))   # G=0: limit 0xfffff
    frame(m, cs=0x23, rip=COMPAT_RIP, rsp=COMPAT_ESP)
    report = run(m)
    assert worst(report)["IR-RIP"] == ERROR and "CS limit" in text(report, "IR-RIP")


def test_cs_l_and_d_set():
    m = iret_baseline()
    m.set_gdt_entry(USER_CS_INDEX, code_descriptor(3, long=True) | (1 << 54))
    report = run(m)
    assert_only(report, {"IR-CS": ERROR})
    assert "QEMU 7.2 does not test" in text(report, "IR-CS")


def test_cs_not_present():
    m = iret_baseline()
    m.set_gdt_entry(USER_CS_INDEX, code_descriptor(3, long=True) & ~(1 << 47))
    report = run(m)
    assert_only(report, {"IR-CS": ERROR})
    assert "#NP(0x30)" in text(report, "IR-CS")


def test_cs_descriptor_dpl_0_with_rpl_3():
    m = iret_baseline()
    m.set_gdt_entry(USER_CS_INDEX, code_descriptor(0, long=True))
    report = run(m)
    assert_only(report, {"IR-CS-RPL": ERROR})
    assert "DPL 0" in text(report, "IR-CS-RPL") and "#GP(0x30)" in text(report, "IR-CS-RPL")


def test_conforming_code_with_dpl_above_rpl():
    m = iret_baseline()
    m.set_gdt_entry(USER_CS_INDEX, code_descriptor(3, long=True) | (1 << 42))  # conforming
    report = run(frame(m, cs=0x31, ss=0x29))
    assert worst(report)["IR-CS-RPL"] == ERROR and "conforming" in text(report, "IR-CS-RPL")


def test_iretq_at_cpl_3_cannot_return_inward():
    m = iret_baseline()
    m.cpl = 3
    report = run(kernel_return(m))
    assert worst(report)["IR-CS-RPL"] == ERROR and "RPL 0 < CPL 3" in text(report, "IR-CS-RPL")


# --- SS ------------------------------------------------------------------------------------

def test_ss_rpl_0():
    report = run(frame(iret_baseline(), ss=0x28))
    assert_only(report, {"IR-SS": ERROR})
    assert "#GP(0x28)" in text(report, "IR-SS")


def test_ss_dpl_0():
    m = iret_baseline()
    m.set_gdt_entry(USER_DS_INDEX, USER_DS & ~(3 << 45))
    report = run(m)
    assert_only(report, {"IR-SS": ERROR})
    assert "DPL 0" in text(report, "IR-SS") and "#GP(0x28)" in text(report, "IR-SS")


def test_ss_read_only():
    m = iret_baseline()
    m.set_gdt_entry(USER_DS_INDEX, USER_DS & ~(1 << 41))
    report = run(m)
    assert_only(report, {"IR-SS": ERROR})
    assert "not writable" in text(report, "IR-SS")


def test_ss_not_present_intel_ss_qemu_np():
    m = iret_baseline()
    m.set_gdt_entry(USER_DS_INDEX, USER_DS & ~(1 << 47))
    report = run(m)
    assert_only(report, {"IR-SS": ERROR})
    assert "#SS(0x28)" in text(report, "IR-SS") and "QEMU 7.2: #NP(0x28)" in text(report, "IR-SS")


def test_ss_null_to_ring_3():
    report = run(frame(iret_baseline(), ss=0x3))
    assert_only(report, {"IR-SS": ERROR})
    assert "#GP(0)" in text(report, "IR-SS")


def test_ss_null_to_ring_0_is_allowed():
    report = run(kernel_return(iret_baseline(), ss=0))
    assert_only(report, {}, skipped=RING3_ONLY)


# --- RFLAGS -----------------------------------------------------------------------------------

@pytest.mark.parametrize("iopl", [1, 2, 3])
def test_iopl(iopl):
    report = run(frame(iret_baseline(), rflags=USER_RFLAGS | iopl << 12))
    assert_only(report, {"IR-RFLAGS": ERROR})
    assert f"IOPL={iopl}, not 0" in text(report, "IR-RFLAGS")


def test_if_clear_is_a_warning():
    report = run(frame(iret_baseline(), rflags=0x2))
    assert_only(report, {"IR-RFLAGS": WARNING})
    assert "IF clear" in text(report, "IR-RFLAGS") and report.ok()


@pytest.mark.parametrize("bit, words", [(8, "TF set"), (14, "NT set")])
def test_tf_and_nt_are_warnings(bit, words):
    report = run(frame(iret_baseline(), rflags=USER_RFLAGS | 1 << bit))
    assert_only(report, {"IR-RFLAGS": WARNING})
    assert words in text(report, "IR-RFLAGS")


def test_vm_and_bit_1_are_notes():
    report = run(frame(iret_baseline(), rflags=0x200 | 1 << 17))
    assert_only(report, {})
    assert "bit 1 clear" in text(report, "IR-RFLAGS") and "VM set" in text(report, "IR-RFLAGS")


# --- RIP ----------------------------------------------------------------------------------------

def test_rip_not_canonical():
    report = run(frame(iret_baseline(), rip=0x0000800000000000))
    assert_only(report, {"IR-RIP": ERROR}, skipped=("IR-RIP-MAPPED",))
    assert "Intel, AMD: #GP(0)" in text(report, "IR-RIP")


@pytest.mark.parametrize("level", ["PML4", "PDPT", "PD", "PT"])
def test_user_rip_on_a_supervisor_page(level):
    m = iret_baseline()
    m.clear_bits(USER_RIP, level, PTE_US)
    report = run(m)
    assert_only(report, {"IR-RIP-MAPPED": ERROR})
    assert f"U/S clear in {level}" in text(report, "IR-RIP-MAPPED")
    assert "#PF(0x15)" in text(report, "IR-RIP-MAPPED")


def test_user_rip_nx():
    m = iret_baseline()
    m.set_bits(USER_RIP, "PT", PTE_XD)
    report = run(m)
    assert_only(report, {"IR-RIP-MAPPED": ERROR})
    assert "NX set in PT" in text(report, "IR-RIP-MAPPED")


def test_user_rip_not_present_is_a_warning():
    m = iret_baseline()
    m.clear_bits(USER_RIP, "PT", PTE_P)
    assert_only(run(m), {"IR-RIP-MAPPED": WARNING})


# --- RSP, GS, TSS -------------------------------------------------------------------------------

def test_user_rsp_still_the_kernel_stack():
    report = run(frame(iret_baseline(), rsp=KERNEL_RSP))
    assert_only(report, {"IR-RSP-USER": ERROR})
    assert "kernel half" in text(report, "IR-RSP-USER")


def test_user_rsp_on_a_supervisor_page():
    m = iret_baseline()
    m.clear_bits(USER_RSP, "PT", PTE_US)
    assert_only(run(m), {"IR-RSP-USER": ERROR})


def test_swapgs_missing():
    m = iret_baseline()
    m.regs.update(gs_base=PERCPU, k_gs_base=0)
    report = run(m)
    assert_only(report, {"IR-SWAPGS": ERROR})


def test_rsp0_unmapped():
    m = iret_baseline()
    m.set_rsp0(UNMAPPED_KERNEL)
    assert_only(run(m), {"IR-TSS-RSP0": ERROR})


# --- returns to ring 0 ------------------------------------------------------------------------

def test_kernel_return_gets_only_kernel_rules():
    # IF clear, the kernel's GS base, a kernel stack: all right for a return to CPL 0.
    m = kernel_return(iret_baseline())
    m.set_rsp0(UNMAPPED_KERNEL)           # a ring-3 concern only
    report = run(m)
    assert_only(report, {}, skipped=RING3_ONLY)
    assert not report.ring3 and report.frame.cs == 0x10
    assert all("ring-3 rule" in r.message for r in report.results if r.status == SKIPPED)


def test_kernel_return_rip_not_canonical():
    report = run(kernel_return(iret_baseline(), rip=0x8000000000001000))
    assert_only(report, {"IR-RIP": ERROR}, skipped=RING3_ONLY)


def test_kernel_return_to_user_data_selector():
    report = run(kernel_return(iret_baseline(), cs=0x18))   # KERNEL_DS as CS
    assert_only(report, {"IR-CS": ERROR}, skipped=RING3_ONLY + ("IR-CS-RPL",))
    assert "#GP(0x18)" in text(report, "IR-CS")


# --- random frames never break the evaluation -----------------------------------------------

def test_random_frames_give_one_result_per_rule():
    rng = random.Random(11)
    m = iret_baseline()
    for _ in range(300):
        slots = {"rip": rng.getrandbits(64), "cs": rng.getrandbits(16),
                 "rflags": rng.getrandbits(64), "rsp": rng.getrandbits(64),
                 "ss": rng.getrandbits(16)}
        if rng.random() < 0.5:
            slots["cs"] = rng.choice([0x10, 0x23, 0x2B, 0x33, 0x30, 0x08]) | rng.randrange(4)
            slots["ss"] = rng.choice([0x18, 0x2B, 0x28, 0]) | rng.randrange(4)
        frame(m, **slots)
        report = run(m)
        assert {r.rule for r in report.results} == set(RULE_IDS)
        assert not any("internal error" in r.message for r in report.results), report.results
        assert report.frame.cs == slots["cs"] & 0xFFFF
