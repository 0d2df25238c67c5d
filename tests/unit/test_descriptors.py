"""Descriptor decoding against hand-checked descriptors and live QEMU state.

The fixtures under fixtures/ were captured from QEMU 7.2 (see fixtures/capture):
`info registers` text and `xp` dumps of the same moment's GDT, so a decoded
descriptor can be compared with the segment cache QEMU loaded from it.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gdbext.model.qemu_text import parse_info_registers, parse_xp
from gdbext.x86 import DecodeError
from gdbext.x86.descriptors import (
    Descriptor,
    decode_descriptor,
    decode_table,
    descriptor_at,
)

FIXTURES = Path(__file__).parent / "fixtures"


def q(value: int) -> bytes:
    return value.to_bytes(8, "little")


def fixture(stem: str):
    regs = parse_info_registers((FIXTURES / f"{stem}.txt").read_text())
    base, gdt = parse_xp((FIXTURES / f"{stem}_gdt.txt").read_text())
    assert base == regs.gdt.base and len(gdt) >= regs.gdt.limit + 1
    return regs, gdt


def encode_segment(base: int, raw_limit: int, type_: int, s: bool, dpl: int, present: bool,
                   avl: bool, long: bool, db: bool, g: bool) -> bytes:
    """The inverse of decoding, written from SDM Vol. 3A figure 3-8 for the tests."""
    v = raw_limit & 0xFFFF
    v |= (base & 0xFFFFFF) << 16
    v |= type_ << 40 | s << 44 | dpl << 45 | present << 47
    v |= (raw_limit >> 16) << 48 | avl << 52 | long << 53 | db << 54 | g << 55
    v |= ((base >> 24) & 0xFF) << 56
    return q(v)


def encode_tss64(base: int, raw_limit: int, busy: bool = False, dpl: int = 0) -> bytes:
    """A 16-byte TSS descriptor (SDM Vol. 3A figure 8-4)."""
    low = encode_segment(base & 0xFFFFFFFF, raw_limit, 0xB if busy else 0x9, False, dpl,
                         True, False, False, False, False)
    return low + (base >> 32).to_bytes(4, "little") + bytes(4)


# --- known Linux x86_64 GDT entries, each checked by hand against SDM table 3-1 ----------

# 0x00af9b000000ffff: limit 0xfffff, base 0, type 0xb (code, execute/read, accessed),
# S=1, DPL 0, P=1, G=1, L=1, D=0: the 64-bit kernel code segment (__KERNEL_CS).
LINUX_KERNEL_CS = 0x00AF9B000000FFFF
LINUX_KERNEL_DS = 0x00CF93000000FFFF   # type 3 data r/w accessed, DPL 0, D/B=1, G=1
LINUX_USER32_CS = 0x00CFFB000000FFFF   # type 0xb code, DPL 3, D=1, L=0: compat user code
LINUX_USER_DS = 0x00CFF3000000FFFF     # data r/w accessed, DPL 3
LINUX_USER_CS = 0x00AFFB000000FFFF     # 64-bit user code, DPL 3


@pytest.mark.parametrize("value, kind, dpl, long, db, words", [
    (LINUX_KERNEL_CS, "code", 0, True, False, "code, execute/read, accessed"),
    (LINUX_KERNEL_DS, "data", 0, False, True, "data, read/write, accessed"),
    (LINUX_USER32_CS, "code", 3, False, True, "code, execute/read, accessed"),
    (LINUX_USER_DS, "data", 3, False, True, "data, read/write, accessed"),
    (LINUX_USER_CS, "code", 3, True, False, "code, execute/read, accessed"),
])
def test_linux_descriptors(value, kind, dpl, long, db, words):
    d = decode_descriptor(q(value), 2)
    assert (d.kind, d.dpl, d.long, d.db, d.type_words) == (kind, dpl, long, db, words)
    assert d.present and d.s and d.granularity and not d.avl
    assert d.base == 0 and d.raw_limit == 0xFFFFF and d.limit == 0xFFFFFFFF
    assert d.size == 8 and d.selector == 0x10 and d.index == 2
    assert d.attrs == (value >> 32) & 0x00F0FF00
    assert d.readable and d.accessed and not d.conforming and not d.expand_down


def test_type_bits_of_linux_descriptors():
    cs = decode_descriptor(q(LINUX_KERNEL_CS))
    ds = decode_descriptor(q(LINUX_KERNEL_DS))
    assert cs.is_code and not cs.is_data and not cs.writable and cs.type == 0xB
    assert ds.is_data and ds.writable and not ds.is_code and ds.type == 0x3
    assert cs.attrs == 0x00A09B00 and ds.attrs == 0x00C09300


def test_type_words_cover_every_code_and_data_type():
    words = {t: decode_descriptor(encode_segment(0, 0, t, True, 0, True, 0, 0, 0, 0)).type_words
             for t in range(16)}
    assert words[0x0] == "data, read-only"
    assert words[0x5] == "data, read-only, expand-down, accessed"
    assert words[0x8] == "code, execute-only"
    assert words[0xE] == "code, execute/read, conforming"
    assert len(set(words.values())) == 16


def test_byte_granular_limit_and_split_base():
    # A 16-bit data segment: base 0x12345678 split over bits 39:16 and 63:56, G=0.
    d = decode_descriptor(encode_segment(0x12345678, 0xABCDE, 0x2, True, 1, True,
                                         True, False, False, False))
    assert d.base == 0x12345678 and d.limit == 0xABCDE == d.raw_limit
    assert d.avl and not d.granularity and d.dpl == 1


def test_tss_descriptor_with_base_above_4gib():
    raw = encode_tss64(0xFFFF_8880_0123_4000, 0x67)
    d = decode_descriptor(raw, 7)
    assert d.kind == "tss-available" and d.size == 16 and d.is_system
    assert d.base == 0xFFFF_8880_0123_4000 and d.limit == 0x67
    assert d.selector == 0x38 and d.upper_type_zero and not d.truncated


def test_long_mode_system_descriptor_needs_16_bytes():
    raw = encode_tss64(0x1000, 0x67)
    with pytest.raises(DecodeError):
        decode_descriptor(raw[:8])
    # Outside long mode the same 8 bytes are a complete 32-bit TSS descriptor.
    d = decode_descriptor(raw[:8], long_mode=False)
    assert d.kind == "tss-available" and d.size == 8 and d.base == 0x1000


def test_sixteen_bytes_for_a_segment_uses_eight():
    d = decode_descriptor(q(LINUX_USER_CS) + q(0xFFFFFFFFFFFFFFFF))
    assert d.size == 8 and d.raw == LINUX_USER_CS


@pytest.mark.parametrize("length", [0, 7, 9, 15, 17, 24])
def test_wrong_lengths_are_refused(length):
    with pytest.raises(DecodeError):
        decode_descriptor(bytes(length))


def test_system_kinds_by_mode():
    def kind(type_, long_mode):
        raw = encode_segment(0, 0, type_, False, 0, True, 0, 0, 0, 0) + bytes(8)
        return decode_descriptor(raw, long_mode=long_mode).kind

    assert [kind(t, True) for t in range(16)] == [
        "reserved", "reserved", "ldt", "reserved", "reserved", "reserved", "reserved",
        "reserved", "reserved", "tss-available", "reserved", "tss-busy", "call-gate",
        "reserved", "interrupt-gate", "trap-gate"]
    assert [kind(t, False) for t in range(16)] == [
        "reserved", "tss16-available", "ldt", "tss16-busy", "call-gate16", "task-gate",
        "interrupt-gate16", "trap-gate16", "reserved", "tss-available", "reserved",
        "tss-busy", "call-gate", "reserved", "interrupt-gate", "trap-gate"]


def test_call_gates():
    # 64-bit call gate (SDM figure 5-9) to 0x10:0xffffffff81000123, DPL 3.
    low = 0x0123 | 0x0010 << 16 | 0xC << 40 | 3 << 45 | 1 << 47 | 0x8100 << 48
    d = decode_descriptor(q(low) + (0xFFFFFFFF).to_bytes(4, "little") + bytes(4))
    assert d.kind == "call-gate" and d.is_gate and d.size == 16
    assert d.gate_selector == 0x10 and d.offset == 0xFFFFFFFF81000123 and d.dpl == 3
    assert d.base == 0 and d.limit == 0
    # A legacy 32-bit call gate copies 5 parameters (bits 36:32).
    legacy = decode_descriptor(q(low | 5 << 32), long_mode=False)
    assert legacy.kind == "call-gate" and legacy.param_count == 5 and legacy.offset == 0x81000123


def test_all_zero_entry_is_null():
    assert decode_descriptor(bytes(8), 3).kind == "null"


# --- tables ---------------------------------------------------------------------------

def linux_like_gdt() -> bytes:
    return (bytes(8) + q(LINUX_KERNEL_CS) + q(LINUX_KERNEL_DS) + q(LINUX_USER32_CS)
            + q(LINUX_USER_DS) + q(LINUX_USER_CS) + encode_tss64(0xFFFFFE0000001000, 0x4087))


def test_table_takes_sixteen_byte_tss_as_one_entry():
    gdt = linux_like_gdt()
    entries = decode_table(gdt, len(gdt) - 1)
    assert [e.kind for e in entries] == ["null", "code", "data", "code", "data", "code",
                                         "tss-available"]
    assert [e.selector for e in entries] == [0, 8, 0x10, 0x18, 0x20, 0x28, 0x30]
    assert entries[-1].base == 0xFFFFFE0000001000 and entries[-1].limit == 0x4087


def test_table_entry_cut_by_limit_is_truncated_not_dropped():
    gdt = linux_like_gdt()
    # The limit ends inside the TSS descriptor's upper half: it is kept, flagged.
    # Only the reserved bytes 12..15 are missing: the base is whole.
    entries = decode_table(gdt, len(gdt) - 5)
    assert entries[-1].kind == "tss-available" and entries[-1].truncated
    assert entries[-1].base == 0xFFFFFE0000001000
    # The whole upper half is missing: base[63:32] reads as zero.
    entries = decode_table(gdt, len(gdt) - 9)
    assert entries[-1].truncated and entries[-1].base == 0x00001000 and len(entries) == 7
    # A limit ending mid-descriptor (not a multiple of 8 minus 1) gives a short entry.
    entries = decode_table(gdt, 0x0B)
    assert [e.kind for e in entries] == ["null", "truncated"] and entries[1].truncated


def test_short_buffer_decodes_what_is_there():
    gdt = linux_like_gdt()
    entries = decode_table(gdt[:0x14], 0xFFFF)
    assert len(entries) == 3 and entries[2].truncated and entries[2].kind == "truncated"


def test_gdt_entry_zero_is_null_but_ldt_entry_zero_is_not():
    table = q(LINUX_USER_DS)
    assert decode_table(table, 7)[0].kind == "null"
    ldt = decode_table(table, 7, ldt=True)[0]
    assert ldt.kind == "data" and ldt.selector == 4


@pytest.mark.parametrize("limit", [-1, 0x10000])
def test_bad_limit(limit):
    with pytest.raises(DecodeError):
        decode_table(bytes(16), limit)


def test_descriptor_at():
    gdt = linux_like_gdt()
    limit = len(gdt) - 1
    assert descriptor_at(gdt, limit, 0x2B).kind == "code"          # RPL is ignored
    assert descriptor_at(gdt, limit, 0x2B).long and descriptor_at(gdt, limit, 0x2B).dpl == 3
    assert descriptor_at(gdt, limit, 0x30).base == 0xFFFFFE0000001000
    assert descriptor_at(gdt, limit, 0x40) is None                  # past the limit
    assert descriptor_at(gdt, limit, 0x2C) is None                  # TI=1: the LDT's
    assert descriptor_at(gdt, limit, 0).kind == "null"
    # Selecting the TSS's upper half reads it as an 8-byte descriptor, as a load would.
    upper = descriptor_at(gdt, limit, 0x38)
    assert upper.size == 8 and upper.kind == "reserved" and not upper.present
    assert descriptor_at(gdt, limit, 0x2B, ldt=True) is None       # TI=0: the GDT's
    assert descriptor_at(gdt, limit, 0x2F, ldt=True).selector == 0x2C  # LDT index 5
    with pytest.raises(DecodeError):
        descriptor_at(gdt, limit, 0x10000)


# --- the decoder agrees with the segment caches QEMU loaded ---------------------------

def live_segments(regs):
    return {name: seg for name, seg in regs.segments.items() if seg.selector & ~3}


@pytest.mark.parametrize("stem, long_mode, expect", [
    ("qemu72_ovmf", True, {"cs": 0x38, "ss": 0x30, "ds": 0x30, "es": 0x30, "fs": 0x30}),
    ("probe_pm_hlt", False, {"cs": 0x30, "ss": 0x10, "ds": 0x10}),
    ("probe_pm_user", False, {"cs": 0x1B, "ss": 0x23}),
    ("probe_lm_user", True, {"cs": 0x2B, "ss": 0x23}),
    ("probe_compat_user", True, {"cs": 0x1B, "ss": 0x23}),
])
def test_decoded_gdt_matches_live_segments(stem, long_mode, expect):
    regs, gdt = fixture(stem)
    live = live_segments(regs)
    assert {name: live[name].selector for name in expect} == expect
    for name, seg in live.items():
        d = descriptor_at(gdt, regs.gdt.limit, seg.selector, long_mode=long_mode)
        assert d is not None and d.present
        assert (d.attrs, d.base, d.limit) == (seg.attrs, seg.base, seg.limit), name


def test_ovmf_gdt_entries():
    regs, gdt = fixture("qemu72_ovmf")
    entries = decode_table(gdt, regs.gdt.limit)
    assert len(entries) == 9 and regs.gdt.limit == 0x47
    cs = entries[7]
    assert (cs.selector, cs.kind, cs.long, cs.db, cs.accessed) == (0x38, "code", True, False, False)
    # OVMF's 0x28 is 0x008f9a000000ffff: 16-bit code (D=0, L=0) with G=1, so its
    # 0xfffff limit counts 4 KiB pages.
    assert entries[5].raw == 0x008F9A000000FFFF
    assert entries[5].is_code and not entries[5].db and not entries[5].long
    assert entries[5].granularity and entries[5].limit == 0xFFFFFFFF


def test_probe_tss_descriptors_against_tr():
    # Long mode: the 16-byte TSS descriptor's base has its upper half above 4 GiB.
    regs, gdt = fixture("probe_lm_user")
    tss = descriptor_at(gdt, regs.gdt.limit, regs.tr.selector)
    assert tss.kind == "tss-busy" and tss.size == 16 and tss.upper_type_zero
    assert (tss.base, tss.limit) == (regs.tr.base, regs.tr.limit) == (0xFFFF800000106000, 0x67)
    # LTR set the busy bit in the GDT; QEMU 7.2 keeps the type it loaded (9) in TR's cache.
    assert tss.attrs == regs.tr.attrs | 0x200
    # 32-bit protected mode: an 8-byte TSS descriptor.
    regs, gdt = fixture("probe_pm_user")
    tss = descriptor_at(gdt, regs.gdt.limit, regs.tr.selector, long_mode=False)
    assert tss.kind == "tss-busy" and tss.size == 8
    assert (tss.base, tss.limit) == (regs.tr.base, regs.tr.limit) == (0x106000, 0x67)


def test_probe_gdt_has_one_entry_per_slot_except_the_tss():
    regs, gdt = fixture("probe_lm_user")
    entries = decode_table(gdt, regs.gdt.limit)
    assert [e.selector for e in entries] == [0, 8, 0x10, 0x18, 0x20, 0x28, 0x30, 0x38]
    legacy = decode_table(gdt, regs.gdt.limit, long_mode=False)
    assert len(legacy) == 9 and legacy[-1].kind == "reserved"


# --- properties -----------------------------------------------------------------------

segments = st.builds(
    encode_segment, base=st.integers(0, 2**32 - 1), raw_limit=st.integers(0, 2**20 - 1),
    type_=st.integers(0, 15), s=st.just(True), dpl=st.integers(0, 3), present=st.booleans(),
    avl=st.booleans(), long=st.booleans(), db=st.booleans(), g=st.booleans())


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**20 - 1), st.integers(0, 15),
       st.integers(0, 3), st.booleans(), st.booleans(), st.booleans(), st.booleans(),
       st.booleans())
def test_segment_round_trip(base, raw_limit, type_, dpl, present, avl, long, db, g):
    raw = encode_segment(base, raw_limit, type_, True, dpl, present, avl, long, db, g)
    d = decode_descriptor(raw)
    assert (d.base, d.raw_limit, d.type, d.dpl, d.present, d.avl, d.long, d.db,
            d.granularity) == (base, raw_limit, type_, dpl, present, avl, long, db, g)
    assert d.limit == ((raw_limit << 12) | 0xFFF if g else raw_limit)
    assert encode_segment(d.base, d.raw_limit, d.type, d.s, d.dpl, d.present, d.avl,
                          d.long, d.db, d.granularity) == raw


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**20 - 1), st.booleans(), st.integers(0, 3))
def test_tss64_round_trip(base, raw_limit, busy, dpl):
    d = decode_descriptor(encode_tss64(base, raw_limit, busy, dpl))
    assert (d.base, d.raw_limit, d.dpl) == (base, raw_limit, dpl)
    assert d.kind == ("tss-busy" if busy else "tss-available")


@given(st.binary(max_size=40), st.integers(-2, 9000), st.booleans(), st.booleans())
def test_random_bytes_never_crash(raw, index, long_mode, ldt):
    try:
        d = decode_descriptor(raw, index, long_mode=long_mode, ldt=ldt)
    except DecodeError:
        return
    assert isinstance(d, Descriptor) and d.size in (8, 16) and len(raw) >= d.size


@given(st.binary(max_size=300), st.integers(-5, 0x10005), st.booleans(), st.booleans())
def test_random_tables_tile_without_gaps(table, limit, long_mode, ldt):
    try:
        entries = decode_table(table, limit, long_mode=long_mode, ldt=ldt)
    except DecodeError:
        assert not 0 <= limit <= 0xFFFF
        return
    end = min(len(table), limit + 1)
    offset = 0
    for e in entries:
        assert e.selector & ~7 == offset and e.index == offset // 8
        assert e.truncated == (offset + e.size > end)
        offset += e.size
    assert offset >= end and (not entries or offset - entries[-1].size < end)


@given(st.binary(max_size=200), st.integers(0, 0xFFFF), st.integers(-1, 0x10001),
       st.booleans())
def test_random_selector_lookups(table, limit, selector, long_mode):
    try:
        d = descriptor_at(table, limit, selector, long_mode=long_mode)
    except DecodeError:
        assert not 0 <= selector <= 0xFFFF
        return
    if d is not None:
        assert d.selector == selector & ~3 and (selector & ~7) + 7 <= limit
