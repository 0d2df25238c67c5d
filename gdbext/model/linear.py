"""Linear (virtual) memory of a snapshot, through the guest's own page tables.

Reading through the CPU's page tables rather than gdb's own memory reads
means the answer is what the stopped CPU would see with its CR3, even when
gdb's view differs (another thread selected, PhyMemMode switched on).
"""
from __future__ import annotations

import weakref

from gdbext.model.snapshot import PAGE, Snapshot, SnapshotError
from gdbext.x86.bits import MASK64
from gdbext.x86.paging import PagingContext, Walk, walk

# Snapshot is a mutable dataclass, hence unhashable: memoise by id() and drop
# the entry when the snapshot is collected.  Keyed within a snapshot by the
# paging registers too, in case a caller edits snap.regs.
_walks: dict[int, dict] = {}


def _memo(snap: Snapshot) -> dict:
    memo = _walks.get(id(snap))
    if memo is None:
        memo = _walks[id(snap)] = {}
        weakref.finalize(snap, _walks.pop, id(snap), None)
    return memo


def _context(snap: Snapshot, memo: dict) -> PagingContext:
    regs = snap.regs
    key = (regs["cr3"], regs["cr0"], regs["cr4"], regs["efer"], regs.get("pkru"))
    ctx = memo.get(key)
    if ctx is None:
        ctx = memo[key] = PagingContext.from_snapshot(snap)
    return ctx


def translate(snap: Snapshot, va: int) -> Walk:
    """The walk of `va` with the snapshot's CR3, memoised per 4 KiB page."""
    va &= MASK64
    memo = _memo(snap)
    ctx = _context(snap, memo)
    key = (ctx, va & ~(PAGE - 1))
    base = memo.get(key)
    if base is None:
        base = memo[key] = walk(snap.read_phys, ctx, key[1])
    offset = va & (PAGE - 1)
    if offset == 0:
        return base
    # dataclasses.replace() re-runs __init__; a copy with two fields changed is all this needs.
    moved = object.__new__(Walk)
    moved.__dict__.update(base.__dict__, va=va, pa=None if base.pa is None else base.pa + offset)
    return moved


def read_linear(snap: Snapshot, va: int, size: int) -> bytes:
    """`size` bytes at linear address `va`, page by page.

    Raises SnapshotError naming the first unmapped address and why.
    """
    out = bytearray()
    while size > 0:
        w = translate(snap, va)
        if w.pa is None:
            raise SnapshotError(f"linear {w.va:#x} is not mapped: {w.problem}")
        n = min(size, PAGE - (va & (PAGE - 1)))
        out += snap.read_phys(w.pa, n)
        va = (va + n) & MASK64
        size -= n
    return bytes(out)
