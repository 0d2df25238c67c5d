"""The SYSRET rules: what must hold at a `sysret` so ring 3 starts sanely.

Each rule is data (an id, a severity, a title, and what Intel CPUs, AMD CPUs
and QEMU 7.2's TCG do when it is broken) plus one small function of the
stopped CPU.  `evaluate(snap)` runs them all at a SYSRET about to execute;
`check_msr_write(snap, msr, value)` runs the few that a WRMSR of STAR, LSTAR,
SFMASK or EFER can break, against the state at that WRMSR.

Sources for what SYSRET does:
  Intel SDM Vol. 2B, "SYSRET" operation pseudo-code (and "SYSCALL");
  Intel SDM Vol. 3A 5.8.8 "Fast System Calls in 64-Bit Mode";
  AMD APM Vol. 3, "SYSRET" (and Vol. 2, 6.1.1 "SYSCALL and SYSRET");
  QEMU 7.2 target/i386/tcg/seg_helper.c helper_sysret (what TCG does instead).

SYSRET never reads the GDT: it loads fixed CS/SS caches.  So a wrong GDT or
STAR is only visible later, when a selector is reloaded from the GDT (an
iretq back to user mode).  The rules check the GDT anyway, because that
later fault is far from its cause.

Nothing here imports gdb: the functions run on any Snapshot (live, saved to
a file, or built by hand in a unit test).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gdbext.model import linear as memory
from gdbext.model.snapshot import (
    MSR_CSTAR,
    MSR_EFER,
    MSR_GS_BASE,
    MSR_KERNEL_GS_BASE,
    MSR_LSTAR,
    MSR_SFMASK,
    MSR_STAR,
    MSR_SYSENTER_EIP,
    Snapshot,
    SnapshotError,
)
from gdbext.x86 import DecodeError
from gdbext.x86.bits import (
    EFER_LMA,
    EFER_SCE,
    MASK64,
    RFLAGS_AC,
    RFLAGS_DF,
    RFLAGS_FIXED1,
    RFLAGS_IF,
    RFLAGS_NT,
    RFLAGS_RF,
    RFLAGS_TF,
    RFLAGS_VM,
    Star,
    decode_star,
    is_canonical,
    rflags_iopl,
    rflags_names,
    va_bits,
)
from gdbext.x86.descriptors import Descriptor, descriptor_at
from gdbext.x86.paging import (
    PTE_RW,
    PTE_US,
    PTE_XD,
    Level,
    PagingContext,
    Walk,
    check_access,
)
from gdbext.x86.tss import TSS64_SIZE, decode_tss64

ERROR = "error"
WARNING = "warning"
PASS = "pass"
SKIPPED = "skipped"


# SDM Vol. 2B SYSRET: RFLAGS <- (R11 & 3C7FD7H) | 2.  The mask drops the
# reserved bits 3, 5, 15 and 22..63, and RF (16) and VM (17).
SYSRET_RFLAGS_MASK = 0x3C7FD7

# The selector of a #GP/#NP/#SS error code: index and TI, RPL bits replaced
# by EXT/IDT (SDM Vol. 3A 6.13 "Error Code").
def _error_code(selector: int) -> int:
    return selector & 0xFFFC


@dataclass(frozen=True)
class Rule:
    """One thing that must hold at a SYSRET, and what breaks when it does not."""

    id: str
    # "error": the CPU faults or a privilege boundary breaks; "warning": legal, almost surely a bug
    severity: str
    title: str
    intel: str
    amd: str
    qemu: str


RULES: tuple[Rule, ...] = (
    Rule("SR-SCE", ERROR, "EFER.SCE is set",
         intel="#UD at the sysret", amd="#UD at the sysret", qemu="#UD at the sysret"),
    Rule("SR-MODE", ERROR, "the CPU is in 64-bit mode (EFER.LMA=1 and CS.L=1)",
         intel="#UD unless in 64-bit mode",
         amd="tests EFER.LMA only: from compatibility mode it performs the long-mode return; "
             "with LMA=0 it is a legacy-mode SYSRET",
         qemu="like AMD: QEMU 7.2's helper tests EFER.LMA, not CS.L"),
    Rule("SR-CPL", ERROR, "CPL is 0",
         intel="#GP(0)", amd="#GP(0)", qemu="#GP(0)"),
    Rule("SR-RCX-CANONICAL", ERROR, "RCX is canonical for the paging mode in force",
         intel="#GP(0) in ring 0, raised after the kernel has already loaded the user RSP "
               "(CVE-2012-0217): the #GP handler runs on a user-chosen stack",
         amd="completes the return; the fetch at RCX faults in ring 3",
         qemu="QEMU 7.2 TCG does not check RCX: it enters ring 3 and faults there on the fetch"),
    Rule("SR-OPSIZE", ERROR, "the operand size suits the caller (sysretq for 64-bit code)",
         intel="without REX.W: returns to compatibility mode with RIP = ECX",
         amd="without REX.W: returns to compatibility mode with RIP = ECX",
         qemu="without REX.W: returns to compatibility mode with RIP = ECX"),
    Rule("SR-STAR-CS", ERROR,
         "the GDT descriptor at SYSRET's CS selector is a DPL-3 user code segment",
         intel="SYSRET loads a fixed CS cache; the next reload from the GDT (iretq to user mode) "
               "raises #GP(selector) or #NP(selector)",
         amd="same: fixed cache, fault at the next reload",
         qemu="same: fixed cache, fault at the next reload"),
    Rule("SR-STAR-SS", ERROR, "the GDT descriptor at SYSRET's SS selector is DPL-3 writable data",
         intel="SYSRET loads a fixed SS cache; the next reload from the GDT (iretq to user mode) "
               "raises #GP(selector) or #SS(selector)",
         amd="same: fixed cache, fault at the next reload",
         qemu="same: fixed cache, fault at the next reload"),
    Rule("SR-STAR-RPL", ERROR, "STAR[49:48], the RPL of SYSRET's selectors, is 3",
         intel="forces SS.RPL to 3: harmless",
         amd="loads SS with STAR's RPL: SS.RPL != CPL 3, and the next iretq to user mode raises "
             "#GP(SS selector)",
         qemu="forces SS.RPL to 3 like Intel: the mistake is invisible under QEMU"),
    Rule("SR-STAR-LIMIT", ERROR, "SYSRET's selectors name GDT entries within the GDT limit",
         intel="SYSRET loads fixed caches; the next reload (iretq to user mode) raises "
               "#GP(selector)",
         amd="same", qemu="same"),
    Rule("SR-RIP-MAPPED", ERROR, "the page at RCX is present, user and executable",
         intel="#PF in ring 3 at the first fetch", amd="#PF in ring 3 at the first fetch",
         qemu="#PF in ring 3 at the first fetch"),
    Rule("SR-RSP-USER", ERROR,
         "RSP is a user stack: canonical, user half, page at RSP-8 user-writable",
         intel="SYSRET does not touch RSP: a kernel stack left there faults at the first "
               "push (#PF) or, if user-accessible, hands ring 3 the kernel's stack; "
               "non-canonical: #SS(0)",
         amd="same", qemu="same"),
    Rule("SR-RFLAGS", ERROR, "R11 gives ring 3 sane RFLAGS (IOPL 0, IF 1, TF 0)",
         intel="RFLAGS <- (R11 & 0x3C7FD7) | 2: RF and VM cleared",
         amd="same mask",
         qemu="QEMU 7.2's helper loads TF, AC, ID, IF, IOPL, VM, RF and NT from R11: VM and RF "
              "are not cleared"),
    Rule("SR-SWAPGS", ERROR, "GS_BASE is the user's and KERNEL_GS_BASE the kernel's (swapgs done)",
         intel="SYSRET does not touch GS: ring 3 keeps the kernel's GS base and the next "
               "syscall's swapgs gives the kernel the user's",
         amd="same", qemu="same"),
    Rule("SR-LSTAR", ERROR, "LSTAR is canonical and mapped supervisor-executable",
         intel="the next syscall fetches at LSTAR in ring 0, still on the user's stack: a #PF "
               "there usually ends in #DF or a triple fault (WRMSR rejects a non-canonical "
               "LSTAR: #GP)",
         amd="same", qemu="same"),
    Rule("SR-SFMASK", WARNING, "SFMASK clears IF, TF, DF and AC on syscall",
         intel="SYSCALL: RFLAGS <- RFLAGS AND NOT SFMASK", amd="same", qemu="same"),
    Rule("SR-TSS-RSP0", ERROR, "TSS.RSP0 is a mapped supervisor-writable stack",
         intel="an interrupt in ring 3 switches to RSP0: a bad RSP0 faults during delivery (#DF, "
               "or a triple fault)",
         amd="same", qemu="same"),
    Rule("SR-STAR-SYSCALL", ERROR,
         "the GDT descriptors at SYSCALL's selectors (STAR[47:32]) are kernel code and data",
         intel="SYSCALL loads fixed caches (CS RPL forced 0, SS = STAR[47:32]+8 as written); "
               "the next reload from the GDT (an iretq back to kernel code) raises #GP(selector)",
         amd="same",
         qemu="same, and QEMU forces SS.RPL to 0"),
)
RULES_BY_ID: dict[str, Rule] = {rule.id: rule for rule in RULES}


@dataclass(frozen=True)
class Result:
    """The outcome of one rule: status is "pass", "warning", "error" or "skipped"."""

    rule: str
    status: str
    message: str                 # one line, values in hex
    consequence: str = ""        # what the CPU will do (empty for a pass or a skip)
    values: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    """Every rule's results at one SYSRET (opsize 64: sysretq, 32: sysretl)."""

    opsize: int
    results: tuple[Result, ...]

    @property
    def findings(self) -> tuple[Result, ...]:
        return tuple(r for r in self.results if r.status in (ERROR, WARNING))

    def ok(self, warnings: bool = False) -> bool:
        """No error; with warnings=True, no warning either."""
        bad = (ERROR, WARNING) if warnings else (ERROR,)
        return not any(r.status in bad for r in self.results)

    def by_rule(self, rule_id: str) -> tuple[Result, ...]:
        return tuple(r for r in self.results if r.rule == rule_id)

    def to_json(self) -> dict:
        return {
            "findings": [
                {"rule": r.rule, "severity": r.status, "message": r.message,
                 "consequence": r.consequence, "values": dict(r.values)}
                for r in self.findings
            ],
            "checked": [{"rule": r.rule, "status": r.status, "message": r.message}
                        for r in self.results],
            "opsize": self.opsize,
        }


# --- the state the rules look at ---------------------------------------------

class _State:
    """The snapshot seen by the rules, with MSR values a WRMSR is about to change."""

    def __init__(self, snap: Snapshot, opsize: int, overrides: dict[int, int] | None = None):
        self.snap = snap
        self.opsize = opsize
        self.overrides = overrides or {}

    def reg(self, name: str) -> int:
        return self.snap.regs[name]

    def msr(self, number: int) -> int:
        """The MSR's value; SnapshotError whatever way the snapshot's reader failed.

        A live reader injects rdmsr and can refuse for its own reasons (a halted
        vCPU, compatibility mode): for the rules that is just an MSR not known.
        """
        if number in self.overrides:
            return self.overrides[number]
        try:
            return self.snap.msr(number)
        except SnapshotError:
            raise
        except Exception as exc:  # the reader belongs to the target layer: any failure
            raise SnapshotError(f"MSR {number:#x} could not be read: {_one_line(exc)}") from exc

    def msr_or_none(self, number: int) -> int | None:
        try:
            return self.msr(number)
        except SnapshotError:
            return None

    @property
    def efer(self) -> int:
        return self.msr(MSR_EFER)

    @property
    def star(self) -> Star:
        return decode_star(self.msr(MSR_STAR))

    @property
    def va_bits(self) -> int:
        # Canonical width follows the paging mode (SDM Vol. 1 3.3.7.1).
        return va_bits(self.snap.cr4)

    def walk(self, va: int) -> Walk:
        return memory.translate(self.snap, va & MASK64)

    def paging(self) -> PagingContext:
        return PagingContext.from_snapshot(self.snap)

    def gdt_entry(self, selector: int) -> Descriptor | None:
        """The GDT descriptor a selector names, or None past the limit.

        Reads only that entry (16 bytes where the limit allows, for a system
        descriptor), placed at its offset so descriptor_at sees the table.
        """
        gdtr = self.snap.gdtr
        limit = gdtr.limit & 0xFFFF
        offset = selector & 0xFFF8
        if offset + 7 > limit:
            return None
        size = min(16, limit + 1 - offset)
        raw = memory.read_linear(self.snap, (gdtr.base + offset) & MASK64, size)
        return descriptor_at(bytes(offset) + raw, limit, selector & 0xFFFB)


if TYPE_CHECKING:  # annotations only: `X | Y` aliases need Python 3.10 at run time
    Outcome = Result | Sequence[Result]
    Check = Callable[[_State], Outcome]


def _ok(rule: str, message: str, **values: int) -> Result:
    return Result(rule, PASS, message, "", values)


def _bad(rule: str, status: str, message: str, consequence: str, **values: int) -> Result:
    return Result(rule, status, message, consequence, values)


def _skip(rule: str, why: str) -> Result:
    return Result(rule, SKIPPED, why)


def _kernel_half(va: int, bits: int) -> bool:
    return bool((va & MASK64) >> (bits - 1))


def _first_level(w: Walk, has: Callable[[int], bool]) -> Level | None:
    return next((lv for lv in w.levels if has(lv.entry)), None)


def _entry_text(level: Level | None) -> str:
    return f"{level.name} entry {level.entry:#x}" if level is not None else "an entry"


# Effective rights AND U/S and R/W over every level and OR XD (SDM Vol. 3A 4.6.1):
# the first level that takes a right away is the one to name.
def _why_not_user(w: Walk) -> str:
    return f"U/S clear in {_entry_text(_first_level(w, lambda e: not e & PTE_US))}"


def _why_not_writable(w: Walk) -> str:
    return f"R/W clear in {_entry_text(_first_level(w, lambda e: not e & PTE_RW))}"


def _why_not_executable(w: Walk) -> str:
    return f"NX set in {_entry_text(_first_level(w, lambda e: e & PTE_XD))}"


def _pf(st: _State, w: Walk, access: str, user: bool) -> str:
    """'#PF(0x15)' for this access, from the walk and the paging registers."""
    code = check_access(w, st.paging(), access, user=user).error_code
    return f"#PF({code:#x})" if code is not None else "#PF"


def _not_present(w: Walk) -> bool:
    last = w.levels[-1] if w.levels else None
    return w.pa is None and (last is None or not last.present)


# --- rules -----------------------------------------------------------------------

def _check_sce(st: _State) -> Outcome:
    efer = st.efer
    if efer & EFER_SCE:
        return _ok("SR-SCE", f"EFER={efer:#x}: SCE set", efer=efer)
    return _bad("SR-SCE", ERROR, f"EFER={efer:#x}: SCE (bit 0) is clear",
                "Intel, AMD, QEMU: #UD at the sysret, in ring 0", efer=efer)


def _check_mode(st: _State) -> Outcome:
    efer = st.efer
    cs = st.snap.segments["cs"]
    values = {"efer": efer, "cs": cs.selector, "cs_attrs": cs.attrs}
    if not efer & EFER_LMA:
        return _bad("SR-MODE", ERROR, f"EFER={efer:#x}: LMA clear, not in long mode",
                    "Intel: #UD; AMD and QEMU 7.2: a legacy-mode SYSRET (32-bit return, "
                    "RCX's upper half and REX.W ignored)", **values)
    if not cs.long:
        return _bad("SR-MODE", ERROR,
                    f"CS={cs.selector:#x} attrs {cs.attrs:#x}: L clear, compatibility mode",
                    "Intel: #UD; AMD and QEMU 7.2: the long-mode return runs anyway", **values)
    return _ok("SR-MODE", f"64-bit mode: EFER.LMA=1, CS={cs.selector:#x} L=1", **values)


def _check_cpl(st: _State) -> Outcome:
    cpl = st.snap.cpl
    if cpl == 0:
        return _ok("SR-CPL", "CPL=0", cpl=cpl)
    return _bad("SR-CPL", ERROR, f"CPL={cpl}: SYSRET is privileged",
                f"Intel, AMD, QEMU: #GP(0) at the sysret in ring {cpl}", cpl=cpl)


def _check_rcx_canonical(st: _State) -> Outcome:
    rcx = st.reg("rcx")
    if st.opsize == 32:
        return _ok("SR-RCX-CANONICAL",
                   f"sysretl: RIP = ECX = {rcx & 0xFFFFFFFF:#x}, always canonical", rcx=rcx)
    bits = st.va_bits
    if is_canonical(rcx, bits):
        return _ok("SR-RCX-CANONICAL", f"RCX={rcx:#x} canonical ({bits}-bit)", rcx=rcx)
    return _bad("SR-RCX-CANONICAL", ERROR,
                f"RCX={rcx:#x} is not canonical for {bits}-bit linear addresses",
                "Intel: #GP(0) in ring 0 with the user RSP already loaded (CVE-2012-0217); "
                "AMD: returns, then the fetch faults in ring 3; "
                "QEMU 7.2: enters ring 3 and faults there on the fetch",
                rcx=rcx, va_bits=bits)


def _check_opsize(st: _State) -> Outcome:
    rcx = st.reg("rcx")
    if st.opsize == 64:
        return _ok("SR-OPSIZE", "sysretq: returns to 64-bit mode at RCX", opsize=64)
    ecx = rcx & 0xFFFFFFFF
    star = st.msr_or_none(MSR_STAR)
    cs = f"{decode_star(star).sysret_cs32:#x}" if star is not None else "STAR[63:48]|3"
    compat = f"returns to compatibility mode (CS={cs}) at {ecx:#x}"
    if rcx > 0xFFFFFFFF:
        return _bad("SR-OPSIZE", ERROR,
                    f"sysretl: RIP = ECX = {ecx:#x} drops the upper half of RCX={rcx:#x}",
                    f"Intel, AMD, QEMU: {compat}: the 64-bit caller does not continue where "
                    "it called from", rcx=rcx, opsize=32)
    cstar = st.msr_or_none(MSR_CSTAR)
    if cstar == 0:
        sysenter = st.msr_or_none(MSR_SYSENTER_EIP)
        if not sysenter:
            # Intel CPUs have no SYSCALL in compatibility mode; their 32-bit callers come
            # through SYSENTER (and Linux returns those with sysretl too).
            how = "SYSENTER_EIP=0" if sysenter == 0 else "SYSENTER_EIP not read"
            return _bad("SR-OPSIZE", ERROR,
                        f"sysretl with CSTAR=0 and {how}: the kernel has no 32-bit system-call "
                        "entry, so no compatibility-mode caller is returning here",
                        f"Intel, AMD, QEMU: {compat}: 64-bit user code decoded as 32-bit code",
                        rcx=rcx, cstar=0, opsize=32)
        return _bad("SR-OPSIZE", WARNING,
                    f"sysretl with CSTAR=0: right only for a 32-bit caller that entered by "
                    f"sysenter (SYSENTER_EIP={sysenter:#x})",
                    f"Intel, AMD, QEMU: {compat}", rcx=rcx, cstar=0, opsize=32)
    return _bad("SR-OPSIZE", WARNING,
                "sysretl (no REX.W): right only if the caller is 32-bit code",
                f"Intel, AMD, QEMU: {compat}; a 64-bit caller would run as 32-bit code",
                rcx=rcx, opsize=32)


def _sysret_cs(st: _State) -> tuple[int, str]:
    star = st.star
    if st.opsize == 64:
        return star.sysret_cs64, "STAR[63:48]+16"
    return star.sysret_cs32, "STAR[63:48]"


def _lookup(st: _State, rule: str, what: str,
            selector: int) -> tuple[Descriptor | None, Result | None]:
    """(descriptor, None) or (None, a skipped Result) for a selector SYSRET loads."""
    if selector & 4:
        return None, _skip(rule, f"{what} {selector:#x} names the LDT (see SR-STAR-LIMIT)")
    desc = st.gdt_entry(selector)
    if desc is None:
        return None, _skip(rule, f"{what} {selector:#x} is past the GDT limit "
                                 f"{st.snap.gdtr.limit:#x} (see SR-STAR-LIMIT)")
    return desc, None


def _describe(desc: Descriptor) -> str:
    return (f"GDT[{desc.index}] = {desc.raw & MASK64:#018x} ({desc.type_words}, "
            f"DPL {desc.dpl}, P={int(desc.present)}, L={int(desc.long)} D={int(desc.db)})")


# A descriptor problem and what a reload of its selector does about it (SDM Vol. 2A
# IRET pseudo-code: type and privilege checks raise #GP(selector), then "not present"
# raises #NP(selector) for CS and #SS(selector) for SS; a code segment of the wrong
# size loads fine and runs the code in the wrong mode).
_GP, _ABSENT, _MODE = "gp", "absent", "mode"
_Problem = tuple[str, str]


def _code_problems(desc: Descriptor, dpl: int, want_long: bool) -> list[_Problem]:
    out = []
    if not desc.is_code:
        out.append((_GP, f"is {desc.kind}, not code"))
    if desc.dpl != dpl:
        out.append((_GP, f"has DPL {desc.dpl}, not {dpl}"))
    if not desc.present:
        out.append((_ABSENT, "is not present"))
    if desc.is_code and desc.long and desc.db:
        out.append((_GP, "has L=1 and D=1 (reserved)"))
    elif desc.is_code and want_long and not desc.long:
        out.append((_MODE, "is not 64-bit code (needs L=1 D=0)"))
    elif desc.is_code and not want_long and (desc.long or not desc.db):
        out.append((_MODE, "is not 32-bit code (needs L=0 D=1)"))
    return out


def _data_problems(desc: Descriptor, dpl: int) -> list[_Problem]:
    out = []
    if not desc.writable:
        out.append((_GP, f"is {desc.type_words}, not writable data"))
    if desc.dpl != dpl:
        out.append((_GP, f"has DPL {desc.dpl}, not {dpl}"))
    if not desc.present:
        out.append((_ABSENT, "is not present"))
    return out


def _texts(problems: list[_Problem]) -> str:
    return ", ".join(text for _, text in problems)


def _reload_fault(problems: list[_Problem], selector: int, absent: str) -> str:
    """What a reload of this selector from the GDT does."""
    kinds = {kind for kind, _ in problems}
    if _GP in kinds:
        return f"#GP({_error_code(selector):#x})"
    if _ABSENT in kinds:
        return f"{absent}({_error_code(selector):#x})"
    return "no fault, but the user code then runs in the wrong mode"


def _check_star_cs(st: _State) -> Outcome:
    selector, source = _sysret_cs(st)
    desc, skipped = _lookup(st, "SR-STAR-CS", f"CS {source}", selector)
    if skipped:
        return skipped
    problems = _code_problems(desc, 3, st.opsize == 64)
    values = {"star": st.star.raw, "selector": selector, "descriptor": desc.raw & MASK64}
    if not problems:
        return _ok("SR-STAR-CS", f"CS {selector:#x}: {_describe(desc)}", **values)
    return _bad("SR-STAR-CS", ERROR,
                f"CS {selector:#x} ({source}) -> {_describe(desc)} {_texts(problems)}",
                "Intel, AMD, QEMU: SYSRET loads a fixed CS cache, so ring 3 runs; the next "
                f"reload of CS={selector:#x} (iretq to user mode): "
                f"{_reload_fault(problems, selector, '#NP')}", **values)


def _check_star_ss(st: _State) -> Outcome:
    selector = st.star.sysret_ss
    desc, skipped = _lookup(st, "SR-STAR-SS", "SS STAR[63:48]+8", selector)
    if skipped:
        return skipped
    problems = _data_problems(desc, 3)
    values = {"star": st.star.raw, "selector": selector, "descriptor": desc.raw & MASK64}
    if not problems:
        return _ok("SR-STAR-SS", f"SS {selector:#x}: {_describe(desc)}", **values)
    return _bad("SR-STAR-SS", ERROR,
                f"SS {selector:#x} (STAR[63:48]+8) -> {_describe(desc)} {_texts(problems)}",
                "Intel, AMD, QEMU: SYSRET loads a fixed SS cache, so ring 3 runs; the next "
                f"reload of SS={selector:#x} (iretq to user mode): "
                f"{_reload_fault(problems, selector, '#SS')}", **values)


def _check_star_rpl(st: _State) -> Outcome:
    star = st.star
    base = star.sysret_base
    if star.sysret_rpl == 3:
        return _ok("SR-STAR-RPL", f"STAR[63:48]={base:#x}: RPL 3", star=star.raw)
    amd_ss = star.sysret_ss_amd
    return _bad("SR-STAR-RPL", ERROR,
                f"STAR[63:48]={base:#x} has RPL {star.sysret_rpl}, not 3 "
                f"(Linux writes __USER32_CS=0x23 there)",
                f"Intel and QEMU 7.2 force SS.RPL=3: harmless there; AMD loads SS={amd_ss:#x} "
                f"(RPL {amd_ss & 3}) at CPL 3: the next iretq to user mode raises "
                f"#GP({_error_code(amd_ss):#x})", star=star.raw)


def _check_star_limit(st: _State) -> Outcome:
    star = st.star
    limit = st.snap.gdtr.limit
    cs, _ = _sysret_cs(st)
    problems = []
    for what, selector in (("SS", star.sysret_ss), ("CS", cs)):
        offset = selector & 0xFFF8
        if selector & 4:
            problems.append((selector, f"{what} {selector:#x} has TI=1 (the LDT, not the GDT)"))
        elif offset + 7 > limit:
            span = f"bytes {offset:#x}..{offset + 7:#x}"
            text = f"{what} {selector:#x} ({span}) is past the GDT limit {limit:#x}"
            problems.append((selector, text))
    values = {"star": star.raw, "gdt_limit": limit, "cs": cs, "ss": star.sysret_ss}
    if not problems:
        return _ok("SR-STAR-LIMIT",
                   f"SS {star.sysret_ss:#x} and CS {cs:#x} within the GDT limit {limit:#x}",
                   **values)
    return _bad("SR-STAR-LIMIT", ERROR, "; ".join(text for _, text in problems),
                "Intel, AMD, QEMU: SYSRET loads fixed caches, so ring 3 runs; the next reload "
                f"(iretq to user mode) raises #GP({_error_code(problems[0][0]):#x})", **values)


def _user_rip(st: _State) -> int:
    rcx = st.reg("rcx")
    return rcx & 0xFFFFFFFF if st.opsize == 32 else rcx


def _check_rip_mapped(st: _State) -> Outcome:
    rip = _user_rip(st)
    if st.opsize == 64 and not is_canonical(rip, st.va_bits):
        return _skip("SR-RIP-MAPPED", f"RCX={rip:#x} is not canonical (see SR-RCX-CANONICAL)")
    w = st.walk(rip)
    values = {"rip": rip}
    fault = f"Intel, AMD, QEMU: {_pf(st, w, 'exec', True)} in ring 3 at the first fetch"
    if _not_present(w):
        return _bad("SR-RIP-MAPPED", WARNING,
                    f"user RIP {rip:#x} is not mapped: {w.problem}",
                    f"{fault}, unless the kernel demand-pages this address", **values)
    if w.pa is None:
        return _bad("SR-RIP-MAPPED", ERROR, f"user RIP {rip:#x}: {w.problem}", fault, **values)
    values["pa"] = w.pa
    if not w.user:
        return _bad("SR-RIP-MAPPED", ERROR,
                    f"user RIP {rip:#x} is a supervisor page: {_why_not_user(w)}", fault, **values)
    if not w.executable:
        return _bad("SR-RIP-MAPPED", ERROR,
                    f"user RIP {rip:#x} is not executable: {_why_not_executable(w)}", fault,
                    **values)
    return _ok("SR-RIP-MAPPED", f"user RIP {rip:#x} -> {w.pa:#x}: present, user, executable",
               **values)


def _check_rsp_user(st: _State) -> Outcome:
    rsp = st.reg("rsp")
    bits = st.va_bits
    if st.opsize == 32:
        # Compatibility mode: SYSRET's SS cache has B=1, so pushes use ESP.
        push, width = (rsp - 4) & 0xFFFFFFFF, 4
    else:
        push, width = (rsp - 8) & MASK64, 8
        if not is_canonical(rsp, bits):
            return _bad("SR-RSP-USER", ERROR, f"RSP={rsp:#x} is not canonical ({bits}-bit)",
                        "Intel, AMD, QEMU: #SS(0) in ring 3 at the first stack access", rsp=rsp)
        if _kernel_half(rsp, bits):
            w = st.walk(push)
            what = _pf(st, w, "write", True) if not w.user else "no fault: ring 3 owns it"
            return _bad("SR-RSP-USER", ERROR,
                        f"RSP={rsp:#x} is in the kernel half: the kernel stack is still loaded",
                        f"Intel, AMD, QEMU: ring 3 pushes onto the kernel's stack: {what}",
                        rsp=rsp)
    w = st.walk(push)
    where = f"page at RSP-{width} ({push:#x})"
    fault = f"Intel, AMD, QEMU: {_pf(st, w, 'write', True)} in ring 3 at the first push"
    if _not_present(w):
        return _bad("SR-RSP-USER", WARNING, f"RSP={rsp:#x}: {where} is not mapped: {w.problem}",
                    f"{fault}, unless the kernel demand-pages user stacks", rsp=rsp)
    if w.pa is None:
        return _bad("SR-RSP-USER", ERROR, f"RSP={rsp:#x}: {where}: {w.problem}", fault, rsp=rsp)
    if not w.user:
        return _bad("SR-RSP-USER", ERROR,
                    f"RSP={rsp:#x}: {where} is a supervisor page ({_why_not_user(w)})",
                    fault, rsp=rsp, pa=w.pa)
    if not w.writable:
        return _bad("SR-RSP-USER", WARNING,
                    f"RSP={rsp:#x}: {where} is read-only ({_why_not_writable(w)})",
                    f"{fault}, unless it is copy-on-write", rsp=rsp, pa=w.pa)
    return _ok("SR-RSP-USER", f"RSP={rsp:#x}: user half, {where} user-writable", rsp=rsp, pa=w.pa)


_IOPL_EFFECT = {
    1: "Intel, AMD, QEMU: IOPL 1 grants ring 3 nothing yet, but no kernel means to hand it out",
    2: "Intel, AMD, QEMU: IOPL 2 grants ring 3 nothing yet, but no kernel means to hand it out",
    3: "Intel, AMD, QEMU: ring 3 may use in/out on every port and cli/sti, and popf can "
       "change IF",
}


def _check_rflags(st: _State) -> Outcome:
    r11 = st.reg("r11")
    flags = (r11 & SYSRET_RFLAGS_MASK) | RFLAGS_FIXED1
    names = " ".join(rflags_names(flags) + [f"IOPL={rflags_iopl(flags)}"])
    head = f"R11={r11:#x} -> user RFLAGS {flags:#x} ({names})"
    values = {"r11": r11, "rflags": flags}
    out = []
    iopl = rflags_iopl(flags)
    if iopl:
        out.append(_bad("SR-RFLAGS", ERROR, f"{head}: IOPL={iopl}, not 0", _IOPL_EFFECT[iopl],
                        **values))
    if not flags & RFLAGS_IF:
        out.append(_bad("SR-RFLAGS", ERROR, f"{head}: IF clear",
                        "Intel, AMD, QEMU: ring 3 runs with maskable interrupts off; the timer "
                        "cannot take the CPU back", **values))
    if flags & RFLAGS_TF:
        out.append(_bad("SR-RFLAGS", WARNING, f"{head}: TF set",
                        "Intel, AMD, QEMU: #DB after the first user instruction", **values))
    if flags & RFLAGS_NT:
        out.append(_bad("SR-RFLAGS", WARNING, f"{head}: NT set",
                        "Intel, AMD, QEMU: an iret in ring 3 raises #GP(0) (NT=1 in IA-32e "
                        "mode), and NT is carried into the next syscall unless SFMASK clears it",
                        **values))
    if out:
        return out
    notes = []
    if not r11 & RFLAGS_FIXED1:
        notes.append("bit 1 clear in R11 (the CPU sets it)")
    if r11 & (RFLAGS_VM | RFLAGS_RF):
        notes.append("VM/RF set in R11 (cleared by Intel and AMD; QEMU 7.2 loads them)")
    if flags & RFLAGS_AC:
        notes.append("AC set (user alignment checks on)")
    note = f"; note: {', '.join(notes)}" if notes else ""
    return _ok("SR-RFLAGS", f"{head}{note}", **values)


def _kernel_address(st: _State, va: int) -> bool:
    """In the kernel half, or mapped supervisor-only in the live tables."""
    if _kernel_half(va, 64):
        return True
    try:
        w = st.walk(va)
    except (DecodeError, SnapshotError):
        return False
    return w.pa is not None and bool(w.levels) and not w.user


def _check_swapgs(st: _State) -> Outcome:
    gs = st.msr(MSR_GS_BASE)
    kgs = st.msr(MSR_KERNEL_GS_BASE)
    values = {"gs_base": gs, "kernel_gs_base": kgs}
    both = f"GS_BASE={gs:#x}, KERNEL_GS_BASE={kgs:#x}"
    gs_k, kgs_k = _kernel_address(st, gs), _kernel_address(st, kgs)
    if gs_k and not kgs_k:
        return _bad("SR-SWAPGS", ERROR,
                    f"{both}: GS_BASE is the kernel's and KERNEL_GS_BASE is not: the swapgs back "
                    "to the user's GS did not happen",
                    "Intel, AMD, QEMU: ring 3 runs with the kernel's GS base; the next syscall's "
                    "swapgs installs the user's base as the kernel's: a fault in ring 0 at the "
                    "first per-CPU access", **values)
    if gs_k and kgs_k:
        return _bad("SR-SWAPGS", WARNING,
                    f"{both}: both are kernel addresses: ring 3 gets a kernel GS base",
                    "Intel, AMD, QEMU: user code can read a kernel pointer (rdgsbase) and its "
                    "%gs accesses fault", **values)
    return _ok("SR-SWAPGS", f"{both}: GS_BASE is not a kernel address", **values)


def _check_lstar(st: _State) -> Outcome:
    lstar = st.msr(MSR_LSTAR)
    values = {"lstar": lstar}
    late = ("the next syscall faults in ring 0 at the entry, still on the user's stack "
            "(SYSCALL does not switch stacks): usually #DF or a triple fault")
    if not is_canonical(lstar, st.va_bits):
        return _bad("SR-LSTAR", ERROR, f"LSTAR={lstar:#x} is not canonical",
                    f"Intel: WRMSR of it raises #GP; otherwise {late}", **values)
    w = st.walk(lstar)
    fault = f"Intel, AMD, QEMU: {late}"
    if w.pa is None:
        return _bad("SR-LSTAR", ERROR, f"LSTAR={lstar:#x} is not mapped: {w.problem}", fault,
                    **values)
    if w.user:
        return _bad("SR-LSTAR", ERROR,
                    f"LSTAR={lstar:#x} is on a user page (U/S set at every level)",
                    "Intel, AMD, QEMU: with CR4.SMEP the next syscall's fetch faults in ring 0; "
                    "without it ring 0 executes a page user mode controls", **values)
    if not w.executable:
        return _bad("SR-LSTAR", ERROR,
                    f"LSTAR={lstar:#x} is not executable: {_why_not_executable(w)}", fault,
                    **values)
    return _ok("SR-LSTAR", f"LSTAR={lstar:#x} -> {w.pa:#x}: supervisor, executable", **values)


_SFMASK_NEEDS = (
    (RFLAGS_IF, "IF", ("the syscall entry runs with interrupts enabled before it has switched "
                      "to a kernel stack")),
    (RFLAGS_TF, "TF", ("a single-stepping user makes the entry take #DB in ring 0 on the "
                      "user's stack")),
    (RFLAGS_DF, "DF", ("the user can enter the kernel with DF=1: string instructions in the "
                      "entry run backwards")),
    (RFLAGS_AC, "AC", "the user can enter with AC=1: SMAP is off in the entry until a clac"),
)


def _check_sfmask(st: _State) -> Outcome:
    sfmask = st.msr(MSR_SFMASK)
    out = [
        _bad("SR-SFMASK", WARNING, f"SFMASK={sfmask:#x} does not clear {name}",
             f"Intel, AMD, QEMU: {why}", sfmask=sfmask)
        for bit, name, why in _SFMASK_NEEDS if not sfmask & bit
    ]
    return out or _ok("SR-SFMASK", f"SFMASK={sfmask:#x} clears IF TF DF AC", sfmask=sfmask)


def _check_tss_rsp0(st: _State) -> Outcome:
    tr = st.snap.tr
    values = {"tr": tr.selector, "tss_base": tr.base}
    late = ("Intel, AMD, QEMU: an interrupt or exception in ring 3 cannot push its frame: "
            "#DF, or a triple fault")
    if tr.selector & 0xFFF8 == 0:
        return _bad("SR-TSS-RSP0", ERROR, "TR selector is null: no TSS was loaded (ltr)", late,
                    **values)
    if not tr.present or tr.limit < TSS64_SIZE - 1:
        return _bad("SR-TSS-RSP0", ERROR,
                    f"TR={tr.selector:#x} attrs {tr.attrs:#x} limit {tr.limit:#x}: not a present "
                    f"TSS of at least {TSS64_SIZE:#x} bytes",
                    "Intel, AMD, QEMU: #TS when an interrupt in ring 3 reads RSP0", **values)
    for va in (tr.base, tr.base + TSS64_SIZE - 1):
        w = st.walk(va)
        if w.pa is None:
            return _bad("SR-TSS-RSP0", ERROR, f"TSS at {tr.base:#x} is not mapped: {w.problem}",
                        late, **values)
    rsp0 = decode_tss64(memory.read_linear(st.snap, tr.base, TSS64_SIZE)).rsp0
    values["rsp0"] = rsp0
    head = f"TSS at {tr.base:#x}: RSP0={rsp0:#x}"
    if not is_canonical(rsp0, st.va_bits):
        return _bad("SR-TSS-RSP0", ERROR, f"{head} is not canonical", late, **values)
    if not _kernel_half(rsp0, st.va_bits):
        return _bad("SR-TSS-RSP0", ERROR, f"{head} is in the user half",
                    "Intel, AMD, QEMU: interrupts from ring 3 push kernel frames where user code "
                    "can reach them", **values)
    # 64-bit mode aligns the new stack to 16 bytes before the first push (SDM Vol. 3A
    # 6.14.2 "64-Bit Mode Stack Frame").
    w = st.walk((rsp0 & ~0xF) - 8)
    if w.pa is None:
        return _bad("SR-TSS-RSP0", ERROR, f"{head}: page at RSP0-8 is not mapped: {w.problem}",
                    late, **values)
    if w.user:
        return _bad("SR-TSS-RSP0", ERROR, f"{head}: page at RSP0-8 is user-accessible",
                    "Intel, AMD, QEMU: ring 3 can read and rewrite the next interrupt's frame",
                    **values)
    if not w.writable:
        return _bad("SR-TSS-RSP0", ERROR,
                    f"{head}: page at RSP0-8 is read-only ({_why_not_writable(w)})", late,
                    **values)
    return _ok("SR-TSS-RSP0", f"{head}: supervisor-writable", **values)


def _check_star_syscall(st: _State) -> Outcome:
    star = st.star
    cs, ss = star.syscall_cs, star.syscall_ss
    values = {"star": star.raw, "cs": cs, "ss": ss}
    problems = []
    if star.syscall_rpl:
        problems.append(f"STAR[47:32]={star.syscall_base:#x} has RPL {star.syscall_rpl}: "
                        f"SYSCALL's SS={ss:#x} keeps it at CPL 0")
    for what, selector, check in (("CS", cs, lambda d: _code_problems(d, 0, True)),
                                  ("SS", ss, lambda d: _data_problems(d, 0))):
        desc, skipped = _lookup(st, "SR-STAR-SYSCALL", f"{what} STAR[47:32]", selector)
        if skipped:
            problems.append(skipped.message.replace(" (see SR-STAR-LIMIT)", ""))
            continue
        bad = check(desc)
        if bad:
            problems.append(f"{what} {selector:#x} -> {_describe(desc)} {_texts(bad)}")
    if not problems:
        return _ok("SR-STAR-SYSCALL", f"SYSCALL CS {cs:#x} and SS {ss:#x}: kernel code and data",
                   **values)
    return _bad("SR-STAR-SYSCALL", ERROR, "; ".join(problems),
                "Intel, AMD, QEMU: SYSCALL loads fixed caches, so the entry runs; the next "
                "reload of these selectors from the GDT (an iretq back to kernel code after an "
                "interrupt) raises #GP(selector)", **values)


_CHECKS: dict[str, Check] = {
    "SR-SCE": _check_sce,
    "SR-MODE": _check_mode,
    "SR-CPL": _check_cpl,
    "SR-RCX-CANONICAL": _check_rcx_canonical,
    "SR-OPSIZE": _check_opsize,
    "SR-STAR-CS": _check_star_cs,
    "SR-STAR-SS": _check_star_ss,
    "SR-STAR-RPL": _check_star_rpl,
    "SR-STAR-LIMIT": _check_star_limit,
    "SR-RIP-MAPPED": _check_rip_mapped,
    "SR-RSP-USER": _check_rsp_user,
    "SR-RFLAGS": _check_rflags,
    "SR-SWAPGS": _check_swapgs,
    "SR-LSTAR": _check_lstar,
    "SR-SFMASK": _check_sfmask,
    "SR-TSS-RSP0": _check_tss_rsp0,
    "SR-STAR-SYSCALL": _check_star_syscall,
}
assert tuple(_CHECKS) == tuple(r.id for r in RULES)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _run(rule_id: str, st: _State) -> list[Result]:
    """A rule's results; a rule that cannot be evaluated is skipped with the reason."""
    try:
        out = _CHECKS[rule_id](st)
    except (SnapshotError, DecodeError) as exc:
        return [_skip(rule_id, f"cannot evaluate: {_one_line(exc)}")]
    except KeyError as exc:
        return [_skip(rule_id, f"cannot evaluate: {_one_line(exc.args[0] if exc.args else exc)} "
                               "was not captured")]
    except Exception as exc:  # noqa: BLE001 - one broken rule must not hide the others
        return [_skip(rule_id, f"internal error: {type(exc).__name__}: {_one_line(exc)}")]
    return [out] if isinstance(out, Result) else list(out)


def evaluate(snap: Snapshot, *, opsize: int = 64) -> Report:
    """Every rule at a SYSRET about to execute (opsize 64: sysretq, 32: sysretl)."""
    if opsize not in (32, 64):
        raise ValueError(f"opsize must be 32 or 64, not {opsize!r}")
    st = _State(snap, opsize)
    results: list[Result] = []
    for rule in RULES:
        results.extend(_run(rule.id, st))
    return Report(opsize, tuple(results))


def _check_efer_write(st: _State) -> Outcome:
    efer = st.efer
    if efer & EFER_SCE:
        return _ok("SR-SCE", f"EFER={efer:#x}: SCE set", efer=efer)
    lstar = st.msr(MSR_LSTAR)
    if lstar:
        return _bad("SR-SCE", ERROR,
                    f"EFER={efer:#x} clears SCE while LSTAR={lstar:#x} is set",
                    "Intel, AMD, QEMU: the next syscall and sysret raise #UD", efer=efer,
                    lstar=lstar)
    return _ok("SR-SCE", f"EFER={efer:#x}: SCE clear, and no syscall entry is set (LSTAR=0)",
               efer=efer)


_STAR_RULES = ("SR-STAR-RPL", "SR-STAR-LIMIT", "SR-STAR-CS", "SR-STAR-SS", "SR-STAR-SYSCALL")


def check_msr_write(snap: Snapshot, msr: int, value: int) -> list[Result]:
    """The rules a WRMSR of `value` to `msr` can break, against the state at the WRMSR.

    STAR: its RPL and selectors against the current GDT (the 32-bit CS too when
    CSTAR is already set); LSTAR: canonical, mapped supervisor-executable;
    SFMASK: clears IF, TF, DF, AC; EFER: SCE not cleared while LSTAR is set.
    Any other MSR: no rule, [].
    """
    st = _State(snap, 64, {msr: value})
    if msr == MSR_STAR:
        results = [r for rule in _STAR_RULES for r in _run(rule, st)]
        if st.msr_or_none(MSR_CSTAR):
            results += [r for r in _run("SR-STAR-CS", _State(snap, 32, {msr: value}))]
        return results
    if msr == MSR_LSTAR:
        return _run("SR-LSTAR", st)
    if msr == MSR_SFMASK:
        return _run("SR-SFMASK", st)
    if msr == MSR_EFER:
        try:
            out = _check_efer_write(st)
        except (SnapshotError, DecodeError) as exc:
            return [_skip("SR-SCE", f"cannot evaluate: {_one_line(exc)}")]
        return [out]
    return []


__all__ = [
    "ERROR",
    "PASS",
    "RULES",
    "RULES_BY_ID",
    "SKIPPED",
    "WARNING",
    "Report",
    "Result",
    "Rule",
    "check_msr_write",
    "evaluate",
]
