"""Linear reads over a snapshot (gdbext.model.linear)."""
from __future__ import annotations

import gc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdbext.model import linear as memory
from gdbext.model.linear import read_linear, translate
from gdbext.model.snapshot import SegmentCache, Snapshot, SnapshotError, TableRegister
from tests.support.fakemem import CR0_LONG, CR4_LONG, EFER_LONG, PageTables


def _snapshot(pt: PageTables, reader=None, **regs) -> Snapshot:
    seg = SegmentCache(0, 0, 0, 0)
    values = {"cr0": CR0_LONG, "cr3": pt.root, "cr4": pt.ctx().cr4, "efer": EFER_LONG}
    values.update(regs)
    return Snapshot(regs=values, segments={}, gdtr=TableRegister(0, 0),
                    idtr=TableRegister(0, 0), ldtr=seg, tr=seg, cpl=0,
                    phys_reader=reader or pt.mem.read)


@pytest.fixture
def tables() -> PageTables:
    """Two linear pages back to back over two distant frames, and a 2 MiB page."""
    pt = PageTables()
    pt.map(0xFFFF_8000_0000_0000, 0x30_0000)
    pt.map(0xFFFF_8000_0000_1000, 0x7000_0000)
    pt.map(0x20_0000, 0x4000_0000, 1 << 21, user=True)
    pt.mem.write(0x30_0FF8, b"ABCDEFGH")
    pt.mem.write(0x7000_0000, b"IJKLMNOP")
    pt.mem.write(0x4012_3456, b"large")
    return pt


def test_read_across_a_page_boundary_follows_each_page(tables):
    snap = _snapshot(tables)
    assert read_linear(snap, 0xFFFF_8000_0000_0FF8, 16) == b"ABCDEFGHIJKLMNOP"


def test_read_inside_a_large_page(tables):
    snap = _snapshot(tables)
    assert read_linear(snap, 0x32_3456, 5) == b"large"
    assert read_linear(snap, 0x32_3456, 0) == b""


def test_unmapped_read_names_the_address_and_the_level(tables):
    snap = _snapshot(tables)
    with pytest.raises(SnapshotError) as err:
        read_linear(snap, 0xFFFF_8000_0000_1FFC, 8)  # runs into the next page
    assert str(err.value) == "linear 0xffff800000002000 is not mapped: not present at PT (entry 0x0)"
    with pytest.raises(SnapshotError, match="^linear 0x800000000000 is not mapped: non-canonical"):
        read_linear(snap, 0x8000_0000_0000, 1)


def test_translate_keeps_the_offset_and_is_memoised(tables):
    calls = []

    def reader(pa, size):
        calls.append(pa)
        return tables.mem.read(pa, size)

    snap = _snapshot(tables, reader)
    w = translate(snap, 0xFFFF_8000_0000_1234)
    assert w.pa == 0x7000_0234 and w.va == 0xFFFF_8000_0000_1234
    n = len(calls)
    snap.pages.clear()  # force the walk, not the page memo, to answer
    again = translate(snap, 0xFFFF_8000_0000_1FF0)
    assert again.pa == 0x7000_0FF0 and len(calls) == n
    assert translate(snap, 0x1000).problem.startswith("not present")


def test_memo_is_dropped_with_the_snapshot(tables):
    snap = _snapshot(tables)
    translate(snap, 0x20_0000)
    key = id(snap)
    assert key in memory._walks
    del snap
    gc.collect()
    assert key not in memory._walks


def test_memo_follows_a_changed_cr3(tables):
    snap = _snapshot(tables)
    assert translate(snap, 0x20_0000).pa == 0x4000_0000
    other = PageTables(tables.mem, alloc_base=0x80_0000)
    other.map(0x20_0000, 0x5000)
    snap.regs["cr3"] = other.root
    assert translate(snap, 0x20_0000).pa == 0x5000


def test_paging_disabled_reads_physical(tables):
    snap = _snapshot(tables, cr0=1)
    assert read_linear(snap, 0x30_0FF8, 8) == b"ABCDEFGH"


def test_replayed_snapshot_reads_the_same_bytes(tables):
    snap = _snapshot(tables)
    data = read_linear(snap, 0xFFFF_8000_0000_0FF8, 16)
    replay = Snapshot.from_json(snap.to_json())
    assert read_linear(replay, 0xFFFF_8000_0000_0FF8, 16) == data
    with pytest.raises(SnapshotError, match="not captured"):
        read_linear(replay, 0x20_0000, 1)


def test_five_level_snapshot():
    pt = PageTables(levels=5)
    pt.map(0xFF11_2233_4455_6000, 0x9000)
    pt.mem.write(0x9010, b"la57")
    snap = _snapshot(pt, cr4=CR4_LONG | (1 << 12))
    assert read_linear(snap, 0xFF11_2233_4455_6010, 4) == b"la57"


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 0x3000), st.integers(0, 0x2000))
def test_reads_match_a_flat_copy(offset, size):
    # Three linear pages over scattered frames; the read equals the same
    # slice of the frames laid end to end, or fails past the last page.
    pt = PageTables()
    frames = [0x9000, 0x3000, 0x6000]
    flat = b""
    for i, pa in enumerate(frames):
        page = bytes((i * 7 + j) & 0xFF for j in range(4096))
        pt.mem.write(pa, page)
        pt.map(0x40_0000 + i * 0x1000, pa)
        flat += page
    snap = _snapshot(pt)
    if offset + size <= len(flat):
        assert read_linear(snap, 0x40_0000 + offset, size) == flat[offset:offset + size]
    else:
        with pytest.raises(SnapshotError, match="linear 0x403000 is not mapped"):
            read_linear(snap, 0x40_0000 + offset, size)
