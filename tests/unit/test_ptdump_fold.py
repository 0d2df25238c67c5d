"""ptdump's text made from the runs (folded_view) is the text made from every
Range (dump_view), whatever the filters."""
from __future__ import annotations

import random

from gdbext.views.ptdump import dump_text, dump_view, folded_view
from gdbext.x86.paging import dump, dump_runs
from tests.support.fakemem import PAGE, PageTables

MIB2 = 2 << 20


def _random_tables(rng: random.Random) -> PageTables:
    pt = PageTables()
    va = 0x40_0000
    for _ in range(rng.randrange(1, 12)):
        kind = rng.randrange(4)
        rights = dict(user=rng.random() < 0.5, writable=rng.random() < 0.5, nx=rng.random() < 0.5)
        if kind == 0:       # a contiguous run
            n = rng.randrange(1, 40)
            pt.map_range(va, 0x100_0000 + rng.randrange(64) * PAGE, n * PAGE, **rights)
            va += n * PAGE
        elif kind == 1:     # one frame again and again at a stride (as ESPFIX)
            stride = rng.choice([PAGE, 2 * PAGE, 0x10000])
            frame = 0x200_0000 + rng.randrange(8) * PAGE
            for k in range(rng.randrange(2, 30)):
                pt.map(va + k * stride, frame, **rights)
            va += 30 * stride
        elif kind == 2:     # large pages
            va = (va + MIB2 - 1) & ~(MIB2 - 1)
            for k in range(rng.randrange(1, 6)):
                pt.map(va + k * MIB2, 0x4000_0000 + rng.choice([k, 0]) * MIB2, MIB2, **rights)
            va += 6 * MIB2
        else:               # a gap
            va += rng.randrange(1, 600) * PAGE
        va = va if va < 1 << 46 else 0x40_0000
    return pt


def test_folded_text_equals_the_text_of_every_range():
    rng = random.Random(4711)
    folded_groups = 0
    for _ in range(120):
        pt = _random_tables(rng)
        ctx = pt.ctx()
        ranges = dump(pt.mem.read, ctx)
        for only in (None, "user", "kernel"):
            for wx in (False, True):
                for limit in (None, 0, 1, 2, 3, 5, 9, rng.randrange(0, 60)):
                    expected = dump_text(dump_view(ranges, ctx, only=only, wx=wx, limit=limit))
                    view = folded_view(dump_runs(pt.mem.read, ctx), ctx, only=only, wx=wx, limit=limit)
                    assert dump_text(view) == expected, (only, wx, limit)
                    folded_groups += any(n > 1 for _, n, _ in view.folded)
    assert folded_groups > 40   # repeats were folded, not only single ranges compared


def test_the_json_of_a_range_is_its_range_report():
    from gdbext.views.common import report_dict
    from gdbext.views.ptdump import _range_json, range_report

    rng = random.Random(99)
    for _ in range(50):
        pt = _random_tables(rng)
        for r in dump(pt.mem.read, pt.ctx()):
            assert _range_json(r) == report_dict(range_report(r))
            assert list(_range_json(r)) == list(report_dict(range_report(r)))   # key order too


def _greedy_fold(ranges, least):
    """views.ptdump.fold_repeats, the reference."""
    from gdbext.views.ptdump import fold_repeats
    return fold_repeats(ranges, least)


def test_folded_runs_equal_the_reference_fold_on_long_and_broken_groups():
    from gdbext.x86.paging import Dumped

    rng = random.Random(31)
    for _ in range(400):
        flat: list[int] = []
        va = 0x1000_0000
        for _ in range(rng.randrange(1, 6)):
            count = rng.choice([1, 2, 3, 4, 5, 17, 64, 1000, 4097])
            stride = rng.choice([0x1000, 0x2000, 0x10000])
            frame = 0x100000 * rng.randrange(1, 4)
            key = rng.choice([0x6, 0x2, 0x8000000000000006])
            for k in range(count):
                if rng.random() < 0.002:      # a break inside the group
                    va += 0x1000
                    key ^= rng.choice([0, 0x4])
                flat += [va, va + 0x1000, frame + 0x1000, 0x1000, key, 1]
                va += stride
        dumped = Dumped(flat, pk=False)
        for least in (2, 4):
            assert dumped.folded(least) == _greedy_fold(dumped.ranges(), least)
