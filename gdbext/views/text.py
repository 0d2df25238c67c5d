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

import os
import re
import textwrap
import time
from typing import Callable, Iterable, List, Optional, Sequence

from tabulate import tabulate

WRAP_MIN = 10       # a wrapped column keeps at least this many characters
BELOW_INDENT = 6
GAP = "  "


def _numeric_text(text: str) -> bool:
    """Whether tabulate would take this string for a number (it parses
    columns of numeric strings, and aligns and reformats them)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _quick(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> Optional[str]:
    """tabulate's "simple" table (with headers) or "plain" one (without),
    made directly for the cells views make: ints, None, "" and strings of
    one line that are not numbers.  None for anything else (tabulate then).

    tabulate infers each column's type from every cell, which was half the
    cost of `info idt`; the layout is its own: columns two spaces apart,
    integer columns right-aligned and the rest left, headers two wider than
    their text, dashes under them, trailing blanks cut."""
    ncols = len(headers) if headers else len(rows[0]) if rows else 0
    if not ncols or any(len(row) != ncols for row in rows):
        return None
    cells: List[List[str]] = []
    kinds = [0] * ncols        # bit 0: an int seen, bit 1: a string seen
    for row in rows:
        out = []
        for i, value in enumerate(row):
            cls = type(value)
            if value is None or value == "":   # tabulate's blanks: no part in the column's type
                out.append("")
                continue
            if cls is int:
                kinds[i] |= 1
                out.append(str(value))
            elif cls is str and "\n" not in value and value == value.strip() and not _numeric_text(value):
                kinds[i] |= 2
                out.append(value)
            else:
                return None
        cells.append(out)
    if any(not h or h != h.strip() or "\n" in h or _numeric_text(h) for h in headers):
        return None   # headers tabulate might treat differently
    right = [k == 1 for k in kinds]
    pad = 2 if headers else 0
    widths = [max([len(h) + pad for h in headers[i:i + 1]] + [len(r[i]) for r in cells]) for i in range(ncols)]

    def line(values: Sequence[str]) -> str:
        return GAP.join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)).rstrip()

    lines = [line(headers), GAP.join("-" * w for w in widths)] if headers else []
    lines += [line(r) for r in cells]
    return "\n".join(lines)


def simple_table(rows: Sequence[Sequence[object]], headers: Sequence[str] = ()) -> str:
    """tabulate(rows, headers, "simple") with headers, "plain" without; faster."""
    text = _quick(rows, headers)
    if text is None:
        text = tabulate(rows, headers=list(headers), tablefmt="simple") if headers else \
            tabulate(rows, tablefmt="plain")
    return text


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
    text = simple_table(rows, headers)
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


class TerminalProgress:
    """A long command's progress line: on stderr when it is a terminal, once
    the command has run DELAY seconds, rewritten in place with \\r at most
    ten times a second, and erased at the end (`erase`).

    Written to the file descriptor itself, not through gdb: gdb's stderr
    stream is captured with the output by `gdb.execute(..., to_string=True)`,
    and the line must never be part of a command's output."""

    DELAY = 1.0
    EVERY = 0.1

    def __init__(self, what: str, enabled: bool, fd: int = 2,
                 width: Callable[[], Optional[int]] = lambda: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.enabled = enabled
        self.fd = fd
        self.width = width
        self.clock = clock
        self.started = clock()
        self.next = self.started + self.DELAY
        self.shown = False
        self.tables = 0
        self.entries = 0

    @classmethod
    def for_terminal(cls, what: str, wanted: bool, fd: int = 2, **kw) -> TerminalProgress:
        """Enabled when `wanted` (typed at a terminal, not --json) and `fd` is a terminal."""
        try:
            tty = os.isatty(fd)
        except OSError:
            tty = False
        return cls(what, enabled=wanted and tty, fd=fd, **kw)

    def update(self, tables: Optional[int] = None, entries: Optional[int] = None,
               rows: Optional[int] = None) -> None:
        """Count tables read (the most any stage said), entries found, rows written."""
        if tables is not None and tables > self.tables:
            self.tables = tables
        if entries is not None:
            self.entries = entries
        if not self.enabled:
            return
        now = self.clock()
        if now < self.next:
            return
        self.next = now + self.EVERY
        line = (f"{self.what}: {self.tables} tables read, {self.entries} entries"
                + (f", {rows} rows written" if rows is not None else "")
                + f", {now - self.started:.1f} s (Ctrl-C stops it)")
        width = self.width() or 80
        # Marked shown first: a Ctrl-C right after the write must still erase it.
        self.shown = True
        self._write("\r" + line[:max(width - 1, 1)] + "\x1b[K")

    def erase(self) -> None:
        if self.shown:
            self._write("\r\x1b[K")
            self.shown = False

    def _write(self, text: str) -> None:
        try:
            os.write(self.fd, text.encode())
        except OSError:
            self.enabled = False
