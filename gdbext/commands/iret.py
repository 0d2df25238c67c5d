"""`iret-check`, `$iret_ok()`, and the iretq breakpoints of `sysret-watch`.

One watch covers both ways back to ring 3: `sysret-watch on` also breaks on
every iretq the kernel's code holds (proven instruction starts only, as for
sysret; `--no-iret` leaves them out), and evaluates gdbext.rules.iret there.

Most iretqs a kernel executes are interrupts returning into the kernel
itself.  Their verdict depends only on the frame's CS and SS selectors, the
descriptors they name, whether RIP and RSP are canonical, RFLAGS.NT now and
the mode; so a pass is kept (gdbext.rules.memo) with exactly those inputs,
and the next kernel return with the same selectors costs a read of the frame
and of the descriptors, not an evaluation.  Returns to ring 3 keep a verdict
with every input, as sysret checks do.
"""
from __future__ import annotations


import gdb

from gdbext import target
from gdbext.commands import sysret as watch_module
from gdbext.commands.base import (
    GdbextCommand,
    address_arg,
    count_arg,
    int_argument,
    symbolize,
)
from gdbext.model.snapshot import Snapshot, SnapshotError
from gdbext.rules import iret as rules
from gdbext.rules.memo import Inputs
from gdbext.views.iret import report_text
from gdbext.x86 import DecodeError
from gdbext.x86.bits import RFLAGS_NT, is_canonical, va_bits
from gdbext.x86.insn import iret_at

WATCH = watch_module.WATCH


def _site_opsize(address: int) -> int | None:
    try:
        code = target.read_virtual(address, min(16, (1 << 64) - address))
    except (gdb.MemoryError, gdb.error, OverflowError, ValueError, SnapshotError):
        return None
    return iret_at(code)


def _insn(opsize: int) -> str:
    return {64: "iretq", 32: "iretd", 16: "iretw"}[opsize]


def _describe(address: int, opsize: int) -> str:
    sym = symbolize(address)
    return f"{_insn(opsize)} at {address:#x}" + (f" <{sym}>" if sym else "")


class IretCheck(GdbextCommand):
    """Would an IRET executed now work?  The frame at RSP checked rule by rule.

Usage: iret-check [ADDRESS] [--opsize 16|32|64] [--json]

Evaluates every IRET rule as if the iretq at ADDRESS (default: the
instruction at RIP) executed with the current registers, popping the frame
at RSP (RIP, CS, RFLAGS, RSP, SS).  When there is no iret at that address it
checks "an iretq executed now".  A frame returning to ring 3 gets every rule;
a return to ring 0 (an interrupt returning into the kernel) only the rules
that apply to it (a valid CS and SS, a canonical RIP).  Rules: IR-MODE
IR-OPSIZE IR-NT IR-FRAME IR-CS IR-CS-RPL IR-SS IR-RFLAGS IR-RIP IR-RIP-MAPPED
IR-RSP-USER IR-SWAPGS IR-TSS-RSP0 (see the README's rule table).
JSON: {"findings": [{"rule", "severity", "message", "consequence", "values"}],
"checked": [{"rule", "status", "message"}], "opsize", "frame": {"at", "slot",
"rip", "cs", "rflags", "rsp", "ss"} or null, "returns_to_cpl", "ring3",
"address", "at_iret", "cpu"}."""

    NAME = "iret-check"
    PHYS_SESSION = True
    WRAP_TEXT = True
    COMMAND_CLASS = gdb.COMMAND_STATUS

    def arguments(self, parser):
        parser.add_argument("address", nargs="?", type=address_arg)
        parser.add_argument("--opsize", type=count_arg, choices=(16, 32, 64))

    def run(self, args):
        snap = target.snapshot()
        address = snap.rip if args.address is None else args.address
        found = _site_opsize(address)
        opsize = args.opsize or found or 64
        report = rules.evaluate(snap, opsize=opsize)
        where = _describe(address, opsize) if found else (
            f"no iret at {address:#x}; checking an {_insn(opsize)} executed now")
        doc = report.to_json()
        doc.update({"address": address, "at_iret": found is not None, "cpu": snap.cpu})
        return doc, lambda: report_text(report, where)


class IretOk(gdb.Function):
    """$iret_ok([16|32|64]) - 1 if the iret at RIP (or an iretq now) would pass every error rule, else 0.

The operand size is the iret's at RIP, else 64; 16, 32 or 64 overrides it.
The IRET rules need no rdmsr (GS_BASE, KERNEL_GS_BASE and EFER are registers),
so $iret_ok() works the same in a breakpoint condition:
`break *int80_return_iretq if $iret_ok() == 0`."""

    def __init__(self) -> None:
        super().__init__("iret_ok")

    def invoke(self, *args):
        if len(args) > 1:
            raise gdb.GdbError("$iret_ok: takes at most one argument, the operand size 16, 32 or 64")
        size = None
        if args:
            size = int_argument("$iret_ok", args[0])
            if size not in (16, 32, 64):
                raise gdb.GdbError(f"$iret_ok: the operand size is 16, 32 or 64, not {size}")
        snap = target.snapshot()
        if size is None:
            size = _site_opsize(snap.rip) or 64
        return int(rules.evaluate(snap, opsize=size).ok())


# ---------------------------------------------------------------------------
# The watch's iretq breakpoints
# ---------------------------------------------------------------------------

def _kernel_return_inputs(snap: Snapshot, frame: rules.Frame) -> dict:
    """What a return to CPL 0 depends on besides the descriptors: pseudo-registers
    for the memo, in place of the frame's RIP, RFLAGS and RSP and of RFLAGS now."""
    bits = va_bits(snap.regs["cr4"])
    return {"frame.cs": frame.cs, "frame.ss": frame.ss,
            "frame.rip_canonical": int(is_canonical(frame.rip, bits)),
            "rsp_canonical": int(is_canonical(snap.regs["rsp"], bits)),
            "eflags.nt": snap.regs["eflags"] & RFLAGS_NT}


def _pseudo_reader(live: target.LiveRegisters, pseudo: dict):
    def read(name: str) -> int | None:
        return pseudo[name] if name in pseudo else live.get(name)
    return read


def check_here(opsize: int) -> rules.IretReport | None:
    """The watch's check at an iret site: None when it passes, else the report.

    Call inside stop() with target.in_stop_callback() and PHYS.session().
    """
    cpu = target.selected_cpu()
    msrs = WATCH.msrs_for(cpu)
    live = target.LiveRegisters()
    kept = target.monitor_state(cpu, live)
    snap = watch_module._snapshot_in_stop(live)
    try:
        frame = rules.read_frame(snap, opsize)
    except (SnapshotError, DecodeError, KeyError):
        frame = None
    kernel = frame is not None and frame.cs & 3 == 0 and snap.cpl == 0
    if kernel:
        after_frame = len(snap.read_log or [])
        pseudo = _kernel_return_inputs(snap, frame)
        key = (cpu, "iret-kernel", opsize)
        if WATCH.verdicts.lookup(key, _pseudo_reader(live, pseudo), msrs, target.PHYS.read, kept):
            return None
        report = rules.evaluate(snap, opsize=opsize, frame=frame)
        if report.ok(warnings=WATCH.warnings) and not report.ring3:
            regs = {k: v for k, v in snap.regs.items() if k not in ("rsp", "eflags")}
            regs.update(pseudo)
            reads = (snap.read_log or [])[after_frame:]
            WATCH.verdicts.store(key, Inputs.of(regs, snap.msrs, reads, snap.monitor))
            return None
    else:
        key = (cpu, "iret", opsize)
        if WATCH.verdicts.lookup(key, live.get, msrs, target.PHYS.read, kept):
            return None
        report = rules.evaluate(snap, opsize=opsize, frame=frame)
        if report.ok(warnings=WATCH.warnings):
            WATCH.verdicts.store(key, Inputs.of(snap.regs, snap.msrs, snap.read_log or [], snap.monitor))
            return None
    if report.ok(warnings=WATCH.warnings):
        return None
    # Fail: never on kept monitor state alone.  Read it again and decide.
    target.forget_monitor(cpu)
    snap = watch_module._snapshot_in_stop(live)
    report = rules.evaluate(snap, opsize=opsize)
    return None if report.ok(warnings=WATCH.warnings) else report


class IretBreakpoint(watch_module.ReturnSiteBreakpoint):
    KIND = "iret"
    COUNTER = "iret_checks"
    STOPPED = "an iretq"
    LABEL = "iret check"

    def check(self):
        return check_here(self.site.opsize)

    def text(self, report) -> str:
        return report_text(report, _describe(self.site.address, self.site.opsize), verbose=False)


def register() -> None:
    IretCheck()
    IretOk()
