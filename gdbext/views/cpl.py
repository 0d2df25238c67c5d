"""`info cpl`: the privilege level, mode, IOPL and IF, as data and as text."""
from __future__ import annotations

from dataclasses import dataclass

from gdbext.model.snapshot import (
    Snapshot,
)
from gdbext.views.common import hx
from gdbext.views.text import simple_table
from gdbext.x86.bits import (
    RFLAGS_IF,
    cpu_mode,
    rflags_iopl,
    rflags_names,
)


@dataclass(frozen=True)
class CplReport:
    cpu: int
    cpl: int
    mode: str
    iopl: int
    if_: bool                   # JSON "if"
    rflags: int
    rflags_flags: tuple[str, ...]
    cs: int
    ss: int
    halted: bool
    rip: int


def cpl_report(snap: Snapshot) -> CplReport:
    cs = snap.segments["cs"]
    rflags = snap.rflags
    return CplReport(
        cpu=snap.cpu,
        cpl=snap.cpl,
        mode=cpu_mode(snap.cr0, snap.efer, cs.attrs, rflags),
        iopl=rflags_iopl(rflags),
        if_=bool(rflags & RFLAGS_IF),
        rflags=rflags,
        rflags_flags=tuple(rflags_names(rflags)),
        cs=cs.selector,
        ss=snap.segments["ss"].selector,
        halted=snap.halted,
        rip=snap.rip,
    )


def cpl_text(r: CplReport) -> str:
    rows = [
        ("CPL", r.cpl), ("mode", r.mode), ("IOPL", r.iopl), ("IF", int(r.if_)),
        ("RFLAGS", f"{hx(r.rflags)} [{' '.join(r.rflags_flags)}]"),
        ("CS / SS", f"{hx(r.cs, 4)} / {hx(r.ss, 4)}"),
        ("RIP", hx(r.rip)), ("vCPU", f"{r.cpu}{' (halted in HLT)' if r.halted else ''}"),
    ]
    return simple_table(rows)
