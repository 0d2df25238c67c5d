"""`gdbext-save`, `gdbext-open` and `gdbext-cpu`: a machine state saved to a
file, and opened later in place of a target (gdbext.target.saved)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Optional

import gdb

from gdbext import target
from gdbext.commands.base import GdbextCommand, number_type
from gdbext.model.machine_state import MachineStateError
from gdbext.model.qemu_core import sidecar_name
from gdbext.target import saved


@dataclass(frozen=True)
class SaveReport:
    """`gdbext-save --json`."""

    file: str
    cpus: tuple[int, ...]
    pages: int
    ram: bool
    bytes: int
    seconds: float
    msrs: dict[str, int]
    notes: tuple[str, ...]


def write_state(path: str, capture: saved.Capture, level: int) -> int:
    """Write the captured state to `path` (through a temporary file next to
    it, so a failed write never leaves half a file); its size in bytes."""
    data = capture.state.encode(level)
    if os.path.isdir(path):
        raise gdb.GdbError(f"gdbext-save: {path} is a directory; give a file name")
    temporary = f"{path}.part"
    try:
        with open(temporary, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
    except OSError as exc:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise gdb.GdbError(f"gdbext-save: cannot write {path}: {exc.strerror or exc}") from None
    return len(data)


class Save(GdbextCommand):
    """Save the stopped guest's machine state to a file, to look at it later.

Usage: gdbext-save FILE [--ram] [--no-msrs] [--json]
       gdbext-save --core CORE [--no-msrs] [--json]

Every vCPU (gdb's threads): registers, segment caches, GDTR, IDTR, LDTR, TR,
CPL, HLT, and its MSRs; guest-physical memory: every page gdbext read at this
stop, every page table reachable from CR3 (and the KPTI partner, CR3 with bit
12 flipped, when it is a top-level table), the GDT, IDT, TSS and LDT, the
stacks (RSP, the TSS's RSP0-2 and IST1-7) and the code around RIP.  Only
pages in RAM are read (`info mtree -f`), never a device's.
--ram       all of guest RAM too (compressed).
--no-msrs   no rdmsr: only the MSRs gdb's registers carry and those this
            session already read are saved (rdmsr steps the guest; see
            `help info msr`).
--core CORE QEMU's own ELF core instead (`dump-guest-memory`: all RAM, the
            vCPUs' registers and segment caches, no EFER and no MSRs), and
            next to it CORE.gdbext with what the core lacks (EFER, MSRs,
            HLT), which `gdbext-open CORE` then takes.  QEMU writes CORE: it
            must run on this machine.
`gdbext-open FILE` opens it in a gdb with no target.  The file is gzip'd
JSON (the format is in docs/machine-state.md) and names no path.
JSON: {"file", "cpus", "pages", "ram", "bytes", "seconds", "msrs", "notes"}."""

    NAME = "gdbext-save"
    WRAP_TEXT = True
    COMMAND_CLASS = gdb.COMMAND_FILES
    POSITIONAL_COMPLETION = gdb.COMPLETE_FILENAME

    def arguments(self, parser):
        parser.add_argument("file", nargs="?")
        parser.add_argument("--ram", action="store_true")
        parser.add_argument("--no-msrs", action="store_true")
        parser.add_argument("--core", metavar="CORE")

    def run(self, args):
        if args.core is not None:
            if args.file or args.ram:
                raise gdb.GdbError("gdbext-save: --core CORE takes no FILE and no --ram (a core holds all RAM)")
            r = save_core(args.core, msrs=not args.no_msrs)
            text = (f"gdbext: QEMU wrote {r.file} ({r.bytes:,} bytes) and gdbext its sidecar "
                    f"{sidecar_name(r.file)}, {len(r.cpus)} vCPU(s), in {r.seconds:.2f} s")
            return r, "\n".join([text] + [f"note: {n}" for n in r.notes])
        if not args.file:
            raise gdb.GdbError("gdbext-save: give a FILE (or --core CORE)")
        r = save(args.file, ram=args.ram, msrs=not args.no_msrs)
        text = (f"gdbext: saved {len(r.cpus)} vCPU(s) and {r.pages} pages"
                f"{' (all RAM)' if r.ram else ''} to {r.file}: {r.bytes:,} bytes in {r.seconds:.2f} s")
        return r, "\n".join([text] + [f"note: {n}" for n in r.notes])


def _extra() -> dict:
    """What commands keep about this stop that a saved state shows again."""
    from gdbext.commands.fault import fault_state

    faults = fault_state()
    return {"fault": faults} if faults else {}


def _writable(path: str) -> None:
    if not path:
        raise gdb.GdbError("gdbext-save: give a file name")
    if os.path.isdir(path):
        raise gdb.GdbError(f"gdbext-save: {path} is a directory; give a file name")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise gdb.GdbError(f"gdbext-save: cannot write {path}: no directory {parent}")
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise gdb.GdbError(f"gdbext-save: cannot write {path}: permission denied")


def _msr_names(state) -> dict[str, int]:
    from gdbext.model.snapshot import MSR_NAMES

    by_number = {v: k for k, v in MSR_NAMES.items()}
    return {by_number.get(n, f"{n:#x}"): n for c in state.cpus for n in sorted(c.msrs)}


def save_core(path: str, *, msrs: bool = True) -> SaveReport:
    """gdbext-save --core: QEMU's core, and gdbext's sidecar with what it lacks."""
    if any(c.isspace() or c in "\"'" for c in path):
        raise gdb.GdbError(f"gdbext-save: --core {path!r}: QEMU's monitor takes a file name without spaces "
                           "or quotes")
    _writable(path)
    _writable(sidecar_name(path))
    start = time.perf_counter()
    capture = saved.capture(ram=False, msrs=msrs, memory=False, extra=_extra())
    saved.dump_core(path)
    write_state(sidecar_name(path), capture, 6)
    state = capture.state
    return SaveReport(file=path, cpus=tuple(c.cpu for c in state.cpus), pages=0, ram=True,
                      bytes=os.path.getsize(path), seconds=round(time.perf_counter() - start, 3),
                      msrs=_msr_names(state), notes=tuple(capture.notes))


def save(path: str, *, ram: bool = False, msrs: bool = True, report: Optional[dict] = None) -> SaveReport:
    """gdbext-save, for triage too."""
    _writable(path)
    start = time.perf_counter()
    capture = saved.capture(ram=ram, msrs=msrs, report=report, extra=_extra())
    size = write_state(path, capture, 1 if ram else 6)
    seconds = time.perf_counter() - start
    state = capture.state
    return SaveReport(file=path, cpus=tuple(c.cpu for c in state.cpus), pages=len(state.pages),
                      ram=ram, bytes=size, seconds=round(seconds, 3), msrs=_msr_names(state),
                      notes=tuple(capture.notes))


@dataclass(frozen=True)
class OpenReport:
    """`gdbext-open --json`."""

    file: str
    origin: str
    cpus: tuple[int, ...]
    cpu: Optional[int]
    pages: int
    ram: bool
    unknown: tuple[str, ...]
    notes: tuple[str, ...]
    closed: bool = False


class Open(GdbextCommand):
    """Open a saved machine state in place of a target, for the read-only commands.

Usage: gdbext-open FILE [--cpu N] [--sidecar STATE | --no-sidecar] [--json]
       gdbext-open --close

FILE is what `gdbext-save` or triage's --save-state wrote, or an ELF core
from QEMU's `dump-guest-memory`.  In a gdb with no target (the kernel's ELF
may be loaded, for symbols), `info gdt`, `info tss`, `info idt`, `info msr`,
`info cpl`, `pagewalk`, `ptdump`, `sysret-check` and `iret-check` then
answer from the file as they did at the stop, `--json` included; memory that
was not saved, and MSRs that were not, are said to be so.  Whatever needs a
live guest (`sysret-watch`, `fault-watch`, the monitor) refuses in one line.
--cpu N    the vCPU to look at (default: the first saved); `gdbext-cpu N`
           changes it later.
--sidecar STATE  for a core: the gdbext state file of the same stop with
           EFER, the MSRs and HLT (default CORE.gdbext, which
           `gdbext-save --core` writes, when it exists); checked against
           the core's registers.  Without one these are "unknown (not in a
           QEMU core)", and EFER is inferred where certain (see docs).
--no-sidecar     ignore CORE.gdbext.
--close    forget the saved state (connecting to a target does too).
JSON: {"file", "origin", "cpus", "cpu", "pages", "ram", "unknown", "notes",
"closed"}."""

    NAME = "gdbext-open"
    WRAP_TEXT = True
    COMMAND_CLASS = gdb.COMMAND_FILES
    POSITIONAL_COMPLETION = gdb.COMPLETE_FILENAME

    def arguments(self, parser):
        parser.add_argument("file", nargs="?")
        parser.add_argument("--cpu", type=number_type("a vCPU index", 0, 4095))
        parser.add_argument("--close", action="store_true")
        side = parser.add_mutually_exclusive_group()
        side.add_argument("--sidecar", metavar="STATE")
        side.add_argument("--no-sidecar", action="store_true")

    def run(self, args):
        if args.close:
            if args.file or args.cpu is not None:
                raise gdb.GdbError("gdbext-open: --close takes no FILE or --cpu")
            session = target.offline()
            if session is None:
                raise gdb.GdbError("gdbext-open: no saved machine state is open")
            name = session.name  # type: ignore[attr-defined]
            target.drop()
            r = OpenReport(file=name, origin="", cpus=(), cpu=None, pages=0, ram=False, unknown=(),
                           notes=(), closed=True)
            return r, f"gdbext: closed {name}"
        if not args.file:
            raise gdb.GdbError("gdbext-open: give a FILE to open (or --close)")
        try:
            session = saved.open_file(args.file, args.sidecar, not args.no_sidecar)
        except MachineStateError as exc:
            raise gdb.GdbError(f"gdbext-open: {args.file}: {exc}") from None
        except OSError as exc:
            raise gdb.GdbError(f"gdbext-open: cannot read {args.file}: {exc.strerror or exc}") from None
        state = session.machine
        if args.cpu is not None:
            try:
                session.select(args.cpu)
            except MachineStateError as exc:
                target.drop()
                raise gdb.GdbError(f"gdbext-open: {exc}") from None
        r = OpenReport(file=session.name, origin=state.origin, cpus=tuple(c.cpu for c in state.cpus),
                       cpu=session.selected, pages=len(state.pages), ram=state.ram is not None,
                       unknown=tuple(state.unknown), notes=tuple(state.notes))
        lines = [f"gdbext: opened {session.name} ({state.origin}): vCPUs "
                 + ", ".join(str(c) for c in r.cpus) + f", {r.pages} pages"
                 + (" (all RAM)" if r.ram else "") + f"; looking at vCPU {r.cpu}"]
        lines += [f"unknown: {u}" for u in r.unknown] + [f"note: {n}" for n in r.notes]
        return r, "\n".join(lines)


@dataclass(frozen=True)
class CpuReport:
    """`gdbext-cpu --json`."""

    cpu: int
    cpus: tuple[int, ...]


class Cpu(GdbextCommand):
    """Choose the vCPU of the open saved machine state that commands look at.

Usage: gdbext-cpu [N] [--json]

Without N, shows the one selected.  On a live target select gdb's thread
instead (`thread N+1`: QEMU numbers threads from 1, vCPUs from 0).
JSON: {"cpu", "cpus"}."""

    NAME = "gdbext-cpu"
    WRAP_TEXT = True

    def arguments(self, parser):
        parser.add_argument("cpu", nargs="?", type=number_type("a vCPU index", 0, 4095))

    def run(self, args):
        session = target.offline()
        if session is None:
            raise gdb.GdbError("gdbext-cpu: no saved machine state is open; on a live target use "
                               "`thread N` (vCPU N-1)")
        if args.cpu is not None:
            try:
                session.select(args.cpu)  # type: ignore[attr-defined]
            except MachineStateError as exc:
                raise gdb.GdbError(f"gdbext-cpu: {exc}") from None
        cpus = tuple(c.cpu for c in session.machine.cpus)  # type: ignore[attr-defined]
        r = CpuReport(cpu=session.selected, cpus=cpus)  # type: ignore[attr-defined]
        return r, f"gdbext: vCPU {r.cpu} of {session.name} (saved: {', '.join(map(str, cpus))})"  # type: ignore[attr-defined]


_registered = [False]


def register() -> None:
    if _registered[0]:
        return
    _registered[0] = True
    Save()
    Open()
    Cpu()
