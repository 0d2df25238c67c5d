"""`iret-check` and the watch's iretq findings as text: a line per rule, with
what the CPU would do (the same layout as sysret-check's).  The data is
gdbext.rules.iret's IretReport."""
from __future__ import annotations

from gdbext.rules import iret as rules
from gdbext.views import sysret


def report_text(report: rules.IretReport, where: str, *, verbose: bool = True) -> str:
    text = sysret.report_text(report, where, verbose=verbose, title="iret-check")
    if report.frame is not None:
        cpl = report.frame.cs & 3
        goes = "ring 3" if report.ring3 else f"CPL {cpl}"
        head, _, rest = text.partition("\n")
        text = f"{head}\n  returns to {goes}\n{rest}"
    return text
