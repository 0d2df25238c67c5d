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

from typing import TYPE_CHECKING

from gdbext.model.snapshot import (
    MSR_CSTAR,
    MSR_EFER,
    MSR_LSTAR,
    MSR_SFMASK,
    MSR_STAR,
    MSR_SYSENTER_EIP,
    Snapshot,
    SnapshotError,
)
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
)
from gdbext.rules.common import State as _State
from gdbext.rules.common import bad as _bad
from gdbext.rules.common import code_problems as _code_problems
from gdbext.rules.common import data_problems as _data_problems
from gdbext.rules.common import describe as _describe
from gdbext.rules.common import error_code as _error_code
from gdbext.rules.common import not_present as _not_present
from gdbext.rules.common import one_line as _one_line
from gdbext.rules.common import passed as _ok
from gdbext.rules.common import pf as _pf
from gdbext.rules.common import reload_fault as _reload_fault
from gdbext.rules.common import skip as _skip
from gdbext.rules.common import texts as _texts
from gdbext.rules.common import why_not_executable as _why_not_executable
from gdbext.rules.common import why_not_user as _why_not_user
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
    decode_star,
    is_canonical,
    rflags_iopl,
    rflags_names,
)

if TYPE_CHECKING:  # annotations only
    from gdbext.rules.common import Check, Outcome
    from gdbext.x86.descriptors import Descriptor


# SDM Vol. 2B SYSRET: RFLAGS <- (R11 & 3C7FD7H) | 2.  The mask drops the
# reserved bits 3, 5, 15 and 22..63, and RF (16) and VM (17).
SYSRET_RFLAGS_MASK = 0x3C7FD7


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
    Rule("SR-RFLAGS", ERROR, "R11 gives ring 3 sane RFLAGS (IOPL 0; IF 1, TF 0: warnings)",
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
    # Compatibility mode (sysretl): SYSRET's SS cache has B=1, so pushes use ESP.
    return common.check_user_stack(st, "SR-RSP-USER", st.reg("rsp"), compat=st.opsize == 32)


def _check_rflags(st: _State) -> Outcome:
    r11 = st.reg("r11")
    flags = (r11 & SYSRET_RFLAGS_MASK) | RFLAGS_FIXED1
    names = " ".join(rflags_names(flags) + [f"IOPL={rflags_iopl(flags)}"])
    head = f"R11={r11:#x} -> user RFLAGS {flags:#x} ({names})"
    values = {"r11": r11, "rflags": flags}
    out = []
    iopl = rflags_iopl(flags)
    if iopl:
        out.append(_bad("SR-RFLAGS", ERROR, f"{head}: IOPL={iopl}, not 0", IOPL_EFFECT[iopl],
                        **values))
    if not flags & RFLAGS_IF:
        # Legal, and a kernel with no timer yet does it on purpose: a warning (README,
        # "Severity").
        out.append(_bad("SR-RFLAGS", WARNING, f"{head}: IF clear",
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


def _check_swapgs(st: _State) -> Outcome:
    return common.check_swapgs(st, "SR-SWAPGS")


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
    return common.check_tss_rsp0(st, "SR-TSS-RSP0")


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


def _run(rule_id: str, st: _State) -> list[Result]:
    return common.run(_CHECKS, rule_id, st)



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
