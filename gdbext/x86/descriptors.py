"""Segment and system descriptors of the GDT and LDT.

Layouts follow Intel SDM Vol. 3A:
  3.4.5   "Segment Descriptors" (figure 3-8): the 8-byte code/data descriptor
  3.4.5.1 "Code- and Data-Segment Descriptor Types" (table 3-1)
  3.5     "System Descriptor Types" (table 3-2: legacy and IA-32e meanings)
  8.2.3   "TSS Descriptor in 64-bit Mode" (figure 8-4): 16 bytes, base[63:32] in bytes 8..11
  5.8.3.1 "IA-32e-Mode Call Gates" (figure 5-9): 16 bytes, offset[63:32] in bytes 8..11
AMD APM Vol. 2, 4.8 "Long-Mode Segment Descriptors" agrees.

Bit positions below are those of the descriptor read as one little-endian integer.
"""
from __future__ import annotations

from dataclasses import dataclass

from gdbext.x86.bits import MASK64

from . import DecodeError

ENTRY_SIZE = 8
MAX_TABLE_LIMIT = 0xFFFF      # GDTR/LDTR limits are 16 bits (SDM Vol. 3A 2.4.1)

# Table 3-2, IA-32e mode column: every other system type is reserved in long mode
# (16-bit gates/TSSs and task gates do not exist there).
_SYSTEM_KINDS_LONG = {
    0x2: "ldt",
    0x9: "tss-available",
    0xB: "tss-busy",
    0xC: "call-gate",
    0xE: "interrupt-gate",
    0xF: "trap-gate",
}
# Table 3-2, 32-bit mode column.
_SYSTEM_KINDS_LEGACY = {
    0x1: "tss16-available",
    0x2: "ldt",
    0x3: "tss16-busy",
    0x4: "call-gate16",
    0x5: "task-gate",
    0x6: "interrupt-gate16",
    0x7: "trap-gate16",
    0x9: "tss-available",
    0xB: "tss-busy",
    0xC: "call-gate",
    0xE: "interrupt-gate",
    0xF: "trap-gate",
}
# In IA-32e mode these system descriptors are 16 bytes and use the next GDT slot
# (SDM Vol. 3A 3.5: "expanded to 16 bytes"; 8.2.3; 5.8.3.1).
WIDE_TYPES_LONG = frozenset({0x2, 0x9, 0xB, 0xC, 0xE, 0xF})
_GATE_KINDS = frozenset({
    "call-gate", "interrupt-gate", "trap-gate",
    "call-gate16", "interrupt-gate16", "trap-gate16", "task-gate",
})

_SYSTEM_WORDS = {
    "ldt": "LDT",
    "tss-available": "TSS (available)",
    "tss-busy": "TSS (busy)",
    "tss16-available": "16-bit TSS (available)",
    "tss16-busy": "16-bit TSS (busy)",
    "call-gate": "call gate",
    "interrupt-gate": "interrupt gate",
    "trap-gate": "trap gate",
    "call-gate16": "16-bit call gate",
    "interrupt-gate16": "16-bit interrupt gate",
    "trap-gate16": "16-bit trap gate",
    "task-gate": "task gate",
    "reserved": "reserved system type",
    "null": "null",
    "truncated": "truncated entry",
}


@dataclass(frozen=True)
class Descriptor:
    """One GDT/LDT entry, decoded.

    size is 8, or 16 for an IA-32e system descriptor (LDT, TSS, call gate, and the
    interrupt/trap gate types).  raw holds all `size` bytes as one little-endian integer.
    limit is in bytes (scaled by G: (raw_limit << 12) | 0xFFF when G=1); raw_limit is the
    20-bit field.  For gates base/limit/long/db/granularity/avl are 0/False and the gate's
    target is in gate_selector/offset (and param_count for legacy call gates, ist for
    IA-32e interrupt/trap gates).
    truncated: the table ended (limit or bytes read) inside this entry; the missing bytes
    were taken as zero.  An entry with fewer than 8 bytes has kind "truncated"; a 16-byte
    system descriptor missing only its upper half keeps its kind, with base[63:32] = 0.
    """

    index: int
    selector: int
    size: int
    raw: int
    kind: str
    type: int
    s: bool
    dpl: int
    present: bool
    base: int
    limit: int
    raw_limit: int
    long: bool
    db: bool
    granularity: bool
    avl: bool
    gate_selector: int = 0
    offset: int = 0
    param_count: int = 0
    ist: int = 0
    truncated: bool = False

    # --- type bits (SDM Vol. 3A table 3-1) -------------------------------
    @property
    def is_code(self) -> bool:
        return self.s and bool(self.type & 0x8)

    @property
    def is_data(self) -> bool:
        return self.s and not self.type & 0x8

    @property
    def is_system(self) -> bool:
        return not self.s

    @property
    def is_gate(self) -> bool:
        return self.kind in _GATE_KINDS

    @property
    def accessed(self) -> bool:
        return self.s and bool(self.type & 0x1)

    @property
    def readable(self) -> bool:
        # Data segments are always readable; code segments only with R (type bit 1).
        return self.is_data or (self.is_code and bool(self.type & 0x2))

    @property
    def writable(self) -> bool:
        return self.is_data and bool(self.type & 0x2)

    @property
    def conforming(self) -> bool:
        return self.is_code and bool(self.type & 0x4)

    @property
    def expand_down(self) -> bool:
        return self.is_data and bool(self.type & 0x4)

    @property
    def attrs(self) -> int:
        """QEMU's flag word: descriptor bits 40..55 kept at bits 8..23 (see SegmentCache)."""
        return (self.raw >> 32) & 0x00F0FF00

    @property
    def type_words(self) -> str:
        """The type field in words, e.g. "code, execute/read, accessed"."""
        if self.kind in ("null", "truncated") or not self.s:
            return _SYSTEM_WORDS.get(self.kind, self.kind)
        words = ["code" if self.is_code else "data"]
        if self.is_code:
            words.append("execute/read" if self.type & 0x2 else "execute-only")
            if self.conforming:
                words.append("conforming")
        else:
            words.append("read/write" if self.type & 0x2 else "read-only")
            if self.expand_down:
                words.append("expand-down")
        if self.accessed:
            words.append("accessed")
        return ", ".join(words)

    @property
    def upper_type_zero(self) -> bool:
        """For a 16-byte descriptor: bits 12:8 of the upper dword are zero, as required.

        SDM Vol. 3A figures 5-9 and 8-4: those bits sit where a legacy descriptor's type
        and S would be, so a zero there makes the upper half read as an invalid (type 0)
        descriptor if anything indexes it by mistake.  Always True for 8-byte entries.
        """
        return self.size != 16 or (self.raw >> 104) & 0x1F == 0


def _kind(type_: int, s: bool, long_mode: bool) -> str:
    if s:
        return "code" if type_ & 0x8 else "data"
    table = _SYSTEM_KINDS_LONG if long_mode else _SYSTEM_KINDS_LEGACY
    return table.get(type_, "reserved")


def _wide(low: int, long_mode: bool) -> bool:
    """Does the 8-byte `low` start a 16-byte descriptor?"""
    s = bool(low >> 44 & 1)
    return long_mode and not s and (low >> 40) & 0xF in WIDE_TYPES_LONG


def _build(raw: int, size: int, index: int, selector: int, long_mode: bool,
           truncated: bool = False, null: bool = False) -> Descriptor:
    """Decode `raw` (size bytes, little-endian) into a Descriptor."""
    low = raw & MASK64
    type_ = (low >> 40) & 0xF           # bits 43:40
    s = bool(low >> 44 & 1)             # bit 44: 1 = code/data, 0 = system
    dpl = (low >> 45) & 3               # bits 46:45
    present = bool(low >> 47 & 1)       # bit 47
    kind = _kind(type_, s, long_mode)
    if null:
        kind = "null"
    elif truncated and size == ENTRY_SIZE:
        kind = "truncated"
    common = {"index": index, "selector": selector, "size": size, "raw": raw, "kind": kind,
                  "type": type_, "s": s, "dpl": dpl, "present": present}
    if kind in _GATE_KINDS:
        return Descriptor(**common, base=0, limit=0, raw_limit=0, long=False, db=False,
                          granularity=False, avl=False, truncated=truncated,
                          **_gate_fields(raw, size, kind))
    raw_limit = (low & 0xFFFF) | ((low >> 32) & 0xF0000)            # bits 15:0, 51:48
    base = ((low >> 16) & 0xFFFFFF) | ((low >> 32) & 0xFF000000)    # bits 39:16, 63:56
    if size == 16:
        base |= ((raw >> 64) & 0xFFFFFFFF) << 32                    # bits 95:64 (8.2.3)
    granularity = bool(low >> 55 & 1)                               # bit 55: G
    limit = (raw_limit << 12) | 0xFFF if granularity else raw_limit
    return Descriptor(**common, base=base, limit=limit, raw_limit=raw_limit,
                      long=bool(low >> 53 & 1), db=bool(low >> 54 & 1),
                      granularity=granularity, avl=bool(low >> 52 & 1),
                      truncated=truncated)


def _gate_fields(raw: int, size: int, kind: str) -> dict:
    """Target of a gate found in a GDT/LDT (SDM Vol. 3A figures 5-8, 5-9, 6-2)."""
    offset = (raw & 0xFFFF) | ((raw >> 32) & 0xFFFF0000)           # bits 15:0, 63:48
    if size == 16:
        offset |= ((raw >> 64) & 0xFFFFFFFF) << 32                  # bits 95:64
    if kind == "task-gate":
        offset = 0                                                  # task gates have none
    fields = {"gate_selector": (raw >> 16) & 0xFFFF, "offset": offset}
    if kind in ("call-gate", "call-gate16") and size == 8:
        fields["param_count"] = (raw >> 32) & 0x1F                  # bits 36:32, legacy only
    if kind in ("interrupt-gate", "trap-gate") and size == 16:
        fields["ist"] = (raw >> 32) & 0x7                           # bits 34:32
    return fields


def decode_descriptor(raw: bytes, index: int = 0, *, long_mode: bool = True,
                      ldt: bool = False) -> Descriptor:
    """Decode one descriptor from its bytes.

    raw: 8 bytes, or 16.  In long mode a system descriptor of a 16-byte type (LDT, TSS,
    gates) needs all 16 bytes: 8 bytes raise DecodeError.  Given 16 bytes for an 8-byte
    descriptor, only the first 8 are used (size == 8), so a caller may always read 16.
    index: the entry number, which gives the selector (index * 8, TI set when ldt=True).
    An all-zero 8-byte entry decodes as kind "null".
    """
    if len(raw) not in (8, 16):
        raise DecodeError(f"a descriptor is 8 or 16 bytes, got {len(raw)}")
    if not 0 <= index <= MAX_TABLE_LIMIT // ENTRY_SIZE:
        raise DecodeError(f"descriptor index {index} is outside 0..8191")
    low = int.from_bytes(raw[:8], "little")
    wide = _wide(low, long_mode)
    if wide and len(raw) < 16:
        raise DecodeError("a long-mode system descriptor is 16 bytes; got only 8")
    size = 16 if wide else 8
    value = int.from_bytes(raw[:size], "little")
    return _build(value, size, index, _selector(index, ldt), long_mode, null=(low == 0))


def _selector(index: int, ldt: bool) -> int:
    return index * ENTRY_SIZE | (4 if ldt else 0)


def _check_limit(limit: int) -> None:
    if not 0 <= limit <= MAX_TABLE_LIMIT:
        raise DecodeError(f"table limit {limit:#x} is outside 0..0xffff")


def _entry_at(table: bytes, end: int, offset: int, long_mode: bool, ldt: bool,
              null: bool) -> Descriptor:
    """The entry at byte `offset` of a table whose usable bytes end at `end`."""
    index = offset // ENTRY_SIZE
    chunk = table[offset:min(offset + 16, end)]
    low = int.from_bytes(chunk[:8].ljust(8, b"\0"), "little")
    size = 16 if (_wide(low, long_mode) and not null) else 8
    present_bytes = min(len(chunk), size)
    value = int.from_bytes(chunk[:present_bytes].ljust(size, b"\0"), "little")
    truncated = present_bytes < size
    return _build(value, size, index, _selector(index, ldt), long_mode,
                  truncated=truncated, null=null or (low == 0 and not truncated))


def decode_table(table: bytes, limit: int, *, long_mode: bool = True,
                 ldt: bool = False) -> list[Descriptor]:
    """Every entry of a GDT (or LDT with ldt=True) from byte 0 through `limit`.

    The table holds limit + 1 bytes; if `table` is shorter (a partial read), only its
    bytes are decoded, and extra bytes past the limit are ignored.  A 16-byte system
    descriptor is one entry and consumes the next slot, whatever that slot holds.  An
    entry cut off by the end is still returned, with truncated=True (see Descriptor).
    GDT entry 0 is never used by the processor (SDM Vol. 3A 3.5.1), so it is kind "null"
    whatever its bytes; an LDT's entry 0 is an ordinary entry.
    """
    _check_limit(limit)
    end = min(len(table), limit + 1)
    out: list[Descriptor] = []
    offset = 0
    while offset < end:
        entry = _entry_at(table, end, offset, long_mode, ldt, null=(offset == 0 and not ldt))
        out.append(entry)
        offset += entry.size
    return out


def descriptor_at(table: bytes, limit: int, selector: int, *, long_mode: bool = True,
                  ldt: bool = False) -> Descriptor | None:
    """The descriptor a selector names, decoded as the CPU would read it.

    The selector's index is used directly (selector >> 3), even if that slot is the upper
    half of a 16-byte descriptor: that is what a load of such a selector would read.
    Returns None when the selector does not name an entry of this table: its 8 bytes
    reach past `limit` (the CPU raises #GP), or its TI bit picks the other table
    (TI=1 selects the LDT: pass the LDT's bytes with ldt=True; TI=0 the GDT).
    The null selector (index 0 of the GDT) gives the kind "null" entry.
    Bytes within the limit but missing from `table` are reported as truncated.
    """
    _check_limit(limit)
    if not 0 <= selector <= 0xFFFF:
        raise DecodeError(f"selector {selector:#x} is not 16 bits")
    if bool(selector & 4) != ldt:
        return None
    offset = selector & ~7
    if offset + ENTRY_SIZE - 1 > limit:
        return None
    end = min(len(table), limit + 1)
    return _entry_at(table, end, offset, long_mode, ldt, null=(offset == 0 and not ldt))
