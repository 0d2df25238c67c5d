"""Snapshots of the stopped vCPU, read once per stop, and the gdb events that drop them."""
from __future__ import annotations

import contextlib
from typing import Dict, List, Optional

import gdb  # noqa: F401  (this module is the gdb boundary)

from gdbext.model.snapshot import (
    MSR_FROM_REGISTER,
    Snapshot,
    SnapshotError,
)
from gdbext.target.memory import PHYS
from gdbext.target.rdmsr import _Rdmsr
from gdbext.target.remote import (
    LiveRegisters,
    TargetError,
    _connection,
    hmp,
    ping,
    read_gdb_registers,
    require_qemu,
    selected_cpu,
)
from gdbext.target.session import connect_events as session_events
from gdbext.target.session import current, offline, peek


class _Injector:
    """The Snapshot's MSR reader: one rdmsr session for all MSRs asked at once."""

    def __init__(self) -> None:
        self.snap: Optional[Snapshot] = None
        self.injections = 0
        self.wake = False   # may rdmsr wake a halted vCPU (`info msr --wake`)

    def __call__(self, number: int) -> int:
        return self.read_many([number])[number]

    def read_many(self, numbers: List[int], wake: bool = False) -> Dict[int, int]:
        assert self.snap is not None
        todo = [n for n in numbers if n not in self.snap.msrs and n not in MSR_FROM_REGISTER]
        if todo:
            _suspend_invalidation[0] += 1
            try:
                self.injections += 1
                values = _Rdmsr(self.snap, wake=wake or self.wake).read(todo)
            finally:
                _suspend_invalidation[0] -= 1
                forget_monitor(self.snap.cpu)   # HLT may have changed; the rest is as it was
            self.snap.msrs.update(values)
            current().learn_msrs(self.snap.cpu, values)
        return {n: self.snap.msr(n) for n in numbers}


# A reentrancy guard, not connection state: gdb's events during rdmsr
# injection must not drop the snapshot being read.
_suspend_invalidation = [0]


def invalidate(*_args) -> None:
    session = peek()
    if session is not None and not _suspend_invalidation[0]:
        session.snapshots.clear()


# The last `info registers N` per vCPU, kept across stops for the watch
# (`stop_snapshot`): segment caches and table registers change only when a
# segment or table register is loaded.
def forget_monitor(cpu: Optional[int] = None) -> None:
    """Drop the kept monitor state of one vCPU (or all): the next snapshot reads it again."""
    session = peek()
    if session is None:
        return
    if cpu is None:
        session.monitor.clear()
    else:
        for key in [k for k in session.monitor if k[1] == cpu]:
            del session.monitor[key]


def _forget_all_monitor(*_args) -> None:
    forget_monitor()


def monitor_state(cpu: int, regs: Optional[Dict[str, int]] = None):
    """QEMU's `info registers N`, parsed; the kept one when `regs` is given and
    its CS and SS selectors still equal the live ones."""
    from gdbext.model.qemu_text import parse_info_registers
    from gdbext.x86 import DecodeError

    key = (gdb.selected_inferior().num, cpu)
    kept = current().monitor
    h = kept.get(key) if regs is not None else None
    if h is not None and (h.segments["cs"].selector == regs["cs"] and  # type: ignore[attr-defined,index]
                          h.segments["ss"].selector == regs["ss"]):    # type: ignore[attr-defined,index]
        return h
    try:
        h = parse_info_registers(hmp(f"info registers {cpu}"))
    except DecodeError as exc:
        raise TargetError(f"gdbext: cannot read QEMU's `info registers {cpu}`: {exc}") from None
    kept[key] = h
    return h


def snapshot() -> Snapshot:
    """The selected vCPU, read once per stop (or rebuilt from the saved
    machine state that gdbext-open opened in place of a target)."""
    saved = offline()
    if saved is not None:
        return saved.snapshot()  # type: ignore[attr-defined]
    _connection()
    require_qemu()
    session = current()
    thread = gdb.selected_thread()
    key = (gdb.selected_inferior().num, thread.ptid[1])
    snap = session.snapshots.get(key)
    if snap is not None:
        ping()   # a cached answer only from a stub that still answers
        return snap
    cpu = selected_cpu()
    h = monitor_state(cpu)
    snap = _snapshot_from(h, read_gdb_registers(), cpu)
    # Through the stub a paging entry is one short packet, a page two long
    # ones; from local memory whole pages cost nothing and serve later reads.
    snap.small_reads_exact = not PHYS.shared
    injector = _Injector()
    injector.snap = snap
    snap.msr_reader = injector
    session.snapshots[key] = snap
    return snap


def stop_snapshot(regs: Optional[LiveRegisters] = None) -> Snapshot:
    """The selected vCPU at a breakpoint, for a check made inside stop().

    Built for speed and for gdbext.rules.memo: registers read lazily
    (LiveRegisters), exact-size memory reads with a log, and the monitor
    state kept from an earlier stop while the CS and SS selectors are
    unchanged (see `forget_monitor`).  The vCPU is executing, so not halted.
    No MSR reader: the caller supplies the MSRs it knows.  Not cached.
    `regs`: registers this stop already read, so none is read twice.
    """
    _connection()
    require_qemu()
    cpu = selected_cpu()
    regs = LiveRegisters() if regs is None else regs
    h = monitor_state(cpu, regs)
    snap = _snapshot_from(h, regs, cpu)
    snap.halted = False
    snap.exact_reads = True
    snap.read_log = []
    return snap


def _snapshot_from(h, regs: Dict[str, int], cpu: int) -> Snapshot:
    snap = Snapshot(
        regs=regs,
        segments=dict(h.segments),
        gdtr=h.gdt,
        idtr=h.idt,
        ldtr=h.ldt,
        tr=h.tr,
        cpl=h.cpl,
        halted=h.halted,
        cpu=cpu,
        phys_reader=PHYS.read,
    )
    snap.monitor = h
    if getattr(h, "bases_truncated", False):
        _fix_truncated_bases(snap)
    return snap


def _fix_truncated_bases(snap: Snapshot) -> None:
    """In compatibility mode `info registers` prints 8-digit bases, cutting
    TR's base above 4 GiB; the 16-byte TSS descriptor in the GDT has it whole."""
    from gdbext.model.linear import read_linear
    from gdbext.x86.descriptors import descriptor_at

    with contextlib.suppress(SnapshotError, ValueError):
        table = read_linear(snap, snap.gdtr.base, snap.gdtr.limit + 1)
        entry = descriptor_at(table, snap.gdtr.limit, snap.tr.selector, long_mode=True)
        if entry is not None and entry.kind.startswith("tss") and entry.base & 0xFFFFFFFF == snap.tr.base:
            tr = snap.tr
            snap.tr = type(tr)(tr.selector, entry.base, tr.limit, tr.attrs)


def read_msrs(snap: Snapshot, numbers: List[int], wake: bool = False) -> Dict[int, int]:
    """Several MSRs with one injection session (one CPL switch, one set of restores).
    wake: a halted vCPU may be woken for it (else TargetError says how)."""
    reader = snap.msr_reader
    if isinstance(reader, _Injector):
        return reader.read_many(numbers, wake=wake)
    return {n: snap.msr(n) for n in numbers}


def known_msrs(cpu: int) -> Dict[int, int]:
    """MSR values this session read or saw written on `cpu`, at this stop or an earlier one."""
    session = peek()
    return dict(session.msrs.get(cpu, {})) if session is not None else {}


def efer_unknown() -> Optional[str]:
    """Why EFER is not known (an open QEMU core with no sidecar), else None:
    commands that would decide from EFER.SCE or show EFER say so instead."""
    saved = offline()
    return saved.efer_unknown() if saved is not None else None  # type: ignore[attr-defined]


def read_virtual(address: int, size: int) -> bytes:
    """`size` bytes at a virtual address of the selected vCPU: gdb's own read
    live; through the saved page tables and pages when a saved state is open
    (else from the loaded ELF's sections, as gdb reads them with no target).
    gdb.error, gdb.MemoryError or SnapshotError when they cannot be read."""
    saved = offline()
    if saved is not None:
        from gdbext.model.linear import read_linear

        try:
            return read_linear(saved.snapshot(), address, size)  # type: ignore[attr-defined]
        except SnapshotError:
            # Not saved: the bytes of a loaded ELF file at that address, if any
            # (gdb reads the exec file when there is no target).
            if not gdb.objfiles():
                raise
    else:
        PHYS.leave()   # gdb reads virtual memory through the stub
    return gdb.selected_inferior().read_memory(address, size).tobytes()


def connect_events(connect: bool = True) -> None:
    """Hook gdb's events that make kept state stale; connect=False unhooks
    them (a copy of gdbext loaded from elsewhere takes over)."""
    session_events(connect)
    for event in (gdb.events.cont, gdb.events.stop, gdb.events.exited,
                  gdb.events.memory_changed, gdb.events.register_changed,
                  gdb.events.inferior_call, gdb.events.new_objfile):
        (event.connect if connect else event.disconnect)(invalidate)
    # A register written by the user may be a segment selector (QEMU reloads
    # the cache from the GDT); a new inferior or exit makes all of it stale.
    for event in (gdb.events.register_changed, gdb.events.exited, gdb.events.inferior_call):
        (event.connect if connect else event.disconnect)(_forget_all_monitor)
