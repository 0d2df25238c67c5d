"""Reuse a verdict while nothing it was computed from has changed.

The rules are pure functions of a Snapshot: the registers they read, the
MSRs they read, the segment and table registers from QEMU's monitor, and the
guest-physical bytes they read.  `Inputs.of(snap)` records exactly those
(the snapshot must have been built with a recording register map and a
`read_log`); `Inputs.still_hold(...)` re-reads each of them and compares.
If every one is equal, evaluating the rules again would give the same
answer, so the old answer stands: that is exact, not a guess, and it is
what lets a watched SYSRET in a loop cost a few register reads instead of
a full evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence


@dataclass(frozen=True)
class Inputs:
    """What one evaluation read.

    regs:    register name -> value, only the registers read;
    msrs:    the MSR values the snapshot was given (rdmsr results, not registers);
    reads:   (physical address, size, bytes) of every memory read;
    monitor: the monitor state used (segment caches, GDTR, TR, CPL), compared
             by identity: a new `info registers` is a new object.
    """

    regs: tuple[tuple[str, int], ...]
    msrs: tuple[tuple[int, int], ...]
    reads: tuple[tuple[int, int, bytes], ...]
    monitor: object

    @classmethod
    def of(cls, regs_read: Mapping[str, int], msrs: Mapping[int, int],
           reads: Sequence[tuple[int, int, bytes]], monitor: object) -> "Inputs":
        # A range read twice is compared once.
        seen = {}
        for pa, size, data in reads:
            seen[(pa, size)] = data
        return cls(tuple(sorted(regs_read.items())), tuple(sorted(msrs.items())),
                   tuple((pa, size, data) for (pa, size), data in seen.items()), monitor)

    def still_hold(self, reg: Callable[[str], Optional[int]], msrs: Mapping[int, int],
                   read_phys: Callable[[int, int], bytes], monitor: object) -> bool:
        """True when every recorded input reads the same now.

        Cheapest first: the monitor state, the MSRs, the registers, then memory.
        """
        if monitor is not self.monitor:
            return False
        if tuple(sorted(msrs.items())) != self.msrs:
            return False
        for name, value in self.regs:
            if reg(name) != value:
                return False
        for pa, size, data in self.reads:
            if read_phys(pa, size) != data:
                return False
        return True


class LazyRegisters(dict):
    """Registers read on first use through `read(name)` (None: not available).

    Afterwards the keys present are exactly the registers that were read, which
    is what `Inputs.of` records.  `in` reads the register too: code that asks
    whether a register exists then uses its value.
    """

    def __init__(self, read: Callable[[str], Optional[int]], names: frozenset) -> None:
        super().__init__()
        self._read = read
        self._names = names

    def __missing__(self, name: str) -> int:
        value = self._read(name) if name in self._names else None
        if value is None:
            raise KeyError(name)
        self[name] = value
        return value

    def __contains__(self, name: object) -> bool:
        if dict.__contains__(self, name):
            return True
        try:
            self[name]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def get(self, name, default=None):  # type: ignore[override]
        try:
            return self[name]
        except KeyError:
            return default


class VerdictCache:
    """The last few passing Inputs, per key (vCPU and operand size).

    A loop returning to user mode from two or three call sites keeps all of
    them; `limit` bounds the work of a miss (each candidate is compared).
    """

    def __init__(self, limit: int = 4) -> None:
        self.limit = limit
        self._entries: dict[object, list[Inputs]] = {}
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        self._entries.clear()
        self.hits = self.misses = 0

    def lookup(self, key: object, reg: Callable[[str], Optional[int]], msrs: Mapping[int, int],
               read_phys: Callable[[int, int], bytes], monitor: object) -> bool:
        entries = self._entries.get(key, [])
        for i, inputs in enumerate(entries):
            if inputs.still_hold(reg, msrs, read_phys, monitor):
                if i:
                    entries.insert(0, entries.pop(i))   # most recently used first
                self.hits += 1
                return True
        self.misses += 1
        return False

    def store(self, key: object, inputs: Inputs) -> None:
        entries = self._entries.setdefault(key, [])
        entries.insert(0, inputs)
        del entries[self.limit:]
