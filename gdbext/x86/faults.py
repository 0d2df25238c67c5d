"""Exceptions as the CPU delivers them: the stack frame and the error codes.

Intel SDM Vol. 3A:
  6.13    "Error Code" (figure 6-7): the selector error code (EXT, IDT, TI, index)
  6.14.1  "64-Bit Mode IDT" and 6.14.2 "64-Bit Mode Stack Frame" (figure 6-9):
          in IA-32e mode the CPU aligns RSP down to 16 bytes, then pushes SS,
          RSP, RFLAGS, CS, RIP (8 bytes each) and, for some vectors, an error
          code; so at the handler's first instruction RSP points at the error
          code (RSP % 16 == 0) or at RIP (RSP % 16 == 8)
  6.15    table 6-1: which vectors push an error code (x86.idt.ERROR_CODE_VECTORS)
  4.7     "Page-Fault Exceptions" (figure 4-12): the #PF error code
  Vol. 1 17.2 / Vol. 3A 6.15 "Interrupt 21 -- Control Protection Exception": #CP's code
AMD APM Vol. 2 8.4.2 "Selector-Error Code", 8.4.2 "Page-Fault Error Code" and
8.9.3 "Interrupt Stack Frame" (the same 16-byte alignment) agree.

Pure: no gdb.
"""
from __future__ import annotations

from dataclasses import dataclass

from gdbext.x86 import DecodeError
from gdbext.x86.bits import MASK64, RFLAGS_FIXED1
from gdbext.x86.idt import ERROR_CODE_VECTORS, vector_name

# Vectors whose error code is a selector error code (SDM 6.13).  #DF and #AC
# push one too, always zero (table 6-1), so they are decoded the same way.
SELECTOR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 17})
PAGE_FAULT = 14
CONTROL_PROTECTION = 21
INVALID_OPCODE = 6

FRAME_WORDS = 5          # RIP, CS, RFLAGS, RSP, SS
FRAME_BYTES_MAX = 8 * (FRAME_WORDS + 1)

# RFLAGS bits that are reserved and read as 0 (SDM Vol. 1 3.4.3, figure 3-8):
# 3, 5, 15 and 63:22.  Bit 1 reads as 1.
RFLAGS_RESERVED_ZERO = (1 << 3) | (1 << 5) | (1 << 15) | (MASK64 & ~((1 << 22) - 1))


@dataclass(frozen=True)
class InterruptFrame:
    """What the CPU pushed, read at the handler's first instruction.

    rsp_at_entry: RSP at the handler (the address of the lowest word read);
    error_code: None when the layout has none.  cs and ss are the low 16 bits
    of their 8-byte slots; cs_slot and ss_slot keep the whole slots.
    """

    rsp_at_entry: int
    error_code: int | None
    rip: int
    cs: int
    rflags: int
    rsp: int
    ss: int
    cs_slot: int
    ss_slot: int

    @property
    def cpl(self) -> int:
        """The privilege level the CPU was at: the RPL of the saved CS."""
        return self.cs & 3


def error_code_pushed(rsp_at_entry: int) -> bool | None:
    """Whether a frame with RSP at the handler's first instruction holds an
    error code, from the 16-byte alignment (SDM 6.14.2): True at RSP % 16 ==
    0 (six words pushed), False at 8 (five words), None otherwise (not an
    exception delivered in IA-32e mode, e.g. a call or jump to the handler)."""
    return {0: True, 8: False}.get(rsp_at_entry & 0xF)


def decode_frame(data: bytes, rsp_at_entry: int, with_error_code: bool) -> InterruptFrame:
    """The frame in `data`, the bytes at RSP (at least 40, or 48 with an error code)."""
    words = FRAME_WORDS + (1 if with_error_code else 0)
    if len(data) < 8 * words:
        raise DecodeError(f"an interrupt frame{' with an error code' if with_error_code else ''} "
                          f"is {8 * words} bytes, got {len(data)}")
    q = [int.from_bytes(data[8 * i:8 * i + 8], "little") for i in range(words)]
    code = None
    if with_error_code:
        code, q = q[0], q[1:]
    rip, cs_slot, rflags, rsp, ss_slot = q
    return InterruptFrame(rsp_at_entry=rsp_at_entry & MASK64, error_code=code, rip=rip, cs=cs_slot & 0xFFFF,
                          rflags=rflags, rsp=rsp, ss=ss_slot & 0xFFFF, cs_slot=cs_slot, ss_slot=ss_slot)


def frame_problems(frame: InterruptFrame) -> list[str]:
    """Why these words cannot be a frame the CPU pushed; [] when they can.

    RFLAGS bit 1 is always 1 and its reserved bits 0; CS is never null (a
    fault in ring 3 or ring 0 runs code); SS.RPL always equals the CPL it was
    pushed from (SDM Vol. 3A 5.7: a load of SS requires RPL = CPL, and the
    CPU pushes the SS of that CPL).  An error code is 32 bits (the upper half
    of its slot is reserved, written as 0 by the CPU).
    """
    problems = []
    if not frame.rflags & RFLAGS_FIXED1:
        problems.append(f"RFLAGS {frame.rflags:#x} has bit 1 clear")
    if frame.rflags & RFLAGS_RESERVED_ZERO:
        problems.append(f"RFLAGS {frame.rflags:#x} has reserved bits {frame.rflags & RFLAGS_RESERVED_ZERO:#x} set")
    if frame.cs & ~3 == 0:
        problems.append(f"CS {frame.cs:#x} is a null selector")
    if frame.ss & 3 != frame.cs & 3:
        problems.append(f"SS {frame.ss:#x} and CS {frame.cs:#x} have different RPLs")
    if frame.error_code is not None and frame.error_code >> 32:
        problems.append(f"error code {frame.error_code:#x} is wider than 32 bits")
    return problems


def candidate_vectors(vectors: list[int] | tuple[int, ...] | frozenset[int] | set[int],
                      with_error_code: bool) -> list[int]:
    """Of the vectors a handler serves, those consistent with whether the frame
    has an error code (table 6-1).  A vector without one can also be reached by
    a software INT n, which never pushes a code."""
    return sorted(v for v in vectors if (v in ERROR_CODE_VECTORS) == with_error_code)


# ---------------------------------------------------------------------------
# #PF error code (SDM Vol. 3A 4.7, figure 4-12)
# ---------------------------------------------------------------------------

# (bit, name, meaning when 0, meaning when 1)
PF_ERROR_BITS: tuple[tuple[int, str, str, str], ...] = (
    (0, "P", "the page was not present", "a protection violation (the page was present)"),
    (1, "W/R", "the access was a read", "the access was a write"),
    (2, "U/S", "a supervisor-mode access", "a user-mode access (CPL 3)"),
    (3, "RSVD", "no reserved bit was set", "a reserved bit was set in a paging-structure entry"),
    (4, "I/D", "not an instruction fetch", "an instruction fetch"),
    (5, "PK", "no protection-key violation", "a protection-key violation"),
    (6, "SS", "not a shadow-stack access", "a shadow-stack access"),
    (7, "HLAT", "ordinary paging", "HLAT paging (the fault occurred during HLAT paging)"),
    (15, "SGX", "not SGX-related", "an SGX-specific access-control violation"),
)
_PF_KNOWN = sum(1 << b for b, *_ in PF_ERROR_BITS)


@dataclass(frozen=True)
class ErrorBit:
    bit: int
    name: str
    set: bool
    meaning: str


@dataclass(frozen=True)
class PageFaultCode:
    """A #PF error code bit by bit.  access: "read", "write" or "exec" (the
    kind pagewalk checks); user: a CPL-3 access; reserved_bits: set bits the
    SDM does not define (they should be 0)."""

    value: int
    bits: tuple[ErrorBit, ...]
    names: tuple[str, ...]
    access: str
    user: bool
    present: bool
    reserved_bits: int
    summary: str


def decode_pf_error(code: int) -> PageFaultCode:
    if not 0 <= code <= 0xFFFFFFFF:
        raise DecodeError(f"a #PF error code is 32 bits, not {code:#x}")
    bits = tuple(ErrorBit(b, name, bool(code >> b & 1), one if code >> b & 1 else zero)
                 for b, name, zero, one in PF_ERROR_BITS)
    access = "exec" if code & 0x10 else "write" if code & 0x2 else "read"
    user = bool(code & 0x4)
    present = bool(code & 0x1)
    who = "user" if user else "supervisor"
    what = {"exec": "instruction fetch", "write": "write", "read": "read"}[access]
    why = ("reserved bit set" if code & 0x8 else "protection-key violation" if code & 0x20
           else "protection violation" if present else "page not present")
    return PageFaultCode(value=code, bits=bits, names=tuple(b.name for b in bits if b.set), access=access,
                         user=user, present=present, reserved_bits=code & ~_PF_KNOWN,
                         summary=f"{who} {what}, {why}")


# ---------------------------------------------------------------------------
# Selector error code (SDM Vol. 3A 6.13, figure 6-7)
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class SelectorCode:
    """A selector error code.  ext: the event was external to the program (an
    interrupt, or an earlier exception being delivered); table: "IDT", "GDT"
    or "LDT" (IDT=1 names a gate: index is a vector; else TI picks GDT/LDT);
    index: bits 15:3; selector: the selector it designates (index*8 | TI<<2)
    for a GDT/LDT entry, else None; null: the code is 0 (the fault is not
    about a particular segment, or a null selector); reserved_bits: bits
    31:16, which the CPU writes as 0."""

    value: int
    ext: bool
    idt: bool
    ti: bool
    table: str
    index: int
    selector: int | None
    vector: int | None
    null: bool
    reserved_bits: int
    summary: str


def decode_selector_error(code: int) -> SelectorCode:
    if not 0 <= code <= 0xFFFFFFFF:
        raise DecodeError(f"a selector error code is 32 bits, not {code:#x}")
    ext = bool(code & 1)
    idt = bool(code & 2)
    ti = bool(code & 4)
    index = (code >> 3) & 0x1FFF
    table = "IDT" if idt else "LDT" if ti else "GDT"
    selector = None if idt else (code & 0xFFFC)
    vector = index if idt else None
    null = code & 0xFFFF == 0 or (not idt and not ti and index == 0)
    if code & 0xFFFF == 0:
        summary = "0: no particular segment (or a null selector)"
    elif idt:
        summary = f"IDT vector {index}" + (f" ({vector_name(index)})" if vector_name(index) else "")
    else:
        summary = f"{table} entry {index}, selector {code & 0xFFF8 | (4 if ti else 0):#x}"
    if ext:
        summary += "; EXT: raised while delivering an external event or earlier exception"
    return SelectorCode(value=code, ext=ext, idt=idt, ti=ti, table=table, index=index, selector=selector,
                        vector=vector, null=null, reserved_bits=code & 0xFFFF0000, summary=summary)


# ---------------------------------------------------------------------------
# #CP error code (SDM Vol. 3A 6.15 "Interrupt 21")
# ---------------------------------------------------------------------------

CP_CAUSES = {1: "NEAR-RET", 2: "FAR-RET/IRET", 3: "ENDBRANCH", 4: "RSTORSSP", 5: "SETSSBSY"}


@dataclass(frozen=True)
class ControlProtectionCode:
    value: int
    cause: str
    enclave: bool
    summary: str


def decode_cp_error(code: int) -> ControlProtectionCode:
    if not 0 <= code <= 0xFFFFFFFF:
        raise DecodeError(f"a #CP error code is 32 bits, not {code:#x}")
    cause = CP_CAUSES.get(code & 0x7FFF, f"reserved cause {code & 0x7FFF:#x}")
    enclave = bool(code & 0x8000)
    return ControlProtectionCode(code, cause, enclave, cause + (" in an enclave" if enclave else ""))


def decode_error_code(vector: int, code: int) -> PageFaultCode | SelectorCode | ControlProtectionCode | None:
    """The decode that fits the vector's error code, or None (no known layout)."""
    if vector == PAGE_FAULT:
        return decode_pf_error(code)
    if vector in SELECTOR_CODE_VECTORS:
        return decode_selector_error(code)
    if vector == CONTROL_PROTECTION:
        return decode_cp_error(code)
    return None


__all__ = [
    "SELECTOR_CODE_VECTORS", "ControlProtectionCode", "ErrorBit", "InterruptFrame", "PageFaultCode",
    "SelectorCode", "candidate_vectors", "decode_cp_error", "decode_error_code", "decode_frame",
    "decode_pf_error", "decode_selector_error", "error_code_pushed", "frame_problems",
]
