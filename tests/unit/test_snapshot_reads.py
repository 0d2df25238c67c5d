"""How a Snapshot reads physical memory: whole pages, memoised, or exactly."""
from __future__ import annotations

import random

from gdbext.model.snapshot import PAGE, SMALL_READ, SegmentCache, Snapshot, TableRegister

NULL = SegmentCache(0, 0, 0, 0)


def _snap(memory: bytes, log: list) -> Snapshot:
    def read(pa: int, size: int) -> bytes:
        log.append((pa, size))
        return memory[pa:pa + size]
    return Snapshot(regs={}, segments={}, gdtr=TableRegister(0, 0), idtr=TableRegister(0, 0), ldtr=NULL,
                    tr=NULL, cpl=0, phys_reader=read)


def test_small_reads_exact_reads_entries_exactly_and_the_same_bytes():
    rng = random.Random(7)
    memory = bytes(rng.randrange(256) for _ in range(4 * PAGE))
    for _ in range(300):
        whole_log: list = []
        exact_log: list = []
        whole, exact = _snap(memory, whole_log), _snap(memory, exact_log)
        exact.small_reads_exact = True
        for _ in range(rng.randrange(1, 8)):
            size = rng.choice([8, 16, SMALL_READ, SMALL_READ + 8, PAGE, 200])
            pa = rng.randrange(0, 4 * PAGE - size)
            assert exact.read_phys(pa, size) == whole.read_phys(pa, size) == memory[pa:pa + size]
        # Each read from the target is a small exact one or a whole page.
        for pa, size in exact_log:
            assert size == PAGE and pa % PAGE == 0 or size <= SMALL_READ


def test_an_entry_of_a_page_already_read_costs_no_read():
    memory = bytes(range(256)) * (2 * PAGE // 256)
    log: list = []
    snap = _snap(memory, log)
    snap.small_reads_exact = True
    assert snap.read_phys(0x10, 8) == memory[0x10:0x18] and log == [(0x10, 8)]
    assert snap.read_phys(0x10, 8) == memory[0x10:0x18] and len(log) == 1      # memoised
    snap.read_phys(0, 200)                                                        # a whole page now
    assert log[-1] == (0, PAGE)
    assert snap.read_phys(0x28, 8) == memory[0x28:0x30] and log[-1] == (0, PAGE)  # from that page
