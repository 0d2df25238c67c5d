"""What the SYSRET and IRET rules share: rules as data, results, the state they read.

A rule is data (an id, a severity, a title, and what Intel CPUs, AMD CPUs and
QEMU 7.2's TCG do when it is broken) plus one small function of a State (a
Snapshot seen by the rules).  The severity follows one principle for every
rule set (README, "Severity"):

  error    the CPU faults, or ring 3 gets something it must not have (port
           I/O through IOPL, the kernel's stack, the kernel's GS base);
  warning  the state is legal and only almost surely a bug (IF clear in ring 3:
           nothing faults, but the kernel can no longer preempt).

Also here: the checks that more than one rule set makes (the user stack, the
swapgs back, TSS.RSP0) and descriptor checks as a segment reload makes them.

Nothing here imports gdb.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gdbext.model import linear as memory
from gdbext.model.snapshot import (
    MSR_EFER,
    MSR_GS_BASE,
    MSR_KERNEL_GS_BASE,
    MSR_STAR,
    Snapshot,
    SnapshotError,
)
from gdbext.x86 import DecodeError
from gdbext.x86.bits import MASK64, Star, decode_star, is_canonical, va_bits
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

# The selector of a #GP/#NP/#SS error code: index and TI, RPL bits replaced
# by EXT/IDT (SDM Vol. 3A 6.13 "Error Code").
def error_code(selector: int) -> int:
    return selector & 0xFFFC


@dataclass(frozen=True)
class Rule:
    """One thing that must hold at a SYSRET or an IRET, and what breaks when it does not."""

    id: str
    # "error": the CPU faults or a privilege boundary breaks; "warning": legal, almost surely a bug
    severity: str
    title: str
    intel: str
    amd: str
    qemu: str


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
    """Every rule's results at one instruction (opsize: its operand size, 64 or 32)."""

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

class State:
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
            raise SnapshotError(f"MSR {number:#x} could not be read: {one_line(exc)}") from exc

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
    Check = Callable[[State], Outcome]


def passed(rule: str, message: str, **values: int) -> Result:
    return Result(rule, PASS, message, "", values)


def bad(rule: str, status: str, message: str, consequence: str, **values: int) -> Result:
    return Result(rule, status, message, consequence, values)


def skip(rule: str, why: str) -> Result:
    return Result(rule, SKIPPED, why)


def kernel_half(va: int, bits: int) -> bool:
    return bool((va & MASK64) >> (bits - 1))


def first_level(w: Walk, has: Callable[[int], bool]) -> Level | None:
    return next((lv for lv in w.levels if has(lv.entry)), None)


def entry_text(level: Level | None) -> str:
    return f"{level.name} entry {level.entry:#x}" if level is not None else "an entry"


# Effective rights AND U/S and R/W over every level and OR XD (SDM Vol. 3A 4.6.1):
# the first level that takes a right away is the one to name.
def why_not_user(w: Walk) -> str:
    return f"U/S clear in {entry_text(first_level(w, lambda e: not e & PTE_US))}"


def why_not_writable(w: Walk) -> str:
    return f"R/W clear in {entry_text(first_level(w, lambda e: not e & PTE_RW))}"


def why_not_executable(w: Walk) -> str:
    return f"NX set in {entry_text(first_level(w, lambda e: e & PTE_XD))}"


def pf(st: State, w: Walk, access: str, user: bool) -> str:
    """'#PF(0x15)' for this access, from the walk and the paging registers."""
    code = check_access(w, st.paging(), access, user=user).error_code
    return f"#PF({code:#x})" if code is not None else "#PF"


def not_present(w: Walk) -> bool:
    last = w.levels[-1] if w.levels else None
    return w.pa is None and (last is None or not last.present)


def describe(desc: Descriptor) -> str:
    return (f"GDT[{desc.index}] = {desc.raw & MASK64:#018x} ({desc.type_words}, "
            f"DPL {desc.dpl}, P={int(desc.present)}, L={int(desc.long)} D={int(desc.db)})")


# A descriptor problem and what a reload of its selector does about it (SDM Vol. 2A
# IRET pseudo-code: type and privilege checks raise #GP(selector), then "not present"
# raises #NP(selector) for CS and #SS(selector) for SS; a code segment of the wrong
# size loads fine and runs the code in the wrong mode).
_GP, _ABSENT, _MODE = "gp", "absent", "mode"
Problem = tuple[str, str]


def code_problems(desc: Descriptor, dpl: int, want_long: bool) -> list[Problem]:
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


def data_problems(desc: Descriptor, dpl: int) -> list[Problem]:
    out = []
    if not desc.writable:
        out.append((_GP, f"is {desc.type_words}, not writable data"))
    if desc.dpl != dpl:
        out.append((_GP, f"has DPL {desc.dpl}, not {dpl}"))
    if not desc.present:
        out.append((_ABSENT, "is not present"))
    return out


def texts(problems: list[Problem]) -> str:
    return ", ".join(text for _, text in problems)


def reload_fault(problems: list[Problem], selector: int, absent: str) -> str:
    """What a reload of this selector from the GDT does."""
    kinds = {kind for kind, _ in problems}
    if _GP in kinds:
        return f"#GP({error_code(selector):#x})"
    if _ABSENT in kinds:
        return f"{absent}({error_code(selector):#x})"
    return "no fault, but the user code then runs in the wrong mode"


def check_user_stack(st: State, rule: str, rsp: int, *, compat: bool) -> Result:
    """RSP as ring 3 will use it: canonical, user half, the page below it user-writable.

    compat: ring 3 runs in compatibility mode, where pushes use ESP (a 32-bit SS).
    """
    bits = st.va_bits
    if compat:
        push, width = (rsp - 4) & 0xFFFFFFFF, 4
    else:
        push, width = (rsp - 8) & MASK64, 8
        if not is_canonical(rsp, bits):
            return bad(rule, ERROR, f"RSP={rsp:#x} is not canonical ({bits}-bit)",
                        "Intel, AMD, QEMU: #SS(0) in ring 3 at the first stack access", rsp=rsp)
        if kernel_half(rsp, bits):
            w = st.walk(push)
            what = pf(st, w, "write", True) if not w.user else "no fault: ring 3 owns it"
            return bad(rule, ERROR,
                        f"RSP={rsp:#x} is in the kernel half: the kernel stack is still loaded",
                        f"Intel, AMD, QEMU: ring 3 pushes onto the kernel's stack: {what}",
                        rsp=rsp)
    w = st.walk(push)
    where = f"page at RSP-{width} ({push:#x})"
    fault = f"Intel, AMD, QEMU: {pf(st, w, 'write', True)} in ring 3 at the first push"
    if not_present(w):
        return bad(rule, WARNING, f"RSP={rsp:#x}: {where} is not mapped: {w.problem}",
                    f"{fault}, unless the kernel demand-pages user stacks", rsp=rsp)
    if w.pa is None:
        return bad(rule, ERROR, f"RSP={rsp:#x}: {where}: {w.problem}", fault, rsp=rsp)
    if not w.user:
        return bad(rule, ERROR,
                    f"RSP={rsp:#x}: {where} is a supervisor page ({why_not_user(w)})",
                    fault, rsp=rsp, pa=w.pa)
    if not w.writable:
        return bad(rule, WARNING,
                    f"RSP={rsp:#x}: {where} is read-only ({why_not_writable(w)})",
                    f"{fault}, unless it is copy-on-write", rsp=rsp, pa=w.pa)
    return passed(rule, f"RSP={rsp:#x}: user half, {where} user-writable", rsp=rsp, pa=w.pa)


IOPL_EFFECT = {
    1: "Intel, AMD, QEMU: IOPL 1 grants ring 3 nothing yet, but no kernel means to hand it out",
    2: "Intel, AMD, QEMU: IOPL 2 grants ring 3 nothing yet, but no kernel means to hand it out",
    3: "Intel, AMD, QEMU: ring 3 may use in/out on every port and cli/sti, and popf can "
       "change IF",
}


def kernel_address(st: State, va: int) -> bool:
    """In the kernel half, or mapped supervisor-only in the live tables."""
    if kernel_half(va, 64):
        return True
    try:
        w = st.walk(va)
    except (DecodeError, SnapshotError):
        return False
    return w.pa is not None and bool(w.levels) and not w.user


def check_swapgs(st: State, rule: str) -> Result:
    """GS_BASE is not a kernel address while KERNEL_GS_BASE is (the swapgs back happened)."""
    gs = st.msr(MSR_GS_BASE)
    kgs = st.msr(MSR_KERNEL_GS_BASE)
    values = {"gs_base": gs, "kernel_gs_base": kgs}
    both = f"GS_BASE={gs:#x}, KERNEL_GS_BASE={kgs:#x}"
    gs_k, kgs_k = kernel_address(st, gs), kernel_address(st, kgs)
    if gs_k and not kgs_k:
        return bad(rule, ERROR,
                    f"{both}: GS_BASE is the kernel's and KERNEL_GS_BASE is not: the swapgs back "
                    "to the user's GS did not happen",
                    "Intel, AMD, QEMU: ring 3 runs with the kernel's GS base; the next syscall's "
                    "swapgs installs the user's base as the kernel's: a fault in ring 0 at the "
                    "first per-CPU access", **values)
    if gs_k and kgs_k:
        return bad(rule, WARNING,
                    f"{both}: both are kernel addresses: ring 3 gets a kernel GS base",
                    "Intel, AMD, QEMU: user code can read a kernel pointer (rdgsbase) and its "
                    "%gs accesses fault", **values)
    return passed(rule, f"{both}: GS_BASE is not a kernel address", **values)


def check_tss_rsp0(st: State, rule: str) -> Result:
    """TSS.RSP0 is a mapped supervisor-writable stack for the next interrupt from ring 3."""
    tr = st.snap.tr
    values = {"tr": tr.selector, "tss_base": tr.base}
    late = ("Intel, AMD, QEMU: an interrupt or exception in ring 3 cannot push its frame: "
            "#DF, or a triple fault")
    if tr.selector & 0xFFF8 == 0:
        return bad(rule, ERROR, "TR selector is null: no TSS was loaded (ltr)", late,
                    **values)
    if not tr.present or tr.limit < TSS64_SIZE - 1:
        return bad(rule, ERROR,
                    f"TR={tr.selector:#x} attrs {tr.attrs:#x} limit {tr.limit:#x}: not a present "
                    f"TSS of at least {TSS64_SIZE:#x} bytes",
                    "Intel, AMD, QEMU: #TS when an interrupt in ring 3 reads RSP0", **values)
    for va in (tr.base, tr.base + TSS64_SIZE - 1):
        w = st.walk(va)
        if w.pa is None:
            return bad(rule, ERROR, f"TSS at {tr.base:#x} is not mapped: {w.problem}",
                        late, **values)
    rsp0 = decode_tss64(memory.read_linear(st.snap, tr.base, TSS64_SIZE)).rsp0
    values["rsp0"] = rsp0
    head = f"TSS at {tr.base:#x}: RSP0={rsp0:#x}"
    if not is_canonical(rsp0, st.va_bits):
        return bad(rule, ERROR, f"{head} is not canonical", late, **values)
    if not kernel_half(rsp0, st.va_bits):
        return bad(rule, ERROR, f"{head} is in the user half",
                    "Intel, AMD, QEMU: interrupts from ring 3 push kernel frames where user code "
                    "can reach them", **values)
    # 64-bit mode aligns the new stack to 16 bytes before the first push (SDM Vol. 3A
    # 6.14.2 "64-Bit Mode Stack Frame").
    w = st.walk((rsp0 & ~0xF) - 8)
    if w.pa is None:
        return bad(rule, ERROR, f"{head}: page at RSP0-8 is not mapped: {w.problem}",
                    late, **values)
    if w.user:
        return bad(rule, ERROR, f"{head}: page at RSP0-8 is user-accessible",
                    "Intel, AMD, QEMU: ring 3 can read and rewrite the next interrupt's frame",
                    **values)
    if not w.writable:
        return bad(rule, ERROR,
                    f"{head}: page at RSP0-8 is read-only ({why_not_writable(w)})", late,
                    **values)
    return passed(rule, f"{head}: supervisor-writable", **values)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def run(checks: Mapping[str, Check], rule_id: str, st: State) -> list[Result]:
    """A rule's results; a rule that cannot be evaluated is skipped with the reason."""
    try:
        out = checks[rule_id](st)
    except (SnapshotError, DecodeError) as exc:
        return [skip(rule_id, f"cannot evaluate: {one_line(exc)}")]
    except KeyError as exc:
        return [skip(rule_id, f"cannot evaluate: {one_line(exc.args[0] if exc.args else exc)} "
                               "was not captured")]
    except Exception as exc:  # noqa: BLE001 - one broken rule must not hide the others
        return [skip(rule_id, f"internal error: {type(exc).__name__}: {one_line(exc)}")]
    return [out] if isinstance(out, Result) else list(out)



__all__ = [
    "ERROR", "PASS", "SKIPPED", "WARNING", "Report", "Result", "Rule", "State",
    "bad", "check_swapgs", "check_tss_rsp0", "check_user_stack", "code_problems",
    "data_problems", "describe", "error_code", "passed", "reload_fault", "run", "skip", "texts",
]
