"""Page tables read from the target into a snapshot's page memo a level at a
time, so that QEMU's stub is switched to physical mode once per level
instead of once per table."""
from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator

import gdb

from gdbext.model.snapshot import PAGE, Snapshot
from gdbext.target.memory import PHYS
from gdbext.target.remote import TargetError, send_packet
from gdbext.x86.bits import MASK64
from gdbext.x86.paging import ADDRESS_MASK, PTE_P, PTE_PS, PagingContext, table_entries

# What each live snapshot already prefetched: id(snapshot) -> [(root, lo, hi)].
# Snapshots are unhashable dataclasses, hence id() and a finalizer, as in
# gdbext.model.linear.
_prefetched: dict[int, list[tuple[int, int, int]]] = {}


def _done_before(snap: Snapshot) -> list[tuple[int, int, int]]:
    done = _prefetched.get(id(snap))
    if done is None:
        done = _prefetched[id(snap)] = []
        weakref.finalize(snap, _prefetched.pop, id(snap), None)
    return done


# Tables read with one PHYS.read_many at most, so that progress is said and
# Ctrl-C is seen between batches of a large level.
BATCH = 256


def prefetch_tables(snap: Snapshot, ctx: PagingContext, lo: int = 0, hi: int = 1 << 64,
                    progress: Callable[[int], None] | None = None) -> int:
    """Read every page table that maps [lo, hi) into `snap.pages`; return how
    many were fetched from the target.

    Breadth-first: all tables of one level are read, BATCH at a time with
    one PHYS.read_many (one PhyMemMode switch) each, before the next level's
    addresses are known.  It
    only follows table pointers (P=1, PS=0); rights and reserved bits are
    for the dumper to judge, which then finds every table in the memo.  A
    second call on the same stop for the same tables returns at once.
    progress(fetched so far) is called after each batch of BATCH tables.
    """
    if not (ctx.paging and ctx.long_mode):
        return 0
    done = _done_before(snap)
    if any(root == ctx.root and a <= lo and hi <= b for root, a, b in done):
        return 0
    names = ctx.level_names
    whole = lo <= 0 and hi >= 1 << 64
    fetched = 0
    frontier: list[tuple[int, int]] = [(ctx.root, 0)]  # (table, VA it starts at)
    for depth, name in enumerate(names):
        wanted = sorted({t for t, _ in frontier if t // PAGE not in snap.pages})
        for start in range(0, len(wanted), BATCH):
            batch = wanted[start:start + BATCH]
            for pa, data in zip(batch, PHYS.read_many([(t, PAGE) for t in batch])):
                if len(data) == PAGE:
                    snap.pages[pa // PAGE] = data
                    fetched += 1
            if progress is not None:
                progress(fetched)
        if name == "PT":
            break
        frontier = _next_tables(snap, frontier, depth, len(names), None if whole else (lo, hi))
    done.append((ctx.root, lo, hi))
    return fetched


def _next_tables(snap: Snapshot, frontier: list[tuple[int, int]], depth: int, nlevels: int,
                 window: tuple[int, int] | None) -> list[tuple[int, int]]:
    """The tables the entries of this level's tables point to (with the VA each
    starts at, when only a window of VAs is wanted; else 0, so that a table
    reached by many paths is listed once)."""
    # Index bits of this level start at 12 + 9 * (levels below it) (SDM Vol. 3A 4.5).
    shift = 12 + 9 * (nlevels - 1 - depth)
    span = 1 << shift
    sign = ~((1 << (shift + 9)) - 1) & MASK64
    seen = set()
    out = []
    for table, va_base in frontier:
        page = snap.pages.get(table // PAGE)
        if page is None:
            continue  # short read: the dumper will report it
        # Not present; or a 1 GiB / 2 MiB page; or, in a PML5/PML4, a
        # reserved bit the dumper refuses: no table below either way.
        pointers = [(i, e) for i, e in enumerate(table_entries(page)) if e & PTE_P and not e & PTE_PS]
        for i, e in pointers:
            va = 0
            if window is not None:
                va = va_base + (i << shift)
                if depth == 0 and i >= 256:
                    va |= sign  # the upper half is sign-extended
                if va + span <= window[0] or va >= window[1]:
                    continue
            key = (e & ADDRESS_MASK, va)
            if key not in seen:
                seen.add(key)
                out.append(key)
    return out


@contextlib.contextmanager
def phys_mode_kept_on_interrupt() -> Iterator[None]:
    """Around a long read of page tables through the stub: after a Ctrl-C
    (KeyboardInterrupt) inside, QEMU's PhyMemMode is as it was at entry.

    gdbext.target.memory.phys_mode puts the mode back in its `finally`, but
    gdb defers a Ctrl-C that lands in a packet's I/O to the end of that
    packet: landing in phys_mode's own `Qqemu.PhyMemMode:1`, it is raised
    before the `try` is entered, and the mode stays 1 (seen at a terminal,
    where ^C typed during a dump often lands between two levels' reads).
    With guest RAM read without the stub (a shared file, QEMU's process) or
    a saved machine state open (gdbext-open), no mode is switched, and no
    packet is sent here."""
    from gdbext.target.session import offline

    if offline() is not None or PHYS.shared:
        yield
        return
    before = send_packet("qqemu.PhyMemMode").strip()
    try:
        yield
    except KeyboardInterrupt:
        with contextlib.suppress(gdb.error, TargetError, KeyboardInterrupt):
            if send_packet("qqemu.PhyMemMode").strip() != before:
                send_packet("Qqemu.PhyMemMode:" + ("1" if before == b"1" else "0"))
                gdb.execute("maint flush dcache", to_string=True)
        raise
