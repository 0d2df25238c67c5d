"""Every gdb command and convenience function gdbext adds: thin, each parses its
arguments, asks gdbext.target for a snapshot, and renders a view of it.

    info.py     info cpl/msr/gdt/tss/idt, gdbext-symbols, $cpl(), $msr()
    paging.py   pagewalk, ptdump
    sysret.py   sysret-check, sysret-watch, $sysret_ok()
    faultchain.py  fault-chain, gdbext-qemu-log (QEMU's interrupt log)
    base.py     what they share: one-line errors, numbers as gdb reads them
"""
from __future__ import annotations

_registered = [False]


def register() -> None:
    """Create every command and function once, and hook gdb's events."""
    if _registered[0]:
        return
    _registered[0] = True
    import gdb

    from gdbext import target
    from gdbext.commands import faultchain, info, paging, sysret

    faultchain.register()
    info.register()
    paging.register()
    sysret.register()
    target.connect_events()
    if gdb.selected_thread() is not None:
        target.reset_phys_mode()
