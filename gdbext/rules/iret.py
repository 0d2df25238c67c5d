"""The IRET rules: what must hold at an `iretq` so that it returns where it means to.

An IRET in 64-bit mode pops five slots from RSP -- RIP, CS, RFLAGS, RSP, SS --
whatever the privilege levels (Intel SDM Vol. 2A "IRET/IRETD/IRETQ",
Operation, IA-32e mode; Vol. 3A 6.14.3 "IRET in IA-32e Mode"; AMD APM Vol. 3
"IRET").  It then reloads CS and SS from the descriptor tables, which SYSRET
never does: a wrong GDT, or a frame built by hand with a wrong selector,
faults *at the iretq* with #GP(selector), #NP(selector) or #SS(selector).

`evaluate(snap, opsize=64)` reads the frame at RSP and runs every rule.  The
CPL the frame returns to is CS.RPL; a frame meant for ring 3 (CS.RPL 3, or a
DPL-3 code descriptor behind CS) also gets the ring-3 rules (the user page at
RIP, the user stack, the swapgs back, TSS.RSP0); a return to ring 0 (an
interrupt returning into the kernel) only gets the rules that apply to it: a
valid CS and SS, a canonical RIP.

Sources for what the CPUs do:
  Intel SDM Vol. 2A IRET pseudo-code: CS null -> #GP(0); CS past the table
  limit, not code, RPL < CPL, non-conforming DPL != RPL, conforming DPL >
  RPL, L=1 with D=1 -> #GP(CS); CS not present -> #NP(CS); SS null at CPL 3
  (or to compatibility mode) -> #GP(0); SS.RPL != CS.RPL, past the limit,
  not writable data, DPL != CS.RPL -> #GP(SS); SS not present -> #SS(SS);
  RIP not canonical -> #GP(0); RFLAGS.NT=1 in IA-32e mode -> #GP(0).
  QEMU 7.2 target/i386/tcg/seg_helper.c helper_ret_protected and
  helper_iret_protected: the same checks in the same order, except that it
  does not test L=1 with D=1, raises #NP (not #SS) for an SS not present,
  and does not test RIP: a non-canonical RIP faults on the fetch afterwards.

Nothing here imports gdb.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gdbext.model import linear as memory
from gdbext.model.snapshot import Snapshot, SnapshotError
from gdbext.rules import common
from gdbext.rules.common import (
    ERROR,
    IOPL_EFFECT,
    PASS,
    SKIPPED,
    WARNING,
    Report,
    Result,
    Rule,
    State,
    bad,
    error_code,
    not_present,
    passed,
    pf,
    skip,
    why_not_executable,
    why_not_user,
)
from gdbext.x86 import DecodeError
from gdbext.x86.bits import (
    EFER_LMA,
    MASK64,
    RFLAGS_FIXED1,
    RFLAGS_IF,
    RFLAGS_NT,
    RFLAGS_TF,
    RFLAGS_VM,
    is_canonical,
    rflags_iopl,
    rflags_names,
)
from gdbext.x86.descriptors import Descriptor, descriptor_at

if TYPE_CHECKING:  # annotations only
    from gdbext.rules.common import Check, Outcome

INTEL_AMD_QEMU = "Intel, AMD, QEMU"

RULES: tuple[Rule, ...] = (
    Rule("IR-MODE", ERROR, "the CPU is in 64-bit mode (EFER.LMA=1, CS.L=1)",
         intel="outside 64-bit mode IRET pops another frame: these rules do not apply",
         amd="same", qemu="same"),
    Rule("IR-OPSIZE", WARNING, "the operand size is 64 (iretq)",
         intel="without REX.W, IRET in 64-bit mode pops five 4-byte slots (iretd)",
         amd="same", qemu="same"),
    Rule("IR-NT", ERROR, "RFLAGS.NT is clear at the iretq",
         intel="#GP(0): no task return in IA-32e mode", amd="#GP(0)",
         qemu="#GP(0) (helper_iret_protected tests NT with LMA set)"),
    Rule("IR-FRAME", ERROR, "the five slots at RSP (RIP, CS, RFLAGS, RSP, SS) are readable",
         intel="RSP not canonical: #SS(0); a slot not mapped: #PF at the iretq",
         amd="same", qemu="same"),
    Rule("IR-CS", ERROR,
         "CS is not null, within the GDT/LDT limit, a present code descriptor, not L=1 D=1",
         intel="null: #GP(0); past the limit or not code or L=1 D=1: #GP(CS); "
               "not present: #NP(CS)",
         amd="same",
         qemu="same, but L=1 with D=1 is not tested: the return runs"),
    Rule("IR-CS-RPL", ERROR,
         "CS.RPL >= CPL and CS.RPL = DPL (<= DPL for conforming code); RPL 3 for ring 3",
         intel="#GP(CS)", amd="#GP(CS)", qemu="#GP(CS)"),
    Rule("IR-SS", ERROR,
         "SS.RPL = CS.RPL and SS is a present writable data descriptor with DPL = CS.RPL",
         intel="null SS to CPL 3 (or to compatibility mode): #GP(0); RPL or DPL != CS.RPL, "
               "past the limit, not writable data: #GP(SS); not present: #SS(SS)",
         amd="same",
         qemu="same, but an SS not present raises #NP(SS), and a null SS is accepted for "
              "any return to CPL 0-2 in long mode"),
    Rule("IR-RFLAGS", ERROR,
         "the frame gives ring 3 sane RFLAGS (IOPL 0, IF 1, TF 0, NT 0)",
         intel="at CPL 0 IRET loads every flag from the frame, IOPL and IF included; "
               "VM is ignored in IA-32e mode; bit 1 always reads 1",
         amd="same",
         qemu="loads TF AC ID RF NT, IOPL at CPL 0, IF when CPL <= IOPL; not VM, VIF, VIP"),
    Rule("IR-RIP", ERROR,
         "RIP is canonical (64-bit code) or within the CS limit (compatibility mode)",
         intel="#GP(0) at the iretq, still in the kernel",
         amd="#GP(0) at the iretq",
         qemu="QEMU 7.2 does not check RIP: it returns, and the fetch at RIP faults"),
    Rule("IR-RIP-MAPPED", ERROR, "ring 3: the page at RIP is present, user and executable",
         intel="#PF in ring 3 at the first fetch", amd="same", qemu="same"),
    Rule("IR-RSP-USER", ERROR,
         "ring 3: RSP is a user stack: canonical, user half, page at RSP-8 user-writable",
         intel="a kernel stack hands ring 3 the kernel's stack or faults at the first push "
               "(#PF); non-canonical: #SS(0)",
         amd="same", qemu="same"),
    Rule("IR-SWAPGS", ERROR,
         "ring 3: GS_BASE is the user's and KERNEL_GS_BASE the kernel's (swapgs done)",
         intel="IRET does not touch GS: ring 3 keeps the kernel's GS base, and the next "
               "entry's swapgs gives the kernel the user's",
         amd="same", qemu="same"),
    Rule("IR-TSS-RSP0", ERROR, "ring 3: TSS.RSP0 is a mapped supervisor-writable stack",
         intel="the next interrupt from ring 3 switches to RSP0: a bad RSP0 faults during "
               "delivery (#DF, or a triple fault)",
         amd="same", qemu="same"),
)
RULES_BY_ID: dict[str, Rule] = {rule.id: rule for rule in RULES}

# The rules a return to CPL 0 (an interrupt returning into the kernel) does not get.
RING3_ONLY = ("IR-RIP-MAPPED", "IR-RSP-USER", "IR-SWAPGS", "IR-TSS-RSP0")
# The rules that read the frame.
FRAME_RULES = ("IR-CS", "IR-CS-RPL", "IR-SS", "IR-RFLAGS", "IR-RIP") + RING3_ONLY

SLOTS = ("rip", "cs", "rflags", "rsp", "ss")


@dataclass(frozen=True)
class Frame:
    """The five slots an IRET pops (SDM Vol. 3A 6.14.1 figure 6-9, 64-bit stack frame).

    at: the RSP they were read from; slot: the bytes per slot (8 for iretq, 4 for
    iretd); cs and ss keep only the 16-bit selector, as the CPU does.
    """

    at: int
    slot: int
    rip: int
    cs: int
    rflags: int
    rsp: int
    ss: int

    @classmethod
    def decode(cls, at: int, data: bytes, slot: int = 8) -> Frame:
        words = [int.from_bytes(data[i * slot:(i + 1) * slot], "little") for i in range(5)]
        rip, cs, rflags, rsp, ss = words
        return cls(at, slot, rip, cs & 0xFFFF, rflags, rsp, ss & 0xFFFF)

    def to_json(self) -> dict:
        return {"at": self.at, "slot": self.slot, "rip": self.rip, "cs": self.cs,
                "rflags": self.rflags, "rsp": self.rsp, "ss": self.ss}


@dataclass(frozen=True)
class IretReport(Report):
    """Every IRET rule's results, the frame read (None if unreadable) and the CPL it
    returns to (CS.RPL), and whether it was judged a return to ring 3."""

    frame: Frame | None = None
    ring3: bool = False

    def to_json(self) -> dict:
        doc = super().to_json()
        doc["frame"] = self.frame.to_json() if self.frame else None
        doc["returns_to_cpl"] = self.frame.cs & 3 if self.frame else None
        doc["ring3"] = self.ring3
        return doc


class _State(State):
    def __init__(self, snap: Snapshot, opsize: int, frame: Frame | None):
        super().__init__(snap, opsize)
        self.frame = frame

    def table_entry(self, selector: int) -> Descriptor | None:
        """The GDT or LDT (TI=1) descriptor a selector names, or None past the limit."""
        if not selector & 4:
            return self.gdt_entry(selector)
        ldtr = self.snap.ldtr
        offset = selector & 0xFFF8
        if ldtr.selector & 0xFFFC == 0 or offset + 7 > ldtr.limit:
            return None
        raw = memory.read_linear(self.snap, (ldtr.base + offset) & MASK64, 8)
        return descriptor_at(bytes(offset) + raw, ldtr.limit, selector)

    def cs_entry(self) -> Descriptor | None:
        cs = self.frame.cs
        return None if cs & 0xFFFC == 0 else self.table_entry(cs)

    @property
    def ring3(self) -> bool:
        """A frame meant for ring 3: CS.RPL 3, or a DPL-3 code descriptor behind CS."""
        if self.frame.cs & 3 == 3:
            return True
        try:
            desc = self.cs_entry()
        except (SnapshotError, DecodeError):
            return False
        return desc is not None and desc.is_code and desc.dpl == 3

    @property
    def compat(self) -> bool:
        """The return lands in compatibility mode (a 32-bit code descriptor)."""
        try:
            desc = self.cs_entry()
        except (SnapshotError, DecodeError):
            return False
        return desc is not None and desc.is_code and not desc.long


def _table(selector: int) -> str:
    return "LDT" if selector & 4 else "GDT"


def _describe(desc: Descriptor, selector: int) -> str:
    return (f"{_table(selector)}[{desc.index}] = {desc.raw & MASK64:#018x} ({desc.type_words}, "
            f"DPL {desc.dpl}, P={int(desc.present)}, L={int(desc.long)} D={int(desc.db)})")


def _limit_text(st: _State, selector: int) -> str:
    if selector & 4:
        ldtr = st.snap.ldtr
        if ldtr.selector & 0xFFFC == 0:
            return "the LDT, and no LDT is loaded (LDTR null)"
        return f"past the LDT limit {ldtr.limit:#x}"
    return f"past the GDT limit {st.snap.gdtr.limit & 0xFFFF:#x}"


# --- rules -----------------------------------------------------------------------

def _check_mode(st: _State) -> Outcome:
    efer = st.efer
    cs = st.snap.segments["cs"]
    values = {"efer": efer, "cs": cs.selector, "cs_attrs": cs.attrs}
    if not efer & EFER_LMA or not cs.long:
        return skip("IR-MODE", f"EFER={efer:#x}, CS={cs.selector:#x} attrs {cs.attrs:#x}: not in "
                               "64-bit mode; the IR- rules check IRET from 64-bit code only")
    return passed("IR-MODE", f"64-bit mode: EFER.LMA=1, CS={cs.selector:#x} L=1", **values)


def _check_opsize(st: _State) -> Outcome:
    if st.opsize == 64:
        return passed("IR-OPSIZE", "iretq: five 8-byte slots", opsize=64)
    return bad("IR-OPSIZE", WARNING,
               f"iret with operand size {st.opsize} (no REX.W): it pops five "
               f"{st.opsize // 8}-byte slots, right only for a frame built that way",
               f"{INTEL_AMD_QEMU}: the frame below is read with {st.opsize // 8}-byte slots; "
               "a 64-bit frame read so returns to garbage", opsize=st.opsize)


def _check_nt(st: _State) -> Outcome:
    eflags = st.reg("eflags")
    if eflags & RFLAGS_NT:
        return bad("IR-NT", ERROR, f"RFLAGS={eflags:#x}: NT set at the iretq",
                   f"{INTEL_AMD_QEMU}: #GP(0) at the iretq (no task return in IA-32e mode)",
                   eflags=eflags)
    return passed("IR-NT", f"RFLAGS={eflags:#x}: NT clear", eflags=eflags)


def read_frame(snap: Snapshot, opsize: int = 64) -> Frame:
    """The frame at RSP; SnapshotError if it cannot be read."""
    slot = opsize // 8
    rsp = snap.regs["rsp"]
    return Frame.decode(rsp, memory.read_linear(snap, rsp, 5 * slot), slot)


def _check_frame(st: _State) -> Outcome:
    rsp = st.reg("rsp")
    bits = st.va_bits
    size = 5 * (st.opsize // 8)
    if not is_canonical(rsp, bits):
        return bad("IR-FRAME", ERROR, f"RSP={rsp:#x} is not canonical ({bits}-bit)",
                   f"{INTEL_AMD_QEMU}: #SS(0) at the iretq", rsp=rsp)
    if st.frame is None:
        for va in (rsp, rsp + size - 1):
            w = st.walk(va)
            if w.pa is None:
                return bad("IR-FRAME", ERROR,
                           f"frame at RSP={rsp:#x}: {va:#x} is not mapped: {w.problem}",
                           f"{INTEL_AMD_QEMU}: {pf(st, w, 'read', st.snap.cpl == 3)} at the iretq",
                           rsp=rsp)
        return skip("IR-FRAME", f"frame at RSP={rsp:#x} could not be read")
    f = st.frame
    values = {"rsp": rsp, "rip": f.rip, "cs": f.cs, "rflags": f.rflags, "user_rsp": f.rsp,
              "ss": f.ss}
    return passed("IR-FRAME", f"frame at RSP={rsp:#x}: RIP={f.rip:#x} CS={f.cs:#x} "
                              f"RFLAGS={f.rflags:#x} RSP={f.rsp:#x} SS={f.ss:#x}", **values)


def _check_cs(st: _State) -> Outcome:
    cs = st.frame.cs
    values = {"cs": cs}
    if cs & 0xFFFC == 0:
        return bad("IR-CS", ERROR, f"CS={cs:#x} is a null selector",
                   f"{INTEL_AMD_QEMU}: #GP(0) at the iretq", **values)
    desc = st.table_entry(cs)
    fault = f"#GP({error_code(cs):#x})"
    if desc is None:
        return bad("IR-CS", ERROR, f"CS={cs:#x} is {_limit_text(st, cs)}",
                   f"{INTEL_AMD_QEMU}: {fault} at the iretq", **values)
    values["descriptor"] = desc.raw & MASK64
    head = f"CS={cs:#x} -> {_describe(desc, cs)}"
    if not desc.is_code:
        return bad("IR-CS", ERROR, f"{head}: {desc.kind}, not code",
                   f"{INTEL_AMD_QEMU}: {fault} at the iretq", **values)
    if desc.long and desc.db:
        return bad("IR-CS", ERROR, f"{head}: L=1 and D=1 (reserved)",
                   f"Intel, AMD: {fault} at the iretq; QEMU 7.2 does not test it and returns",
                   **values)
    if not desc.present:
        return bad("IR-CS", ERROR, f"{head}: not present",
                   f"{INTEL_AMD_QEMU}: #NP({error_code(cs):#x}) at the iretq (after the "
                   "privilege checks of IR-CS-RPL)", **values)
    mode = "64-bit code" if desc.long else (
        "32-bit code: returns to compatibility mode" if desc.db else
        "16-bit code: returns to 16-bit compatibility mode")
    return passed("IR-CS", f"{head}: {mode}", **values)


def _check_cs_rpl(st: _State) -> Outcome:
    cs = st.frame.cs
    cpl = st.snap.cpl
    rpl = cs & 3
    values = {"cs": cs, "cpl": cpl}
    fault = f"{INTEL_AMD_QEMU}: #GP({error_code(cs):#x}) at the iretq"
    if rpl < cpl:
        return bad("IR-CS-RPL", ERROR,
                   f"CS={cs:#x} has RPL {rpl} < CPL {cpl}: IRET cannot return inward", fault,
                   **values)
    desc = st.cs_entry()
    if desc is None or not desc.is_code:
        return skip("IR-CS-RPL", f"CS={cs:#x} names no code descriptor (see IR-CS)")
    values["dpl"] = desc.dpl
    if desc.conforming and desc.dpl > rpl:
        return bad("IR-CS-RPL", ERROR,
                   f"CS={cs:#x}: RPL {rpl} < DPL {desc.dpl} of a conforming code segment",
                   fault, **values)
    if not desc.conforming and desc.dpl != rpl:
        intent = (" (a frame meant for ring 3 needs RPL 3)" if desc.dpl == 3 else "")
        return bad("IR-CS-RPL", ERROR,
                   f"CS={cs:#x} has RPL {rpl}, but its descriptor has DPL {desc.dpl}{intent}",
                   fault, **values)
    return passed("IR-CS-RPL", f"CS={cs:#x}: RPL {rpl} = DPL {desc.dpl}, returns to CPL {rpl}",
                  **values)


def _check_ss(st: _State) -> Outcome:
    ss, cs = st.frame.ss, st.frame.cs
    rpl = cs & 3
    values = {"ss": ss, "cs": cs}
    if ss & 0xFFFC == 0:
        if rpl != 3 and not st.compat:
            return passed("IR-SS", f"SS={ss:#x} null: allowed for a return to CPL {rpl} in "
                                   "64-bit mode", **values)
        return bad("IR-SS", ERROR, f"SS={ss:#x} is null for a return to CPL {rpl}",
                   f"{INTEL_AMD_QEMU}: #GP(0) at the iretq", **values)
    fault = f"#GP({error_code(ss):#x})"
    if ss & 3 != rpl:
        return bad("IR-SS", ERROR, f"SS={ss:#x} has RPL {ss & 3}, CS={cs:#x} has RPL {rpl}",
                   f"{INTEL_AMD_QEMU}: {fault} at the iretq", **values)
    desc = st.table_entry(ss)
    if desc is None:
        return bad("IR-SS", ERROR, f"SS={ss:#x} is {_limit_text(st, ss)}",
                   f"{INTEL_AMD_QEMU}: {fault} at the iretq", **values)
    values["descriptor"] = desc.raw & MASK64
    head = f"SS={ss:#x} -> {_describe(desc, ss)}"
    problems = []
    if not desc.writable:
        problems.append(f"{desc.type_words}, not writable data")
    if desc.dpl != rpl:
        problems.append(f"DPL {desc.dpl}, not CS.RPL {rpl}")
    if problems:
        return bad("IR-SS", ERROR, f"{head}: {', '.join(problems)}",
                   f"{INTEL_AMD_QEMU}: {fault} at the iretq", **values)
    if not desc.present:
        return bad("IR-SS", ERROR, f"{head}: not present",
                   f"Intel, AMD: #SS({error_code(ss):#x}) at the iretq; QEMU 7.2: "
                   f"#NP({error_code(ss):#x})", **values)
    return passed("IR-SS", f"{head}: writable data, DPL {rpl}", **values)


def _check_rflags(st: _State) -> Outcome:
    flags = st.frame.rflags
    iopl = rflags_iopl(flags)
    names = " ".join(rflags_names(flags) + [f"IOPL={iopl}"])
    head = f"frame RFLAGS={flags:#x} ({names})"
    values = {"rflags": flags}
    notes = []
    if not flags & RFLAGS_FIXED1:
        notes.append("bit 1 clear (the CPU sets it)")
    if flags & RFLAGS_VM:
        notes.append("VM set (ignored in IA-32e mode: no virtual-8086 mode)")
    if st.snap.cpl != 0:
        notes.append(f"at CPL {st.snap.cpl} IRET keeps IOPL, and IF unless CPL <= IOPL")
    note = f"; note: {', '.join(notes)}" if notes else ""
    if not st.ring3:
        return passed("IR-RFLAGS", f"{head}: a return to CPL {st.frame.cs & 3}, kernel flags "
                                   f"are the kernel's{note}", **values)
    out = []
    if iopl and st.snap.cpl == 0:
        out.append(bad("IR-RFLAGS", ERROR, f"{head}: IOPL={iopl}, not 0", IOPL_EFFECT[iopl],
                       **values))
    if not flags & RFLAGS_IF:
        out.append(bad("IR-RFLAGS", WARNING, f"{head}: IF clear",
                       f"{INTEL_AMD_QEMU}: ring 3 runs with maskable interrupts off; the timer "
                       "cannot take the CPU back (right only for a kernel with no timer yet)",
                       **values))
    if flags & RFLAGS_TF:
        out.append(bad("IR-RFLAGS", WARNING, f"{head}: TF set",
                       f"{INTEL_AMD_QEMU}: #DB after the first user instruction", **values))
    if flags & RFLAGS_NT:
        out.append(bad("IR-RFLAGS", WARNING, f"{head}: NT set",
                       f"{INTEL_AMD_QEMU}: the next iret in ring 3 raises #GP(0)", **values))
    return out or passed("IR-RFLAGS", f"{head}{note}", **values)


def _check_rip(st: _State) -> Outcome:
    rip = st.frame.rip
    values = {"rip": rip}
    if st.compat:
        desc = st.cs_entry()
        if rip > desc.limit:
            return bad("IR-RIP", ERROR,
                       f"RIP={rip:#x} is past the compatibility-mode CS limit {desc.limit:#x}",
                       "Intel, AMD: #GP(0) at the iretq; QEMU 7.2 does not check it", **values)
        return passed("IR-RIP", f"RIP={rip:#x} within the CS limit {desc.limit:#x}", **values)
    bits = st.va_bits
    if not is_canonical(rip, bits):
        return bad("IR-RIP", ERROR, f"RIP={rip:#x} is not canonical ({bits}-bit)",
                   "Intel, AMD: #GP(0) at the iretq, in ring 0; QEMU 7.2: returns, then the "
                   "fetch at RIP faults", **values)
    return passed("IR-RIP", f"RIP={rip:#x} canonical ({bits}-bit)", **values)


def _check_rip_mapped(st: _State) -> Outcome:
    rip = st.frame.rip
    if st.compat:
        rip &= 0xFFFFFFFF
    elif not is_canonical(rip, st.va_bits):
        return skip("IR-RIP-MAPPED", f"RIP={rip:#x} is not canonical (see IR-RIP)")
    w = st.walk(rip)
    values = {"rip": rip}
    fault = f"{INTEL_AMD_QEMU}: {pf(st, w, 'exec', True)} in ring 3 at the first fetch"
    if not_present(w):
        return bad("IR-RIP-MAPPED", WARNING, f"user RIP {rip:#x} is not mapped: {w.problem}",
                   f"{fault}, unless the kernel demand-pages this address", **values)
    if w.pa is None:
        return bad("IR-RIP-MAPPED", ERROR, f"user RIP {rip:#x}: {w.problem}", fault, **values)
    values["pa"] = w.pa
    if not w.user:
        return bad("IR-RIP-MAPPED", ERROR,
                   f"user RIP {rip:#x} is a supervisor page: {why_not_user(w)}", fault, **values)
    if not w.executable:
        return bad("IR-RIP-MAPPED", ERROR,
                   f"user RIP {rip:#x} is not executable: {why_not_executable(w)}", fault,
                   **values)
    return passed("IR-RIP-MAPPED", f"user RIP {rip:#x} -> {w.pa:#x}: present, user, executable",
                  **values)


def _check_rsp_user(st: _State) -> Outcome:
    return common.check_user_stack(st, "IR-RSP-USER", st.frame.rsp, compat=st.compat)


def _check_swapgs(st: _State) -> Outcome:
    return common.check_swapgs(st, "IR-SWAPGS")


def _check_tss_rsp0(st: _State) -> Outcome:
    return common.check_tss_rsp0(st, "IR-TSS-RSP0")


_CHECKS: dict[str, Check] = {
    "IR-MODE": _check_mode,
    "IR-OPSIZE": _check_opsize,
    "IR-NT": _check_nt,
    "IR-FRAME": _check_frame,
    "IR-CS": _check_cs,
    "IR-CS-RPL": _check_cs_rpl,
    "IR-SS": _check_ss,
    "IR-RFLAGS": _check_rflags,
    "IR-RIP": _check_rip,
    "IR-RIP-MAPPED": _check_rip_mapped,
    "IR-RSP-USER": _check_rsp_user,
    "IR-SWAPGS": _check_swapgs,
    "IR-TSS-RSP0": _check_tss_rsp0,
}
assert tuple(_CHECKS) == tuple(r.id for r in RULES)


def evaluate(snap: Snapshot, *, opsize: int = 64, frame: Frame | None = None) -> IretReport:
    """Every rule at an IRET about to execute (opsize 64: iretq, 32: iretd, 16).

    frame: the frame at RSP when the caller has read it already; else it is read here.
    """
    if opsize not in (16, 32, 64):
        raise ValueError(f"opsize must be 16, 32 or 64, not {opsize!r}")
    st = _State(snap, opsize, frame)
    results = common.run(_CHECKS, "IR-MODE", st)
    if results[0].status != PASS:
        why = "not in 64-bit mode (see IR-MODE)"
        results += [skip(r.id, why) for r in RULES[1:]]
        return IretReport(opsize, tuple(results))
    if st.frame is None:
        try:
            st.frame = read_frame(snap, opsize)
        except (SnapshotError, DecodeError, KeyError):
            st.frame = None
    ring3 = False
    for rule in RULES[1:]:
        if rule.id in FRAME_RULES and st.frame is None:
            results.append(skip(rule.id, "the frame at RSP cannot be read (see IR-FRAME)"))
            continue
        if rule.id == "IR-RIP-MAPPED":
            ring3 = st.ring3
        if rule.id in RING3_ONLY and not ring3:
            results.append(skip(rule.id, f"a return to CPL {st.frame.cs & 3}: a ring-3 rule"))
            continue
        results.extend(common.run(_CHECKS, rule.id, st))
    return IretReport(opsize, tuple(results), st.frame, ring3)


__all__ = [
    "ERROR", "FRAME_RULES", "PASS", "RING3_ONLY", "RULES", "RULES_BY_ID", "SKIPPED", "WARNING",
    "Frame", "IretReport", "Result", "evaluate", "read_frame",
]
