"""Every gdb command and convenience function gdbext adds: thin, each parses its
arguments, asks gdbext.target for a snapshot, and renders a view of it.

    info.py     info cpl/msr/gdt/tss/idt, gdbext-symbols, $cpl(), $msr()
    paging.py   pagewalk, ptdump
    sysret.py   sysret-check, sysret-watch, $sysret_ok()
    iret.py     iret-check, $iret_ok(), the watch's iretq breakpoints
    fault.py    fault-watch, info fault
    faultchain.py  fault-chain, gdbext-qemu-log (QEMU's interrupt log)
    status.py   gdbext-status (the target, where memory is read from)
    state.py    gdbext-save, gdbext-open, gdbext-cpu (saved machine states)
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
    from gdbext.commands import fault, faultchain, info, iret, paging, state, status, sysret
    from gdbext.commands.base import full_name, register_short_names

    info.register()     # first: it makes the `gdbext` and `gdbext info` prefixes
    paging.register()
    sysret.register()
    iret.register()
    fault.register()
    faultchain.register()
    status.register()
    state.register()
    left = register_short_names()
    if left:
        gdb.write("gdbext: another extension owns " + ", ".join(f"`{n}`" for n in left)
                  + "; gdbext's are " + ", ".join(f"`{full_name(n)}`" for n in left) + "\n")
    target.connect_events()
    if gdb.selected_thread() is not None:
        target.reset_phys_mode()


def unload() -> None:
    """Let a copy of gdbext loaded from another tree take over: end the
    session (its watches remove their breakpoints) and unhook every event.
    The new copy's commands replace these ones, name for name."""
    if not _registered[0]:
        return
    from gdbext import target

    target.drop()
    target.connect_events(connect=False)
    _registered[0] = False
