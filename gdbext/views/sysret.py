"""`sysret-check` and the watch's findings as text: a line per rule, with
what the CPU would do.  The data is gdbext.rules.sysret's Report."""
from __future__ import annotations

from gdbext.rules import sysret as rules

_MARK = {"pass": "pass   ", "warning": "WARNING", "error": "ERROR  ", "skipped": "skipped"}


def report_text(report: rules.Report, where: str, *, verbose: bool = True,
                title: str = "sysret-check") -> str:
    lines = [f"{title}: {where}"]
    for r in report.results:
        if not verbose and r.status == "pass":
            continue
        lines.append(f"  {_MARK.get(r.status, r.status):7} {r.rule:17} {r.message}")
        if r.consequence and r.status in ("error", "warning"):
            lines.append(f"  {'':7} {'':17} -> {r.consequence}")
    errors = sum(1 for r in report.results if r.status == "error")
    warnings = sum(1 for r in report.results if r.status == "warning")
    lines.append(f"  {errors} error(s), {warnings} warning(s), "
                 f"{sum(1 for r in report.results if r.status == 'pass')} passed")
    return "\n".join(lines)
