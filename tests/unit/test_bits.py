"""Register bit names, STAR, canonical addresses and CPU modes."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gdbext.model.qemu_text import parse_info_registers
from gdbext.x86 import DecodeError
from gdbext.x86.bits import (
    CR0_FLAGS,
    CR4_FLAGS,
    CR4_LA57,
    CR4_SMAP,
    CR4_SMEP,
    EFER_FLAGS,
    EFER_LMA,
    EFER_NXE,
    RFLAGS_FLAGS,
    cpu_mode,
    cr0_names,
    cr4_names,
    decode_star,
    efer_names,
    flag_names,
    is_canonical,
    rflags_iopl,
    rflags_names,
    sfmask_names,
    unknown_bits,
)

FIXTURES = Path(__file__).parent / "fixtures"


def test_efer():
    assert efer_names(0xD01) == ["SCE", "LME", "LMA", "NXE"]
    assert efer_names(0xD00) == ["LME", "LMA", "NXE"]          # OVMF: no SYSCALL yet
    assert EFER_LMA == 0x400 and EFER_NXE == 0x800


def test_control_registers_seen_in_qemu():
    # OVMF in QEMU 7.2: CR0=80010033 CR4=00000668.
    assert cr0_names(0x80010033) == ["PE", "MP", "ET", "NE", "WP", "PG"]
    assert cr4_names(0x668) == ["DE", "PAE", "MCE", "OSFXSR", "OSXMMEXCPT"]
    # Reset: CR0=60000010 is ET, NW, CD.
    assert cr0_names(0x60000010) == ["ET", "NW", "CD"]
    assert CR4_LA57 == 1 << 12 and CR4_SMEP == 1 << 20 and CR4_SMAP == 1 << 21


def test_rflags():
    assert rflags_names(0x246) == ["PF", "ZF", "IF"]
    assert rflags_names(0x2) == []                # bit 1 always reads 1 and is not a flag
    assert rflags_iopl(0x3202) == 3 and rflags_iopl(0x202) == 0
    assert rflags_names(0x3202) == ["IF"]         # IOPL is a field, not a flag


def test_sfmask_of_linux():
    # Linux 6.x writes CF|PF|AF|ZF|SF|TF|IF|DF|OF|IOPL|NT|RF|AC|ID = 0x257fd5.
    assert sfmask_names(0x257FD5) == ["CF", "PF", "AF", "ZF", "SF", "TF", "IF", "DF", "OF",
                                      "NT", "RF", "AC", "ID", "IOPL"]
    assert sfmask_names(0x47700) == ["TF", "IF", "DF", "NT", "AC", "IOPL"]
    assert sfmask_names(0x2 | 1 << 40) == []      # upper half reserved, bit 1 unnamed


def test_unknown_bits():
    assert unknown_bits(0xD01 | 1 << 20, EFER_FLAGS) == 1 << 20
    assert unknown_bits(0x2, RFLAGS_FLAGS) == 0x2


def test_star_of_linux():
    # Linux: __KERNEL_CS 0x10 in [47:32]; __USER32_CS 0x23 in [63:48].
    s = decode_star(0x0023001000000000)
    assert (s.syscall_cs, s.syscall_ss) == (0x10, 0x18)
    assert (s.sysret_cs64, s.sysret_ss, s.sysret_cs32) == (0x33, 0x2B, 0x23)
    assert (s.sysret_base, s.sysret_rpl, s.syscall_rpl, s.eip32) == (0x23, 3, 0, 0)


def test_star_with_rpl_bits_left_at_zero():
    # STAR[63:48] = 0x18 without RPL 3: Intel ORs 3 into CS and SS; AMD's SS keeps RPL 0.
    s = decode_star(0x0018000800000000)
    assert (s.sysret_cs64, s.sysret_ss, s.sysret_cs32) == (0x2B, 0x23, 0x1B)
    assert s.sysret_rpl == 0 and s.sysret_ss_amd == 0x20


def test_star_syscall_rpl():
    # SYSCALL forces CS's RPL to 0 but adds 8 to STAR[47:32] as written for SS.
    s = decode_star(0x000B << 32 | 0x12345678)
    assert (s.syscall_cs, s.syscall_ss, s.syscall_base, s.eip32) == (0x08, 0x13, 0x0B, 0x12345678)


def test_star_wraps_at_16_bits():
    s = decode_star(0xFFF8 << 48)
    assert s.sysret_cs64 == 0x000B and s.sysret_ss == 0x0003


@pytest.mark.parametrize("value", [-1, 2**64])
def test_star_range(value):
    with pytest.raises(DecodeError):
        decode_star(value)


@pytest.mark.parametrize("va, bits, ok", [
    (0x00007FFFFFFFFFFF, 48, True),
    (0x0000800000000000, 48, False),
    (0xFFFF800000000000, 48, True),
    (0xFFFF7FFFFFFFFFFF, 48, False),
    (0xFFFE800000000000, 48, False),
    (0x0000800000000000, 57, True),
    (0x00FFFFFFFFFFFFFF, 57, True),
    (0x0100000000000000, 57, False),
    (0xFF00000000000000, 57, True),
    (0, 48, True),
    (2**64 - 1, 48, True),
    (2**64, 48, False),
    (-1, 48, False),
])
def test_canonical(va, bits, ok):
    assert is_canonical(va, bits) is ok


def test_canonical_width_checked():
    with pytest.raises(DecodeError):
        is_canonical(0, 0)


@pytest.mark.parametrize("stem, mode", [
    ("qemu72_reset", "real"),
    ("probe_pm_hlt", "protected"),
    ("probe_pm_user", "protected"),
    ("qemu72_ovmf", "64-bit"),
    ("probe_lm_user", "64-bit"),
    ("probe_compat_user", "compatibility"),
])
def test_cpu_mode_of_captured_states(stem, mode):
    r = parse_info_registers((FIXTURES / f"{stem}.txt").read_text())
    assert cpu_mode(r.cr0, r.efer, r.segments["cs"].attrs, r.rflags) == mode


def test_virtual_8086_and_lma_ignoring_vm():
    assert cpu_mode(0x11, 0, 0, 1 << 17) == "virtual-8086"
    assert cpu_mode(0x80000011, EFER_LMA, 1 << 21, 1 << 17) == "64-bit"


@given(st.integers(0, 2**64 - 1), st.sampled_from([EFER_FLAGS, CR0_FLAGS, CR4_FLAGS,
                                                   RFLAGS_FLAGS]))
def test_names_plus_unknown_rebuild_the_value(value, table):
    masks = {name: mask for mask, name in table}
    rebuilt = unknown_bits(value, table)
    for name in flag_names(value, table):
        rebuilt |= masks[name]
    # Every bit is either named or reported unknown (IOPL, a field, comes back as unknown).
    assert rebuilt == value


@given(st.integers(0, 2**64 - 1))
def test_star_selectors_are_16_bit(value):
    s = decode_star(value)
    for sel in (s.syscall_cs, s.syscall_ss, s.sysret_cs64, s.sysret_ss, s.sysret_cs32):
        assert 0 <= sel <= 0xFFFF
    assert s.sysret_cs64 & 3 == s.sysret_ss & 3 == s.sysret_cs32 & 3 == 3
    assert s.syscall_cs & 3 == 0
