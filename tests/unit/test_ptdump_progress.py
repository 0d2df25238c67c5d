"""ptdump at scale, without QEMU: the dumper's progress callback, the --user
pruning, the text's progress and the terminal progress line.

Tables are built in a fake memory the way a kernel writes them (Intel SDM
Vol. 3A 4.5); random layouts use fixed seeds, so a failure reproduces.
"""
from __future__ import annotations

import os
import random

import pytest

from gdbext.views.ptdump import PROGRESS_EVERY, dump_text, dump_view
from gdbext.views.text import TerminalProgress
from gdbext.x86.paging import PTE_P, PTE_RW, PTE_US, PTE_XD, Range, dump
from tests.support.fakemem import PageTables

K4 = 1 << 12
MIB2 = 1 << 21
GIB = 1 << 30
USER_BASE = 0x7F00_0000_0000


def _scattered(pt: PageTables, va: int, n: int, stride: int = 2 * K4, pa: int = 0x4000_0000) -> None:
    """n user 4 KiB pages every `stride` bytes, each its own frame (as bin/pages does)."""
    for i in range(n):
        pt.map(va + i * stride, pa + 2 * i * K4, user=True, nx=True)


# -- the progress callback ---------------------------------------------------

def test_progress_is_called_per_table_with_the_tables_read_and_leaves_found():
    pt = PageTables()
    _scattered(pt, USER_BASE, 700)                 # 700 pages over 3 PTs (256 a PT at stride 8 KiB)
    pt.map_range(0xFFFF_8000_0000_0000, 0, 2 * MIB2, MIB2)   # two 2 MiB leaves in a PD
    calls = []
    read = []

    def reader(pa, size):
        read.append(pa)
        return pt.mem.read(pa, size)

    ranges = dump(reader, pt.ctx(), progress=lambda tables, leaves: calls.append((tables, leaves)))
    tables = len(set(read))
    # One call per table interpreted, after it: PML4, 2 PDPTs, 2 PDs, 3 PTs.
    assert tables == 8 and len(calls) == 8
    assert calls[-1] == (tables, 702)
    assert [t for t, _ in calls] == sorted(t for t, _ in calls)
    assert [n for _, n in calls] == sorted(n for _, n in calls)
    assert sum(r.pages for r in ranges) == 702


def test_an_exception_in_progress_stops_the_dump_there():
    pt = PageTables()
    for i in range(6):                      # six PTs, one page each
        pt.map(USER_BASE + i * MIB2, 0x100_0000 + i * K4, user=True)
    seen = []

    def stop_at_third_pt(tables, leaves):
        seen.append((tables, leaves))
        if leaves == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dump(pt.mem.read, pt.ctx(), progress=stop_at_third_pt)
    # PML4, PDPT, PD, then the PTs one by one: stopped after the third.
    assert seen == [(4, 1), (5, 2), (6, 3)]


# -- --user: pruned at U/S=0, the same ranges --------------------------------

def _random_tables(rng: random.Random) -> PageTables:
    pt = PageTables()
    for _ in range(rng.randrange(20, 200)):
        half = rng.choice((0, 0xFFFF_8000_0000_0000))
        va = half | (rng.randrange(0, 1 << 35) & ~(K4 - 1))
        size = rng.choice((K4, K4, K4, MIB2))
        va &= ~(size - 1)
        try:
            pt.map(va, rng.randrange(0, 1 << 30) & ~(size - 1), size, user=rng.random() < 0.6,
                   writable=rng.random() < 0.5, nx=rng.random() < 0.5)
        except AssertionError:
            continue  # a large page already maps there
    # Upper levels that take U/S or R/W away, or set XD, for whole subtrees.
    for _ in range(rng.randrange(0, 8)):
        va = rng.choice([r.va_start for r in dump(pt.mem.read, pt.ctx())])
        level = rng.choice(("PML4", "PDPT", "PD"))
        entry = pt.get_entry(va, level)
        if entry & PTE_P and level != "PD" or not entry & (1 << 7):
            pt.set_entry(va, level, entry & ~rng.choice((PTE_US, PTE_RW, 0)) | rng.choice((0, PTE_XD)))
    return pt


@pytest.mark.parametrize("seed", range(40))
def test_user_only_is_the_user_part_of_the_whole_dump(seed):
    pt = _random_tables(random.Random(seed))
    ctx = pt.ctx()
    whole = dump(pt.mem.read, ctx)
    assert dump(pt.mem.read, ctx, user_only=True) == [r for r in whole if r.user]


def test_user_only_reads_no_table_below_a_supervisor_entry():
    pt = PageTables()
    _scattered(pt, USER_BASE, 10)
    # A kernel half of 64 PTs under one PML4 entry with U/S=0.
    for i in range(64):
        pt.map(0xFFFF_8880_0000_0000 + i * MIB2, 0x200_0000 + i * K4)
    pt.set_entry(0xFFFF_8880_0000_0000, "PML4", pt.get_entry(0xFFFF_8880_0000_0000, "PML4") & ~PTE_US)
    read = set()

    def reader(pa, size):
        read.add(pa)
        return pt.mem.read(pa, size)

    ranges = dump(reader, pt.ctx(), user_only=True)
    assert len(ranges) == 10 and all(r.user for r in ranges)
    assert len(read) == 4          # PML4, PDPT, PD, PT of the user pages


# -- the text of many ranges --------------------------------------------

def _view(n: int, seed: int = 7, **kw):
    rng = random.Random(seed)
    ranges = []
    va = 0x1000
    for _ in range(n):
        va += rng.choice((1, 2, 3)) * K4
        pages = rng.randrange(1, 4)
        size = rng.choice((K4, K4, MIB2))
        va = (va + size - 1) & ~(size - 1)
        end = va + pages * size
        ranges.append(Range(va_start=va, va_end=end, pa_start=rng.randrange(0, 1 << 40) & ~(size - 1),
                            page_size=size, user=rng.random() < 0.5, writable=rng.random() < 0.5,
                            executable=rng.random() < 0.5, global_=rng.random() < 0.5,
                            pkey=rng.choice((None, rng.randrange(16))), pages=pages))
        va = end
    pt = PageTables()
    return dump_view(ranges, pt.ctx(), tables_read=3, fetched=2, seconds=0.25,
                     problems=[(0x5000, "reserved bits 0x8 set in PT entry 0x9")], **kw)


def test_text_progress_counts_the_rows():
    view = _view(2 * PROGRESS_EVERY + 5)
    rows = []
    text = dump_text(view, progress=rows.append)
    assert rows[-1] == len(text.splitlines()) - 4  # heading, summary, column header, warning
    assert rows == sorted(rows) and len(rows) == 3
    assert text == dump_text(view)               # the same text without a callback


# -- the terminal progress line ----------------------------------------------

class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 1 << 16)
    except BlockingIOError:
        return b""


def test_progress_line_waits_a_second_rewrites_in_place_and_erases():
    r, w = os.pipe()
    try:
        clock = _Clock()
        p = TerminalProgress("ptdump", enabled=True, fd=w, width=lambda: 60, clock=clock)
        p.update(tables=5, entries=100)
        clock.now += 0.9
        p.update(tables=9, entries=2000)
        assert _read_all(r) == b"" and not p.shown      # under a second: nothing
        clock.now += 0.2
        p.update(tables=12, entries=3000)
        line = _read_all(r)
        assert line.startswith(b"\r") and line.endswith(b"\x1b[K")
        assert line[1:-3] == b"ptdump: 12 tables read, 3000 entries, 1.1 s (Ctrl-C stops it)"[:59]
        clock.now += 0.05
        p.update(tables=3, rows=10)                     # too soon; fewer tables never lowers the count
        assert _read_all(r) == b"" and p.tables == 12
        clock.now += 0.1
        p.update(rows=4096)
        assert b"4096 rows written" in _read_all(r)
        p.erase()
        assert _read_all(r) == b"\r\x1b[K"
        p.erase()
        assert _read_all(r) == b""                      # once
    finally:
        os.close(r)
        os.close(w)


def test_progress_line_off_when_not_wanted_or_not_a_terminal():
    r, w = os.pipe()
    try:
        clock = _Clock()
        p = TerminalProgress("ptdump", enabled=False, fd=w, clock=clock)
        clock.now += 5
        p.update(tables=1, entries=1)
        p.erase()
        assert _read_all(r) == b"" and p.tables == 1    # still counts, for the Ctrl-C line
        assert not TerminalProgress.for_terminal("ptdump", True, fd=w).enabled      # a pipe
        assert not TerminalProgress.for_terminal("ptdump", False, fd=w).enabled
    finally:
        os.close(r)
        os.close(w)


def test_user_only_and_progress_over_a_shared_table_replayed():
    """One PT reached from 64 PD slots (as Linux's ESPFIX area reaches a few
    tables thousands of times), half of the slots without U/S: the dumper
    replays the table's runs, and user_only keeps exactly the user half."""
    pt = PageTables()
    for i in range(5):
        pt.map(USER_BASE + i * 2 * K4, 0x300_0000 + 2 * i * K4, user=True)
    shared = pt.get_entry(USER_BASE, "PD")
    for slot in range(1, 65):
        flags = shared if slot % 2 else shared & ~PTE_US
        pt.set_entry(USER_BASE + slot * MIB2, "PD", flags)
    whole = dump(pt.mem.read, pt.ctx())
    calls = []
    user = dump(pt.mem.read, pt.ctx(), user_only=True, progress=lambda t, n: calls.append((t, n)))
    assert user == [r for r in whole if r.user]
    assert sum(r.pages for r in user) == 5 * 33
    assert calls[-1] == (4, 5 * 33)      # 4 tables read; the PT interpreted once, replayed 32 times
