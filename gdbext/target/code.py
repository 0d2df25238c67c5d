"""The kernel's code, where the watches look for the instructions they break on.

From the ELF files gdb has loaded when there are any (their code sections and
symbols), else from the live page tables: every supervisor-executable page
of the upper half, read once per physical frame, leaving out ranges over
64 MiB (a direct map is not code).

Either way each region comes with addresses known to start an instruction:
the ELF's function and label symbols; or, in scanned memory, the entry
points the CPU itself uses (LSTAR, CSTAR, SYSENTER_EIP, the IDT's handlers),
the byte after a run of INT3 padding (where Linux's linker script starts
functions) and the first byte of each mapped range.
`prove` keeps the candidates that decoding forward from one of those lands
on exactly (gdbext.x86.length): the others are bytes inside instructions.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable, List, Sequence, Set, Tuple

import gdb

from gdbext.model.snapshot import Snapshot
from gdbext.x86.bits import CR0_PG
from gdbext.x86.length import padding_starts, proven

SCAN_LIMIT = 64 << 20


@dataclass
class Region:
    base: int
    code: bytes
    starts: List[int]


@dataclass
class KernelCode:
    regions: List[Region] = field(default_factory=list)
    source: str = ""

    def prove(self, candidates: Iterable[int]) -> Tuple[Set[int], int]:
        """(the candidates proven to start an instruction, how many were not)."""
        wanted = sorted(set(candidates))
        kept: Set[int] = set()
        for r in self.regions:
            inside = [a for a in wanted if r.base <= a < r.base + len(r.code)]
            if inside:
                kept |= proven(r.code, r.base, inside, r.starts)
        return kept, len(wanted) - len(kept)


def elf_files() -> List[str]:
    files = []
    for objfile in gdb.objfiles():
        name = objfile.filename
        if name and not name.startswith("system-supplied") and objfile.is_valid():
            files.append(name)
    return files


def _short(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def kernel_code(snap: Snapshot, entries: Sequence[int] = ()) -> KernelCode:
    """The code to look in (see the module docstring).  `entries`: more
    addresses known to start instructions (entry points read elsewhere)."""
    from gdbext.x86.insn import SiteError, code_from_elf

    files = elf_files()
    if files:
        found = KernelCode(source="ELF " + ", ".join(_short(f) for f in files))
        for name in files:
            try:
                found.regions += [Region(a, data, starts) for a, data, starts in code_from_elf(name)]
            except (OSError, SiteError):
                continue
        return found
    return _scan_pages(snap, entries)


def _scan_pages(snap: Snapshot, entries: Sequence[int]) -> KernelCode:
    from gdbext import target
    from gdbext.views.common import long_mode
    from gdbext.x86.paging import PagingContext, dump

    if not snap.cr0 & CR0_PG or not long_mode(snap):
        return KernelCode(source="no ELF loaded and paging is off: no kernel pages to scan")
    ctx = PagingContext.from_snapshot(snap)
    ranges = [r for r in dump(snap.read_phys, ctx) if r.executable and not r.user and r.va_start >> 63]
    known = sorted(set(entries) | set(_cpu_entries(snap)))
    found = KernelCode()
    seen: Set[int] = set()
    total = 0
    for r in ranges:
        size = r.va_end - r.va_start
        if size > SCAN_LIMIT or r.pa_start in seen:
            continue
        seen.add(r.pa_start)
        code = target.PHYS.read(r.pa_start, size)
        # The range's first byte too: code mappings begin with a section, and
        # x86 decoding resynchronises within a few instructions if not.
        starts = [r.va_start] + padding_starts(code, r.va_start) + [a for a in known if r.va_start <= a < r.va_end]
        found.regions.append(Region(r.va_start, code, sorted(set(starts))))
        total += size
    found.source = f"scan of {total >> 10} KiB of kernel-executable pages"
    return found


def _cpu_entries(snap: Snapshot) -> List[int]:
    """Entry points the CPU uses that this stop already knows: the syscall
    MSRs read so far and the handlers of the IDT's present gates."""
    from gdbext import target
    from gdbext.model.snapshot import MSR_CSTAR, MSR_LSTAR, MSR_SYSENTER_EIP
    from gdbext.x86.idt import decode_idt

    out = [v for n, v in target.known_msrs(snap.cpu).items() if n in (MSR_LSTAR, MSR_CSTAR, MSR_SYSENTER_EIP) and v]
    try:
        from gdbext.model.linear import read_linear

        idtr = snap.idtr
        raw = read_linear(snap, idtr.base, min(idtr.limit + 1, 256 * 16))
        out += [g.offset for g in decode_idt(raw, idtr.limit) if g.present]
    except Exception:  # noqa: BLE001 - an unreadable IDT only gives fewer starts
        pass
    return out
