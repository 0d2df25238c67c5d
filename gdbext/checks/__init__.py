"""Checks of the stopped CPU against what an instruction is about to need.

sysret: the SYSRET rules as data, evaluated on a Snapshot (no gdb import).
sites:  where the SYSRET and WRMSR instructions are in code or an ELF file,
        so a debugger can stop just before them.
"""
from gdbext.checks.sysret import (
    ERROR,
    PASS,
    RULES,
    RULES_BY_ID,
    SKIPPED,
    WARNING,
    Report,
    Result,
    Rule,
    check_msr_write,
    evaluate,
)

__all__ = [
    "ERROR",
    "PASS",
    "RULES",
    "RULES_BY_ID",
    "SKIPPED",
    "WARNING",
    "Report",
    "Result",
    "Rule",
    "check_msr_write",
    "evaluate",
]
