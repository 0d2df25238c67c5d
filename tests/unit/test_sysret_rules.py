"""The SYSRET rules on hand-built snapshots: a correct baseline, then one change at a time.

Each test changes one thing in the baseline (tests/unit/snapshots.py) and
asserts that exactly the expected rules report, with the expected status
and a message that says where the problem is; every other rule must pass
(or be skipped, where the test names why).
"""
from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gdbext.model.linear import read_linear
from gdbext.model.snapshot import (
    MSR_CSTAR,
    MSR_EFER,
    MSR_LSTAR,
    MSR_SFMASK,
    MSR_STAR,
    MSR_SYSENTER_EIP,
    SegmentCache,
    Snapshot,
    SnapshotError,
    TableRegister,
)
from gdbext.rules.sysret import (
    ERROR,
    PASS,
    RULES,
    RULES_BY_ID,
    SKIPPED,
    WARNING,
    Report,
    check_msr_write,
    evaluate,
)
from tests.support.snapshots import (
    COMPAT_RIP,
    CSTAR,
    GDT_LIMIT,
    KERNEL_RSP,
    LSTAR,
    PA_GDT,
    PA_TSS,
    PERCPU,
    PTE_P,
    PTE_RW,
    PTE_US,
    PTE_XD,
    RSP0,
    SFMASK,
    STAR,
    TSS,
    UNMAPPED_KERNEL,
    USER_CS,
    USER_RIP,
    USER_RSP,
    baseline,
    captured,
    compat_caller,
    map_user_page,
)

RULE_IDS = [rule.id for rule in RULES]
RANK = {PASS: 0, SKIPPED: 0, WARNING: 1, ERROR: 2}


def worst(report: Report) -> dict[str, str]:
    """rule id -> its worst status (a rule may give several results)."""
    out: dict[str, str] = {}
    for r in report.results:
        if r.rule not in out or RANK[r.status] > RANK[out[r.rule]]:
            out[r.rule] = r.status
    return out


def assert_only(report: Report, expected: dict[str, str], skipped: tuple[str, ...] = ()) -> None:
    """Exactly `expected` rules report (with that worst status); `skipped` are skipped;
    every other rule passes."""
    got = worst(report)
    assert set(got) == set(RULE_IDS), "every rule gives a result"
    findings = {rule: status for rule, status in got.items() if status in (ERROR, WARNING)}
    assert findings == expected, [r for r in report.results if r.status != PASS]
    skips = {r.rule for r in report.results if r.status == SKIPPED}
    assert skips == set(skipped), [r for r in report.results if r.status == SKIPPED]


def message(report: Report, rule: str, status: str | None = None) -> str:
    texts = [r.message for r in report.by_rule(rule) if status is None or r.status == status]
    return " | ".join(texts)


def consequence(report: Report, rule: str) -> str:
    return " | ".join(r.consequence for r in report.by_rule(rule))


# --- the rule table ---------------------------------------------------------------

def test_rules_are_data_in_table_order():
    assert RULE_IDS[:16] == [
        "SR-SCE", "SR-MODE", "SR-CPL", "SR-RCX-CANONICAL", "SR-OPSIZE", "SR-STAR-CS",
        "SR-STAR-SS", "SR-STAR-RPL", "SR-STAR-LIMIT", "SR-RIP-MAPPED", "SR-RSP-USER",
        "SR-RFLAGS", "SR-SWAPGS", "SR-LSTAR", "SR-SFMASK", "SR-TSS-RSP0",
    ]
    assert len(set(RULE_IDS)) == len(RULE_IDS)
    assert RULES_BY_ID["SR-SFMASK"].severity == WARNING
    for rule in RULES:
        assert rule.severity in (ERROR, WARNING)
        assert rule.title and rule.intel and rule.amd and rule.qemu
        assert RULES_BY_ID[rule.id] is rule


# --- the baseline -------------------------------------------------------------------

@pytest.mark.parametrize("la57", [False, True], ids=["4-level", "5-level"])
def test_baseline_passes_every_rule(la57):
    report = evaluate(baseline(la57=la57).snapshot())
    assert [r.status for r in report.results] == [PASS] * len(RULES), report.results
    assert [r.rule for r in report.results] == RULE_IDS
    assert report.ok(warnings=True) and report.findings == ()
    assert report.opsize == 64


def test_report_json_shape_and_ok():
    m = baseline()
    m.regs["r11"] = 0x302          # TF: a warning
    m.msrs[MSR_SFMASK] = SFMASK & ~0x200  # IF not cleared by syscall: a warning
    report = evaluate(m.snapshot())
    assert report.ok() and not report.ok(warnings=True)
    doc = json.loads(json.dumps(report.to_json()))
    assert doc["opsize"] == 64
    assert {f["rule"] for f in doc["findings"]} == {"SR-RFLAGS", "SR-SFMASK"}
    finding = doc["findings"][0]
    assert set(finding) == {"rule", "severity", "message", "consequence", "values"}
    assert finding["severity"] == WARNING and finding["consequence"]
    assert [c["rule"] for c in doc["checked"]] == RULE_IDS
    assert all(set(c) == {"rule", "status", "message"} for c in doc["checked"])
    m.regs["r11"] = 0x3202         # IOPL 3: an error
    assert not evaluate(m.snapshot()).ok()


def test_messages_are_one_line_with_hex_values():
    m = baseline()
    m.swap_gdt_entries(5, 6)
    report = evaluate(m.snapshot())
    for r in report.results:
        assert "\n" not in r.message and "\n" not in r.consequence
    assert "0x33" in message(report, "SR-STAR-CS")
    assert report.by_rule("SR-STAR-CS")[0].values["selector"] == 0x33


def test_opsize_must_be_32_or_64():
    with pytest.raises(ValueError):
        evaluate(baseline().snapshot(), opsize=16)


# --- mode and privilege ---------------------------------------------------------------

def test_sce_clear():
    m = baseline()
    m.regs["efer"] = 0xD00
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-SCE": ERROR})
    assert "#UD" in consequence(report, "SR-SCE")


MEMORY_RULES = ("SR-STAR-CS", "SR-STAR-SS", "SR-RIP-MAPPED", "SR-RSP-USER", "SR-LSTAR",
                "SR-TSS-RSP0", "SR-STAR-SYSCALL")


def test_lma_clear():
    m = baseline()
    m.regs["efer"] = 0x901         # SCE NXE LME, no LMA
    report = evaluate(m.snapshot())
    # Without LMA the page tables are not 4-level ones: the rules that read
    # memory cannot run, and say so.
    assert_only(report, {"SR-MODE": ERROR}, skipped=MEMORY_RULES)
    assert "LMA clear" in message(report, "SR-MODE")
    assert all("cannot evaluate" in r.message for r in report.results if r.status == SKIPPED)


def test_cs_long_clear():
    m = baseline()
    m.segments["cs"] = SegmentCache(0x08, 0, 0xFFFFFFFF, 0x00C09B00)   # 32-bit kernel code
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-MODE": ERROR})
    assert "compatibility mode" in message(report, "SR-MODE")
    assert "Intel: #UD" in consequence(report, "SR-MODE")


def test_cpl_3():
    m = baseline()
    m.cpl = 3
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-CPL": ERROR})
    assert "#GP(0)" in consequence(report, "SR-CPL")


# --- RCX ----------------------------------------------------------------------------

def test_rcx_non_canonical_4_level():
    m = baseline()
    m.regs["rcx"] = 0x0000800000401136
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-RCX-CANONICAL": ERROR}, skipped=("SR-RIP-MAPPED",))
    text = consequence(report, "SR-RCX-CANONICAL")
    assert "CVE-2012-0217" in text and "QEMU" in text
    assert "48-bit" in message(report, "SR-RCX-CANONICAL")


def test_rcx_canonical_only_with_la57():
    # Bit 47 set, bits 63:48 clear: canonical with 57-bit addresses only.
    m = baseline(la57=True)
    m.regs["rcx"] = 0x0000800000401136
    report = evaluate(m.snapshot())
    assert worst(report)["SR-RCX-CANONICAL"] == PASS
    assert worst(report)["SR-RIP-MAPPED"] == WARNING      # canonical, but nothing mapped there


def test_rcx_non_canonical_5_level():
    m = baseline(la57=True)
    m.regs["rcx"] = 0x0100000000401136
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-RCX-CANONICAL": ERROR}, skipped=("SR-RIP-MAPPED",))
    assert "57-bit" in message(report, "SR-RCX-CANONICAL")


def test_rcx_in_the_kernel():
    m = baseline()
    m.regs["rcx"] = LSTAR          # a kernel address: canonical, mapped, supervisor
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-RIP-MAPPED": ERROR})
    assert "supervisor page" in message(report, "SR-RIP-MAPPED")


# --- operand size -----------------------------------------------------------------

def test_sysretl_to_a_32_bit_caller_is_only_a_warning():
    report = evaluate(compat_caller(baseline()).snapshot(), opsize=32)
    assert_only(report, {"SR-OPSIZE": WARNING})
    assert report.opsize == 32 and report.ok()
    assert "0x23" in message(report, "SR-STAR-CS")         # the 32-bit user CS, GDT[4]


def test_sysretl_with_rcx_above_4g():
    m = compat_caller(baseline())
    m.regs["rcx"] = 0x1_00000000 | COMPAT_RIP
    report = evaluate(m.snapshot(), opsize=32)
    assert_only(report, {"SR-OPSIZE": ERROR})
    assert "drops the upper half" in message(report, "SR-OPSIZE")


def test_sysretl_without_any_32_bit_entry():
    m = compat_caller(baseline())
    m.msrs[MSR_CSTAR] = 0
    m.msrs[MSR_SYSENTER_EIP] = 0
    report = evaluate(m.snapshot(), opsize=32)
    assert_only(report, {"SR-OPSIZE": ERROR})
    assert "CSTAR=0" in message(report, "SR-OPSIZE")


def test_sysretl_with_cstar_0_but_sysenter_set():
    m = compat_caller(baseline())
    m.msrs[MSR_CSTAR] = 0
    report = evaluate(m.snapshot(), opsize=32)
    assert_only(report, {"SR-OPSIZE": WARNING})
    assert "sysenter" in message(report, "SR-OPSIZE")


def test_sysretl_from_64_bit_code_truncates_the_stack():
    # The caller was 64-bit code: after sysretl the pushes use ESP, which is not its stack.
    report = evaluate(baseline().snapshot(), opsize=32)
    assert_only(report, {"SR-OPSIZE": WARNING, "SR-RSP-USER": WARNING})
    assert "RSP-4" in message(report, "SR-RSP-USER")


# --- STAR and the GDT ----------------------------------------------------------------

def test_swapped_user_code_and_data():
    m = baseline()
    m.swap_gdt_entries(5, 6)
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-STAR-CS": ERROR, "SR-STAR-SS": ERROR})
    assert "not code" in message(report, "SR-STAR-CS")
    assert "#GP(0x30)" in consequence(report, "SR-STAR-CS")
    assert "not writable data" in message(report, "SR-STAR-SS")
    assert "#GP(0x28)" in consequence(report, "SR-STAR-SS")


def test_user_code_not_present():
    m = baseline()
    m.set_gdt_entry(6, USER_CS & ~(1 << 47))
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-STAR-CS": ERROR})
    assert "#NP(0x30)" in consequence(report, "SR-STAR-CS")


def test_user_code_32_bit_at_the_64_bit_slot():
    m = baseline()
    m.set_gdt_entry(6, 0x00CFFB000000FFFF)     # L=0 D=1
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-STAR-CS": ERROR})
    assert "needs L=1 D=0" in message(report, "SR-STAR-CS")
    # iretq loads it without complaint: the 64-bit user program then runs as 32-bit code.
    assert "no fault" in consequence(report, "SR-STAR-CS")
    assert "#GP" not in consequence(report, "SR-STAR-CS")


def test_user_code_with_l_and_d_set():
    m = baseline()
    m.set_gdt_entry(6, USER_CS | (1 << 54))
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-STAR-CS": ERROR})
    assert "#GP(0x30)" in consequence(report, "SR-STAR-CS")


def test_user_code_with_dpl_0():
    m = baseline()
    m.set_gdt_entry(6, 0x00AF9B000000FFFF)
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-STAR-CS": ERROR})
    assert "DPL 0, not 3" in message(report, "SR-STAR-CS")


def test_star_rpl_0():
    m = baseline()
    m.msrs[MSR_STAR] = 0x0020001000000000
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-STAR-RPL": ERROR})
    text = consequence(report, "SR-STAR-RPL")
    assert "AMD loads SS=0x28" in text and "#GP(0x28)" in text and "harmless" in text


def test_gdt_limit_ends_before_user_code():
    m = baseline()
    m.gdtr = TableRegister(m.gdtr.base, 0x2F)   # entries 0..5: user CS (0x33) is past it
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-STAR-LIMIT": ERROR}, skipped=("SR-STAR-CS",))
    assert "CS 0x33" in message(report, "SR-STAR-LIMIT")
    assert "#GP(0x30)" in consequence(report, "SR-STAR-LIMIT")


def test_gdt_limit_cuts_user_code_in_half():
    # The whole 8-byte descriptor must lie within the limit (SDM Vol. 3A 3.5.1).
    m = baseline()
    m.gdtr = TableRegister(m.gdtr.base, 0x36)
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-STAR-LIMIT": ERROR}, skipped=("SR-STAR-CS",))
    m.gdtr = TableRegister(m.gdtr.base, 0x37)
    assert_only(evaluate(m.snapshot()), {})


def test_gdt_limit_ends_before_user_data():
    m = baseline()
    m.gdtr = TableRegister(m.gdtr.base, 0x27)
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-STAR-LIMIT": ERROR}, skipped=("SR-STAR-CS", "SR-STAR-SS"))
    assert "#GP(0x28)" in consequence(report, "SR-STAR-LIMIT")


def test_star_selectors_in_the_ldt():
    m = baseline()
    m.msrs[MSR_STAR] = 0x0027001000000000      # TI=1
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-STAR-LIMIT": ERROR}, skipped=("SR-STAR-CS", "SR-STAR-SS"))
    assert "TI=1" in message(report, "SR-STAR-LIMIT")


def test_syscall_selectors_point_at_data():
    m = baseline()
    m.msrs[MSR_STAR] = 0x0023001800000000      # SYSCALL CS = 0x18, the kernel data segment
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-STAR-SYSCALL": ERROR})
    assert "CS 0x18" in message(report, "SR-STAR-SYSCALL")


# --- the user page at RCX, level by level ----------------------------------------------

LEVELS = ("PML4", "PDPT", "PD", "PT")


@pytest.mark.parametrize("level", LEVELS)
def test_user_code_page_supervisor_at(level):
    m = baseline()
    m.clear_bits(USER_RIP, level, PTE_US)
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-RIP-MAPPED": ERROR})
    assert f"U/S clear in {level} entry" in message(report, "SR-RIP-MAPPED")
    assert "#PF(0x15)" in consequence(report, "SR-RIP-MAPPED")   # P | U/S | I/D


@pytest.mark.parametrize("level", LEVELS)
def test_user_code_page_not_present_at(level):
    m = baseline()
    m.clear_bits(USER_RIP, level, PTE_P)
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-RIP-MAPPED": WARNING})
    assert f"not present at {level}" in message(report, "SR-RIP-MAPPED")
    assert "#PF(0x14)" in consequence(report, "SR-RIP-MAPPED")   # U/S | I/D
    assert "demand-pages" in consequence(report, "SR-RIP-MAPPED")


@pytest.mark.parametrize("level", LEVELS)
def test_user_code_page_nx_at(level):
    m = baseline()
    m.set_bits(USER_RIP, level, PTE_XD)
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-RIP-MAPPED": ERROR})
    assert f"NX set in {level} entry" in message(report, "SR-RIP-MAPPED")
    assert "#PF(0x15)" in consequence(report, "SR-RIP-MAPPED")


def test_user_code_page_reserved_bit():
    m = baseline()
    m.set_bits(USER_RIP, "PML4", 1 << 7)        # PS is reserved in a PML4E
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-RIP-MAPPED": ERROR})
    assert "reserved bits" in message(report, "SR-RIP-MAPPED")
    assert "#PF(0x1d)" in consequence(report, "SR-RIP-MAPPED")   # P | U/S | RSVD | I/D


def test_user_half_pml5_entry_supervisor():
    # With 5-level paging the user code and stack share PML5[0]: both rules fire.
    m = baseline(la57=True)
    m.clear_bits(USER_RIP, "PML5", PTE_US)
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-RIP-MAPPED": ERROR, "SR-RSP-USER": ERROR})
    assert "U/S clear in PML5 entry" in message(report, "SR-RIP-MAPPED")


# --- the user stack -------------------------------------------------------------------

def test_rsp_still_the_kernel_stack():
    m = baseline()
    m.regs["rsp"] = KERNEL_RSP
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-RSP-USER": ERROR})
    assert "kernel half" in message(report, "SR-RSP-USER")
    assert "#PF(0x7)" in consequence(report, "SR-RSP-USER")      # P | W | U/S


def test_rsp_page_supervisor():
    m = baseline()
    m.clear_bits(USER_RSP, "PT", PTE_US)
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-RSP-USER": ERROR})
    assert "U/S clear in PT entry" in message(report, "SR-RSP-USER")
    assert "#PF(0x7)" in consequence(report, "SR-RSP-USER")


def test_rsp_non_canonical():
    m = baseline()
    m.regs["rsp"] = 0x0000900000000000
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-RSP-USER": ERROR})
    assert "#SS(0)" in consequence(report, "SR-RSP-USER")


def test_rsp_page_not_present_is_a_warning():
    m = baseline()
    m.clear_bits(USER_RSP, "PT", PTE_P)
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-RSP-USER": WARNING})
    assert "#PF(0x6)" in consequence(report, "SR-RSP-USER")      # W | U/S


def test_rsp_page_read_only_is_a_warning():
    m = baseline()
    m.clear_bits(USER_RSP, "PT", PTE_RW)
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-RSP-USER": WARNING})
    assert "R/W clear in PT entry" in message(report, "SR-RSP-USER")


# --- RFLAGS from R11 -----------------------------------------------------------------

@pytest.mark.parametrize("iopl", [1, 2, 3])
def test_iopl(iopl):
    m = baseline()
    m.regs["r11"] = 0x202 | (iopl << 12)
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-RFLAGS": ERROR})
    assert f"IOPL={iopl}, not 0" in message(report, "SR-RFLAGS", ERROR)


def test_if_clear():
    m = baseline()
    m.regs["r11"] = 0x2
    report = evaluate(m.snapshot())
    # Legal, only almost surely a bug (a kernel with no timer yet does it): a warning.
    assert_only(report, {"SR-RFLAGS": WARNING})
    assert "IF clear" in message(report, "SR-RFLAGS", WARNING)
    assert report.ok() and not report.ok(warnings=True)


def test_tf_set():
    m = baseline()
    m.regs["r11"] = 0x302
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-RFLAGS": WARNING})
    assert "TF set" in message(report, "SR-RFLAGS")


def test_iopl_3_and_if_clear_are_two_findings():
    m = baseline()
    m.regs["r11"] = 0x3002
    report = evaluate(m.snapshot())
    assert [r.status for r in report.by_rule("SR-RFLAGS")] == [ERROR, WARNING]


def test_rf_vm_and_bit_1_are_notes():
    m = baseline()
    m.regs["r11"] = 0x200 | (1 << 16) | (1 << 17)    # IF, RF, VM; bit 1 clear
    report = evaluate(m.snapshot())
    assert_only(report, {})
    text = message(report, "SR-RFLAGS")
    assert "user RFLAGS 0x202" in text          # the SDM mask drops RF and VM, sets bit 1
    assert "bit 1 clear" in text and "VM/RF" in text


# --- GS ----------------------------------------------------------------------------------

def test_swapgs_missing():
    m = baseline()
    m.regs["gs_base"], m.regs["k_gs_base"] = PERCPU, 0
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-SWAPGS": ERROR})
    text = message(report, "SR-SWAPGS")
    assert f"GS_BASE={PERCPU:#x}" in text and "KERNEL_GS_BASE=0x0" in text


def test_gs_base_mapped_supervisor_in_the_user_half():
    # A kernel that keeps its per-CPU data in identity-mapped low memory.
    m = baseline()
    map_user_page(m, 0x200000, 0x200000)
    m.clear_bits(0x200000, "PT", PTE_US)
    m.regs["gs_base"], m.regs["k_gs_base"] = 0x200000, 0
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-SWAPGS": ERROR})


def test_both_gs_bases_kernel_is_a_warning():
    m = baseline()
    m.regs["gs_base"] = PERCPU
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-SWAPGS": WARNING})


# --- LSTAR ----------------------------------------------------------------------------

@pytest.mark.parametrize("lstar, words", [
    (UNMAPPED_KERNEL, "is not mapped"),
    (USER_RIP, "user page"),
    (0x0000800000000000, "not canonical"),
    (PERCPU, "NX set in PT entry"),
], ids=["unmapped", "user-mapped", "non-canonical", "no-execute"])
def test_lstar(lstar, words):
    m = baseline()
    m.msrs[MSR_LSTAR] = lstar
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-LSTAR": ERROR})
    assert words in message(report, "SR-LSTAR")


# --- SFMASK -----------------------------------------------------------------------------

@pytest.mark.parametrize("flag, bit", [("IF", 9), ("TF", 8), ("DF", 10), ("AC", 18)])
def test_sfmask_missing(flag, bit):
    m = baseline()
    m.msrs[MSR_SFMASK] = SFMASK & ~(1 << bit)
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-SFMASK": WARNING})
    results = report.by_rule("SR-SFMASK")
    assert len(results) == 1 and results[0].message.endswith(f"does not clear {flag}")


def test_sfmask_zero_gives_one_warning_per_flag():
    m = baseline()
    m.msrs[MSR_SFMASK] = 0
    report = evaluate(m.snapshot())
    assert [r.message[-2:] for r in report.by_rule("SR-SFMASK")] == ["IF", "TF", "DF", "AC"]


# --- TSS.RSP0 ---------------------------------------------------------------------------

def test_rsp0_unmapped():
    m = baseline()
    m.set_rsp0(UNMAPPED_KERNEL)
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-TSS-RSP0": ERROR})
    assert "RSP0-8 is not mapped" in message(report, "SR-TSS-RSP0")


def test_rsp0_in_the_user_half():
    m = baseline()
    m.set_rsp0(USER_RSP + 8)
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-TSS-RSP0": ERROR})
    assert "user half" in message(report, "SR-TSS-RSP0")


def test_rsp0_user_accessible():
    m = baseline()
    for level in ("PML4", "PDPT", "PD", "PT"):
        m.set_bits(RSP0 - 8, level, PTE_US)
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-TSS-RSP0": ERROR})
    assert "user-accessible" in message(report, "SR-TSS-RSP0")


def test_rsp0_read_only():
    m = baseline()
    m.set_rsp0(CSTAR + 0x100)                  # kernel text: mapped, supervisor, read-only
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-TSS-RSP0": ERROR})
    assert "read-only" in message(report, "SR-TSS-RSP0")


def test_tr_never_loaded():
    m = baseline()
    m.tr = SegmentCache(0, 0, 0xFFFF, 0x8B00)   # QEMU's TR after reset
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-TSS-RSP0": ERROR})
    assert "null" in message(report, "SR-TSS-RSP0")


def test_tss_not_mapped():
    m = baseline()
    m.tr = SegmentCache(0x40, UNMAPPED_KERNEL, 0x67, 0x8B00)
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-TSS-RSP0": ERROR})
    assert "TSS at" in message(report, "SR-TSS-RSP0")


def test_tss_limit_too_small():
    m = baseline()
    m.tr = SegmentCache(0x40, TSS, 0x0B, 0x8B00)
    report = evaluate(m.snapshot())
    assert_only(report, {"SR-TSS-RSP0": ERROR})
    assert "#TS" in consequence(report, "SR-TSS-RSP0")


# --- what cannot be evaluated ---------------------------------------------------------

def test_unreadable_msr_skips_only_its_rules():
    m = baseline()
    del m.msrs[MSR_STAR]
    report = evaluate(m.snapshot())
    star_rules = ("SR-STAR-CS", "SR-STAR-SS", "SR-STAR-RPL", "SR-STAR-LIMIT", "SR-STAR-SYSCALL")
    assert_only(report, {}, skipped=star_rules)
    assert "MSR 0xc0000081 was not captured" in message(report, "SR-STAR-RPL")


def test_msr_reader_refusing_is_a_skip_not_a_crash():
    # A live target refuses rdmsr with its own error type (e.g. on a halted vCPU).
    class Refused(Exception):
        pass

    def refuse(number: int) -> int:
        raise Refused("vCPU 0 is halted in HLT")

    m = compat_caller(baseline())
    snap = m.snapshot()
    snap.msr_reader = refuse
    report = evaluate(snap, opsize=32)
    skipped = ("SR-STAR-CS", "SR-STAR-SS", "SR-STAR-RPL", "SR-STAR-LIMIT", "SR-LSTAR",
               "SR-SFMASK", "SR-STAR-SYSCALL")
    # SR-OPSIZE still answers: without CSTAR it cannot call it an error, only a warning.
    assert_only(report, {"SR-OPSIZE": WARNING}, skipped=skipped)
    assert "halted in HLT" in message(report, "SR-LSTAR")
    assert all("internal error" not in r.message for r in report.results)
    # The wrmsr watch: the written value is known, the other MSRs are not.
    star = check_msr_write(snap, MSR_STAR, STAR)
    assert statuses(star) == {rule: PASS for rule in (
        "SR-STAR-RPL", "SR-STAR-LIMIT", "SR-STAR-CS", "SR-STAR-SS", "SR-STAR-SYSCALL")}
    assert [r.status for r in check_msr_write(snap, MSR_EFER, 0xD00)] == [SKIPPED]


def test_missing_register_skips_its_rule():
    m = baseline()
    del m.regs["r11"]
    report = evaluate(m.snapshot())
    assert_only(report, {}, skipped=("SR-RFLAGS",))
    assert "r11" in message(report, "SR-RFLAGS")


def test_no_physical_memory_skips_memory_rules():
    m = baseline()
    snap = m.snapshot()
    snap.phys_reader = lambda pa, size: (_ for _ in ()).throw(SnapshotError(f"no {pa:#x}"))
    report = evaluate(snap)
    assert_only(report, {}, skipped=MEMORY_RULES)


def test_saved_snapshot_replays_the_same_report():
    # A triage report saves what was read; evaluating the reloaded snapshot agrees.
    m = baseline()
    m.swap_gdt_entries(5, 6)
    snap = m.snapshot()
    first = evaluate(snap)
    again = evaluate(Snapshot.from_json(json.loads(json.dumps(snap.to_json()))))
    assert again.results == first.results


# --- states captured from the bundled kernel under QEMU -------------------------------------

@pytest.mark.parametrize("scenario, expected", [
    ("ok", {}),
    ("gdt-order", {"SR-STAR-CS": ERROR, "SR-STAR-SS": ERROR}),
    ("no-swapgs", {"SR-SWAPGS": ERROR}),
    # sysretl back to 64-bit code: no 32-bit entry exists, and the pushes now use ESP,
    # which lands in the kernel's identity map.
    ("sysret32", {"SR-OPSIZE": ERROR, "SR-RSP-USER": ERROR}),
    ("linux", {}),
])
def test_captured_states(scenario, expected):
    snap, opsize, label = captured(scenario)
    assert label.startswith(("enter_user_sysret", "syscall_return_sysret", "entry_SYSRETQ"))
    report = evaluate(snap, opsize=opsize)
    assert_only(report, expected)


def test_captured_gdt_order_names_the_real_selectors():
    snap, opsize, _ = captured("gdt-order")
    report = evaluate(snap, opsize=opsize)
    # The bundled kernel's STAR[63:48] is 0x1b: sysretq loads CS 0x2b and SS 0x23.
    assert "CS 0x2b" in message(report, "SR-STAR-CS") and "#GP(0x28)" in consequence(
        report, "SR-STAR-CS")
    assert "SS 0x23" in message(report, "SR-STAR-SS")


def test_captured_ok_state_with_one_change():
    # The real state, then one mistake at a time, evaluated on QEMU's own page tables.
    snap, opsize, _ = captured("ok")
    star = snap.msr(MSR_STAR)
    snap.msrs[MSR_STAR] = star & ~(3 << 48)
    assert_only(evaluate(snap, opsize=opsize), {"SR-STAR-RPL": ERROR})
    snap.msrs[MSR_STAR] = star
    snap.regs["r11"] = 0x3202
    assert_only(evaluate(snap, opsize=opsize), {"SR-RFLAGS": ERROR})
    snap.regs["r11"] = 0x202
    lstar = snap.msr(MSR_LSTAR)
    snap.regs["rcx"] = lstar                       # return into the kernel's entry code
    assert_only(evaluate(snap, opsize=opsize), {"SR-RIP-MAPPED": ERROR})


def test_baseline_values_are_linux_values():
    # The hand-built baseline claims Linux's values: hold it to the captured Linux state.
    linux, _, _ = captured("linux")
    base = baseline().snapshot()
    gdt = read_linear(linux, linux.gdtr.base, 8 * 7)
    assert gdt == read_linear(base, base.gdtr.base, 8 * 7)
    assert linux.gdtr.limit == base.gdtr.limit and linux.tr.base == base.tr.base
    for number in (MSR_STAR, MSR_SFMASK):
        assert linux.msr(number) == base.msr(number)
    for name in ("cr0", "efer"):
        assert linux.regs[name] == base.regs[name]
    for seg in ("cs", "ss"):
        assert linux.segments[seg] == base.segments[seg]


def test_captured_linux_with_kpti():
    snap, opsize, _ = captured("linux")
    assert snap.cr4 & (1 << 12)                    # 5-level paging: 57-bit canonical
    # KPTI: the live CR3 is the user one, where the per-CPU area is not mapped; the
    # kernel half alone marks KERNEL_GS_BASE as the kernel's.
    kgs = snap.regs["k_gs_base"]
    assert kgs >> 63
    snap.regs["gs_base"], snap.regs["k_gs_base"] = kgs, 0
    report = evaluate(snap, opsize=opsize)
    assert_only(report, {"SR-SWAPGS": ERROR})
    snap.regs["gs_base"], snap.regs["k_gs_base"] = 0, kgs
    snap.regs["rcx"] = snap.msr(MSR_LSTAR)        # the entry text: mapped for KPTI, supervisor
    report = evaluate(snap, opsize=opsize)
    assert_only(report, {"SR-RIP-MAPPED": ERROR})
    assert "U/S clear" in message(report, "SR-RIP-MAPPED")


def test_captured_replay_reads_nothing_new():
    # A page or MSR the capture did not read makes a rule skip; the real state needs none.
    snap, opsize, _ = captured("sysret32")
    report = evaluate(snap, opsize=opsize)
    assert not [r for r in report.results if r.status == SKIPPED]
    assert snap.msr(MSR_CSTAR) == 0 and snap.msr(MSR_SYSENTER_EIP) == 0


# --- the wrmsr watch ----------------------------------------------------------------------

def statuses(results) -> dict[str, str]:
    out: dict[str, str] = {}
    for r in results:
        if r.rule not in out or RANK[r.status] > RANK[out[r.rule]]:
            out[r.rule] = r.status
    return out


def test_wrmsr_star_good_value():
    results = check_msr_write(baseline().snapshot(), MSR_STAR, STAR)
    assert statuses(results) == {rule: PASS for rule in (
        "SR-STAR-RPL", "SR-STAR-LIMIT", "SR-STAR-CS", "SR-STAR-SS", "SR-STAR-SYSCALL")}
    # CSTAR is set, so the 32-bit CS (GDT[4]) is checked too.
    assert any("CS 0x23" in r.message for r in results if r.rule == "SR-STAR-CS")


def test_wrmsr_star_rpl_0():
    results = check_msr_write(baseline().snapshot(), MSR_STAR, 0x0020001000000000)
    assert statuses(results)["SR-STAR-RPL"] == ERROR
    assert [r.rule for r in results if r.status != PASS] == ["SR-STAR-RPL"]


def test_wrmsr_star_off_by_one_entry():
    # STAR[63:48] = 0x13: sysretq would load CS 0x23 (32-bit code) and SS 0x1b (kernel data).
    results = check_msr_write(baseline().snapshot(), MSR_STAR, 0x0013001000000000)
    got = statuses(results)
    assert got["SR-STAR-CS"] == ERROR and got["SR-STAR-SS"] == ERROR
    assert got["SR-STAR-RPL"] == PASS and got["SR-STAR-LIMIT"] == PASS


def test_wrmsr_star_past_the_gdt():
    # STAR[63:48] = 0x73: SS 0x7b is the last entry, CS 0x83 is past the limit 0x7f,
    # and the 32-bit CS 0x73 is an empty entry.
    results = check_msr_write(baseline().snapshot(), MSR_STAR, 0x0073001000000000)
    assert statuses(results)["SR-STAR-LIMIT"] == ERROR
    cs = [(r.status, r.message.split()[1]) for r in results if r.rule == "SR-STAR-CS"]
    assert cs == [(SKIPPED, "STAR[63:48]+16"), (ERROR, "0x73")]


def test_wrmsr_star_checks_the_32_bit_cs_only_with_cstar():
    m = baseline()
    m.set_gdt_entry(4, 0)                 # no 32-bit user code segment
    assert statuses(check_msr_write(m.snapshot(), MSR_STAR, STAR))["SR-STAR-CS"] == ERROR
    m.msrs[MSR_CSTAR] = 0                 # and no compat entry: sysretl is never used
    assert statuses(check_msr_write(m.snapshot(), MSR_STAR, STAR))["SR-STAR-CS"] == PASS


def test_wrmsr_star_checks_against_the_gdt_at_that_moment():
    m = baseline()
    m.mem.write(PA_GDT, bytes(8 * (GDT_LIMIT + 1)))   # the GDT is not filled in yet
    got = statuses(check_msr_write(m.snapshot(), MSR_STAR, STAR))
    assert got["SR-STAR-CS"] == ERROR and got["SR-STAR-SYSCALL"] == ERROR


@pytest.mark.parametrize("value, status", [
    (LSTAR, PASS), (UNMAPPED_KERNEL, ERROR), (USER_RIP, ERROR), (1 << 63, ERROR),
])
def test_wrmsr_lstar(value, status):
    results = check_msr_write(baseline().snapshot(), MSR_LSTAR, value)
    assert [(r.rule, r.status) for r in results] == [("SR-LSTAR", status)]


def test_wrmsr_sfmask():
    snap = baseline().snapshot()
    assert statuses(check_msr_write(snap, MSR_SFMASK, SFMASK)) == {"SR-SFMASK": PASS}
    missing = check_msr_write(snap, MSR_SFMASK, 0x200)        # clears IF only
    assert [r.message[-2:] for r in missing] == ["TF", "DF", "AC"]


def test_wrmsr_efer():
    m = baseline()
    assert statuses(check_msr_write(m.snapshot(), MSR_EFER, 0xD01)) == {"SR-SCE": PASS}
    results = check_msr_write(m.snapshot(), MSR_EFER, 0xD00)
    assert statuses(results) == {"SR-SCE": ERROR} and "LSTAR" in results[0].message
    m.msrs[MSR_LSTAR] = 0                 # early boot: nothing set up yet, clearing SCE is fine
    assert statuses(check_msr_write(m.snapshot(), MSR_EFER, 0xD00)) == {"SR-SCE": PASS}


def test_wrmsr_other_msrs_have_no_rule():
    assert check_msr_write(baseline().snapshot(), 0x277, 0x0007040600070406) == []


# --- random states never break evaluate ---------------------------------------------------

u64 = st.integers(0, (1 << 64) - 1)


def _random_snapshot(seed: int, regs: dict, gdt_base: int, gdt_limit: int, tr_base: int,
                     tr_limit: int, attrs: int, cpl: int, msrs: dict) -> Snapshot:
    def read(pa: int, size: int) -> bytes:
        rng = random.Random(seed ^ (pa // 4096))
        # Mostly-zero pages keep walks short; dense ones exercise reserved bits.
        if rng.random() < 0.5:
            return bytes(size)
        return rng.randbytes(size)

    def rdmsr(number: int) -> int:
        if number not in msrs:
            raise SnapshotError(f"MSR {number:#x} was not captured")
        return msrs[number]

    cs = SegmentCache(regs.get("cs", 0) & 0xFFFF, 0, 0xFFFFFFFF, attrs)
    return Snapshot(regs=regs, segments={"cs": cs}, gdtr=TableRegister(gdt_base, gdt_limit),
                    idtr=TableRegister(0, 0), ldtr=SegmentCache(0, 0, 0, 0),
                    tr=SegmentCache(0x40, tr_base, tr_limit, attrs >> 8 << 8), cpl=cpl,
                    phys_reader=read, msr_reader=rdmsr)


REG_NAMES = ("rcx", "r11", "rsp", "rip", "cr0", "cr3", "cr4", "efer", "gs_base", "k_gs_base")
MSR_NUMBERS = (MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_SFMASK, MSR_SYSENTER_EIP)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), regs=st.dictionaries(st.sampled_from(REG_NAMES), u64),
       gdt_base=u64, gdt_limit=st.integers(0, 0xFFFF), tr_base=u64,
       tr_limit=st.integers(0, 0xFFFFF), attrs=st.integers(0, 0xFFFFFFFF), cpl=st.integers(0, 3),
       msrs=st.dictionaries(st.sampled_from(MSR_NUMBERS), u64),
       opsize=st.sampled_from([32, 64]))
def test_random_snapshots_never_raise(seed, regs, gdt_base, gdt_limit, tr_base, tr_limit,
                                      attrs, cpl, msrs, opsize):
    snap = _random_snapshot(seed, regs, gdt_base, gdt_limit, tr_base, tr_limit, attrs, cpl, msrs)
    report = evaluate(snap, opsize=opsize)
    assert {r.rule for r in report.results} == set(RULE_IDS)
    for r in report.results:
        assert r.status in (PASS, WARNING, ERROR, SKIPPED)
        assert "internal error" not in r.message, r
    json.dumps(report.to_json())
    for number in (MSR_STAR, MSR_LSTAR, MSR_SFMASK, MSR_EFER):
        for r in check_msr_write(snap, number, seed * 0x9E3779B97F4A7C15 % (1 << 64)):
            assert "internal error" not in r.message, r


@settings(max_examples=200, deadline=None)
@given(gdt=st.binary(min_size=128, max_size=128), tss=st.binary(min_size=0x68, max_size=0x68),
       star=u64, rcx=u64, rsp=u64, r11=u64, gdt_limit=st.integers(0, 0xFFFF),
       la57=st.booleans(), opsize=st.sampled_from([32, 64]))
def test_random_gdt_and_registers_on_a_real_layout(gdt, tss, star, rcx, rsp, r11, gdt_limit,
                                                     la57, opsize):
    m = baseline(la57=la57)
    m.mem.write(PA_GDT, gdt)
    m.mem.write(PA_TSS, tss)
    m.msrs[MSR_STAR] = star
    m.regs.update(rcx=rcx, rsp=rsp, r11=r11)
    m.gdtr = TableRegister(m.gdtr.base, gdt_limit)
    report = evaluate(m.snapshot(), opsize=opsize)
    assert [r.rule for r in report.results if r.status == SKIPPED and "internal" in r.message] == []
    # The GDT page is mapped and readable: the STAR rules never need to skip for memory.
    for r in report.results:
        if r.rule in ("SR-STAR-RPL", "SR-STAR-LIMIT", "SR-RFLAGS"):
            assert r.status != SKIPPED, r
