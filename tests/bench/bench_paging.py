"""Micro-benchmark of the page-table dumper (not a test: run it by hand).

    PYTHONPATH=. python3 tests/bench/bench_paging.py [GiB]     (from the top of the tree)

Builds 4-level tables mapping GiB gibibytes in 4 KiB pages (default 4, i.e.
1,048,576 pages) straight into a dict of 4 KiB pages, then times dump() for:
  merged     every page contiguous and alike: one Range
  scattered  XD flips on every other page: one Range per page (worst case)
  recursive  the merged set plus a self-referencing PML4 slot
and walk() per address.  Reports reads per table to show each is read once.
"""
from __future__ import annotations

import struct
import sys
import time
from collections import Counter

from gdbext.x86.paging import PagingContext, dump, walk

PAGE = 4096
P, RW, XD = 1, 2, 1 << 63
CR0 = (1 << 31) | (1 << 16) | 1
CR4 = 1 << 5
EFER = (1 << 8) | (1 << 10) | (1 << 11)


def build(gib: int, scattered: bool, recursive: bool):
    pages: dict[int, bytes] = {}
    next_table = [0x1_0000_0000]  # tables above the data frames

    def alloc() -> int:
        pa = next_table[0]
        next_table[0] += PAGE
        return pa

    pml4, pdpt = alloc(), alloc()
    pml4e = [0] * 512
    pml4e[0] = pdpt | P | RW
    if recursive:
        pml4e[510] = pml4 | P | RW
    pdpte = [0] * 512
    frame = 0
    for g in range(gib):
        pd = alloc()
        pdpte[g] = pd | P | RW
        pde = []
        for _ in range(512):
            pt = alloc()
            pde.append(pt | P | RW)
            ptes = []
            for i in range(512):
                ptes.append(frame | P | RW | (XD if scattered and i & 1 else 0))
                frame += PAGE
            pages[pt] = struct.pack("<512Q", *ptes)
        pages[pd] = struct.pack("<512Q", *pde)
    pages[pdpt] = struct.pack("<512Q", *pdpte)
    pages[pml4] = struct.pack("<512Q", *pml4e)
    reads: Counter = Counter()
    zero = bytes(PAGE)

    def read(pa: int, size: int) -> bytes:
        base = pa & ~(PAGE - 1)
        if size == PAGE:
            reads[pa] += 1
        return pages.get(base, zero)[pa - base:pa - base + size]

    ctx = PagingContext(cr3=pml4, cr0=CR0, cr4=CR4, efer=EFER)
    return read, ctx, reads, len(pages)


def timed(label: str, gib: int, scattered: bool, recursive: bool) -> None:
    read, ctx, reads, tables = build(gib, scattered, recursive)
    t0 = time.perf_counter()
    ranges = dump(read, ctx)
    dt = time.perf_counter() - t0
    pages = sum(r.pages for r in ranges)
    print(f"{label:10s} {pages:>9,} pages in {len(ranges):>9,} ranges  {dt:6.2f} s  "
          f"({dt / pages * 1e6:.2f} us/page; {tables} tables, max reads per table "
          f"{max(reads.values())})")


def main() -> None:
    gib = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    timed("merged", gib, False, False)
    timed("scattered", gib, True, False)
    timed("recursive", gib, False, True)
    read, ctx, _, _ = build(1, False, False)
    n = 100_000
    t0 = time.perf_counter()
    for i in range(n):
        walk(read, ctx, (i * 0x1000) & 0x3FFF_FFFF)
    dt = time.perf_counter() - t0
    print(f"walk       {n:,} walks in {dt:.2f} s ({dt / n * 1e6:.1f} us/walk)")


if __name__ == "__main__":
    main()
