"""How long an x86-64 instruction is, and which addresses start one.

A byte-pattern scan finds every place a SYSRET, IRETQ, WRMSR or LGDT *could*
start; most of them are bytes inside other instructions (an immediate, a
displacement).  Under KVM a software breakpoint is an int3 written into guest
memory, so a breakpoint inside an instruction corrupts it; under TCG it costs
every translation of that code.  So a candidate is kept only when decoding
forward from a known instruction start lands exactly on it.

`length(code)` decodes one instruction's length in 64-bit mode from its
encoding alone (Intel SDM Vol. 2A chapter 2 "Instruction Format": legacy
prefixes 2.1.1, REX 2.2.1, ModR/M and SIB 2.1.5 with tables 2-2 and 2-3 and
RIP-relative addressing 2.2.1.6, VEX 2.3.5, EVEX 2.7; the opcode maps of Vol.
2D appendix A; AMD APM Vol. 3 1.2.7 for XOP).  It needs no opcode's meaning,
only which opcodes take a ModR/M byte and how big their immediate is; an
encoding that is invalid in 64-bit mode decodes to None.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

MAX_INSTRUCTION = 15
LEGACY_PREFIXES = frozenset(b"\x66\x67\xf2\xf3\xf0\x2e\x36\x3e\x26\x64\x65")

# One-byte opcodes (SDM Vol. 2D table A-2) invalid in 64-bit mode.
_INVALID_64 = frozenset((0x06, 0x07, 0x0E, 0x16, 0x17, 0x1E, 0x1F, 0x27, 0x2F, 0x37, 0x3F, 0x60, 0x61,
                         0x82, 0x9A, 0xCE, 0xD4, 0xD5, 0xD6, 0xEA))


def _bits(*ranges: tuple[int, int]) -> frozenset[int]:
    return frozenset(b for lo, hi in ranges for b in range(lo, hi + 1))


# One-byte opcodes with a ModR/M byte.
_MODRM_1 = _bits((0x00, 0x03), (0x08, 0x0B), (0x10, 0x13), (0x18, 0x1B), (0x20, 0x23), (0x28, 0x2B),
                 (0x30, 0x33), (0x38, 0x3B), (0x62, 0x63), (0x69, 0x69), (0x6B, 0x6B), (0x80, 0x8F),
                 (0xC0, 0xC1), (0xC4, 0xC7), (0xD0, 0xD3), (0xD8, 0xDF), (0xF6, 0xF7), (0xFE, 0xFF))
# One-byte opcodes' immediates: 1 byte, 2 bytes, "z" (2 with 66, else 4).
_IMM8_1 = _bits((0x04, 0x04), (0x0C, 0x0C), (0x14, 0x14), (0x1C, 0x1C), (0x24, 0x24), (0x2C, 0x2C),
                (0x34, 0x34), (0x3C, 0x3C), (0x6A, 0x6A), (0x6B, 0x6B), (0x70, 0x7F), (0x80, 0x80),
                (0x83, 0x83), (0xA8, 0xA8), (0xB0, 0xB7), (0xC0, 0xC1), (0xC6, 0xC6), (0xCD, 0xCD),
                (0xE0, 0xE7), (0xEB, 0xEB))
_IMMZ_1 = _bits((0x05, 0x05), (0x0D, 0x0D), (0x15, 0x15), (0x1D, 0x1D), (0x25, 0x25), (0x2D, 0x2D),
                (0x35, 0x35), (0x3D, 0x3D), (0x68, 0x69), (0x81, 0x81), (0xA9, 0xA9), (0xC7, 0xC7),
                (0xE8, 0xE9))

# Two-byte (0F xx) opcodes with no ModR/M byte (table A-3), and with an imm8.
_NO_MODRM_2 = _bits((0x05, 0x09), (0x0B, 0x0B), (0x0E, 0x0E), (0x30, 0x37), (0x77, 0x77), (0x80, 0x8F),
                    (0xA0, 0xA2), (0xA8, 0xAA), (0xC8, 0xCF))
_INVALID_2 = _bits((0x04, 0x04), (0x0A, 0x0A), (0x0C, 0x0C), (0x24, 0x27), (0x36, 0x36), (0x39, 0x39),
                   (0x3B, 0x3F), (0x7A, 0x7B), (0xA6, 0xA7))
_IMM8_2 = _bits((0x0F, 0x0F), (0x70, 0x73), (0xA4, 0xA4), (0xAC, 0xAC), (0xBA, 0xBA), (0xC2, 0xC2),
                (0xC4, 0xC6))


def _modrm_tail(code: bytes, at: int) -> int | None:
    """Bytes of ModR/M, SIB and displacement starting at `at` (64-bit or
    32-bit addressing: SDM Vol. 2A tables 2-2 and 2-3), or None past the end."""
    if at >= len(code):
        return None
    modrm = code[at]
    mod, rm = modrm >> 6, modrm & 7
    n = 1
    if mod == 3:
        return n
    if rm == 4:                       # a SIB byte follows
        if at + 1 >= len(code):
            return None
        n += 1
        if mod == 0 and code[at + 1] & 7 == 5:
            n += 4                    # no base: disp32
    elif mod == 0 and rm == 5:
        n += 4                        # RIP-relative disp32
    n += {0: 0, 1: 1, 2: 4}[mod]
    return n


def length(code: bytes) -> int | None:
    """The length of the 64-bit-mode instruction `code` starts with, or None
    (an encoding invalid in 64-bit mode, longer than 15 bytes, or cut short)."""
    i = 0
    opsize16 = addr32 = rex_w = False
    # A REX counts only right before the opcode; one followed by a legacy
    # prefix is ignored, yet still a byte of the instruction (SDM 2.2.1).
    while i < len(code) and (code[i] in LEGACY_PREFIXES or 0x40 <= code[i] <= 0x4F):
        if 0x40 <= code[i] <= 0x4F:
            rex_w = bool(code[i] & 8)
        else:
            rex_w = False
            opsize16 |= code[i] == 0x66
            addr32 |= code[i] == 0x67
        i += 1
    if i >= len(code):
        return None
    op = code[i]
    i += 1
    immz = 2 if opsize16 and not rex_w else 4
    if op == 0x0F:
        n = _two_byte(code, i, immz)
    elif op in (0xC4, 0xC5, 0x62) or (op == 0x8F and i < len(code) and code[i] & 0x38):
        n = _vex_like(code, i, op)
    else:
        n = _one_byte(code, i, op, immz, rex_w, addr32)
    if n is None:
        return None
    total = i + n
    return total if total <= MAX_INSTRUCTION and total <= len(code) else None


def _one_byte(code: bytes, i: int, op: int, immz: int, rex_w: bool, addr32: bool) -> int | None:
    if op in _INVALID_64 or 0x40 <= op <= 0x4F:
        return None                    # (a REX not right before the opcode)
    n = 0
    if op in _MODRM_1:
        m = _modrm_tail(code, i)
        if m is None:
            return None
        n += m
        reg = (code[i] >> 3) & 7
        if op == 0xF6 and reg in (0, 1):
            n += 1                     # TEST r/m8, imm8
        elif op == 0xF7 and reg in (0, 1):
            n += immz                  # TEST r/m, imm
    if op in _IMM8_1:
        n += 1
    elif op in _IMMZ_1:
        n += immz
    elif 0xB8 <= op <= 0xBF:
        n += 8 if rex_w else immz      # MOV r64, imm64 with REX.W
    elif 0xA0 <= op <= 0xA3:
        n += 4 if addr32 else 8        # MOV moffs: an address-size offset
    elif op in (0xC2, 0xCA):
        n += 2
    elif op == 0xC8:
        n += 3                         # ENTER imm16, imm8
    return n


def _two_byte(code: bytes, i: int, immz: int) -> int | None:
    if i >= len(code):
        return None
    op = code[i]
    i += 1
    if op == 0x38 or op == 0x3A:       # three-byte maps: all take ModR/M; 0F 3A takes an imm8
        if i >= len(code):
            return None
        m = _modrm_tail(code, i + 1)
        return None if m is None else 2 + m + (1 if op == 0x3A else 0)
    if op in _INVALID_2:
        return None
    if op in _NO_MODRM_2:
        return 1 + (immz if 0x80 <= op <= 0x8F else 0)
    m = _modrm_tail(code, i)
    if m is None:
        return None
    return 1 + m + (1 if op in _IMM8_2 else 0)


def _vex_like(code: bytes, i: int, op: int) -> int | None:
    """VEX (C5: 1 byte, C4: 2), EVEX (62: 3) or XOP (8F: 2) prefix, then the
    opcode, ModR/M and an imm8 where the map has one (SDM 2.3.5, 2.7)."""
    if op == 0xC5:
        payload, mapping = 1, 1
    elif op == 0xC4:
        if i >= len(code):
            return None
        payload, mapping = 2, code[i] & 0x1F
    elif op == 0x62:
        if i >= len(code):
            return None
        payload, mapping = 3, code[i] & 0x07
    else:                              # XOP: maps 8 (imm8), 9, 10 (imm32)
        payload, mapping = 2, code[i] & 0x1F
    at = i + payload
    if at >= len(code):
        return None
    opcode = code[at]
    if op == 0x8F:
        if mapping not in (8, 9, 10):
            return None
        m = _modrm_tail(code, at + 1)
        return None if m is None else payload + 1 + m + {8: 1, 9: 0, 10: 4}[mapping]
    if mapping not in (1, 2, 3, 4, 5, 6, 7):
        return None
    if mapping == 1 and opcode == 0x77:
        return payload + 1             # VZEROUPPER / VZEROALL
    m = _modrm_tail(code, at + 1)
    if m is None:
        return None
    imm = 1 if mapping == 3 or (mapping == 1 and opcode in _IMM8_2) else 0
    return payload + 1 + m + imm


def walk(code: bytes, start: int, stop: int) -> Iterable[int]:
    """The instruction starts from `start` (an instruction start) until one
    reaches `stop` or the code ends; stops early at an undecodable byte."""
    at = start
    while at < stop and at < len(code):
        yield at
        n = length(code[at:at + MAX_INSTRUCTION])
        if n is None:
            return
        at += n
    if at == stop:
        yield at


def proven(code: bytes, base: int, candidates: Sequence[int], starts: Sequence[int],
           reach: int = 1 << 16) -> set[int]:
    """The candidates (addresses) that decoding forward from a known start
    (`starts`: addresses proven to begin an instruction, e.g. function
    symbols, entry points) lands exactly on, no more than `reach` bytes on.

    One walk per known start that has candidates after it (before the next
    start), to the last of them: each byte is decoded at most once."""
    import bisect

    starts = sorted({s - base for s in starts if 0 <= s - base < len(code)})
    by_start: dict[int, list[int]] = {}
    for address in set(candidates):
        offset = address - base
        if not 0 <= offset < len(code):
            continue
        j = bisect.bisect_right(starts, offset) - 1
        if j >= 0 and offset - starts[j] <= reach:
            by_start.setdefault(starts[j], []).append(offset)
    kept: set[int] = set()
    for start, offsets in by_start.items():
        wanted = set(offsets)
        for at in walk(code, start, max(offsets) + 1):
            if at in wanted:
                kept.add(base + at)
    return kept


def padding_starts(code: bytes, base: int) -> list[int]:
    """Addresses that follow a function's padding: compilers end functions
    with a run of INT3 (CC) or pad them to alignment with it, so the byte
    after two or more CCs starts an instruction, almost surely."""
    out = []
    at = code.find(b"\xcc\xcc")
    while at >= 0:
        end = at + 2
        while end < len(code) and code[end] == 0xCC:
            end += 1
        if end < len(code):
            out.append(base + end)
        at = code.find(b"\xcc\xcc", end)
    return out
