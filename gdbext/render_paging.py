"""Page-table reports for `pagewalk` and `ptdump`: as data, and as text.

Pure: no gdb.  Each report is a dict of JSON-ready values (integers stay
integers) built from the decoders' results (gdbext.decode.paging); the text
for people is rendered from the same data, so the two cannot disagree.  The
commands (gdbext.commands.paging) only gather the inputs.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tabulate import tabulate

from gdbext.decode.paging import (
    ACCESSES,
    PF_ID,
    PF_P,
    PF_PK,
    PF_RSVD,
    PF_US,
    PF_WR,
    PagingContext,
    Range,
    Walk,
    check_access,
    find_phys,
    wx_ranges,
)
from gdbext.render import hx

MODES = ("user", "supervisor")
# Text shows this many reserved-bit warnings; a page that is not a page
# table at all would otherwise print one per slot.
MAX_WARNINGS = 10
# Text folds this many or more equal mappings repeated at a fixed stride.
FOLD_AT_LEAST = 4

# #PF error-code bits by the names the SDM gives them (Vol. 3A 4.7,
# "Page-Fault Exceptions", Figure 4-12).
_PF_BITS = ((PF_P, "P"), (PF_WR, "W/R"), (PF_US, "U/S"), (PF_RSVD, "RSVD"), (PF_ID, "I/D"),
            (PF_PK, "PK"))


def pf_bits(code: int | None) -> list[str]:
    """The names of the set bits of a #PF error code."""
    if code is None:
        return []
    return [name for bit, name in _PF_BITS if code & bit]


def size_text(size: int | None) -> str:
    """4096 -> '4 KiB', 0x200000 -> '2 MiB', 0x3000 -> '12 KiB'."""
    if size is None:
        return "-"
    for shift, unit in ((40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} B"


# ---------------------------------------------------------------------------
# The paging context (shared by both commands)
# ---------------------------------------------------------------------------

def context_report(ctx: PagingContext) -> dict:
    """The registers that decide the translation, with the bits a reader needs.

    CR3 bits 11:0 are a PCID when CR4.PCIDE=1 (SDM Vol. 3A 4.10.1), else PWT
    and PCD; either way they are not part of the root table's address.
    """
    return {
        "cr0": ctx.cr0, "cr3": ctx.cr3, "cr4": ctx.cr4, "efer": ctx.efer,
        "root": ctx.root,
        "pcid": ctx.cr3 & 0xFFF if ctx.pcide else None,
        "levels": 5 if ctx.la57 else 4,
        "paging": ctx.paging,
        "wp": ctx.wp, "nxe": ctx.nxe, "smep": ctx.smep, "smap": ctx.smap,
        "pke": ctx.pke, "pks": ctx.pks,
        "pkru": ctx.pkru,
    }


def _context_line(c: dict) -> str:
    pcid = f" PCID={c['pcid']:#x}" if c["pcid"] is not None else ""
    bits = " ".join(f"{name}={int(c[key])}" for name, key in (
        ("CR0.WP", "wp"), ("EFER.NXE", "nxe"), ("CR4.SMEP", "smep"), ("CR4.SMAP", "smap"),
        ("CR4.PKE", "pke")))
    return f"CR3={hx(c['cr3'])} (root table {hx(c['root'])}{pcid})  {c['levels']}-level paging  {bits}"


def pkru_note(ctx: PagingContext) -> str | None:
    """Why protection keys of user pages could not be checked, or None."""
    if ctx.pke and ctx.pkru is None:
        return "PKRU unknown: QEMU's gdb stub does not expose it; give --pkru VALUE to check protection keys"
    return None


# ---------------------------------------------------------------------------
# pagewalk
# ---------------------------------------------------------------------------

def _shift(ctx: PagingContext, depth: int) -> int:
    """VA bit where the index of level `depth` starts (SDM Vol. 3A 4.5,
    Figure 4-8/4-9: 9 index bits per level above the 12-bit page offset)."""
    return 12 + 9 * (len(ctx.level_names) - 1 - depth)


def _level_report(ctx: PagingContext, depth: int, lv) -> dict:
    span = 1 << _shift(ctx, depth)
    out = {
        "name": lv.name,
        "table": lv.table,
        "index": lv.index,
        "entry_address": lv.address,
        "entry": lv.entry,
        "present": lv.present,
        "flags": list(lv.flags),
        "reserved": lv.reserved,
        "leaf": lv.leaf,
        "span": span,
        "problem": None,
    }
    if not lv.present:
        out["problem"] = "not present (P=0)"
    elif lv.reserved:
        out["problem"] = f"reserved bits {lv.reserved:#x} set"
    elif lv.leaf:
        out["page_size"] = span
    return out


def access_report(w: Walk, ctx: PagingContext, modes: Sequence[str], accesses: Sequence[str],
                  rflags_ac: bool) -> dict:
    """access[mode][kind] = {"faults", "error_code", "error_bits", "reason"}."""
    out: dict = {}
    for mode in modes:
        out[mode] = {}
        for kind in accesses:
            a = check_access(w, ctx, kind, user=mode == "user", rflags_ac=rflags_ac)
            out[mode][kind] = {"faults": a.faults, "error_code": a.error_code,
                               "error_bits": pf_bits(a.error_code), "reason": a.reason}
    return out


def walk_report(w: Walk, ctx: PagingContext, *, modes: Sequence[str] = MODES,
                accesses: Sequence[str] = ACCESSES, rflags_ac: bool = False,
                notes: Iterable[str] = ()) -> dict:
    """What the CPU does with `w.va`: every level, the frame, the rights, the accesses."""
    levels = [_level_report(ctx, i, lv) for i, lv in enumerate(w.levels)]
    note_list = list(notes)
    pk = pkru_note(ctx)
    if pk and w.pkey is not None and w.user:
        note_list.append(pk)
    return {
        "va": w.va,
        "canonical": w.canonical,
        "pa": w.pa,
        "page_size": w.page_size,
        "user": w.user,
        "writable": w.writable,
        "executable": w.executable,
        "global": w.global_,
        "pkey": w.pkey,
        "problem": w.problem,
        "problem_level": _problem_level(w),
        "context": context_report(ctx),
        "rflags_ac": rflags_ac,
        "levels": levels,
        "access": access_report(w, ctx, modes, accesses, rflags_ac),
        "notes": note_list,
    }


def _problem_level(w: Walk) -> str | None:
    if w.pa is not None or not w.levels:
        return None
    return w.levels[-1].name


def _rights_words(r: dict) -> str:
    words = ["user" if r["user"] else "supervisor-only",
             "writable" if r["writable"] else "read-only",
             "executable" if r["executable"] else "no-execute"]
    if r["global"]:
        words.append("global")
    if r["pkey"] is not None:
        words.append(f"protection key {r['pkey']}")
    return ", ".join(words)


def _access_cell(a: dict) -> str:
    if not a["faults"]:
        return "ok"
    if a["error_code"] is None:
        return "#GP"
    bits = f" [{' '.join(a['error_bits'])}]" if a["error_bits"] else ""
    return f"#PF {a['error_code']:#x}{bits}"


def _access_lines(r: dict) -> list[str]:
    acc = r["access"]
    kinds = [k for k in ACCESSES if any(k in acc[m] for m in acc)]
    rows = [[mode] + [_access_cell(acc[mode][k]) for k in kinds] for mode in acc]
    lines = [tabulate(rows, headers=["access"] + kinds, tablefmt="simple")]
    # One line per distinct reason: a not-present walk refuses all six
    # accesses for the same reason, and saying it six times hides it.
    why: dict = {}
    for mode in acc:
        for k in kinds:
            a = acc[mode][k]
            if a["faults"] or "not checked" in a["reason"]:
                why.setdefault(a["reason"], []).append(f"{mode} {k}")
    total = sum(len(acc[m]) for m in acc)
    for reason, who in why.items():
        label = "every access" if len(who) == total and total > 1 else ", ".join(who)
        lines.append(f"  {label}: {reason}")
    return lines


def walk_text(r: dict) -> str:
    c = r["context"]
    head = f"pagewalk {hx(r['va'])}  {_context_line(c)}"
    if not r["canonical"]:
        # One plain line: there is no walk to show.
        return (f"pagewalk: {hx(r['va'])} is not canonical for {c['levels']}-level paging "
                f"(bits 63:{47 if c['levels'] == 4 else 56} must all equal bit "
                f"{47 if c['levels'] == 4 else 56}): any access raises #GP (#SS for stack accesses), not #PF")
    lines = [head]
    if not c["paging"]:
        lines.append("paging is disabled (CR0.PG=0): the linear address is the physical address")
    rows = []
    for lv in r["levels"]:
        what = " ".join(lv["flags"])
        if lv["problem"]:
            what = f"{what}  <- {lv['problem']}" if what else f"<- {lv['problem']}"
        elif lv["leaf"]:
            what += f"  -> {size_text(lv['page_size'])} page"
        rows.append((lv["name"], hx(lv["table"]), lv["index"], hx(lv["entry"], 16), what))
    if rows:
        lines.append(tabulate(rows, headers=("level", "table", "index", "entry", "flags"),
                              tablefmt="simple"))
    if r["pa"] is None:
        lines.append(f"not mapped: {r['problem']}")
    else:
        offset = r["va"] & ((r["page_size"] or 1) - 1)
        size = f"{size_text(r['page_size'])} page" if r["page_size"] else "no paging"
        lines.append(f"=> physical {hx(r['pa'])}  ({size}, offset {hx(offset)})")
        lines.append(f"effective rights: {_rights_words(r)}")
    lines += _access_lines(r)
    lines += [f"note: {n}" for n in r["notes"]]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# ptdump
# ---------------------------------------------------------------------------

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


def range_report(rg: Range) -> dict:
    return _range_dicts([rg])[0]


def _range_dicts(ranges: Sequence[Range]) -> list[dict]:
    # One comprehension with a dict display: a function call per range
    # would add a third to the time.
    return [{"va_start": rg.va_start, "va_end": rg.va_end, "pa_start": rg.pa_start,
             "size": rg.va_end - rg.va_start, "page_size": rg.page_size, "pages": rg.pages,
             "user": rg.user, "writable": rg.writable, "executable": rg.executable,
             "global": rg.global_, "pkey": rg.pkey} for rg in ranges]


def dump_report(v: DumpView) -> dict:
    """The JSON document of a ptdump."""
    report = {
        "cr3": v.ctx.cr3,
        "root": v.ctx.root,
        "levels": 5 if v.ctx.la57 else 4,
        "context": context_report(v.ctx),
        "filter": {"only": v.only, "wx": v.wx, "phys": v.phys, "limit": v.limit,
                   "range": list(v.va_range) if v.va_range else None},
        "ranges": _range_dicts(v.ranges),
        "total": v.total,
        "shown": len(v.ranges),
        "mapped_bytes": v.mapped_bytes,
        "tables_read": v.tables_read,
        "fetched": v.fetched,
        "seconds": v.seconds,
        "problems": [{"va": va, "problem": text} for va, text in v.problems],
        "notes": list(v.notes),
    }
    if v.phys is not None:
        report["phys"] = {"pa": v.phys, "vas": list(v.phys_vas)}
    return report


_SIZES: dict = {}
_RIGHTS: dict = {}


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


def _range_row(r: Range, count: int = 1, stride: int = 0) -> str:
    # Fixed widths, no tabulate: this is the hot loop of the text output.
    row = (f"{r.va_start:#018x} {r.va_end:#018x} {_size_cell(r.va_end - r.va_start):>9} "
           f"{r.pa_start:#014x} {_size_cell(r.page_size):>6} {_rights_cell(r)}")
    if count > 1:
        last_end = r.va_end + (count - 1) * stride
        row += f"  x{count}: the same frames again every {stride:#x}, up to {last_end:#x}"
    return row


_HEADER = (f"{'VA start':<18} {'VA end':<18} {'size':>9} {'PA start':<14} {'page':>6} "
           f"U/S R/W X  G")


def dump_text(v: DumpView) -> str:
    """The ptdump table for people."""
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
    lines = [f"ptdump  {_context_line(context_report(v.ctx))}", summary]
    if v.phys is not None:
        found = ", ".join(hx(va) for va in v.phys_vas) or "none"
        lines.append(f"physical {hx(v.phys)} is mapped at: {found}")
    if v.ranges:
        pk = any(r.pkey is not None for r in v.ranges)
        lines.append(_HEADER + ("  pkey" if pk else ""))
        lines += [_range_row(r, n, stride) for r, n, stride in fold_repeats(v.ranges)]
    elif not v.problems:
        lines.append("no mappings")
    if len(v.ranges) < v.total:
        lines.append(f"... {v.total - len(v.ranges)} more (raise --limit)")
    lines += [f"note: {n}" for n in v.notes]
    lines += [f"warning: {text} (VA {hx(va)})" for va, text in v.problems[:MAX_WARNINGS]]
    if len(v.problems) > MAX_WARNINGS:
        lines.append(f"warning: ... and {len(v.problems) - MAX_WARNINGS} more entries "
                     "with reserved bits (all in --json)")
    return "\n".join(lines)
