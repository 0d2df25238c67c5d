"""`info cpl`, `info msr`, `info gdt`, `info tss`, `info idt`, `gdbext-symbols`, and the
`$cpl()` and `$msr()` functions: thin, a view of a snapshot each."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

import gdb

from gdbext import target
from gdbext.commands.base import (
    GdbextCommand,
    _symbols,
    int_argument,
    number_type,
    output_width,
    parse_int,
    symbolize,
)
from gdbext.commands.base import number as read_number
from gdbext.model.snapshot import (
    MSR_FROM_REGISTER,
    MSR_NAMES,
    SnapshotError,
    msr_number,
)
from gdbext.model.symbols import SymbolTable
from gdbext.views.cpl import cpl_report, cpl_text
from gdbext.views.gdt import gdt_report, gdt_text
from gdbext.views.idt import idt_report, idt_text
from gdbext.views.msr import MSR_SET, msr_report, msr_text
from gdbext.views.tss import tss_report, tss_text


class InfoCpl(GdbextCommand):
    """Show the current privilege level, the operating mode, IOPL and IF.

Usage: info cpl [--json]

CPL comes from QEMU (the DPL of the SS cache), the mode from CR0.PE,
EFER.LMA, CS.L and RFLAGS.VM, for the vCPU of gdb's selected thread.
JSON: {"cpl", "mode", "iopl", "if", "rflags", "cs", "ss", "halted", "cpu", "rip"}."""

    NAME = "info cpl"
    PHYS_SESSION = True

    def run(self, args):
        r = cpl_report(target.snapshot())
        return r, lambda: cpl_text(r)


class InfoMsr(GdbextCommand):
    """Show the syscall MSRs (or one MSR by name or number), decoded.

Usage: info msr [NAME|NUMBER] [--wake] [--json]

EFER with every bit named; STAR split into the selectors SYSCALL and SYSRET
load, with the GDT descriptors they select; LSTAR and CSTAR with symbols;
SFMASK with the RFLAGS bits it clears; FS_BASE, GS_BASE, KERNEL_GS_BASE.
EFER and the three bases come from gdb's registers; the others are read by
executing rdmsr in the guest (QEMU TCG only), which leaves every register,
flag and byte as it was.
A vCPU halted in HLT runs only once an interrupt is due, so looking at its
rdmsr-only MSRs would change it: without --wake they are shown as
unavailable, with what --wake would cost.  --wake lets its LAPIC timer fire
early (at most 5 s of guest time), which wakes it without being delivered:
the vCPU is left awake at the same RIP with that interrupt pending, and a
note says so.  Where nothing will wake it (IF=0, timer masked), the reason.
QEMU's TCG reads MSRs it does not implement as 0 where a CPU raises #GP: such
a value comes with a note.
Names: EFER STAR LSTAR CSTAR SFMASK FS_BASE GS_BASE KERNEL_GS_BASE TSC_AUX PAT
SYSENTER_CS SYSENTER_ESP SYSENTER_EIP APIC_BASE, or any number (0xc0000081).
JSON: {"msrs": {"EFER": int, "STAR": int, ...}, "decoded": {...}, "errors": {...},
"notes": [...]}."""

    NAME = "info msr"
    PHYS_SESSION = True

    def names(self) -> list[str]:
        return list(MSR_NAMES)

    def arguments(self, parser):
        parser.add_argument("msr", nargs="?")
        parser.add_argument("--wake", action="store_true")

    def run(self, args):
        snap = target.snapshot()
        only = None
        if args.msr:
            number = msr_number(args.msr)
            if number is None and args.msr and (args.msr[0].isdigit() or args.msr[0] in "($"):
                # A number or expression, read as gdb reads it (010 is 8).
                try:
                    number = read_number(args.msr, "an MSR number", 0, 0xFFFFFFFF)
                except argparse.ArgumentTypeError as exc:
                    raise gdb.GdbError(f"info msr: {exc}") from None
            if number is None:
                raise gdb.GdbError(f"info msr: unknown MSR {args.msr!r}; names: {' '.join(MSR_NAMES)} "
                                   "or a number 0..0xffffffff")
            name = next((n for n, v in MSR_NAMES.items() if v == number), f"{number:#x}")
            only = {name: number}
        numbers = list(only.values()) if only else [n for _, n in MSR_SET]
        try:
            target.read_msrs(snap, numbers, wake=args.wake)
        except gdb.GdbError:
            pass  # the report shows each unreadable MSR with the reason
        r = msr_report(snap, only, symbolize)
        unknown = target.efer_unknown()
        if unknown and "EFER" in r.msrs:
            # A QEMU core: EFER is not in it; the value the commands use is
            # inferred (see gdbext-open), not shown as if read.
            r = dataclasses.replace(r, msrs={**r.msrs, "EFER": None}, errors={**r.errors, "EFER": unknown},
                                    decoded={k: v for k, v in r.decoded.items() if k != "EFER"})
        return r, lambda: msr_text(r, output_width())


class InfoGdt(GdbextCommand):
    """Show the GDT as the CPU sees it, every descriptor decoded.

Usage: info gdt [SELECTOR] [--no-star] [--json]

For each entry: index, selector, kind (null, code, data, TSS available/busy,
LDT, call gate...), base, limit scaled by G, DPL, P, L, D/B, G, AVL and the
type bits in words; 16-byte system descriptors are one entry.  "used by" marks
the live segment registers, TR and LDTR, and the selectors STAR gives SYSCALL
and SYSRET (STAR is read with rdmsr; not on a vCPU halted in HLT, which a
note then says: `info msr --wake` reads it).  Warns where a live (hidden)
segment cache differs from its table entry, or a selector points past the
limit.
JSON: {"base", "limit", "entries": [{"index", "selector", "kind", "base",
"limit", "dpl", "present", "long", ...}], "warnings": [...]}."""

    NAME = "info gdt"
    PHYS_SESSION = True

    def arguments(self, parser):
        parser.add_argument("selector", nargs="?", type=number_type("a selector", 0, 0xFFFF))
        parser.add_argument("--no-star", action="store_true")

    def run(self, args):
        snap = target.snapshot()
        notes = []
        if not args.no_star:
            try:
                target.read_msrs(snap, [MSR_NAMES["STAR"]])
            except gdb.GdbError as exc:
                notes.append(f"STAR's roles are not shown: {str(exc).removeprefix('gdbext: ')}")
        r = gdt_report(snap, args.selector, with_star=not args.no_star, notes=notes)
        return r, lambda: gdt_text(r, output_width())


class InfoTss(GdbextCommand):
    """Show the 64-bit TSS that TR selects: RSP0-2, IST1-7, the I/O map base.

Usage: info tss [--json]

For each stack pointer: whether it is canonical and whether the page a push
would write (pointer - 8) is mapped supervisor-writable now.
JSON: {"selector", "base", "limit", "rsp": [...], "ist": [...], "iomap_base", "stacks": {...}}."""

    NAME = "info tss"
    PHYS_SESSION = True

    def run(self, args):
        r = tss_report(target.snapshot())
        return r, lambda: tss_text(r, output_width())


class InfoIdt(GdbextCommand):
    """Show the IDT: every gate up to the limit (at most 256).

Usage: info idt [VECTOR] [--json]

Vector and name, gate type, selector, handler address and symbol, IST, DPL,
P.  Warns where a handler is not mapped executable for the kernel or its
selector is not a 64-bit code segment.  The table shows present gates; JSON
has all of them.
JSON: {"base", "limit", "gates": [{"vector", "name", "kind", "selector", "handler", "symbol", "ist", "dpl", "present", "problems"}], "warnings"}."""

    NAME = "info idt"
    PHYS_SESSION = True

    def arguments(self, parser):
        parser.add_argument("vector", nargs="?", type=number_type("a vector", 0, 255))

    def run(self, args):
        if args.vector is not None and not 0 <= args.vector <= 255:
            raise gdb.GdbError(f"info idt: vector {args.vector} is outside 0..255")
        r = idt_report(target.snapshot(), args.vector, symbolize)
        return r, lambda: idt_text(r, output_width())


@dataclass(frozen=True)
class SymbolsReport:
    """`gdbext-symbols --json`."""

    file: str
    offset: int
    symbols: int


class Symbols(GdbextCommand):
    """Load symbols from an ELF file for gdbext's lookups (handler and LSTAR names).

Usage: gdbext-symbols FILE [OFFSET]

Use it for a kernel gdb has no symbols for, or add OFFSET when the kernel runs
relocated (KASLR).  gdb's own symbols are always asked first."""

    NAME = "gdbext-symbols"
    COMMAND_CLASS = gdb.COMMAND_FILES
    POSITIONAL_COMPLETION = gdb.COMPLETE_FILENAME

    def arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("offset", nargs="?", type=parse_int, default=0)

    def run(self, args):
        table = SymbolTable.from_elf(args.file, args.offset)
        _symbols[0] = table
        r = SymbolsReport(file=args.file, offset=args.offset, symbols=len(table))
        return r, f"gdbext: {len(table)} symbols from {args.file} (offset {args.offset:#x})"


class CplFunction(gdb.Function):
    """$cpl() - the current privilege level of the selected vCPU (0-3).

Usable in breakpoint conditions and `commands` blocks (it reads QEMU's
monitor; nothing runs the guest)."""

    def __init__(self) -> None:
        super().__init__("cpl")

    def invoke(self, *args):
        if args:
            raise gdb.GdbError("$cpl: takes no argument")
        return target.snapshot().cpl


class MsrFunction(gdb.Function):
    """$msr(NAME or NUMBER) - an MSR of the selected vCPU, e.g. $msr("LSTAR"), $msr(0xc0000081).

EFER and the FS/GS/KERNEL_GS bases are registers and always current.  The
others are read with rdmsr at a stop.  In a breakpoint condition no rdmsr can
run (it would step the guest): the value is the one this session last read
or saw written for that vCPU (by `info msr`, `sysret-check` or
`sysret-watch`, which follows every wrmsr), or the condition fails with one
line saying so.  A vCPU halted in HLT is not woken: use `info msr --wake`."""

    def __init__(self) -> None:
        super().__init__("msr")

    def invoke(self, *args):
        if len(args) != 1:
            raise gdb.GdbError("$msr: takes one argument, an MSR name (\"LSTAR\") or number (0xc0000082)")
        which = args[0]
        code = which.type.strip_typedefs().code
        if code in (gdb.TYPE_CODE_ARRAY, gdb.TYPE_CODE_PTR) and which.type.strip_typedefs().target().sizeof == 1:
            try:
                text = which.string()
            except gdb.error as exc:
                raise gdb.GdbError(f"$msr: {exc}") from None
            number = msr_number(text)
            if number is None:
                raise gdb.GdbError(f"$msr: unknown MSR {text!r}; names: {' '.join(MSR_NAMES)}")
        else:
            number = int_argument("$msr", which, 0, 0xFFFFFFFF)
        snap = target.snapshot()
        if target.in_condition() and number not in snap.msrs and number not in MSR_FROM_REGISTER:
            known = target.known_msrs(snap.cpu)
            if number in known:
                return known[number]
            raise gdb.GdbError(f"$msr: MSR {number:#x} of vCPU {snap.cpu} has not been read in this session, and "
                               "no rdmsr runs inside a condition: stop once and run `info msr`")
        try:
            return target.read_msrs(snap, [number])[number]
        except SnapshotError as exc:
            raise gdb.GdbError(f"$msr: {exc}") from None


class Gdbext(gdb.Command):
    """gdbext: see what an x86_64 CPU under QEMU sees.

Commands (each has `help COMMAND`, and most take --json):
  info gdt [SEL]        the GDT, decoded; live segments, TR and STAR roles marked
  info tss              the 64-bit TSS: RSP0-2, IST1-7, I/O map; stacks checked
  info idt [VEC]        the IDT gates with handlers, symbols and checks
  info msr [NAME]       EFER, STAR, LSTAR, CSTAR, SFMASK, FS/GS/KERNEL_GS bases
  info cpl              CPL, mode, IOPL, IF
  pagewalk VA           the CPU's page walk for an address, and what an access does
  ptdump                every mapping, merged into ranges; --wx, --phys, --user
  sysret-check [ADDR]   would a sysret now work?  every rule, with the reason
  sysret-watch on|off|status   stop before any sysret that would go wrong
  fault-watch on|off|status    stop at any exception's handler, frame decoded
  info fault [--all]    the last exception caught (or every one recorded)
  fault-chain           the failed deliveries before a triple fault, from QEMU's log
  gdbext-qemu-log FILE|off|show  the QEMU -d int log fault-chain reads
  gdbext-symbols FILE [OFFSET] symbols from an ELF for gdbext's lookups
  gdbext-save FILE [--ram]     the stopped guest's state to a file
  gdbext-open FILE|--close     look at a saved state (or QEMU core), no target
  gdbext-cpu [N]        the saved vCPU the commands look at
Functions: $cpl(), $msr(NAME|NUMBER), $sysret_ok()."""

    def __init__(self) -> None:
        # A prefix: every command is also `gdbext NAME`, reachable whatever
        # another extension did with the short names.
        super().__init__("gdbext", gdb.COMMAND_SUPPORT, prefix=True)

    def invoke(self, argument, from_tty):
        gdb.write(self.__doc__ + "\n")


class GdbextInfo(gdb.Command):
    """gdbext's info commands: gdbext info gdt|tss|idt|msr|cpl (also `info gdt`...)."""

    def __init__(self) -> None:
        super().__init__("gdbext info", gdb.COMMAND_STATUS, prefix=True)

    def invoke(self, argument, from_tty):
        gdb.write(self.__doc__ + "\n")


def register() -> None:
    Gdbext()
    GdbextInfo()
    for cls in (InfoCpl, InfoMsr, InfoGdt, InfoTss, InfoIdt, Symbols):
        cls()
    CplFunction()
    MsrFunction()
