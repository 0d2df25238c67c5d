"""`info cpl`: the privilege level, mode, IOPL and IF, as data and as text."""
from __future__ import annotations

from tabulate import tabulate

from gdbext.model.snapshot import (
    Snapshot,
)
from gdbext.views.common import hx
from gdbext.x86.bits import (
    RFLAGS_IF,
    cpu_mode,
    rflags_iopl,
    rflags_names,
)


def cpl_report(snap: Snapshot) -> dict:
    cs = snap.segments["cs"]
    rflags = snap.rflags
    return {
        "cpu": snap.cpu,
        "cpl": snap.cpl,
        "mode": cpu_mode(snap.cr0, snap.efer, cs.attrs, rflags),
        "iopl": rflags_iopl(rflags),
        "if": bool(rflags & RFLAGS_IF),
        "rflags": rflags,
        "rflags_flags": rflags_names(rflags),
        "cs": cs.selector,
        "ss": snap.segments["ss"].selector,
        "halted": snap.halted,
        "rip": snap.rip,
    }


def cpl_text(r: dict) -> str:
    rows = [
        ("CPL", r["cpl"]), ("mode", r["mode"]), ("IOPL", r["iopl"]), ("IF", int(r["if"])),
        ("RFLAGS", f"{hx(r['rflags'])} [{' '.join(r['rflags_flags'])}]"),
        ("CS / SS", f"{hx(r['cs'], 4)} / {hx(r['ss'], 4)}"),
        ("RIP", hx(r["rip"])), ("vCPU", f"{r['cpu']}{' (halted in HLT)' if r['halted'] else ''}"),
    ]
    return tabulate(rows, tablefmt="plain")
