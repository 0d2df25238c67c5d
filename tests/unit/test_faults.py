"""The exception frame and error-code decoders (gdbext.x86.faults).

Real values are the bundled kernel's own faults (kernel/README.md, measured
under QEMU 7.2 and 10.0): gdt-order's #GP(0x28) at the IRETQ, no-swapgs' #PF
0x2, user-page-nx's #PF 0x15, kernel-rsp's #PF 0x5.  Property tests feed
random words from fixed seeds.
"""
from __future__ import annotations

import random

import pytest

from gdbext.x86 import DecodeError
from gdbext.x86.faults import (
    RFLAGS_RESERVED_ZERO,
    candidate_vectors,
    decode_cp_error,
    decode_error_code,
    decode_frame,
    decode_pf_error,
    decode_selector_error,
    error_code_pushed,
    frame_problems,
)
from gdbext.x86.idt import ERROR_CODE_VECTORS


def words(*values: int) -> bytes:
    return b"".join(v.to_bytes(8, "little") for v in values)


def test_gdt_order_gp_frame_at_the_iretq():
    # #GP(0x28) at int80_return_iretq, CPL 0: the CPU aligned RSP to 16 and
    # pushed SS, RSP, RFLAGS, CS, RIP and the error code (SDM 6.14.2).
    rsp = 0xFFFFFFFF80010F60
    data = words(0x28, 0xFFFFFFFF80001234, 0x08, 0x46, 0xFFFFFFFF80010F88, 0x00)
    assert error_code_pushed(rsp) is True
    f = decode_frame(data, rsp, True)
    assert (f.error_code, f.rip, f.cs, f.rflags, f.rsp, f.ss, f.cpl) == (
        0x28, 0xFFFFFFFF80001234, 0x08, 0x46, 0xFFFFFFFF80010F88, 0x00, 0)
    assert frame_problems(f) == []
    sel = decode_selector_error(0x28)
    assert (sel.ext, sel.idt, sel.ti, sel.table, sel.index, sel.selector, sel.null) == (
        False, False, False, "GDT", 5, 0x28, False)
    assert "GDT entry 5" in sel.summary and "0x28" in sel.summary


def test_user_fault_frame_without_error_code():
    # #UD-like frame from ring 3: CS 0x2b, SS 0x23, RFLAGS IF|bit1.
    rsp = 0xFFFFFFFF80012FD8            # 16-aligned minus 40: five words
    f = decode_frame(words(0x400010, 0x2B, 0x202, 0x7FFFFFEFFFF0, 0x23), rsp, False)
    assert error_code_pushed(rsp) is False and f.error_code is None
    assert (f.cpl, f.cs, f.ss) == (3, 0x2B, 0x23) and frame_problems(f) == []


def test_misaligned_rsp_is_no_exception_frame():
    for low in range(16):
        expected = {0: True, 8: False}.get(low)
        assert error_code_pushed(0xFFFF0000 + low) is expected


def test_implausible_frames_are_named():
    base = {"rip": 0x1000, "cs": 0x08, "rflags": 0x2, "rsp": 0x2000, "ss": 0x10}

    def frame(**kw):
        v = {**base, **kw}
        return decode_frame(words(v["rip"], v["cs"], v["rflags"], v["rsp"], v["ss"]), 0x1008, False)
    assert frame_problems(frame()) == []
    assert "bit 1 clear" in frame_problems(frame(rflags=0x200))[0]
    assert "reserved" in frame_problems(frame(rflags=0x2 | 1 << 40))[0]
    assert "null selector" in frame_problems(frame(cs=0x3))[0]
    assert "different RPLs" in frame_problems(frame(ss=0x23))[0]


@pytest.mark.parametrize("code, names, access, user, present, words_", [
    (0x15, ("P", "U/S", "I/D"), "exec", True, True, "user instruction fetch, protection violation"),     # user-page-nx
    (0x2, ("W/R",), "write", False, False, "supervisor write, page not present"),                         # no-swapgs
    (0x5, ("P", "U/S"), "read", True, True, "user read, protection violation"),                          # kernel-rsp
    (0x0, (), "read", False, False, "supervisor read, page not present"),
    (0x9, ("P", "RSVD"), "read", False, True, "supervisor read, reserved bit set"),
    (0x27, ("P", "W/R", "U/S", "PK"), "write", True, True, "user write, protection-key violation"),
    (0x8041, ("P", "SS", "SGX"), "read", False, True, "supervisor read, protection violation"),
])
def test_page_fault_codes(code, names, access, user, present, words_):
    pf = decode_pf_error(code)
    assert pf.names == names and pf.access == access and pf.user is user and pf.present is present
    assert pf.summary == words_ and pf.reserved_bits == 0
    assert [b.bit for b in pf.bits] == [0, 1, 2, 3, 4, 5, 6, 7, 15]
    # Each bit says what its value means (SDM figure 4-12), set or clear.
    p = pf.bits[0]
    assert p.meaning == ("a protection violation (the page was present)" if present else "the page was not present")


def test_selector_codes():
    idt = decode_selector_error((13 << 3) | 2 | 1)       # IDT vector 13, EXT
    assert idt.idt and idt.ext and idt.table == "IDT" and idt.vector == 13 and idt.selector is None
    assert "IDT vector 13 (#GP)" in idt.summary and "EXT" in idt.summary
    ldt = decode_selector_error(0x1C)                    # LDT entry 3
    assert ldt.table == "LDT" and ldt.index == 3 and ldt.selector == 0x1C and not ldt.null
    assert decode_selector_error(0).null and decode_selector_error(0).summary.startswith("0:")
    assert decode_selector_error(0x10000).reserved_bits == 0x10000
    assert decode_error_code(8, 0).null        # #DF's code is always 0
    assert decode_error_code(17, 0).null       # #AC's too
    assert decode_error_code(6, 0) is None     # #UD pushes none: no layout
    assert decode_cp_error(3).cause == "ENDBRANCH" and decode_cp_error(0x8001).enclave


def test_out_of_range_codes_are_refused():
    for decode in (decode_pf_error, decode_selector_error, decode_cp_error):
        with pytest.raises(DecodeError):
            decode(1 << 32)
        with pytest.raises(DecodeError):
            decode(-1)
    with pytest.raises(DecodeError):
        decode_frame(b"\0" * 40, 0, True)


def test_candidates_by_error_code_presence():
    shared = {6, 8, 13, 14, 32}
    assert candidate_vectors(shared, True) == [8, 13, 14]
    assert candidate_vectors(shared, False) == [6, 32]


def test_random_frames_roundtrip():
    rng = random.Random(2024)
    for _ in range(2000):
        with_code = rng.random() < 0.5
        values = [rng.getrandbits(64) for _ in range(6 if with_code else 5)]
        rsp = rng.getrandbits(64)
        f = decode_frame(words(*values) + bytes(rng.getrandbits(8) for _ in range(rng.randrange(8))), rsp, with_code)
        if with_code:
            code, rip, cs, rflags, sp, ss = values
            assert f.error_code == code
        else:
            rip, cs, rflags, sp, ss = values
            assert f.error_code is None
        assert (f.rip, f.cs_slot, f.rflags, f.rsp, f.ss_slot) == (rip, cs, rflags, sp, ss)
        assert f.cs == cs & 0xFFFF and f.ss == ss & 0xFFFF and f.cpl == cs & 3
        problems = frame_problems(f)
        plausible = (rflags & 2 and not rflags & RFLAGS_RESERVED_ZERO and cs & 0xFFFC and (ss & 3) == (cs & 3)
                     and (f.error_code is None or f.error_code < 1 << 32))
        assert (problems == []) == bool(plausible)


def test_random_error_codes_decode_every_bit():
    rng = random.Random(15)
    for _ in range(3000):
        code = rng.getrandbits(32)
        pf = decode_pf_error(code)
        rebuilt = sum(1 << b.bit for b in pf.bits if b.set) | pf.reserved_bits
        assert rebuilt == code
        assert pf.access == ("exec" if code & 0x10 else "write" if code & 2 else "read")
        sel = decode_selector_error(code)
        assert (sel.index << 3) | (sel.ti << 2) | (sel.idt << 1) | sel.ext | sel.reserved_bits == code
        if not sel.idt:
            assert sel.selector == code & 0xFFFC
        vector = rng.randrange(32)
        d = decode_error_code(vector, code)
        # A layout for #DF #TS #NP #SS #GP #PF #AC #CP; #VC and #SX codes are not decoded.
        assert (d is None) == (vector not in ERROR_CODE_VECTORS - {29, 30})
