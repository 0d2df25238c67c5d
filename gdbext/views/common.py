"""What every view shares: the report error, JSON, hex and warning text."""
from __future__ import annotations

import json
from typing import Callable, List, Optional

from gdbext.model.linear import translate
from gdbext.model.snapshot import (
    Snapshot,
    SnapshotError,
)
from gdbext.x86 import DecodeError
from gdbext.x86.bits import (
    EFER_LMA,
    MASK64,
    is_canonical,
)
from gdbext.x86.bits import va_bits as cr4_va_bits
from gdbext.x86.paging import PagingContext, check_access

Symbolizer = Callable[[int], Optional[str]]


class ReportError(Exception):
    """The report cannot be made; the message is one line for the user."""


def _no_symbols(_addr: int) -> Optional[str]:
    return None


def long_mode(snap: Snapshot) -> bool:
    return bool(snap.efer & EFER_LMA)


def va_bits(snap: Snapshot) -> int:
    return cr4_va_bits(snap.cr4)


def stack_state(snap: Snapshot, sp: int) -> dict:
    """Whether a stack pointer can take a push from the kernel now: the page
    holding sp-8 is present and supervisor-writable (SDM 4.6)."""
    canonical = is_canonical(sp, va_bits(snap))
    out = {"value": sp, "canonical": canonical, "mapped": False, "supervisor_writable": False, "problem": None}
    if not canonical:
        out["problem"] = "non-canonical"
        return out
    if sp == 0:
        out["problem"] = "zero"
        return out
    try:
        ctx = PagingContext.from_snapshot(snap)
        walk = translate(snap, (sp - 8) & MASK64)
    except (SnapshotError, DecodeError) as exc:
        out["problem"] = str(exc)
        return out
    out["mapped"] = walk.pa is not None
    if walk.pa is None:
        out["problem"] = walk.problem or "not mapped"
        return out
    access = check_access(walk, ctx, "write", user=False)
    out["supervisor_writable"] = not access.faults
    if access.faults:
        out["problem"] = access.reason
    out["user"] = walk.user
    return out


def to_json(report: dict) -> str:
    return json.dumps(report, indent=1, sort_keys=False)


def hx(value: Optional[int], width: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:#0{width + 2}x}" if width else f"{value:#x}"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _warnings(lines: List[str]) -> List[str]:
    return [f"warning: {w}" for w in lines]
