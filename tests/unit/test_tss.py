"""64-bit TSS decoding against the TSS a probe kernel loaded into QEMU 7.2's TR."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gdbext.model.qemu_text import parse_info_registers, parse_xp
from gdbext.x86 import DecodeError
from gdbext.x86.descriptors import descriptor_at
from gdbext.x86.tss import TSS64_SIZE, Tss64, decode_tss64

FIXTURES = Path(__file__).parent / "fixtures"

# SDM Vol. 3A figure 8-11, packed: reserved dword, RSP0-2, reserved qword, IST1-7,
# reserved qword, reserved word, I/O map base.  Written independently of the decoder.
LAYOUT = struct.Struct("<I3QQ7QQHH")


def encode(rsp, ist, iomap):
    return LAYOUT.pack(0, *rsp, 0, *ist, 0, 0, iomap)


def test_layout_is_0x68_bytes():
    assert LAYOUT.size == TSS64_SIZE == 0x68


def test_probe_tss_in_tr():
    regs = parse_info_registers((FIXTURES / "probe_lm_user.txt").read_text())
    address, data = parse_xp((FIXTURES / "probe_lm_user_tss.txt").read_text())
    # The dump was read at the TSS's physical address; TR holds its high-half alias.
    assert regs.tr.base == 0xFFFF800000000000 + address and regs.tr.limit == TSS64_SIZE - 1
    tss = decode_tss64(data)
    # The probe put RSP0 at the top of its 8 KiB kernel stack and IST1 4 KiB above it.
    assert tss.rsp0 == tss.rsp[0] == 0x108070 and tss.rsp[1:] == (0, 0)
    assert tss.ist == (0x109070, 0, 0, 0, 0, 0, 0)
    assert tss.iomap_base == 0x68            # == size: no I/O permission bitmap
    # IST1 is the stack the probe's #DF gate names.
    _, idt = parse_xp((FIXTURES / "probe_lm_user_idt.txt").read_text())
    assert idt[8 * 16 + 4] & 7 == 1
    # The GDT's 16-byte TSS descriptor names the same high base.
    _, gdt = parse_xp((FIXTURES / "probe_lm_user_gdt.txt").read_text())
    assert descriptor_at(gdt, regs.gdt.limit, regs.tr.selector).base == regs.tr.base


def test_hand_packed_tss():
    rsp = (0xFFFFC90000004000, 0x1111, 0x2222)
    ist = tuple(0xFFFFFE0000010000 + n * 0x1000 for n in range(7))
    tss = decode_tss64(encode(rsp, ist, 0x1234) + b"\xff" * 32)
    assert (tss.rsp, tss.ist, tss.iomap_base) == (rsp, ist, 0x1234)
    assert len(tss.raw) == TSS64_SIZE


def test_misaligned_fields_read_whole():
    # RSP0 starts at offset 4, so a value with all 8 bytes distinct catches an
    # off-by-four read.
    tss = decode_tss64(bytes(4) + bytes(range(1, 9)) + bytes(TSS64_SIZE - 12))
    assert tss.rsp0 == 0x0807060504030201


@pytest.mark.parametrize("length", [0, 0x67])
def test_short_tss(length):
    with pytest.raises(DecodeError):
        decode_tss64(bytes(length))


@given(st.tuples(*[st.integers(0, 2**64 - 1)] * 3), st.tuples(*[st.integers(0, 2**64 - 1)] * 7),
       st.integers(0, 0xFFFF))
def test_round_trip(rsp, ist, iomap):
    tss = decode_tss64(encode(rsp, ist, iomap))
    assert (tss.rsp, tss.ist, tss.iomap_base) == (rsp, ist, iomap)


@given(st.binary(max_size=0x90))
def test_random_bytes(data):
    try:
        tss = decode_tss64(data)
    except DecodeError:
        assert len(data) < TSS64_SIZE
        return
    assert isinstance(tss, Tss64) and len(tss.ist) == 7 and tss.raw == data[:TSS64_SIZE]
