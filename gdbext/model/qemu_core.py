"""QEMU's `dump-guest-memory` ELF cores, read as a MachineState.

The core (QEMU's dump/dump.c and target/i386/arch_dump.c) has a PT_LOAD
segment per block of guest RAM, at its guest-physical address (p_paddr), and
for each vCPU, in vCPU order, an NT_PRSTATUS note ("CORE") and a "QEMU" note
holding QEMUCPUState:

    u32 version, size; u64 rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rip rflags;
    QEMUCPUSegment cs ds es fs gs ss ldt tr gdt idt;  (u32 selector, limit,
                                                       flags, pad; u64 base)
    u64 cr[5]; u64 kernel_gs_base  (the last only when size says so)

`flags` is QEMU's descriptor-cache flag word (the descriptor's high dword in
place: Intel SDM Vol. 3A 3.4.5), `limit` already scaled by G.  There is no
EFER, no other MSR and no HLT state: EFER.LMA is inferred only where it is
certain (CR0.PG, CR4.PAE and CS.L=1 are IA-32e mode: SDM Vol. 3A 10.8.5 and
3.4.5's L flag), and the rest comes from a gdbext state file of the same
stop (a sidecar) or is unknown.
"""
from __future__ import annotations

import io
import struct
from collections.abc import Mapping
from typing import Iterator, List, Optional, Tuple

from gdbext.model.machine_state import CpuState, MachineState, MachineStateError
from gdbext.model.qemu_text import ATTR_MASK
from gdbext.model.snapshot import PAGE, SegmentCache, TableRegister
from gdbext.x86.bits import CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME, EFER_NXE

_SEG = struct.Struct("<IIII Q")                # selector, limit, flags, pad, base
_HEAD = struct.Struct("<II")                   # version, size
_GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
         "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "eflags")
_SEGS = ("cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr", "gdt", "idt")
_OFF_SEGS = _HEAD.size + 8 * len(_GPRS)
_OFF_CR = _OFF_SEGS + _SEG.size * len(_SEGS)
_OFF_KGS = _OFF_CR + 8 * 5
_MIN_SIZE = _OFF_KGS                           # without kernel_gs_base
_PT_LOAD, _PT_NOTE = 1, 4
RFLAGS_VM = 1 << 17
NOT_IN_CORE = "unknown (not in a QEMU core)"


class CorePages(Mapping):
    """Page number -> 4 KiB, sliced from the core's PT_LOAD segments on demand."""

    def __init__(self, data: bytes, loads: List[Tuple[int, int, int]]):
        self._data = memoryview(data)
        self._loads = sorted(loads)               # (paddr, offset, filesz)

    def _where(self, pfn: int) -> Optional[int]:
        pa = pfn * PAGE
        for paddr, offset, size in self._loads:
            if paddr <= pa and pa + PAGE <= paddr + size:
                return offset + pa - paddr
        return None

    def __getitem__(self, pfn: int) -> bytes:
        at = self._where(pfn)
        if at is None:
            raise KeyError(pfn)
        return bytes(self._data[at:at + PAGE])

    def __contains__(self, pfn: object) -> bool:
        return isinstance(pfn, int) and self._where(pfn) is not None

    def __iter__(self) -> Iterator[int]:
        for paddr, _offset, size in self._loads:
            first = -(-paddr // PAGE)
            yield from range(first, (paddr + size) // PAGE)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _notes(data: bytes) -> Iterator[Tuple[str, int, bytes]]:
    """(name, type, desc) of each note in a PT_NOTE segment (ELF gABI, "Note Section")."""
    at = 0
    while at + 12 <= len(data):
        namesz, descsz, kind = struct.unpack_from("<III", data, at)
        at += 12
        name = data[at:at + namesz].rstrip(b"\0").decode("ascii", "replace")
        at += (namesz + 3) & ~3
        desc = data[at:at + descsz]
        at += (descsz + 3) & ~3
        yield name, kind, desc


def _cpu(index: int, desc: bytes) -> Tuple[CpuState, List[str]]:
    version, size = _HEAD.unpack_from(desc, 0)
    if version != 1 or size < _MIN_SIZE or len(desc) < _MIN_SIZE:
        raise MachineStateError(f"vCPU {index}'s QEMU note is version {version}, {size} bytes: "
                                "not a QEMUCPUState this gdbext reads")
    values = struct.unpack_from(f"<{len(_GPRS)}Q", desc, _HEAD.size)
    regs = dict(zip(_GPRS, values))
    segs = {}
    for i, name in enumerate(_SEGS):
        selector, limit, flags, _pad, base = _SEG.unpack_from(desc, _OFF_SEGS + i * _SEG.size)
        segs[name] = (selector, limit, flags, base)
    cr = struct.unpack_from("<5Q", desc, _OFF_CR)
    regs.update(cr0=cr[0], cr2=cr[2], cr3=cr[3], cr4=cr[4])
    unknown = []
    for name in ("cs", "ds", "es", "fs", "gs", "ss"):
        regs[name] = segs[name][0]
    regs["fs_base"], regs["gs_base"] = segs["fs"][3], segs["gs"][3]
    if size >= _OFF_KGS + 8 and len(desc) >= _OFF_KGS + 8:
        regs["k_gs_base"] = struct.unpack_from("<Q", desc, _OFF_KGS)[0]
    else:
        unknown.append(f"vCPU {index}: KERNEL_GS_BASE: {NOT_IN_CORE} (an older QEMU)")

    def cache(name: str) -> SegmentCache:
        selector, limit, flags, base = segs[name]
        return SegmentCache(selector, base, limit, flags & ATTR_MASK)

    segments = {name: cache(name) for name in ("es", "cs", "ss", "ds", "fs", "gs")}
    # CPL: QEMU keeps it equal to the SS cache's DPL once protected mode is on
    # (0 before; 3 in virtual-8086 mode): SDM Vol. 3A 5.5 and 20.2.
    if not regs["cr0"] & CR0_PE:
        cpl = 0
    elif regs["eflags"] & RFLAGS_VM:
        cpl = 3
    else:
        cpl = segments["ss"].dpl
    state = CpuState(cpu=index, cpl=cpl, halted=False, regs=regs, segments=segments,
                     gdtr=TableRegister(segs["gdt"][3], segs["gdt"][1]),
                     idtr=TableRegister(segs["idt"][3], segs["idt"][1]),
                     ldtr=cache("ldt"), tr=cache("tr"))
    return state, unknown


def infer_efer(c: CpuState) -> Tuple[int, str]:
    """EFER as far as the core makes it certain, and what was inferred."""
    regs = c.regs
    if regs["cr0"] & CR0_PG and regs["cr4"] & CR4_PAE and c.segments["cs"].long:
        return (EFER_LMA | EFER_LME | EFER_NXE,
                "EFER: " + NOT_IN_CORE + "; LMA=LME=1 inferred (CR0.PG, CR4.PAE and CS.L=1 mean "
                "IA-32e mode is active), NXE=1 assumed (bit 63 of paging entries read as no-execute), "
                "SCE unknown; a gdbext state file of the same stop (--sidecar) has the real value")
    return 0, (f"EFER: {NOT_IN_CORE}; vCPU {c.cpu}'s mode is not certain (CR0.PG, CR4.PAE and CS.L are "
               "not all 1: compatibility mode and legacy PAE paging look alike), so nothing is decoded for it; "
               "a gdbext state file of the same stop (--sidecar) has EFER")


def read_core(data: bytes, sidecar: Optional[MachineState] = None) -> MachineState:
    """The vCPUs and RAM of a QEMU core; EFER, MSRs and HLT from `sidecar`
    (a gdbext state file of the same stop) when given, else unknown."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(io.BytesIO(data))
        if elf.header["e_type"] != "ET_CORE" or elf.header["e_machine"] != "EM_X86_64":
            raise MachineStateError("an ELF file but not an x86_64 core (QEMU's dump-guest-memory writes one)")
        loads, qemu_notes = [], []
        for seg in elf.iter_segments():
            kind = seg.header["p_type"]
            if kind in ("PT_LOAD", _PT_LOAD) and seg.header["p_filesz"]:
                offset, size = seg.header["p_offset"], seg.header["p_filesz"]
                if offset + size > len(data):
                    raise MachineStateError(f"the core is truncated (a PT_LOAD ends at {offset + size:#x}, "
                                            f"the file at {len(data):#x})")
                loads.append((seg.header["p_paddr"], offset, size))
            elif kind in ("PT_NOTE", _PT_NOTE):
                qemu_notes += [desc for name, _k, desc in _notes(seg.data()) if name == "QEMU"]
    except ELFError as exc:
        raise MachineStateError(f"a damaged ELF core ({exc})") from None
    except struct.error as exc:
        raise MachineStateError(f"a damaged ELF core ({exc})") from None
    if not qemu_notes:
        raise MachineStateError("an ELF core with no QEMU notes: not written by QEMU's dump-guest-memory")
    cpus, unknown, uncertain = [], [], []
    for index, desc in enumerate(qemu_notes):
        try:
            c, missing = _cpu(index, desc)
        except struct.error:
            raise MachineStateError(f"vCPU {index}'s QEMU note is truncated") from None
        cpus.append(c)
        unknown += missing
    notes = []
    if sidecar is not None:
        _take_sidecar(cpus, sidecar)
        notes.append("EFER, the MSRs and HLT come from the sidecar gdbext state file")
    else:
        for c in cpus:
            c.regs["efer"], said = infer_efer(c)
            if said not in unknown:
                unknown.append(said)
            if not c.regs["efer"]:
                uncertain.append(c.cpu)
        unknown.append("MSRs (STAR, LSTAR, CSTAR, SFMASK, SYSENTER_*...): " + NOT_IN_CORE)
        unknown.append("HLT: " + NOT_IN_CORE + "; vCPUs are shown as not halted")
    pages = CorePages(data, loads)
    return MachineState(cpus=cpus, pages=pages, origin="qemu-core",  # type: ignore[arg-type]
                        ram=[(a, a + s) for a, _o, s in sorted(loads)], unknown=unknown, notes=notes,
                        uncertain=uncertain)


def _take_sidecar(cpus: List[CpuState], sidecar: MachineState) -> None:
    """EFER, MSRs and HLT from a gdbext state file, after checking it is of
    the same stop: same vCPUs, and each one's RIP, RSP, RFLAGS and CR3."""
    mine = {c.cpu: c for c in sidecar.cpus}
    if set(mine) != {c.cpu for c in cpus}:
        raise MachineStateError("the sidecar's vCPUs are not the core's: not the same stop")
    for c in cpus:
        other = mine[c.cpu]
        for name in ("rip", "rsp", "eflags", "cr3"):
            if other.regs.get(name) != c.regs.get(name):
                raise MachineStateError(f"the sidecar is not of this stop: vCPU {c.cpu}'s {name.upper()} is "
                                        f"{other.regs.get(name, 0):#x} there, {c.regs.get(name, 0):#x} in the core")
        c.regs["efer"] = other.regs["efer"]
        if "cr8" in other.regs:
            c.regs["cr8"] = other.regs["cr8"]
        c.msrs = dict(other.msrs)
        c.halted = other.halted


def sidecar_name(core: str) -> str:
    """Where gdbext-save --core puts the sidecar of CORE."""
    return core + ".gdbext"
