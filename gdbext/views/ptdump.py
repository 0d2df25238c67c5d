"""`ptdump`: every mapping merged into ranges, filtered, as data and as text."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from gdbext.views.common import ABSENT, Plain, _Absent, hx
from gdbext.views.pagewalk import (
    _RIGHTS,
    _SIZES,
    MAX_WARNINGS,
    ContextReport,
    _context_line,
    context_report,
    size_text,
)
from gdbext.views.text import fit_lines
from gdbext.x86.paging import (
    Dumped,
    PagingContext,
    Range,
    find_phys,
    wx_ranges,
)

# Text folds this many or more equal mappings repeated at a fixed stride.
FOLD_AT_LEAST = 4
# The text calls its progress callback every this many rows.
PROGRESS_EVERY = 4096

# progress(rows made so far) while the text is made.
RowProgress = Callable[[int], None]


@dataclass(frozen=True)
class DumpView:
    """One ptdump: the ranges chosen (in order, after --limit) and what the dump cost.

    Both the JSON report and the text are made from this, so they cannot
    disagree; each is made only when asked for, because a Linux dump has
    tens of thousands of ranges.
    """

    ctx: PagingContext
    ranges: tuple[Range, ...]
    total: int                       # ranges that passed the filters, before --limit
    mapped_bytes: int                # of the whole dump, before filtering
    only: str | None = None       # "user" | "kernel" | None
    wx: bool = False
    phys: int | None = None
    phys_vas: tuple[int, ...] = ()
    limit: int | None = None
    va_range: tuple[int, int] | None = None
    tables_read: int = 0
    fetched: int = 0
    seconds: float = 0.0
    problems: tuple[tuple[int, str], ...] = ()
    notes: tuple[str, ...] = ()
    # For the text only (folded_view): the chosen ranges as fold_repeats
    # groups, `ranges` then left empty.
    folded: tuple[tuple[Range, int, int], ...] | None = None


def select_ranges(ranges: Sequence[Range], *, only: str | None = None, wx: bool = False,
                  phys: int | None = None) -> tuple[list[Range], list[int]]:
    """Filter a dump: only="user"|"kernel", wx (user-writable-executable first),
    phys (ranges mapping that physical address).  Returns (ranges, VAs of phys)."""
    chosen = list(ranges)
    if only == "user":
        chosen = [r for r in chosen if r.user]
    elif only == "kernel":
        chosen = [r for r in chosen if not r.user]
    if wx:
        chosen = wx_ranges(chosen)
    vas: list[int] = []
    if phys is not None:
        vas = find_phys(chosen, phys)
        chosen = [r for r in chosen if 0 <= phys - r.pa_start < r.va_end - r.va_start]
    return chosen, vas


def dump_view(ranges: Sequence[Range], ctx: PagingContext, *, only: str | None = None,
              wx: bool = False, phys: int | None = None, limit: int | None = None,
              va_range: tuple[int, int] | None = None, tables_read: int = 0, fetched: int = 0,
              seconds: float = 0.0, problems: Sequence[tuple[int, str]] = (),
              notes: Iterable[str] = ()) -> DumpView:
    """Filter the ranges of a dump as asked and keep what the dump cost."""
    if only not in (None, "user", "kernel"):
        raise ValueError(f"only must be 'user', 'kernel' or None, not {only!r}")
    chosen, vas = select_ranges(ranges, only=only, wx=wx, phys=phys)
    total = len(chosen)
    if limit is not None:
        chosen = chosen[:max(limit, 0)]
    return DumpView(ctx=ctx, ranges=tuple(chosen), total=total,
                    mapped_bytes=sum(r.va_end - r.va_start for r in ranges), only=only, wx=wx,
                    phys=phys, phys_vas=tuple(vas), limit=limit,
                    va_range=tuple(va_range) if va_range else None, tables_read=tables_read,
                    fetched=fetched, seconds=seconds, problems=tuple(problems), notes=tuple(notes))


def folded_view(dumped: Dumped, ctx: PagingContext, *, only: str | None = None, wx: bool = False,
                limit: int | None = None, va_range: tuple[int, int] | None = None, tables_read: int = 0,
                fetched: int = 0, seconds: float = 0.0, problems: Sequence[tuple[int, str]] = (),
                notes: Iterable[str] = ()) -> DumpView:
    """dump_view for the text, made from the runs: a Range for each group of
    repeated mappings, not for each of its 65,000 members.  The filters act
    on whole groups (their members share the rights); --limit counts ranges,
    as in dump_view, and may cut a group short."""
    if only not in (None, "user", "kernel"):
        raise ValueError(f"only must be 'user', 'kernel' or None, not {only!r}")
    groups = dumped.folded(FOLD_AT_LEAST)
    if only == "user":
        groups = [g for g in groups if g[0].user]
    elif only == "kernel":
        groups = [g for g in groups if not g[0].user]
    if wx:
        found = [g for g in groups if g[0].writable and g[0].executable]
        groups = sorted(found, key=lambda g: not g[0].user)
    total = sum(n for _, n, _ in groups)
    if limit is not None:
        kept, room = [], max(limit, 0)
        for r, n, stride in groups:
            if room <= 0:
                break
            kept += _cut(r, min(n, room), stride)
            room -= n
        groups = kept
    return DumpView(ctx=ctx, ranges=(), total=total, mapped_bytes=dumped.mapped_bytes(), only=only, wx=wx,
                    limit=limit, va_range=tuple(va_range) if va_range else None, tables_read=tables_read,
                    fetched=fetched, seconds=seconds, problems=tuple(problems), notes=tuple(notes),
                    folded=tuple(groups))


def _cut(r: Range, count: int, stride: int) -> list[tuple[Range, int, int]]:
    """The first `count` members of a group; fewer than FOLD_AT_LEAST are no
    group, but lines of their own (as fold_repeats leaves them)."""
    if count >= FOLD_AT_LEAST or count == 1:
        return [(r, count, stride if count > 1 else 0)]
    return [(replace(r, va_start=r.va_start + k * stride, va_end=r.va_end + k * stride), 1, 0)
            for k in range(count)]


@dataclass(frozen=True)
class RangeReport:
    """One range of the dump: gdbext.x86.paging.Range with its size."""

    va_start: int
    va_end: int
    pa_start: int
    size: int
    page_size: int
    pages: int
    user: bool
    writable: bool
    executable: bool
    global_: bool               # JSON "global"
    pkey: int | None


@dataclass(frozen=True)
class DumpFilter:
    """What was asked for: only "user"|"kernel"|None, range [START, END) or None."""

    only: str | None
    wx: bool
    phys: int | None
    limit: int | None
    range: tuple[int, int] | None


@dataclass(frozen=True)
class DumpProblem:
    """An entry with reserved bits: not a mapping."""

    va: int
    problem: str


@dataclass(frozen=True)
class PhysFound:
    """--phys PA: every linear address that maps it."""

    pa: int
    vas: tuple[int, ...]


@dataclass(frozen=True)
class DumpReport:
    """`ptdump --json`.  phys is in the JSON only with --phys; cpl and
    phys_source are the command's (the vCPU's CPL, where physical memory
    was read from)."""

    cr3: int
    root: int
    levels: int
    context: ContextReport
    filter: DumpFilter
    ranges: tuple[RangeReport, ...]      # as JSON already (Plain), in RangeReport's shape
    total: int
    shown: int
    mapped_bytes: int
    tables_read: int
    fetched: int
    seconds: float
    problems: tuple[DumpProblem, ...]
    notes: tuple[str, ...]
    phys: PhysFound | _Absent = ABSENT
    cpl: int | None = None
    phys_source: str | None = None


def range_report(rg: Range) -> RangeReport:
    return RangeReport(rg.va_start, rg.va_end, rg.pa_start, rg.va_end - rg.va_start, rg.page_size,
                       rg.pages, rg.user, rg.writable, rg.executable, rg.global_, rg.pkey)


def _range_json(rg: Range) -> dict:
    """report_dict(range_report(rg)), made directly (tests check they agree)."""
    return {"va_start": rg.va_start, "va_end": rg.va_end, "pa_start": rg.pa_start,
            "size": rg.va_end - rg.va_start, "page_size": rg.page_size, "pages": rg.pages,
            "user": rg.user, "writable": rg.writable, "executable": rg.executable,
            "global": rg.global_, "pkey": rg.pkey}


def dump_report(v: DumpView, *, cpl: int | None = None, phys_source: str | None = None) -> DumpReport:
    """The report of a ptdump, for --json.

    Made only when asked for: a Linux dump has tens of thousands of ranges,
    and dataclasses.asdict takes about 10 us for each."""
    return DumpReport(
        cr3=v.ctx.cr3,
        root=v.ctx.root,
        levels=5 if v.ctx.la57 else 4,
        context=context_report(v.ctx),
        filter=DumpFilter(only=v.only, wx=v.wx, phys=v.phys, limit=v.limit,
                          range=tuple(v.va_range) if v.va_range else None),
        ranges=Plain(map(_range_json, v.ranges)),
        total=v.total,
        shown=len(v.ranges),
        mapped_bytes=v.mapped_bytes,
        tables_read=v.tables_read,
        fetched=v.fetched,
        seconds=v.seconds,
        problems=tuple(DumpProblem(va=va, problem=text) for va, text in v.problems),
        notes=tuple(v.notes),
        phys=PhysFound(pa=v.phys, vas=tuple(v.phys_vas)) if v.phys is not None else ABSENT,
        cpl=cpl,
        phys_source=phys_source,
    )


def _size_cell(size: int) -> str:
    text = _SIZES.get(size)
    if text is None:
        text = _SIZES[size] = size_text(size)
    return text


def _rights_cell(r: Range) -> str:
    key = (r.user, r.writable, r.executable, r.global_, r.pkey)
    text = _RIGHTS.get(key)
    if text is None:
        pkey = "" if r.pkey is None else f"  {r.pkey:>4}"
        text = _RIGHTS[key] = (f"{'U' if r.user else 'S'}   {'RW' if r.writable else 'R '}  "
                               f"{'X ' if r.executable else 'NX'} {'G' if r.global_ else '-'}{pkey}")
    return text


def _same_kind(a: Range, b: Range) -> bool:
    return (a.pa_start == b.pa_start and a.va_end - a.va_start == b.va_end - b.va_start
            and a.page_size == b.page_size and a.user == b.user and a.writable == b.writable
            and a.executable == b.executable and a.global_ == b.global_ and a.pkey == b.pkey)


def fold_repeats(ranges: Sequence[Range], least: int = FOLD_AT_LEAST) -> list[tuple[Range, int, int]]:
    """Group runs of ranges that map the same frames with the same rights at a
    fixed VA stride into (first, count, stride); any other range is (r, 1, 0).

    Such runs are real, separate mappings (Linux's ESPFIX area maps one
    stack page 65,536 times, 64 KiB apart), so the JSON lists each one; the
    text says it once with the count, instead of 65,536 near-identical lines.
    """
    out: list[tuple[Range, int, int]] = []
    least = max(least, 2)  # a "run" of one is just a range
    i, n = 0, len(ranges)
    while i < n:
        first = ranges[i]
        j = i + 1
        # Neighbours almost never share a frame; test that first, it is cheap.
        if j < n and ranges[j].pa_start == first.pa_start and _same_kind(first, ranges[j]):
            stride = ranges[j].va_start - first.va_start
            j += 1
            while (j < n and ranges[j].va_start - ranges[j - 1].va_start == stride
                   and _same_kind(first, ranges[j])):
                j += 1
        if j - i >= least:
            out.append((first, j - i, ranges[i + 1].va_start - first.va_start))
            i = j
        else:
            out.append((first, 1, 0))
            i += 1
    return out


# One row: VA start and end, size, PA start, page size, rights.  Narrow
# (under ROW_WIDTH columns): the virtual addresses lose their "0x".
_ROW = "%#018x %#018x %9s %#014x %6s %s"
_ROW_NARROW = "%016x %016x %9s %#014x %6s %s"


def _range_row(r: Range, count: int = 1, stride: int = 0, narrow: bool = False) -> str:
    # Fixed widths, no tabulate: this is the hot loop of the text output,
    # and %-formatting with a fixed pattern is a third faster than f-strings
    # with a nested width.
    size = r.va_end - r.va_start
    row = (_ROW_NARROW if narrow else _ROW) % (
        r.va_start, r.va_end, _SIZES.get(size) or _size_cell(size), r.pa_start,
        _SIZES.get(r.page_size) or _size_cell(r.page_size), _rights_cell(r))
    if count > 1:
        last_end = r.va_end + (count - 1) * stride
        repeat = f"x{count}: the same frames again every {stride:#x}, up to {last_end:#x}"
        row += ("\n      " if narrow else "  ") + repeat
    return row


def _header(narrow: bool) -> str:
    va = 16 if narrow else 18
    return (f"{'VA start':<{va}} {'VA end':<{va}} {'size':>9} {'PA start':<14} {'page':>6} "
            f"U/S R/W X  G")


_HEADER = _header(False)
ROW_WIDTH = len(_HEADER)


def dump_text(v: DumpView, width: int | None = None, progress: RowProgress | None = None) -> str:
    """The ptdump table for people; progress(rows) every PROGRESS_EVERY rows."""
    what = []
    if v.only:
        what.append(v.only + " only")
    if v.wx:
        what.append("writable and executable")
    if v.va_range:
        what.append(f"VA {hx(v.va_range[0])}-{hx(v.va_range[1])}")
    summary = (f"{v.total} ranges{' (' + ', '.join(what) + ')' if what else ''}, "
               f"{v.tables_read} tables read ({v.fetched} fetched from the target), "
               f"{v.seconds * 1000:.1f} ms")
    lines = fit_lines([f"ptdump  {_context_line(context_report(v.ctx))}", summary], width)
    if v.phys is not None:
        found = ", ".join(hx(va) for va in v.phys_vas) or "none"
        lines.append(f"physical {hx(v.phys)} is mapped at: {found}")
    groups = fold_repeats(v.ranges) if v.folded is None else list(v.folded)
    shown = sum(n for _, n, _ in groups)
    if groups:
        pk = any(r.pkey is not None for r, _, _ in groups)
        narrow = bool(width) and width < ROW_WIDTH + (6 if pk else 0)
        lines.append(_header(narrow) + ("  pkey" if pk else ""))
        for start in range(0, len(groups), PROGRESS_EVERY):
            lines += [_range_row(r, n, stride, narrow) for r, n, stride in groups[start:start + PROGRESS_EVERY]]
            if progress is not None:
                progress(min(start + PROGRESS_EVERY, len(groups)))
    elif not v.problems and not v.total:
        lines.append("no mappings")
    if shown < v.total:
        hidden = v.total - shown
        lines.append(f"... {hidden} more (raise --limit)" if groups else
                     f"{hidden} range(s), none shown (raise --limit)")
    lines += fit_lines([f"note: {n}" for n in v.notes], width)
    lines += fit_lines([f"warning: {text} (VA {hx(va)})" for va, text in v.problems[:MAX_WARNINGS]], width)
    if len(v.problems) > MAX_WARNINGS:
        lines.append(f"warning: ... and {len(v.problems) - MAX_WARNINGS} more entries "
                     "with reserved bits (all in --json)")
    return "\n".join(lines)
