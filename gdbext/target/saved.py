"""Saved machine states: written from the live target, opened in place of one.

`capture()` reads every vCPU of the stopped guest and the memory a later
look needs (gdbext-save, triage's --save-state); `SavedSession` is a
Session with no connection that answers from such a file (gdbext-open):
target.snapshot() then rebuilds the selected vCPU's Snapshot from it, its
physical memory is the saved pages, and everything that needs a live guest
(the monitor, rdmsr, breakpoints) refuses in one line.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

import gdb  # noqa: F401  (this module is the gdb boundary)

from gdbext.model.machine_state import CpuState, MachineState, MachineStateError
from gdbext.model.qemu_text import parse_ram_ranges
from gdbext.model.snapshot import PAGE, Snapshot, SnapshotError
from gdbext.target.remote import TargetError
from gdbext.target.session import Session, open_offline

# Pages around each address saved: the stack a frame is pushed to grows down,
# so a little more below than above.
_STACK_BELOW, _STACK_ABOVE = 2 * PAGE, PAGE
_CODE_AROUND = PAGE
# Tables are saved up to this many bytes (a TSS with an I/O bitmap is 8 KiB+).
_TABLE_MAX = 1 << 20
_RAM_CHUNK = 64 * PAGE


class SavedMemory:
    """A saved state's guest-physical pages, shaped like PhysicalMemory."""

    shared = False
    stub_reads = 0
    kind = "saved"

    def __init__(self, state: MachineState, name: str):
        self.state = state
        self.source = f"saved machine state {name}"
        self.rejected: List[str] = []

    def leave(self) -> None:
        """No stub, no PhyMemMode to leave."""

    def close(self) -> None:
        """Nothing held open: the pages are in memory."""

    def read(self, pa: int, size: int) -> bytes:
        return self.state.read_phys(pa, size)

    def read_many(self, requests: List[Tuple[int, int]]) -> List[bytes]:
        """Each request's bytes, or b"" for one that was not saved (whoever
        reads it again through the snapshot gets the error)."""
        out = []
        for pa, size in requests:
            try:
                out.append(self.state.read_phys(pa, size))
            except SnapshotError:
                out.append(b"")
        return out

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        yield


class SavedSession(Session):
    """A saved machine state opened in place of a target."""

    offline = True

    def __init__(self, state: MachineState, name: str):
        super().__init__(None)
        self.machine = state
        self.name = name
        self.phys = SavedMemory(state, name)  # type: ignore[assignment]
        self.is_qemu = False
        self.selected = state.cpus[0].cpu
        for c in state.cpus:
            self.msrs[c.cpu] = dict(c.msrs)

    def valid(self) -> bool:
        return True

    def efer_unknown(self) -> str | None:
        """What the source said about EFER when it could not hold it (a
        QEMU core with no sidecar), else None."""
        return next((u for u in self.machine.unknown if u.startswith("EFER: ")), None)

    def describe(self) -> str:
        return f"the saved machine state {self.name}"

    def refuse(self, what: str = "this") -> TargetError:
        return TargetError(f"gdbext: {what} needs a live guest; {self.describe()} is open "
                           "(`gdbext-open --close` ends it, then connect with `target remote`)")

    def select(self, cpu: int) -> None:
        self.machine.cpu(cpu)   # MachineStateError if it was not saved
        self.selected = cpu

    def snapshot(self) -> Snapshot:
        key = (0, self.selected)
        snap = self.snapshots.get(key)
        if snap is None:
            snap = self.snapshots[key] = self.machine.snapshot(self.selected, self._no_msr)
        return snap

    def _no_msr(self, number: int) -> int:
        if self.machine.origin == "qemu-core":
            from gdbext.model.qemu_core import NOT_IN_CORE

            raise TargetError(f"gdbext: MSR {number:#x}: {NOT_IN_CORE}; `gdbext-save --core` writes a "
                              "sidecar with the MSRs")
        why = next((n.split(": MSRs not saved: ", 1)[1] for n in self.machine.notes
                    if n.startswith(f"vCPU {self.selected}: MSRs not saved: ")), None)
        raise TargetError(f"gdbext: MSR {number:#x} of vCPU {self.selected} was not saved in {self.name}"
                          + (f" (when saved: {why})" if why else ""))


def open_file(path: str, sidecar: Optional[str] = None, use_sidecar: bool = True) -> SavedSession:
    """Open a machine-state file (or a QEMU core, with the gdbext state file
    `sidecar` of the same stop, by default CORE.gdbext when it exists) in
    place of a target; MachineStateError or OSError (one line) when it
    cannot be read."""
    from gdbext.model.qemu_core import read_core, sidecar_name

    if gdb.selected_inferior().connection is not None:
        raise TargetError("gdbext-open: gdb is connected to a target; `disconnect` first "
                          "(a saved state is opened in place of a target)")
    data = _read(path)
    if data[:4] == b"\x7fELF":
        side = None
        if use_sidecar:
            name = sidecar or sidecar_name(path)
            if sidecar is not None or os.path.exists(name):
                try:
                    side = MachineState.decode(_read(name))
                except MachineStateError as exc:
                    raise MachineStateError(f"the sidecar {name}: {exc}") from None
        state = read_core(data, side)
    elif sidecar is not None:
        raise MachineStateError("--sidecar is for a QEMU core; this is a gdbext state file")
    else:
        state = MachineState.decode(data)
    session = SavedSession(state, os.path.basename(path))
    open_offline(session)
    return session


def _read(path: str) -> bytes:
    if os.path.isdir(path):
        raise MachineStateError(f"{path} is a directory, not a machine-state file")
    with open(path, "rb") as f:
        return f.read()


def dump_core(path: str) -> None:
    """QEMU's own ELF core of the guest (`dump-guest-memory`), written by
    QEMU: the path is made absolute, as QEMU runs in another directory."""
    from gdbext.target.remote import hmp

    answer = hmp(f"dump-guest-memory {os.path.abspath(path)}").strip()
    if answer or not os.path.exists(path):
        raise TargetError(f"gdbext: QEMU's dump-guest-memory failed: {answer or 'no file written'}")


# ---------------------------------------------------------------------------
# Saving the live target
# ---------------------------------------------------------------------------

@dataclass
class Capture:
    state: MachineState
    seconds: float = 0.0
    notes: List[str] = field(default_factory=list)


def capture(*, ram: bool = False, msrs: bool = True, report: Optional[dict] = None,
            memory: bool = True, extra: Optional[dict] = None) -> Capture:
    """Every vCPU of the stopped guest (gdb's threads) and the pages a later
    look needs (none without `memory`); all guest RAM with `ram`.  msrs: read the MSRs the commands
    show (rdmsr, as `info msr` does); else only those already known."""
    from gdbext.target.memory import PHYS
    from gdbext.target.remote import hmp
    from gdbext.target.snapshots import known_msrs, read_msrs, snapshot

    start = time.perf_counter()
    snapshot()   # refuses in one line without a (QEMU) target
    inferior = gdb.selected_inferior()
    selected = gdb.selected_thread()
    ram_ranges = parse_ram_ranges(hmp("info mtree -f"))
    notes: List[str] = []
    cpus: List[CpuState] = []
    pages: Dict[int, bytes] = {}
    try:
        for thread in sorted(inferior.threads(), key=lambda t: t.num):
            thread.switch()
            snap = snapshot()
            if msrs:
                try:
                    read_msrs(snap, _msrs_shown())
                except gdb.GdbError as exc:
                    notes.append(f"vCPU {snap.cpu}: MSRs not saved: {str(exc).removeprefix('gdbext: ')}")
            cpu = CpuState.of(snap)
            cpu.msrs = {**known_msrs(snap.cpu), **snap.msrs}
            cpus.append(cpu)
            if memory:
                with PHYS.session():
                    pages.update(_pages_of(snap, ram_ranges, PHYS.read))
    finally:
        if selected is not None and selected.is_valid():
            selected.switch()
    if ram:
        with PHYS.session():
            pages.update(_ram_pages(ram_ranges, PHYS.read_many))
    state = MachineState(cpus=cpus, pages=pages, origin="gdbext-save",
                         ram=[(a, b) for a, b, _ in ram_ranges] if ram else None,
                         notes=notes, report=report, extra=dict(extra or {}))
    return Capture(state=state, seconds=time.perf_counter() - start, notes=notes)


def _msrs_shown() -> List[int]:
    from gdbext.commands.sysret import WATCHED_MSRS
    from gdbext.views.msr import MSR_SET

    return sorted({n for _, n in MSR_SET} | set(WATCHED_MSRS))


def _in_ram(pa: int, ram_ranges) -> bool:
    return any(a <= pa and pa + PAGE <= b for a, b, _ in ram_ranges)


def _pages_of(snap: Snapshot, ram_ranges, read) -> Dict[int, bytes]:
    """The pages of one vCPU worth keeping: what its snapshot read, every
    page table reachable from CR3 (and the KPTI partner when it is a
    top-level table), the GDT, IDT, TSS and LDT, the stacks (RSP, the TSS's
    RSP0-2 and IST1-7) and the code around RIP.  Only pages in RAM are read
    (a stray pointer must not read a device's registers)."""
    from gdbext.model.linear import translate
    from gdbext.target.tables import prefetch_tables
    from gdbext.views.pagewalk import _check_kpti_root, paging_context
    from gdbext.x86.paging import PagingContext
    from gdbext.x86.tss import TSS64_SIZE, decode_tss64

    def guarded(pa: int, size: int) -> bytes:
        if not _in_ram(pa - pa % PAGE, ram_ranges):
            raise SnapshotError(f"physical {pa:#x} is not RAM; not read")
        return read(pa, size)

    # A copy: the live snapshot's memo (and what later commands fetch) stays as it was.
    copy = dataclasses.replace(snap, pages=dict(snap.pages), ranges={}, read_log=None, exact_reads=False,
                               small_reads_exact=False,
                               phys_reader=guarded, msrs=dict(snap.msrs))
    for (pa, size) in list(snap.ranges):
        for page in range(pa - pa % PAGE, pa + size, PAGE):
            with contextlib.suppress(SnapshotError):
                copy.read_phys(page, PAGE)
    ctx = PagingContext.from_snapshot(copy)
    with contextlib.suppress(SnapshotError):
        prefetch_tables(copy, ctx)
        copy.read_phys(ctx.root, PAGE)
    if ctx.paging and ctx.long_mode:
        notes: List[str] = []
        partner = paging_context(copy, None, True, None, notes)
        with contextlib.suppress(SnapshotError):
            before = len(notes)
            _check_kpti_root(copy, partner, notes)
            if len(notes) == before:
                prefetch_tables(copy, partner)

    def linear(va: int, size: int) -> None:
        first = va - va % PAGE
        for page in range(first, va + max(size, 1), PAGE):
            page &= (1 << 64) - 1
            with contextlib.suppress(SnapshotError, ValueError):
                w = translate(copy, page)
                if w.pa is not None:
                    copy.read_phys(w.pa - w.pa % PAGE, PAGE)

    linear(snap.gdtr.base, min(snap.gdtr.limit + 1, _TABLE_MAX))
    linear(snap.idtr.base, min(snap.idtr.limit + 1, _TABLE_MAX))
    if snap.ldtr.present and snap.ldtr.limit:
        linear(snap.ldtr.base, min(snap.ldtr.limit + 1, _TABLE_MAX))
    stacks = [snap.regs.get("rsp", 0)]
    if snap.tr.limit:
        linear(snap.tr.base, min(snap.tr.limit + 1, _TABLE_MAX))
        with contextlib.suppress(SnapshotError, ValueError):
            from gdbext.model.linear import read_linear

            tss = decode_tss64(read_linear(copy, snap.tr.base, TSS64_SIZE))
            stacks += [p for p in tss.rsp + tss.ist if p]
    for sp in stacks:
        linear(max(0, sp - _STACK_BELOW), _STACK_BELOW + _STACK_ABOVE)
    rip = snap.regs.get("rip", 0)
    linear(max(0, rip - _CODE_AROUND), 2 * _CODE_AROUND)
    return copy.pages


def _ram_pages(ram_ranges, read_many) -> Dict[int, bytes]:
    pages: Dict[int, bytes] = {}
    for a, b, _name in ram_ranges:
        requests = [(pa, min(_RAM_CHUNK, b - pa)) for pa in range(a, b, _RAM_CHUNK)]
        for i in range(0, len(requests), 64):
            batch = requests[i:i + 64]
            for (pa, size), data in zip(batch, read_many(batch)):
                if len(data) != size:
                    raise TargetError(f"gdbext: a short read of guest RAM at {pa:#x}")
                for off in range(0, size - size % PAGE, PAGE):
                    pages[(pa + off) // PAGE] = bytes(data[off:off + PAGE])
    return pages
