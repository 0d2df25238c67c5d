"""The one package that talks to gdb and QEMU.

Everything else receives a `Snapshot` (gdbext.model.snapshot) of the vCPU
behind gdb's selected thread.  Snapshots are built once per stop and thrown
away when the target runs again, when the user writes a register or memory,
or when another thread is selected.

Sources, as measured on QEMU 7.2 + gdb 13 (see the project README):
- general, segment-selector and control registers, EFER, FS/GS/KERNEL_GS
  bases: gdb's register set (remote);
- GDTR, IDTR, LDTR, TR, hidden segment caches, CPL, HLT: the monitor's
  `info registers N` for vCPU N (plain `info registers` is always CPU 0);
- physical memory: raw `m` packets with QEMU's PhyMemMode, or a
  memory-mapped shared RAM file when the guest RAM is backed by one (memory);
- other MSRs: `rdmsr` executed in the guest (rdmsr).
Snapshots of all this, cached per stop: snapshots.
A saved machine state (gdbext-save) opened in place of a target answers the
same questions from its file (saved): an offline Session.
"""
from gdbext.target.code import KernelCode, elf_files, kernel_code
from gdbext.target.memory import PHYS, phys_mode, reset_phys_mode
from gdbext.target.remote import (
    LiveRegisters,
    TargetError,
    hmp,
    in_condition,
    in_stop_callback,
    require_qemu,
    uses_kvm,
    selected_cpu,
    send_packet,
)
from gdbext.target.session import Session, current, drop, offline, on_drop, peek
from gdbext.target.snapshots import (
    connect_events,
    forget_monitor,
    invalidate,
    known_msrs,
    monitor_state,
    read_msrs,
    efer_unknown,
    read_virtual,
    snapshot,
    stop_snapshot,
)

__all__ = [
    "KernelCode", "elf_files", "kernel_code",
    "Session", "current", "drop", "on_drop", "peek", "in_condition", "known_msrs",
    "PHYS", "LiveRegisters", "TargetError", "connect_events", "forget_monitor", "hmp", "in_stop_callback",
    "invalidate", "monitor_state", "phys_mode", "read_msrs", "require_qemu", "uses_kvm", "reset_phys_mode", "selected_cpu",
    "send_packet", "snapshot", "stop_snapshot", "offline", "read_virtual", "efer_unknown",
]
