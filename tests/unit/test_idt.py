"""IDT gate decoding against IDTs captured from QEMU 7.2 and hand-built gates."""
from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gdbext.model.qemu_text import parse_info_registers, parse_xp
from gdbext.x86 import DecodeError
from gdbext.x86.idt import (
    ERROR_CODE_VECTORS,
    EXCEPTION_NAMES,
    Gate,
    decode_gate,
    decode_idt,
)

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(stem: str):
    regs = parse_info_registers((FIXTURES / f"{stem}.txt").read_text())
    base, idt = parse_xp((FIXTURES / f"{stem}_idt.txt").read_text())
    assert base == regs.idt.base and len(idt) >= regs.idt.limit + 1
    return regs, idt


def encode_gate64(offset: int, selector: int, ist: int, type_: int, dpl: int,
                  present: bool) -> bytes:
    """A 16-byte gate as SDM Vol. 3A figure 6-8 lays it out, for the tests."""
    v = offset & 0xFFFF | selector << 16 | ist << 32 | type_ << 40 | dpl << 45
    v |= present << 47 | ((offset >> 16) & 0xFFFF) << 48 | (offset >> 32) << 64
    return v.to_bytes(16, "little")


def test_exception_table():
    assert EXCEPTION_NAMES[13] == ("#GP", "General Protection")
    assert EXCEPTION_NAMES[14] == ("#PF", "Page Fault")
    assert EXCEPTION_NAMES[8][0] == "#DF" and EXCEPTION_NAMES[18][0] == "#MC"
    assert ERROR_CODE_VECTORS == frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})
    assert 15 not in EXCEPTION_NAMES and all(0 <= v < 32 for v in EXCEPTION_NAMES)


def test_linux_style_page_fault_gate():
    # Interrupt gate, DPL 0, present, to 0x10:ffffffff81a00b40 on IST stack 0.
    raw = encode_gate64(0xFFFFFFFF81A00B40, 0x10, 0, 0xE, 0, True)
    g = decode_gate(raw, 14)
    assert (g.kind, g.selector, g.offset, g.ist, g.dpl, g.present, g.name) == (
        "interrupt-gate", 0x10, 0xFFFFFFFF81A00B40, 0, 0, True, "#PF")
    assert g.has_error_code
    # Bytes written out by hand from figure 6-8: offset 15:0 = 0b40, selector 0010,
    # IST 00, type/attr 8e, offset 31:16 = 81a0, offset 63:32 = ffffffff, reserved 0.
    assert raw == bytes.fromhex("400b1000008ea081ffffffff00000000")


def test_dpl3_trap_gate_with_ist():
    g = decode_gate(encode_gate64(0x401000, 0x8, 3, 0xF, 3, True), 0x80)
    assert (g.kind, g.ist, g.dpl, g.name, g.has_error_code) == ("trap-gate", 3, 3, "", False)


@pytest.mark.parametrize("type_", [0x0, 0x5, 0x6, 0x7, 0x9, 0xC])
def test_only_interrupt_and_trap_types_are_valid_in_long_mode(type_):
    assert decode_gate(encode_gate64(0, 8, 0, type_, 0, True), 0).kind == "reserved"


def test_s_bit_set_is_reserved():
    raw = int.from_bytes(encode_gate64(0, 8, 0, 0xE, 0, True), "little") | 1 << 44
    assert decode_gate(raw.to_bytes(16, "little"), 0).kind == "reserved"


def test_legacy_gates():
    task = (0x0028 << 16 | 0x5 << 40 | 1 << 47).to_bytes(8, "little")
    g = decode_gate(task, 8, long_mode=False)
    assert (g.kind, g.selector, g.offset) == ("task-gate", 0x28, 0)
    int16 = (0x1234 | 0x18 << 16 | 0x6 << 40 | 1 << 47).to_bytes(8, "little")
    assert decode_gate(int16, 32, long_mode=False).kind == "interrupt-gate16"
    with pytest.raises(DecodeError):
        decode_gate(bytes(16), 0, long_mode=False)


@pytest.mark.parametrize("length", [0, 8, 15, 17])
def test_gate_length(length):
    with pytest.raises(DecodeError):
        decode_gate(bytes(length), 0)


@pytest.mark.parametrize("vector", [-1, 256])
def test_vector_range(vector):
    with pytest.raises(DecodeError):
        decode_gate(bytes(16), vector)


def test_never_more_than_256_gates():
    assert len(decode_idt(bytes(0x10000), 0xFFFF)) == 256
    assert len(decode_idt(bytes(0x10000), 0xFFFF, long_mode=False)) == 256


def test_partial_trailing_gate_is_truncated():
    gates = decode_idt(bytes(40), 0xFFF)
    assert len(gates) == 3 and gates[2].truncated and not gates[1].truncated


# --- captured IDTs --------------------------------------------------------------------

def test_ovmf_idt():
    regs, idt = fixture("qemu72_ovmf")
    gates = decode_idt(idt, regs.idt.limit)
    assert len(gates) == 256
    # Every gate points into the firmware's code segment, the CS it runs on.
    assert {g.selector for g in gates} == {regs.segments["cs"].selector} == {0x38}
    assert {(g.kind, g.present, g.dpl, g.ist) for g in gates} == {("interrupt-gate", True, 0, 0)}
    # OVMF's entry stubs are 0x12 bytes apart.
    assert gates[0].offset == 0x07030020
    assert all(b.offset - a.offset == 0x12 for a, b in pairwise(gates))


def test_probe_long_mode_idt():
    regs, idt = fixture("probe_lm_user")
    gates = decode_idt(idt, regs.idt.limit)
    stubs = gates[0].offset
    assert [g.offset - stubs for g in gates] == [8 * n for n in range(256)]
    assert gates[8].ist == 1 and gates[8].name == "#DF"
    assert gates[3].kind == "trap-gate" and gates[3].name == "#BP"
    assert gates[0x80].dpl == 3 and gates[0x80].kind == "interrupt-gate"
    assert sum(g.ist for g in gates) == 1 and sum(g.dpl for g in gates) == 3
    assert {g.selector for g in gates} == {0x08}


def test_probe_protected_mode_idt():
    regs, idt = fixture("probe_pm_hlt")
    gates = decode_idt(idt, regs.idt.limit, long_mode=False)
    assert len(gates) == 256 and regs.idt.limit == 0x7FF
    assert {g.selector for g in gates} == {regs.segments["cs"].selector}
    assert gates[0x80].kind == "trap-gate" and gates[0x80].dpl == 3
    assert gates[0].kind == "interrupt-gate" and gates[0].offset + 8 == gates[1].offset
    # Read as 16-byte gates, the same bytes are nonsense: half the vectors, and every
    # odd entry's offset[63:32] is the next gate's low dword.
    assert decode_idt(idt, regs.idt.limit)[0].offset >> 32 == int.from_bytes(idt[8:12], "little")


# --- properties -----------------------------------------------------------------------

@given(st.integers(0, 2**64 - 1), st.integers(0, 0xFFFF), st.integers(0, 7),
       st.sampled_from([0xE, 0xF]), st.integers(0, 3), st.booleans(), st.integers(0, 255))
def test_gate_round_trip(offset, selector, ist, type_, dpl, present, vector):
    g = decode_gate(encode_gate64(offset, selector, ist, type_, dpl, present), vector)
    assert (g.offset, g.selector, g.ist, g.dpl, g.present, g.vector) == (
        offset, selector, ist, dpl, present, vector)
    assert g.kind == ("interrupt-gate" if type_ == 0xE else "trap-gate")


@given(st.binary(max_size=20), st.integers(-1, 257), st.booleans())
def test_random_gate_bytes(raw, vector, long_mode):
    try:
        g = decode_gate(raw, vector, long_mode=long_mode)
    except DecodeError:
        return
    assert isinstance(g, Gate) and 0 <= g.vector < 256 and g.offset < 2**64


@given(st.binary(max_size=600), st.integers(-3, 0x10003), st.booleans())
def test_random_idt(table, limit, long_mode):
    try:
        gates = decode_idt(table, limit, long_mode=long_mode)
    except DecodeError:
        assert not 0 <= limit <= 0xFFFF
        return
    size = 16 if long_mode else 8
    assert [g.vector for g in gates] == list(range(len(gates)))
    assert len(gates) == min(256, -(-min(len(table), limit + 1) // size))
