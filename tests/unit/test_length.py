"""gdbext.x86.length: instruction lengths, checked against objdump on real
code, and the proof that a candidate starts an instruction."""
from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from gdbext.x86.insn import scan, scan_wrmsr
from gdbext.x86.length import MAX_INSTRUCTION, length, padding_starts, proven, walk

LIBC = Path("/usr/lib/x86_64-linux-gnu/libc.so.6")


def _objdump(path: Path, section: str) -> list[tuple[int, int]]:
    """(address, length) of every instruction objdump decodes in `section`;
    a REX that objdump shows on its own line (ignored before a legacy
    prefix) is one instruction with what follows, as the CPU decodes it."""
    out = subprocess.run(["objdump", "-d", "-w", "-j", section, str(path)], capture_output=True, text=True,
                         check=True).stdout
    insns: list[list] = []
    for line in out.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\t((?:[0-9a-f]{2} )+)\s*\t?(.*)", line)
        if not m:
            continue
        address, size, text = int(m.group(1), 16), len(m.group(2).split()), m.group(3)
        if insns and insns[-1][2].startswith("rex") and insns[-1][0] + insns[-1][1] == address:
            insns[-1] = [insns[-1][0], insns[-1][1] + size, text]
        else:
            insns.append([address, size, text])
    return [(a, n) for a, n, text in insns if "(bad)" not in text]


def _section(path: Path, name: str) -> tuple[int, bytes]:
    with open(path, "rb") as f:
        s = ELFFile(f).get_section_by_name(name)
        return s["sh_addr"], s.data()


needs_objdump = pytest.mark.skipif(shutil.which("objdump") is None, reason="no objdump (binutils)")


@needs_objdump
@pytest.mark.parametrize("section", [".text", ".user.text"])
def test_every_instruction_of_the_bundled_kernel_has_objdumps_length(kernel_paths, section):
    base, code = _section(kernel_paths.elf, section)
    expected = _objdump(kernel_paths.elf, section)
    assert len(expected) > 100
    for address, size in expected:
        got = length(code[address - base:address - base + MAX_INSTRUCTION])
        assert got == size, f"{address:#x}: {code[address - base:address - base + size].hex()} is {size}, not {got}"
    # Decoding forward from the section start meets every instruction.
    starts = [a - base for a, _ in expected]
    assert list(walk(code, 0, starts[-1] + 1))[:len(starts)] == starts


@needs_objdump
@pytest.mark.skipif(not LIBC.is_file(), reason="no libc.so.6 here")
def test_libcs_code_with_its_sse_avx_and_evex_decodes_as_objdump_says():
    base, code = _section(LIBC, ".text")
    expected = _objdump(LIBC, ".text")
    wrong = [(a, n) for a, n in expected if length(code[a - base:a - base + MAX_INSTRUCTION]) != n]
    assert len(expected) > 100_000 and wrong == [], [(hex(a), code[a - base:a - base + n].hex()) for a, n in wrong[:5]]


@pytest.mark.parametrize("seed", range(20))
def test_random_bytes_decode_to_a_length_or_none_and_never_raise(seed):
    rng = random.Random(seed)
    for _ in range(2000):
        code = bytes(rng.randrange(256) for _ in range(rng.randint(0, 20)))
        n = length(code)
        assert n is None or 1 <= n <= min(MAX_INSTRUCTION, len(code))


def test_known_encodings():
    assert length(bytes.fromhex("480f07")) == 3                   # sysretq
    assert length(bytes.fromhex("48cf")) == 2                     # iretq
    assert length(bytes.fromhex("0f30")) == 2                     # wrmsr
    assert length(bytes.fromhex("0f011d44332211")) == 7           # lidt disp32(%rip)
    assert length(bytes.fromhex("48b88877665544332211")) == 10    # movabs $imm64, %rax
    assert length(bytes.fromhex("66b83412")) == 4                 # mov $imm16, %ax
    assert length(bytes.fromhex("a1" + "00" * 8)) == 9            # mov moffs64, %eax
    assert length(bytes.fromhex("67a1" + "00" * 4)) == 6          # with a 32-bit address
    assert length(bytes.fromhex("f30f1efa")) == 4                 # endbr64
    assert length(bytes.fromhex("c5f877")) == 3                   # vzeroupper
    assert length(bytes.fromhex("62f17c48280424")) == 7           # vmovaps (%rsp),%zmm0 (EVEX)
    assert length(bytes.fromhex("c4e37d18c101")) == 6             # vinsertf128 $1 (VEX 0F3A: imm8)
    assert length(bytes.fromhex("f7c000000100")) == 6             # test $0x10000, %eax
    assert length(bytes.fromhex("f6c101")) == 3                   # test $1, %cl
    assert length(bytes.fromhex("c8100000")) == 4                 # enter $0x10, $0
    for invalid in ("06", "27", "60", "9a0000000000", "ea"):
        assert length(bytes.fromhex(invalid)) is None, invalid
    assert length(bytes.fromhex("48")) is None                    # a prefix and nothing else
    assert length(bytes.fromhex("66" * 14 + "90")) == 15
    assert length(bytes.fromhex("66" * 15 + "90")) is None        # over 15 bytes


def test_a_pattern_inside_an_instruction_is_not_proven_and_a_real_one_is():
    # mov $0x00070f48, %eax (b8 48 0f 07 00) holds "48 0f 07", a sysretq pattern;
    # then nop; sysretq; wrmsr inside movabs; a real wrmsr.
    code = bytes.fromhex("b8480f0700" "90" "480f07" "48b80f3000000000000" "0" "0f30")
    base = 0xffffffff81000000
    candidates = [s.address for s in scan(code, base)] + scan_wrmsr(code, base)
    kept = proven(code, base, candidates, [base])
    assert kept == {base + 6, base + 19}, sorted(hex(a - base) for a in kept)
    # With no known start before them, nothing is proven.
    assert proven(code, base, candidates, []) == set()


def test_padding_marks_the_next_function():
    code = bytes.fromhex("c3cccccc" "55" "c3" "cc" "90" "cccc")
    assert padding_starts(code, 0x1000) == [0x1004]               # a single CC is no padding; none at the end
