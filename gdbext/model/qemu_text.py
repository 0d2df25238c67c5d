"""Parse the text of QEMU's `info registers` (HMP monitor) into data.

QEMU 7.2 prints one block per vCPU (target/i386/cpu-dump.c, x86_cpu_dump_state):

    CPU#0
    RAX=... RBX=... RCX=... RDX=...          (EAX=... 8 digits unless CS.L=1)
    RIP=... RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0
    ES =0030 0000000000000000 ffffffff 00cf9300 DPL=0 DS   [-WA]
    ...  CS SS DS FS GS LDT TR: selector, base, limit, flags
    GDT=     00000000075dc000 00000047
    IDT=     0000000007059018 00000fff
    CR0=80010033 CR2=... CR3=... CR4=00000668
    DR0=... DR7=...
    EFER=0000000000000d00
    FCW=... FPR0..7, XMM/YMM/ZMM lines      (ignored here)

Widths change with the mode (64-bit values only when CS.L=1, or for GDT/IDT/CR2/CR3
when EFER.LMA=1), so fields are read by name, never by column.  The text after a
segment's flags word ("DPL=0 CS64 [-R-]") is QEMU's own rendering of those flags
and is not needed.  This module does not import gdb: it parses text from anywhere
(`monitor info registers` through gdb, a socket to the monitor, a saved log).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from gdbext.model.snapshot import SegmentCache, TableRegister
from gdbext.x86 import DecodeError
from gdbext.x86.bits import EFER_LMA, cpu_mode

SEGMENT_ORDER = ("es", "cs", "ss", "ds", "fs", "gs")

# QEMU prints sc->flags & 0x00ffff00: that includes limit[19:16] at bits 16..19
# (QEMU keeps the descriptor's whole high dword).  SegmentCache.attrs holds only the
# attribute bits, as Descriptor.attrs does, so the two compare equal.
ATTR_MASK = 0x00F0FF00

_CPU_HEADER = re.compile(r"^\s*CPU#(\d+)\s*$", re.MULTILINE)
_SEGMENT = re.compile(
    r"^(ES|CS|SS|DS|FS|GS|LDT|TR) ?=([0-9a-f]{4}) ([0-9a-f]{8}|[0-9a-f]{16}) "
    r"([0-9a-f]{8}) ([0-9a-f]{8})(?:\s|$)")
_TABLE = re.compile(r"^(GDT|IDT)=\s+([0-9a-f]{8}|[0-9a-f]{16}) ([0-9a-f]{8})\s*$")
# NAME=hexvalue, where the value ends at a space or the end of the line.  QEMU pads
# short names ("R8 =", "ES ="), hence the optional space before "=".
_TOKEN = re.compile(r"(?<![\w\[])([A-Z][A-Z0-9]*) ?=([0-9a-f]+)(?=\s|$)")
_BRACKETS = re.compile(r"\[[^\]]*\]")
# FPU/vector registers print two or more numbers per name: not kept.
_SKIP_LINE = re.compile(r"^(FPR|XMM|YMM|ZMM|Opmask)\d")
# Status words on the RIP line that are fields of HmpRegisters, not registers.
_STATUS = ("CPL", "II", "A20", "SMM", "HLT")
_REQUIRED_REGS = ("cr0", "efer")


@dataclass(frozen=True)
class HmpRegisters:
    """One vCPU's `info registers` block.

    regs:      every NAME=value register, lower-case, as QEMU named it: "rax".."r15",
               "rip", "rfl" in 64-bit code, "eax".."esp", "eip", "efl" otherwise; "cr0",
               "cr2", "cr3", "cr4", "dr0".."dr7", "efer", "fcw", "fsw", "ftw", "mxcsr".
    segments:  es cs ss ds fs gs, with attrs masked to the attribute bits (ATTR_MASK).
    raw_flags: the flags word exactly as printed, for the six segments, "ldt" and "tr".
    cpl:       QEMU's CPL.  halted: HLT=1 (the vCPU sits in HLT).
    inhibit_irq: II=1 (interrupt shadow after STI / MOV SS).  a20, smm: as printed.
    mode_hint: bits.cpu_mode() of CR0, EFER, CS and RFLAGS.
    wide:      the general registers were printed 64 bits wide (CS.L=1).
    cpu:       the N of the "CPU#N" header, or None if the text had none.
    """

    regs: dict[str, int]
    segments: dict[str, SegmentCache]
    ldt: SegmentCache
    tr: SegmentCache
    gdt: TableRegister
    idt: TableRegister
    cpl: int
    halted: bool
    mode_hint: str
    inhibit_irq: bool = False
    a20: bool = True
    smm: bool = False
    wide: bool = False
    cpu: int | None = None
    raw_flags: dict[str, int] = field(default_factory=dict)

    @property
    def rip(self) -> int:
        return self.regs["rip"] if "rip" in self.regs else self.regs["eip"]

    @property
    def rflags(self) -> int:
        return self.regs["rfl"] if "rfl" in self.regs else self.regs["efl"]

    @property
    def cr0(self) -> int:
        return self.regs["cr0"]

    @property
    def cr3(self) -> int:
        return self.regs.get("cr3", 0)

    @property
    def cr4(self) -> int:
        return self.regs.get("cr4", 0)

    @property
    def efer(self) -> int:
        return self.regs["efer"]

    @property
    def bases_truncated(self) -> bool:
        """Segment bases (TR, FS, GS too) were printed as 32 bits though 64 may be set.

        QEMU prints 16-digit bases only while CS.L=1.  In compatibility mode (EFER.LMA=1,
        CS.L=0) a TR base above 4 GiB, or a 64-bit FS/GS base, loses its upper half in
        this text; GDT and IDT bases are still printed in full.
        """
        return not self.wide and bool(self.efer & EFER_LMA)


_MI_STREAM = re.compile(r'^[@~&]"(.*)"$')
_MI_ESCAPE = re.compile(r'\\([\\"abfnrtv]|[0-7]{1,3})')
_MI_CHARS = {"\\": "\\", '"': '"', "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
             "v": "\v"}


def captured_text(captured: str) -> str:
    """What a gdb command printed, as text.

    gdb 18 under MI hands a command's output (`monitor ...`, `info symbol`)
    to `gdb.execute(..., to_string=True)` as MI stream records (`@"CPU#0\\r\\n"` a line), where
    gdb 13 and 16 give the text itself.  Either way: the text, CR-LF as LF."""
    lines = captured.splitlines()
    if lines and all(_MI_STREAM.match(line) for line in lines if line):
        captured = "".join(_MI_ESCAPE.sub(
            lambda m: _MI_CHARS.get(m.group(1)) or chr(int(m.group(1), 8)), _MI_STREAM.match(line).group(1))
            for line in lines if line)
    return captured.replace("\r\n", "\n")


def parse_info_registers(text: str) -> HmpRegisters:
    """Parse the block of one vCPU.  DecodeError (one line) on text that is not one.

    Text holding several "CPU#N" blocks (`info registers -a`) is refused: use
    parse_all_info_registers for that.
    """
    blocks = _split_cpus(text)
    if len(blocks) != 1:
        raise DecodeError(f"expected one CPU's registers, found {len(blocks)} CPU# blocks")
    cpu, body = blocks[0]
    return _parse_block(body, cpu)


def parse_all_info_registers(text: str) -> list[HmpRegisters]:
    """Parse `info registers -a`: one HmpRegisters per "CPU#N" block, in text order."""
    return [_parse_block(body, cpu) for cpu, body in _split_cpus(text)]


def _split_cpus(text: str) -> list[tuple[int | None, str]]:
    if not isinstance(text, str):
        raise DecodeError(f"expected text, got {type(text).__name__}")
    headers = list(_CPU_HEADER.finditer(text))
    if not headers:
        return [(None, text)]
    blocks = []
    for i, match in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        blocks.append((int(match.group(1)), text[match.end():end]))
    return blocks


def _parse_block(body: str, cpu: int | None) -> HmpRegisters:
    regs: dict[str, int] = {}
    segs: dict[str, tuple[SegmentCache, int]] = {}
    tables: dict[str, TableRegister] = {}
    status: dict[str, int] = {}
    for line in body.splitlines():
        line = line.strip()
        if not line or _SKIP_LINE.match(line):
            continue
        if _take_segment(line, segs) or _take_table(line, tables):
            continue
        for name, value in _TOKEN.findall(_BRACKETS.sub(" ", line)):
            target = status if name in _STATUS else regs
            _put(target, name if name in _STATUS else name.lower(), int(value, 16))
    return _assemble(regs, segs, tables, status, cpu)


def _put(target: dict, key: str, value: int) -> None:
    if key in target:
        raise DecodeError(f"{key} appears twice in one CPU's registers")
    target[key] = value


def _take_segment(line: str, segs: dict) -> bool:
    match = _SEGMENT.match(line)
    if not match:
        return False
    name, selector, base, limit, flags = match.groups()
    printed = int(flags, 16)
    cache = SegmentCache(int(selector, 16), int(base, 16), int(limit, 16), printed & ATTR_MASK)
    _put(segs, name.lower(), (cache, printed))
    return True


def _take_table(line: str, tables: dict) -> bool:
    match = _TABLE.match(line)
    if not match:
        return False
    name, base, limit = match.groups()
    _put(tables, name.lower(), TableRegister(int(base, 16), int(limit, 16)))
    return True


def _assemble(regs: dict, segs: dict, tables: dict, status: dict,
              cpu: int | None) -> HmpRegisters:
    missing = [s for s in (*SEGMENT_ORDER, "ldt", "tr") if s not in segs]
    missing += [t for t in ("gdt", "idt") if t not in tables]
    missing += [r for r in _REQUIRED_REGS if r not in regs]
    missing += [s.lower() for s in ("CPL", "HLT") if s not in status]
    if not ("rip" in regs or "eip" in regs) or not ("rfl" in regs or "efl" in regs):
        missing.append("rip/rflags")
    if missing:
        raise DecodeError("not `info registers` output: no " + ", ".join(missing))
    segments = {name: segs[name][0] for name in SEGMENT_ORDER}
    rflags = regs["rfl"] if "rfl" in regs else regs["efl"]
    return HmpRegisters(
        regs=regs,
        segments=segments,
        ldt=segs["ldt"][0],
        tr=segs["tr"][0],
        gdt=tables["gdt"],
        idt=tables["idt"],
        cpl=status["CPL"],
        halted=bool(status["HLT"]),
        mode_hint=cpu_mode(regs["cr0"], regs["efer"], segments["cs"].attrs, rflags),
        inhibit_irq=bool(status.get("II", 0)),
        a20=bool(status.get("A20", 1)),
        smm=bool(status.get("SMM", 0)),
        wide="rip" in regs,
        cpu=cpu,
        raw_flags={name: printed for name, (_, printed) in segs.items()},
    )


_XP_LINE = re.compile(r"^([0-9a-f]+):((?: +0x[0-9a-f]+)+)\s*$")
_XP_UNITS = {18: 8, 10: 4, 6: 2, 4: 1}   # len("0x" + digits) -> bytes per unit


def parse_xp(text: str) -> tuple[int, bytes]:
    """The start address and bytes of an `x`/`xp /N<unit>x ADDR` dump.

    Lines read "0000000000101000: 0x0000000000000000 0x00af9b000000ffff"; the unit
    (g, w, h or b) is known from the width QEMU pads each value to.  DecodeError if a
    line is not of that form, the widths are mixed, or an address is not contiguous.
    """
    start = None
    out = bytearray()
    unit = None
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _XP_LINE.match(line.strip())
        if not match:
            raise DecodeError(f"not an xp dump line: {line.strip()[:60]!r}")
        address = int(match.group(1), 16)
        if start is None:
            start = address
        elif address != start + len(out):
            raise DecodeError(f"xp dump jumps to {address:#x} after {start + len(out):#x}")
        for token in match.group(2).split():
            size = _XP_UNITS.get(len(token))
            if size is None or unit not in (None, size):
                raise DecodeError(f"xp value {token!r} has an unexpected width")
            unit = size
            out += int(token, 16).to_bytes(size, "little")
    if start is None:
        raise DecodeError("empty xp dump")
    return start, bytes(out)


# --- `info lapic N` --------------------------------------------------------------

@dataclass(frozen=True)
class LapicTimer:
    """What QEMU's `info lapic N` says about the local APIC timer and priority.

    mode: "one-shot", "periodic" or "tsc-deadline" (LVT timer bits 18:17,
    Intel SDM Vol. 3A 11.5.1); divider: 1..128 (the DCR); current_count: the
    count left.  QEMU's APIC bus runs at 1 GHz: a count lasts `divider` ns.
    ppr: the processor priority; an interrupt is taken only if its vector's
    priority class (vector >> 4) is above PPR's (SDM Vol. 3A 11.8.3.1).
    """

    masked: bool
    mode: str
    vector: int
    divider: int
    current_count: int
    ppr: int
    enabled: bool

    def next_interrupt_ns(self) -> int | None:
        """Nanoseconds of guest time until the timer interrupts the CPU, or None
        when it will not (masked, stopped, below PPR, APIC disabled) or cannot
        be told (TSC-deadline mode: QEMU does not print the deadline)."""
        if not self.enabled or self.masked or self.mode not in ("one-shot", "periodic"):
            return None
        if self.current_count == 0 or self.vector >> 4 <= self.ppr >> 4:
            return None
        return self.current_count * self.divider


_LVTT = re.compile(r"^LVTT\s+0x([0-9a-f]{8})\b(.*)$", re.MULTILINE)
_TIMER = re.compile(r"^Timer\s+DCR=0x[0-9a-f]+ \(divide by (\d+)\) initial_count = (\d+) current_count = (\d+)",
                    re.MULTILINE)
_PPR = re.compile(r"\bPPR 0x([0-9a-f]+)")
_SPIV = re.compile(r"^SPIV\s+0x[0-9a-f]+ APIC (enabled|disabled)", re.MULTILINE)


def parse_info_lapic(text: str) -> LapicTimer:
    lvtt, timer, ppr = _LVTT.search(text), _TIMER.search(text), _PPR.search(text)
    if not (lvtt and timer and ppr):
        raise DecodeError(f"not an `info lapic` dump: {text.strip()[:80]!r}")
    raw = int(lvtt.group(1), 16)
    mode = {0: "one-shot", 1: "periodic", 2: "tsc-deadline"}.get((raw >> 17) & 3, "reserved")
    spiv = _SPIV.search(text)
    return LapicTimer(masked=bool(raw & (1 << 16)), mode=mode, vector=raw & 0xFF,
                      divider=int(timer.group(1)), current_count=int(timer.group(3)),
                      ppr=int(ppr.group(1), 16), enabled=spiv is None or spiv.group(1) == "enabled")


_MTREE_FLATVIEW = re.compile(r"^FlatView #\d+", re.MULTILINE)
_MTREE_RAM = re.compile(r"^\s*([0-9a-f]+)-([0-9a-f]+) \(prio [-\d]+, ram\): (\S+)", re.MULTILINE)


def parse_ram_ranges(text: str) -> list[tuple[int, int, str]]:
    """The guest-physical RAM of the system address space, from `info mtree -f`:
    [(start, end exclusive, region name)], sorted, adjacent pieces merged.

    Only the FlatView block that lists AS "memory" (QEMU prints the blocks in
    hash order), and only "ram" regions: ROM, ROM devices and I/O are not
    memory to save (reading MMIO would reach a device)."""
    blocks = _MTREE_FLATVIEW.split(text)
    system = next((b for b in blocks if ' AS "memory"' in b), "")
    found = sorted((int(a, 16), int(b, 16) + 1, name) for a, b, name in _MTREE_RAM.findall(system))
    merged: list[tuple[int, int, str]] = []
    for start, end, name in found:
        if merged and merged[-1][1] == start and merged[-1][2] == name:
            merged[-1] = (merged[-1][0], end, name)
        else:
            merged.append((start, end, name))
    return merged
