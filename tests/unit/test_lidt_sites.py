"""LIDT sites and their lengths (gdbext.x86.insn.scan_lidt), which fault-watch
uses to re-read the IDT right after an LIDT ran.  Encodings from the SDM
(Vol. 2A "LGDT/LIDT": 0F 01 /3; ModRM/SIB/displacement sizes: 2.1.5, tables
2-2 and 2-3), checked against GNU as."""
from __future__ import annotations

import random
import shutil
import subprocess

import pytest

from gdbext.x86.insn import lidt_from_elf, scan_lidt

ENCODINGS = [
    ("0f0118", 3),                  # lidt (%rax)
    ("0f015c2406", 5),              # lidt 0x6(%rsp)    (the bundled kernel's)
    ("0f011d78563412", 7),          # lidt 0x12345678(%rip)
    ("0f019c2400010000", 8),        # lidt 0x100(%rsp)
    ("0f011c2578563412", 8),        # lidt 0x12345678 (SIB, no base)
    ("0f015801", 4),                # lidt 0x1(%rax)
    ("0f019800010000", 7),          # lidt 0x100(%rax)
]


@pytest.mark.parametrize("hexbytes, length", ENCODINGS)
def test_lidt_lengths(hexbytes, length):
    code = bytes.fromhex(hexbytes) + b"\x90"
    assert scan_lidt(code, 0x1000) == [(0x1000, length)]


def test_not_lidt():
    # lgdt (reg 2), sidt (reg 1), vmmcall (0f 01 d9: mod 11), truncated operands.
    for hexbytes in ("0f0110", "0f0108", "0f01d9", "0f01d8", "0f011d7856", "0f015c"):
        assert scan_lidt(bytes.fromhex(hexbytes), 0) == [], hexbytes


def test_prefixes_give_every_start():
    # 48 may be a REX prefix or the last byte of the previous instruction.
    assert scan_lidt(bytes.fromhex("480f0118"), 0x10) == [(0x10, 4), (0x11, 3)]
    assert scan_lidt(bytes.fromhex("67480f0118"), 0) == [(0, 5), (1, 4), (2, 3)]


def test_random_bytes():
    rng = random.Random(3)
    for _ in range(300):
        code = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 400)))
        if rng.random() < 0.5:   # plant one
            at = rng.randrange(len(code))
            code = code[:at] + bytes.fromhex(rng.choice(ENCODINGS)[0]) + code[at:]
        for address, length in scan_lidt(code, 0x4000):
            start = address - 0x4000
            assert 0 <= start and start + length <= len(code) and 3 <= length <= 15
            body = code[start:start + length]
            at = body.find(b"\x0f\x01")
            assert at >= 0 and (body[at + 2] >> 3) & 7 == 3 and body[at + 2] >> 6 != 3


def test_the_bundled_kernel_has_its_one_lidt(kernel_paths):
    if shutil.which("objdump") is None:
        pytest.skip("objdump (binutils) is not installed")
    listing = subprocess.run(["objdump", "-d", str(kernel_paths.elf)], capture_output=True, text=True,
                             check=True).stdout
    expected = []
    for line in listing.splitlines():
        if "\tlidt " in line:
            address, raw = line.split(":", 1)[0].strip(), line.split("\t")[1].split()
            expected.append((int(address, 16), len(raw)))
    assert expected and set(expected) <= set(lidt_from_elf(kernel_paths.elf))
    stripped = kernel_paths.elf.with_name("kernel-stripped.elf")
    assert set(expected) <= set(lidt_from_elf(stripped))
