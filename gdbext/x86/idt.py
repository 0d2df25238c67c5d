"""Interrupt descriptor table gates.

Intel SDM Vol. 3A:
  6.11    "IDT Descriptors" (figure 6-2): legacy 8-byte task/interrupt/trap gates
  6.14.1  "64-Bit Mode IDT" (figure 6-8): 16-byte gates, offset[63:32] in bytes 8..11,
          IST in bits 34:32; only interrupt (0xE) and trap (0xF) types are valid
  6.15 / table 6-1 "Protected-Mode Exceptions and Interrupts": vector names, error codes
AMD APM Vol. 2, 8.2 "Vectors" adds #HV (28), #VC (29) and #SX (30).
"""
from __future__ import annotations

from dataclasses import dataclass

from . import DecodeError

IDT_VECTORS = 256
GATE_SIZE_LONG = 16
GATE_SIZE_LEGACY = 8

# vector -> (mnemonic, name).  Vectors 9, 15, 22-27, 31 are reserved by Intel.
EXCEPTION_NAMES: dict[int, tuple[str, str]] = {
    0: ("#DE", "Divide Error"),
    1: ("#DB", "Debug"),
    2: ("NMI", "Non-maskable Interrupt"),
    3: ("#BP", "Breakpoint"),
    4: ("#OF", "Overflow"),
    5: ("#BR", "BOUND Range Exceeded"),
    6: ("#UD", "Invalid Opcode"),
    7: ("#NM", "Device Not Available"),
    8: ("#DF", "Double Fault"),
    9: ("", "Coprocessor Segment Overrun"),
    10: ("#TS", "Invalid TSS"),
    11: ("#NP", "Segment Not Present"),
    12: ("#SS", "Stack-Segment Fault"),
    13: ("#GP", "General Protection"),
    14: ("#PF", "Page Fault"),
    16: ("#MF", "x87 FPU Floating-Point Error"),
    17: ("#AC", "Alignment Check"),
    18: ("#MC", "Machine Check"),
    19: ("#XM", "SIMD Floating-Point Exception"),
    20: ("#VE", "Virtualization Exception"),
    21: ("#CP", "Control Protection Exception"),
    28: ("#HV", "Hypervisor Injection Exception"),   # AMD
    29: ("#VC", "VMM Communication Exception"),      # AMD
    30: ("#SX", "Security Exception"),               # AMD
}

# Vectors whose exception pushes an error code (table 6-1; #VC and #SX from AMD APM
# Vol. 2 8.2).  #DF's code is always zero.  Software INT n to these vectors pushes none.
ERROR_CODE_VECTORS: frozenset[int] = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})

_KINDS_LONG = {0xE: "interrupt-gate", 0xF: "trap-gate"}
_KINDS_LEGACY = {
    0x5: "task-gate",
    0x6: "interrupt-gate16",
    0x7: "trap-gate16",
    0xE: "interrupt-gate",
    0xF: "trap-gate",
}


def vector_name(vector: int) -> str:
    """Mnemonic (or name when there is none) of an exception vector; "" above 31."""
    if vector in EXCEPTION_NAMES:
        mnemonic, name = EXCEPTION_NAMES[vector]
        return mnemonic or name
    return "reserved" if vector < 32 else ""


@dataclass(frozen=True)
class Gate:
    """One IDT entry.

    kind: "interrupt-gate" or "trap-gate" (clears IF or not on entry), else "reserved";
    with long_mode=False also "task-gate", "interrupt-gate16", "trap-gate16".
    A gate whose S bit (bit 44) is set is "reserved" whatever its type.
    ist: the interrupt stack table slot (0 = no stack switch by IST); 0 outside long mode.
    truncated: the IDT ended inside this gate; the missing bytes were taken as zero.
    """

    vector: int
    raw: int
    kind: str
    selector: int
    offset: int
    ist: int
    dpl: int
    present: bool
    name: str
    type: int = 0
    truncated: bool = False

    @property
    def has_error_code(self) -> bool:
        return self.vector in ERROR_CODE_VECTORS


def _gate(value: int, vector: int, long_mode: bool, truncated: bool) -> Gate:
    type_ = (value >> 40) & 0xF                              # bits 43:40
    system = not (value >> 44) & 1                           # bit 44 must be 0
    kinds = _KINDS_LONG if long_mode else _KINDS_LEGACY
    kind = kinds.get(type_, "reserved") if system else "reserved"
    offset = (value & 0xFFFF) | ((value >> 32) & 0xFFFF0000)  # bits 15:0, 63:48
    if long_mode:
        offset |= ((value >> 64) & 0xFFFFFFFF) << 32         # bits 95:64
    if kind == "task-gate":
        offset = 0                                           # a task gate names a TSS only
    return Gate(
        vector=vector,
        raw=value,
        kind=kind,
        selector=(value >> 16) & 0xFFFF,                     # bits 31:16
        offset=offset,
        ist=(value >> 32) & 0x7 if long_mode else 0,         # bits 34:32
        dpl=(value >> 45) & 3,                               # bits 46:45
        present=bool((value >> 47) & 1),                     # bit 47
        name=vector_name(vector),
        type=type_,
        truncated=truncated,
    )


def _check_vector(vector: int) -> None:
    if not 0 <= vector < IDT_VECTORS:
        raise DecodeError(f"vector {vector} is outside 0..255")


def decode_gate(raw: bytes, vector: int, *, long_mode: bool = True) -> Gate:
    """Decode one gate: 16 bytes in long mode, 8 otherwise (DecodeError on other lengths)."""
    _check_vector(vector)
    size = GATE_SIZE_LONG if long_mode else GATE_SIZE_LEGACY
    if len(raw) != size:
        raise DecodeError(f"an IDT gate is {size} bytes here, got {len(raw)}")
    return _gate(int.from_bytes(raw, "little"), vector, long_mode, False)


def decode_idt(table: bytes, limit: int, *, long_mode: bool = True) -> list[Gate]:
    """The gates from byte 0 through `limit` (IDTR.limit), at most 256.

    As with decode_table: a short `table` is decoded as far as it goes, and a gate cut
    off by the end is returned with truncated=True rather than dropped.
    """
    if not 0 <= limit <= 0xFFFF:
        raise DecodeError(f"IDT limit {limit:#x} is outside 0..0xffff")
    size = GATE_SIZE_LONG if long_mode else GATE_SIZE_LEGACY
    end = min(len(table), limit + 1, size * IDT_VECTORS)
    gates: list[Gate] = []
    for vector, offset in enumerate(range(0, end, size)):
        chunk = table[offset:min(offset + size, end)]
        value = int.from_bytes(chunk.ljust(size, b"\0"), "little")
        gates.append(_gate(value, vector, long_mode, len(chunk) < size))
    return gates
