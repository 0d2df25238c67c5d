"""What every view shares: the report error, JSON, hex and warning text.

Every report is a dataclass, frozen where it can be, whose fields are the
JSON document's keys in order; `to_json` makes the document with
`dataclasses.asdict` (`report_dict`), so no field is ever copied by hand.
Two conventions keep the JSON as it was when reports were dicts:

- a field named after a Python keyword ends in "_" (`if_`, `global_`); its
  key does not;
- a field whose key appears only sometimes (a leaf's "page_size", ptdump's
  "phys") defaults to ABSENT and is left out of the JSON while it is.
"""
from __future__ import annotations

import dataclasses
import json
import keyword
from typing import Any, Callable, List, Optional

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


class _Absent:
    """The value of a field that is not in the JSON document (see the module's
    docstring).  There is one, ABSENT; copies are itself, so `is ABSENT` holds
    after dataclasses.asdict, which deep-copies every leaf value."""

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False

    def __copy__(self) -> _Absent:
        return self

    def __deepcopy__(self, memo) -> _Absent:
        return self

    def __reduce__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()


def _json_key(name: str) -> str:
    return name[:-1] if name.endswith("_") and keyword.iskeyword(name[:-1]) else name


# Each report class's (attribute, JSON key) pairs: the layout of a class,
# computed once, not state.
_LAYOUTS: dict[type, tuple[tuple[str, str], ...]] = {}
_LEAVES = (int, str, bool, float, type(None))


class Plain(tuple):
    """A tuple of values that are JSON already (dicts of ints, strings...):
    `report_dict` takes it as it is.  For the 65,000 ranges of a Linux
    ptdump, whose dataclasses would cost more than the dump itself."""


def _plain(value: Any) -> Any:
    """dataclasses.asdict's result with the conventions above, made without
    its deep copy of every leaf (a Linux ptdump has 66,000 ranges; asdict
    took twice as long as the rest of the dump)."""
    cls = type(value)
    if cls in _LEAVES:
        return value
    layout = _LAYOUTS.get(cls)
    if layout is None and dataclasses.is_dataclass(cls):
        layout = _LAYOUTS[cls] = tuple((f.name, _json_key(f.name)) for f in dataclasses.fields(cls))
    if layout is not None:
        out = {}
        for attr, key in layout:
            item = getattr(value, attr)
            if item is not ABSENT:
                out[key] = _plain(item)
        return out
    if cls is Plain:
        return list(value)
    if cls in (list, tuple):
        return cls(_plain(v) for v in value)
    if cls is dict:
        return {k: _plain(v) for k, v in value.items()}
    return value


def report_dict(report: Any) -> Any:
    """A report as dataclasses.asdict makes it, with the conventions above:
    dicts for the dataclasses, tuples left tuples (JSON arrays in `to_json`).

    A report that is not a dataclass (sysret-check's document, made by
    gdbext.rules.sysret) is returned as it is."""
    if dataclasses.is_dataclass(report) and not isinstance(report, type):
        return _plain(report)
    return report


def _no_symbols(_addr: int) -> Optional[str]:
    return None


def long_mode(snap: Snapshot) -> bool:
    return bool(snap.efer & EFER_LMA)


def va_bits(snap: Snapshot) -> int:
    return cr4_va_bits(snap.cr4)


@dataclasses.dataclass(frozen=True)
class StackState:
    """Whether a stack pointer can take a push from the kernel now.

    "user" (the page's U/S) is in the JSON only once the page was found mapped."""

    value: int
    canonical: bool
    mapped: bool = False
    supervisor_writable: bool = False
    problem: str | None = None
    user: bool | _Absent = ABSENT


def stack_state(snap: Snapshot, sp: int) -> StackState:
    """Whether a stack pointer can take a push from the kernel now: the page
    holding sp-8 is present and supervisor-writable (SDM 4.6)."""
    canonical = is_canonical(sp, va_bits(snap))
    if not canonical:
        return StackState(sp, canonical, problem="non-canonical")
    if sp == 0:
        return StackState(sp, canonical, problem="zero")
    try:
        ctx = PagingContext.from_snapshot(snap)
        walk = translate(snap, (sp - 8) & MASK64)
    except (SnapshotError, DecodeError) as exc:
        return StackState(sp, canonical, problem=str(exc))
    if walk.pa is None:
        return StackState(sp, canonical, problem=walk.problem or "not mapped")
    access = check_access(walk, ctx, "write", user=False)
    return StackState(sp, canonical, mapped=True, supervisor_writable=not access.faults,
                      problem=access.reason if access.faults else None, user=walk.user)


def to_json(report: Any) -> str:
    """The --json text of a report: `report_dict` as JSON, in field order."""
    # One line, by the C encoder (indent would take the pure-Python one: 11 ms
    # for an IDT instead of 1).
    return json.dumps(report_dict(report), sort_keys=False)


def hx(value: Optional[int], width: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:#0{width + 2}x}" if width else f"{value:#x}"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _warnings(lines: List[str]) -> List[str]:
    return [f"warning: {w}" for w in lines]
