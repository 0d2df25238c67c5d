"""Finding SYSRET and WRMSR sites: by bytes, and in ELF files gcc builds at test time.

objdump, from the same binutils, is the oracle for where the instructions
really start in the compiled files.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdbext.x86.insn import (
    Site,
    SiteError,
    scan,
    scan_table_loads,
    scan_wrmsr,
    sites_from_elf,
    sysret_at,
    table_loads_from_elf,
    wrmsr_at,
)

# --- one instruction ------------------------------------------------------------------

@pytest.mark.parametrize("code, opsize", [
    (b"\x48\x0f\x07", 64),            # sysretq
    (b"\x0f\x07", 32),                # sysretl
    (b"\x4f\x0f\x07", 64),            # REX.WRXB
    (b"\x49\x0f\x07", 64),            # REX.WB
    (b"\x41\x0f\x07", 32),            # REX.B: no W
    (b"\x40\x0f\x07", 32),            # empty REX
    (b"\x66\x0f\x07", 32),            # operand-size prefix: still not REX.W
    (b"\x66\x48\x0f\x07", 64),        # legacy prefix, then REX.W right before the opcode
    (b"\x48\x66\x0f\x07", 32),        # REX not right before the opcode: ignored
    (b"\x2e\x3e\x48\x0f\x07\x90", 64),
    (b"\x48\x0f\x07\xcc", 64),        # bytes after the instruction do not matter
])
def test_sysret_at(code, opsize):
    assert sysret_at(code) == opsize


@pytest.mark.parametrize("code", [
    b"", b"\x0f", b"\x48", b"\x48\x0f",
    b"\x0f\x05",                      # syscall
    b"\x48\x0f\x05",
    b"\x0f\x30",                      # wrmsr
    b"\xf0\x0f\x07",                  # LOCK: #UD, not a sysret
    b"\x48\xf0\x0f\x07",
    b"\x90\x48\x0f\x07",              # starts with a nop
    b"\x66" * 13 + b"\x0f\x07",       # 15 bytes are allowed...
])
def test_not_sysret_at(code):
    if len(code) == 15:
        assert sysret_at(code) == 32
        assert sysret_at(b"\x66" + code) is None      # ...16 are not
    else:
        assert sysret_at(code) is None


def test_wrmsr_at():
    assert wrmsr_at(b"\x0f\x30")
    assert wrmsr_at(b"\x48\x0f\x30")
    assert not wrmsr_at(b"\x0f\x32")                  # rdmsr
    assert not wrmsr_at(b"\xf0\x0f\x30")
    assert not wrmsr_at(b"\x0f")
    assert not wrmsr_at(b"")


# --- scanning bytes ----------------------------------------------------------------------

BASE = 0xFFFFFFFF81000000


def test_scan_linux_exit_path():
    # swapgs; sysretq: the end of Linux's entry_SYSCALL_64 return path.
    code = bytes.fromhex("0f01f8 480f07")
    assert scan(code, BASE) == [
        Site(BASE + 3, 64, None, 3, False),
        Site(BASE + 4, 32, None, 2, True),            # inside the sysretq: never executes
    ]


def test_scan_finds_a_sysretl_behind_a_rex_like_byte():
    # mov 0x48(%rsp),%rax ends in 0x48; the sysretl after it must not be lost.
    code = bytes.fromhex("488b442448 0f07")
    sites = scan(code, 0)
    assert Site(5, 32, None, 2, True) in sites
    assert Site(4, 64, None, 3, False) in sites       # the reading that is never executed


def test_scan_nothing():
    assert scan(b"", 0) == []
    assert scan(bytes.fromhex("0f05 c3 0f"), 0) == []
    assert scan_wrmsr(bytes.fromhex("0f32 0f05"), 0) == []


def test_scan_wrmsr():
    # mov $0xc0000081,%ecx; wrmsr; ret
    code = bytes.fromhex("b981000000c0 0f30 c3")
    assert scan_wrmsr(code, 0x1000) == [0x1006]


@pytest.mark.parametrize("asm, hexcode, found", [
    ("lgdt (%rdi)", "0f0117", True),
    ("lgdt 0x10(%rax)", "0f015010", True),
    ("ltr %ax", "0f00d8", True),               # LTR takes a register operand too
    ("ltr (%rdi)", "0f001f", True),
    ("lidt (%rdi)", "0f011f", False),          # IDTR: not kept by the watch
    ("sgdt (%rdi)", "0f0107", False),
    ("xgetbv", "0f01d0", False),               # 0F 01 /2 with mod 11: not LGDT
    ("str %ax", "0f00c8", False),
    ("lldt %ax", "0f00d0", False),
])
def test_scan_table_loads_one_instruction(asm, hexcode, found):
    assert (scan_table_loads(bytes.fromhex(hexcode), 0x1000) == [0x1000]) is found, asm


def test_scan_table_loads_with_prefixes():
    # rex.W lgdt: the REX is a possible start, and so is the opcode
    assert scan_table_loads(bytes.fromhex("90 48 0f 01 17"), 0) == [1, 2]


@settings(max_examples=300, deadline=None)
@given(code=st.binary(max_size=300), base=st.integers(0, (1 << 64) - 1 - 300))
def test_scan_table_loads_random_bytes(code, base):
    for address in scan_table_loads(code, base):
        off = address - base
        at = off
        while code[at] in (0x66, 0x67, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65) or 0x40 <= code[at] <= 0x4F:
            at += 1
        reg, mod = (code[at + 2] >> 3) & 7, code[at + 2] >> 6
        assert (code[at:at + 2] == b"\x0f\x01" and reg == 2 and mod != 3) or (code[at:at + 2] == b"\x0f\x00" and reg == 3)


@settings(max_examples=500, deadline=None)
@given(code=st.binary(max_size=300), base=st.integers(0, (1 << 64) - 1 - 300))
def test_scan_random_bytes(code, base):
    sites = scan(code, base)
    for site in sites:
        off = site.address - base
        assert sysret_at(code[off:]) == site.opsize
        assert code[off + site.length - 2:off + site.length] == b"\x0f\x07"
    # Every 0F 07 not preceded by LOCK is a candidate start itself.
    for m in re.finditer(b"(?=\x0f\x07)", code):
        if m.start() == 0 or code[m.start() - 1] != 0xF0:
            assert any(s.address == base + m.start() for s in sites)
    for address in scan_wrmsr(code, base):
        assert wrmsr_at(code[address - base:])


# --- ELF files ----------------------------------------------------------------------------

ASM = r"""
    .text
    .globl  return_to_user
    .type   return_to_user, @function
return_to_user:
    movq    %rdi, %rcx
    swapgs
    .globl  return_to_user_sysret
return_to_user_sysret:
    sysretq
    .size   return_to_user, .-return_to_user

    .globl  compat_return
    .type   compat_return, @function
compat_return:
    movq    0x48(%rsp), %rax
    sysretl
    .size   compat_return, .-compat_return

    .globl  set_star
    .type   set_star, @function
set_star:
    movl    $0xc0000081, %ecx
    xorl    %eax, %eax
    movl    $0x00230010, %edx
    wrmsr
    ret
    .size   set_star, .-set_star

    .globl  _start
    .type   _start, @function
_start:
    call    set_star
    hlt
    .size   _start, .-_start

    .section .text.second, "ax", @progbits
    .globl  second_section
    .type   second_section, @function
second_section:
    nop
    sysretq
    .size   second_section, .-second_section

    .section .text.third, "ax", @progbits
    .globl  bare_entry
bare_entry:
    nop
    sysretq

    .globl  load_tables
    .type   load_tables, @function
load_tables:
    lgdt    (%rdi)
    lidt    (%rsi)
    movw    $0x40, %ax
    ltr     %ax
    xgetbv
    ret
    .size   load_tables, .-load_tables

    .data
not_code:
    .byte   0x48, 0x0f, 0x07, 0x0f, 0x30
"""

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("objdump") is None,
                               reason="gcc and objdump (Debian: gcc, binutils) are needed")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("sites")
    src = tmp / "sysret.S"
    src.write_text(ASM)
    obj, exe = tmp / "sysret.o", tmp / "sysret.elf"
    subprocess.run(["gcc", "-c", "-o", obj, src], check=True)
    subprocess.run(["gcc", "-nostdlib", "-static", "-no-pie", "-Wl,--build-id=none",
                    "-o", exe, obj], check=True)
    return {"obj": obj, "exe": exe, "dir": tmp}


def objdump_sites(path: Path) -> dict[str, list[int]]:
    """Addresses of sysret and wrmsr instructions according to objdump."""
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", path], check=True,
                          capture_output=True, text=True).stdout
    out: dict[str, list[int]] = {"sysretq": [], "sysretl": [], "wrmsr": [], "lgdt": [], "ltr": []}
    for line in text.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s+(sysretq|sysretl|sysret|wrmsr|lgdt|ltr)\b", line)
        if m:
            name = {"sysret": "sysretl"}.get(m.group(2), m.group(2))
            out[name].append(int(m.group(1), 16))
    return out


def real(sites: list[Site]) -> list[Site]:
    return [s for s in sites if not s.shadowed]


@needs_gcc
def test_elf_executable_matches_objdump(built):
    sites, wrmsrs = sites_from_elf(built["exe"])
    truth = objdump_sites(built["exe"])
    assert len(truth["sysretq"]) == 3 and len(truth["sysretl"]) == 1
    starts = {s.address: s for s in sites}
    for address in truth["sysretq"]:
        assert starts[address].opsize == 64
    for address in truth["sysretl"]:
        assert starts[address].opsize == 32
    assert truth["wrmsr"][0] in wrmsrs
    # Every candidate that objdump does not list is a shadowed or impossible start.
    listed = set(truth["sysretq"] + truth["sysretl"])
    assert {s.address for s in real(sites)} - listed == {truth["sysretl"][0] - 1}


@needs_gcc
def test_elf_symbols(built):
    sites, _ = sites_from_elf(built["exe"])
    truth = objdump_sites(built["exe"])
    names = {s.address: s.symbol for s in sites}
    first_q, second_q, _ = sorted(truth["sysretq"])
    assert names[first_q] == "return_to_user_sysret"      # the label right at it
    assert names[first_q + 1] == "return_to_user"          # inside: the containing function
    assert names[truth["sysretl"][0]] == "compat_return"
    assert names[second_q] == "second_section"


@needs_gcc
def test_elf_unsized_assembly_label(built):
    # bare_entry has no .type/.size, like many assembly entry points: the nearest
    # label before a site names it.
    sites, _ = sites_from_elf(built["exe"])
    nm = subprocess.run(["nm", built["exe"]], check=True, capture_output=True, text=True).stdout
    bare = int(re.search(r"^([0-9a-f]+) T bare_entry$", nm, re.MULTILINE).group(1), 16)
    assert [(s.address - bare, s.opsize, s.symbol) for s in sites if s.address >= bare] == [
        (1, 64, "bare_entry"), (2, 32, "bare_entry")]


@needs_gcc
def test_elf_offset_is_added(built):
    plain, plain_w = sites_from_elf(built["exe"])
    slid, slid_w = sites_from_elf(built["exe"], offset=0x200000)
    assert [s.address + 0x200000 for s in plain] == [s.address for s in slid]
    assert [s.symbol for s in plain] == [s.symbol for s in slid]
    assert [a + 0x200000 for a in plain_w] == slid_w


@needs_gcc
def test_relocatable_object_is_section_relative(built):
    sites, wrmsrs = sites_from_elf(built["obj"])
    found = {(s.address, s.opsize, s.symbol) for s in sites}
    # .text: movq %rdi,%rcx (3 bytes) + swapgs (3) puts the sysretq at 6.
    assert Site(6, 64, "return_to_user_sysret", 3) in sites
    # compat_return starts at 9; movq 0x48(%rsp),%rax is 5 bytes: the sysretl is at 14.
    assert (14, 32, "compat_return") in found
    assert objdump_sites(built["obj"])["sysretl"] == [14]
    # .text.second starts at its own address 0: nop, then the sysretq at 1, named by
    # that section's symbol, not by return_to_user which also covers offset 1 in .text.
    assert Site(1, 64, "second_section", 3) in sites
    assert len(wrmsrs) == 1


@needs_gcc
def test_data_is_not_scanned(built):
    sites, wrmsrs = sites_from_elf(built["exe"])
    nm = subprocess.run(["nm", built["exe"]], check=True, capture_output=True, text=True).stdout
    not_code = int(re.search(r"^([0-9a-f]+) d not_code$", nm, re.MULTILINE).group(1), 16)
    assert all(not not_code <= s.address < not_code + 5 for s in sites)
    assert all(not not_code <= a < not_code + 5 for a in wrmsrs)
    assert len(sites) == 8 and len(wrmsrs) == 1      # four sysrets, two starts each


@needs_gcc
def test_image_without_section_headers_uses_segments(built):
    data = bytearray(built["exe"].read_bytes())
    data[0x28:0x30] = bytes(8)       # e_shoff
    data[0x3C:0x40] = bytes(4)       # e_shnum, e_shstrndx
    stripped = built["dir"] / "noshdr.elf"
    stripped.write_bytes(bytes(data))
    sites, wrmsrs = sites_from_elf(stripped)
    truth = objdump_sites(built["exe"])
    # Same instructions, found through the executable PT_LOAD; no symbols left.
    assert set(truth["sysretq"] + truth["sysretl"]) <= {s.address for s in sites}
    assert truth["wrmsr"][0] in wrmsrs
    assert all(s.symbol is None for s in sites)


def test_not_an_elf(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("sysretq\n")
    with pytest.raises(SiteError):
        sites_from_elf(path)


@needs_gcc
def test_not_x86(built, tmp_path):
    data = bytearray(built["exe"].read_bytes())
    data[0x12:0x14] = (183).to_bytes(2, "little")   # EM_AARCH64
    path = tmp_path / "arm.elf"
    path.write_bytes(bytes(data))
    with pytest.raises(SiteError, match="not an x86 ELF"):
        sites_from_elf(path)


def test_missing_file(tmp_path):
    with pytest.raises(OSError):
        sites_from_elf(tmp_path / "absent.elf")


@needs_gcc
def test_table_loads_in_elf_match_objdump(built):
    expected = objdump_sites(built["exe"])
    found = table_loads_from_elf(built["exe"])
    assert expected["lgdt"] and expected["ltr"]
    assert set(expected["lgdt"] + expected["ltr"]) <= set(found)
    # Nothing but those two (no lidt, no xgetbv): every candidate is one of them or a
    # start inside one (none here, the code has no prefix bytes before them).
    assert set(found) == set(expected["lgdt"] + expected["ltr"])
    assert table_loads_from_elf(built["exe"], offset=0x1000) == [a + 0x1000 for a in found]


# --- IRET ----------------------------------------------------------------------------------

@pytest.mark.parametrize("code, opsize", [
    (b"\x48\xcf", 64),                # iretq
    (b"\xcf", 32),                    # iretd (no REX.W)
    (b"\x66\xcf", 16),                # 16-bit iret
    (b"\x66\x48\xcf", 64),            # REX.W right before the opcode wins over 66
    (b"\x48\x66\xcf", 16),            # REX not right before the opcode: ignored
    (b"\x41\xcf", 32),                # REX.B: no W
])
def test_iret_at(code, opsize):
    from gdbext.x86.insn import iret_at

    assert iret_at(code) == opsize


@pytest.mark.parametrize("code", [b"", b"\x48", b"\x90\xcf", b"\xcd\x80", b"\x0f\x07"])
def test_not_iret_at(code):
    from gdbext.x86.insn import iret_at

    assert iret_at(code) is None


def test_iret_candidates_inside_instructions_are_not_proven():
    from gdbext.x86.insn import scan_iret
    from gdbext.x86.length import proven

    # mov $0xcf,%eax; add $0x48,%rsp; iretq: a CF inside an immediate, and a 48
    # immediate that could be a REX prefix of the iretq.
    code = bytes.fromhex("b8cf000000" "4883c448" "48cf")
    sites = scan_iret(code, BASE)
    addresses = [s.address - BASE for s in sites]
    assert addresses == [1, 8, 9, 10]
    kept = proven(code, BASE, [s.address for s in sites], [BASE])
    assert kept == {BASE + 9}
    assert next(s for s in sites if s.address == BASE + 9).opsize == 64
