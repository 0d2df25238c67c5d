"""Text that fits the terminal: tables and lines made to gdb's `width`.

With room (or no width: gdb's `set width 0`, pipes, --json) a table is
tabulate's "simple" table, unchanged.  When it is wider than the terminal it
is laid out again, in three steps, each only if the one before did not fit:

1. the `wrap` columns (free text: types in words, symbols, meanings) are
   wrapped at spaces onto more lines of their own cell, with two spaces
   between columns, then with one;
2. the `below` columns leave the table and follow their row on an indented
   line of their own (`used by: syscall CS`);
3. every row becomes a block of `header: value` lines.

Nothing is cut: a word longer than the room stays whole on its own line.
JSON never comes through here.
"""
from __future__ import annotations

import re
import textwrap
from typing import Iterable, List, Optional, Sequence

from tabulate import tabulate

WRAP_MIN = 10       # a wrapped column keeps at least this many characters
BELOW_INDENT = 6
GAP = "  "


def widest(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def fit_lines(lines: Iterable[str], width: Optional[int], indent: int = 2) -> List[str]:
    """Lines (headings, warnings, notes) wrapped at spaces to `width`, the
    continuation indented; unchanged without a width.  An item holding a
    newline is a block laid out already (a table) and is kept as it is."""
    out: List[str] = []
    for line in lines:
        if not width or len(line) <= width or "\n" in line:
            out.append(line)
            continue
        out += textwrap.wrap(line, width=width, initial_indent="", subsequent_indent=" " * _hang(line, width, indent),
                             break_long_words=False, break_on_hyphens=False) or [line]
    return out


def _hang(line: str, width: int, indent: int) -> int:
    """Where a wrapped line continues: under its last column of text that
    follows a two-space gap in its first half (`  pass    SR-CPL    CPL=3:`
    continues under `CPL=3:`), else `indent` past its own indentation."""
    lead = len(line) - len(line.lstrip(" "))
    gaps = [m.end() for m in re.finditer(r"(?<=\S)  +(?=\S)", line[: width // 2])]
    return gaps[-1] if gaps else lead + indent


def fit_table(headers: Sequence[str], rows: Sequence[Sequence[object]], width: Optional[int], *,
              wrap: Sequence[int] = (), below: Sequence[int] = ()) -> str:
    """A table no wider than `width` columns (None or 0: tabulate's, as is)."""
    text = tabulate(rows, headers=headers, tablefmt="simple")
    if not width or widest(text) <= width or not rows:
        return text
    cells = [[_cell(c) for c in row] for row in rows]
    numeric = [all(isinstance(row[i], int) or _cell(row[i]) == "" for row in rows) for i in range(len(headers))]
    columns = list(range(len(headers)))
    kept = [i for i in columns if i not in below]
    moved = [i for i in columns if i in below]
    for shown, away in ((columns, []), (kept, moved)):
        if not shown or (away == [] and shown is kept):
            continue
        for gap in (GAP, " "):
            text = _laid_out(headers, cells, numeric, shown, away, width, wrap, gap)
            if widest(text) <= width:
                return text
    return _records(headers, cells, width)


def _cell(value: object) -> str:
    return "" if value is None else str(value)


def _wrapped(text: str, limit: int) -> List[str]:
    lines: List[str] = []
    for part in text.split("\n"):
        lines += textwrap.wrap(part, width=limit, break_long_words=False, break_on_hyphens=False) or [""]
    return lines


def _laid_out(headers: Sequence[str], cells: List[List[str]], numeric: List[bool], columns: List[int],
              moved: List[int], width: int, wrap: Sequence[int], gap: str) -> str:
    natural = {i: max([len(headers[i])] + [len(line) for row in cells for line in row[i].split("\n")])
               for i in columns}
    limits = dict(natural)
    excess = sum(limits.values()) + len(gap) * (len(columns) - 1) - width
    # Take the excess from the widest wrappable columns first.
    for i in sorted((i for i in columns if i in wrap), key=lambda i: -natural[i]):
        if excess <= 0:
            break
        cut = min(excess, limits[i] - max(WRAP_MIN, len(headers[i])))
        if cut > 0:
            limits[i] -= cut
            excess -= cut
    body = {i: [(_wrapped(row[i], limits[i]) if i in wrap else row[i].split("\n")) for row in cells]
            for i in columns}
    shown = {i: max([len(headers[i])] + [len(line) for lines in body[i] for line in lines]) for i in columns}

    def line(values: List[str]) -> str:
        parts = [v.rjust(shown[i]) if numeric[i] else v.ljust(shown[i]) for i, v in zip(columns, values)]
        return gap.join(parts).rstrip()

    out = [line([headers[i] for i in columns]), gap.join("-" * shown[i] for i in columns)]
    for r, row in enumerate(cells):
        height = max(len(body[i][r]) for i in columns)
        for k in range(height):
            out.append(line([body[i][r][k] if k < len(body[i][r]) else "" for i in columns]))
        extra = "; ".join(f"{headers[i]}: {row[i]}".replace("\n", "; ") for i in moved if row[i])
        if extra:
            out += textwrap.wrap(extra, width=width, initial_indent=" " * BELOW_INDENT,
                                 subsequent_indent=" " * (BELOW_INDENT + 2), break_long_words=False,
                                 break_on_hyphens=False)
    return "\n".join(out)


def _records(headers: Sequence[str], cells: List[List[str]], width: int) -> str:
    """The last resort: each row a block of `header: value` lines."""
    name = max(len(h) for h in headers)
    out: List[str] = []
    for row in cells:
        if out:
            out.append("")
        for h, value in zip(headers, row):
            if not value:
                continue
            for k, part in enumerate(_wrapped(value, max(WRAP_MIN, width - name - 2))):
                out.append(f"{(h if k == 0 else ''):>{name}}  {part}".rstrip())
    return "\n".join(out)
