"""QEMU `-d int` log text for a hand-built CPU state, and IDT gates to put in memory.

`record(...)` writes what QEMU 7.2's do_interrupt_all writes for one event
(target/i386/tcg/seg_helper.c) and the 64-bit register dump that follows it
(target/i386/cpu-dump.c, x86_cpu_dump_state with CPU_DUMP_CCOP), with the
values of a tests.support.snapshots Machine, so the explainer reads IDTR,
GDTR, TR and the control registers from the log as it does from a real one.
Compare with tests/unit/fixtures/qemu_log/lm_user_pf_qemu72.log.
"""
from __future__ import annotations

from gdbext.model.snapshot import SegmentCache, Snapshot

_GPRS = (("RAX", "rax"), ("RBX", "rbx"), ("RCX", "rcx"), ("RDX", "rdx"), ("RSI", "rsi"), ("RDI", "rdi"),
         ("RBP", "rbp"), ("RSP", "rsp"), ("R8 ", "r8"), ("R9 ", "r9"), ("R10", "r10"), ("R11", "r11"),
         ("R12", "r12"), ("R13", "r13"), ("R14", "r14"), ("R15", "r15"))


def _segment(name: str, s: SegmentCache) -> str:
    return f"{name:<3}={s.selector:04x} {s.base:016x} {s.limit & 0xFFFFFFFF:08x} {s.attrs:08x}"


def dump(snap: Snapshot) -> str:
    """x86_cpu_dump_state's text for a 64-bit vCPU (CS.L=1)."""
    r = snap.regs
    lines = []
    for i in range(0, 16, 4):
        lines.append(" ".join(f"{label}={r.get(name, 0):016x}" for label, name in _GPRS[i:i + 4]))
    lines.append(f"RIP={r['rip']:016x} RFL={r['eflags']:08x} [-------] CPL={snap.cpl} II=0 A20=1 SMM=0 HLT=0")
    for name in ("es", "cs", "ss", "ds", "fs", "gs"):
        lines.append(_segment(name.upper(), snap.segments[name]))
    lines.append(_segment("LDT", snap.ldtr))
    lines.append(_segment("TR", snap.tr))
    lines.append(f"GDT=     {snap.gdtr.base:016x} {snap.gdtr.limit:08x}")
    lines.append(f"IDT=     {snap.idtr.base:016x} {snap.idtr.limit:08x}")
    lines.append(f"CR0={r['cr0']:08x} CR2={r.get('cr2', 0):016x} CR3={r['cr3']:016x} CR4={r['cr4']:08x}")
    lines.append("DR0=0000000000000000 DR1=0000000000000000 DR2=0000000000000000 DR3=0000000000000000 ")
    lines.append("DR6=00000000ffff0ff0 DR7=0000000000000400")
    lines.append("CCS=0000000000000000 CCD=0000000000000000 CCO=EFLAGS")
    lines.append(f"EFER={r['efer']:016x}")
    return "\n".join(lines) + "\n"


def record(snap: Snapshot, index: int, vector: int, error: int = 0, *, software: bool = False,
           old: int | None = None, cr2: int | None = None, check: bool = True) -> str:
    """One event's lines: check_exception (for an exception), the v= line, the dump."""
    r = snap.regs
    head = ""
    if check and not software:
        head = f"check_exception old: {0xFFFFFFFF if old is None else old:#x} new {vector:#x}\n"
    tail = f" CR2={cr2:016x}" if vector == 14 else f" env->regs[R_EAX]={r.get('rax', 0):016x}"
    cs, ss = snap.segments["cs"].selector, snap.segments["ss"].selector
    line = (f"{index:6d}: v={vector:02x} e={error:04x} i={int(software)} cpl={snap.cpl} "
            f"IP={cs:04x}:{r['rip']:016x} pc={r['rip']:016x} SP={ss:04x}:{r['rsp']:016x}{tail}\n")
    if vector == 14 and cr2 is not None:
        snap.regs["cr2"] = cr2
    return head + line + dump(snap)


def triple_fault(new: int) -> str:
    return f"check_exception old: 0x8 new {new:#x}\nTriple fault\n"


def gate64(offset: int, selector: int = 0x10, *, type_: int = 0xE, dpl: int = 0, present: bool = True,
           ist: int = 0) -> bytes:
    """A 16-byte IA-32e IDT gate (Intel SDM Vol. 3A 6.14.1, figure 6-8)."""
    low = (offset & 0xFFFF) | (selector << 16) | (ist << 32) | (type_ << 40) | (dpl << 45)
    low |= (int(present) << 47) | ((offset >> 16) & 0xFFFF) << 48
    return low.to_bytes(8, "little") + ((offset >> 32) & 0xFFFFFFFF).to_bytes(8, "little")
