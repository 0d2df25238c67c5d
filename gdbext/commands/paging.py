"""The `pagewalk` and `ptdump` commands (thin: parse, snapshot, decode, render).

The walk and the dump themselves are gdbext.x86.paging; the reports and
their text are gdbext.views.pagewalk and gdbext.views.ptdump; reading the
tables a level at a time is gdbext.target.tables.
"""
from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator

import gdb

from gdbext import target
from gdbext.commands.base import (
    GdbextCommand,
    address_arg,
    count_arg,
    number_type,
    output_width,
    parse_int,
)
from gdbext.model.snapshot import Snapshot
from gdbext.target.tables import phys_mode_kept_on_interrupt, prefetch_tables
from gdbext.views.common import to_json
from gdbext.views.pagewalk import (
    _check_kpti_root,
    paging_context,
    walk_report,
    walk_text,
)
from gdbext.views.ptdump import dump_report, dump_text, dump_view, folded_view
from gdbext.views.text import TerminalProgress
from gdbext.x86.bits import RFLAGS_AC
from gdbext.x86.paging import (
    ACCESSES,
    dump_runs,
    walk,
)


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Python's cyclic collector paused while a dump builds its ranges and
    lines: it makes no cycles, but 100,000 Ranges set off full collections
    over every object gdb holds, which made a dump's time per entry grow
    with its size.  Cycles made meanwhile are collected after."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _snapshot(fresh: bool) -> Snapshot:
    if fresh:
        target.invalidate()
    return target.snapshot()


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------

def _common_arguments(parser) -> None:
    parser.add_argument("--cr3", type=parse_int, metavar="VALUE")
    parser.add_argument("--kpti", action="store_true")
    parser.add_argument("--fresh", action="store_true")


class Pagewalk(GdbextCommand):
    """Walk the page tables for one linear address, as the CPU would.

Usage: pagewalk VA [--access read|write|exec] [--user|--supervisor]
                   [--cr3 VALUE] [--kpti] [--pkru VALUE] [--fresh] [--json]

VA is a number or a gdb expression ($rsp, &symbol; quote it if it has spaces).
Shows every level the CPU reads (PML5 when CR4.LA57=1, PML4, PDPT, PD, PT):
the table's physical address, the index, the raw entry and its bits by name
(P RW US PWT PCD A D PS G PAT NX, PK=key, AVL=ignored bits), stopping at a
1 GiB or 2 MiB page, at a not-present entry or at reserved bits, and says
which.  Then the physical address, the page size and the effective rights:
U/S and R/W ANDed over all levels (with CR0.WP), NX ORed (with EFER.NXE),
SMEP/SMAP from CR4 (EFLAGS.AC from the live RFLAGS), protection keys with
PKRU.  QEMU's stub does not expose PKRU: keys are "PKRU unknown" unless
--pkru VALUE is given.

Without --access, every access (read, write, exec) is checked for both
user mode (CPL 3) and supervisor mode; --access picks one, --user or
--supervisor one mode.  Each check says whether it faults, the #PF error
code the CPU would push, and why.  A non-canonical VA is said in one line.

--cr3 VALUE walks other tables (PCID/PWT/PCD bits in 11:0 are masked).
--kpti walks the other half of Linux's page-table-isolation pair: CR3 with
bit 12 flipped, i.e. the user tables when stopped in the kernel and the
kernel tables when stopped in user mode (or on the entry trampoline).
--fresh reads the registers and tables again, as a new stop would.

JSON: {"va", "pa" (null if unmapped), "page_size", "user", "writable",
"executable", "global", "pkey", "problem", "levels": [{"name", "table",
"index", "entry", "flags", "present", "reserved", "leaf", "problem", ...}],
"access": {"user"|"supervisor": {"read"|"write"|"exec": {"faults",
"error_code", "error_bits", "reason"}}}, "context": {"cr0", "cr3", "cr4",
"efer", "root", "pcid", "levels", "wp", "nxe", "smep", "smap", "pke",
"pkru", ...}, "cpl", "phys_source", "notes"}."""

    NAME = "pagewalk"
    PHYS_SESSION = True
    COMMAND_CLASS = gdb.COMMAND_DATA

    def arguments(self, parser):
        parser.add_argument("va", type=address_arg)
        parser.add_argument("--access", choices=ACCESSES)
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--user", action="store_true")
        mode.add_argument("--supervisor", action="store_true")
        parser.add_argument("--pkru", type=number_type("a 32-bit PKRU", 0, 0xFFFFFFFF), metavar="VALUE")
        _common_arguments(parser)

    def run(self, args):
        snap = _snapshot(args.fresh)
        notes: list[str] = []
        ctx = paging_context(snap, args.cr3, args.kpti, args.pkru, notes)
        if args.kpti:
            _check_kpti_root(snap, ctx, notes)
        w = walk(snap.read_phys, ctx, args.va)
        modes = ("user",) if args.user else ("supervisor",) if args.supervisor else ("user", "supervisor")
        accesses = (args.access,) if args.access else ACCESSES
        r = walk_report(w, ctx, modes=modes, accesses=accesses,
                        rflags_ac=bool(snap.rflags & RFLAGS_AC), notes=notes,
                        cpl=snap.cpl, phys_source=target.PHYS.source)
        return r, lambda: walk_text(r, output_width())


# ptdump writes its output this many lines at a time.
WRITE_LINES = 1000


class Ptdump(GdbextCommand):
    """List every mapping of the page tables, merged into ranges.

Usage: ptdump [--user|--kernel] [--wx] [--range START END] [--phys PA]
              [--limit N] [--cr3 VALUE] [--kpti] [--fresh] [--json]

Pages are merged while the linear and the physical addresses both stay
contiguous and the page size and effective rights stay equal.  Each range:
VA start and end, size, PA start, page size, U/S (U: user-accessible at every
level), R/W (RW: writable at every level), X (NX set at no level, with
EFER.NXE), G (global leaf), and the protection key when CR4.PKE/PKS is on.
Rights are the effective ones over all levels, not the leaf's own bits.
The table shows a mapping repeated at a fixed stride (the same frames, the
same rights: Linux's ESPFIX area maps one page 65,536 times) as one line with
its count; --json lists every range.

--user / --kernel   only user-accessible / only supervisor-only ranges
--wx                only writable-and-executable ranges, user ones first
--range START END   only pages overlapping [START, END); START < END
--phys PA           every linear address that maps physical address PA
--limit N           show at most N ranges
--cr3 VALUE         dump other tables (PCID bits masked)
--kpti              the other half of Linux's KPTI pair: CR3 bit 12 flipped
                    (the user tables when stopped in the kernel, the
                    kernel tables when stopped in user mode)
--fresh             read registers and tables again, ignoring this stop's cache

Tables are read whole (4 KiB), once per stop, a level at a time; entries
with reserved bits are not mappings and are listed as warnings (with
--user, only in tables that could map user pages: no table below an entry
with U/S=0 is interpreted).  Typed at a terminal, a dump that runs longer
than a second shows a progress line on stderr, erased at the end; Ctrl-C
stops it, changing nothing in the guest.
JSON: {"ranges": [{"va_start", "va_end", "pa_start", "size", "page_size",
"pages", "user", "writable", "executable", "global", "pkey"}], "cr3", "root",
"levels": 4|5, "total" (before --limit), "shown", "tables_read", "fetched"
(read from the target by this command), "seconds", "problems": [{"va",
"problem"}], "phys": {"pa", "vas"} (with --phys), "context", "filter", "cpl",
"phys_source", "notes"}."""

    NAME = "ptdump"
    # run() holds the PhyMemMode session itself, inside its Ctrl-C guard.
    PHYS_SESSION = False
    COMMAND_CLASS = gdb.COMMAND_DATA

    def arguments(self, parser):
        who = parser.add_mutually_exclusive_group()
        who.add_argument("--user", action="store_true")
        who.add_argument("--kernel", action="store_true")
        parser.add_argument("--wx", action="store_true")
        parser.add_argument("--range", nargs=2, type=address_arg, metavar=("START", "END"))
        parser.add_argument("--phys", type=number_type("a physical address", 0, (1 << 52) - 1), metavar="PA")
        parser.add_argument("--limit", type=count_arg, metavar="N")
        _common_arguments(parser)

    def run(self, args):
        progress = TerminalProgress.for_terminal("ptdump", self.from_tty and not args.json,
                                                 width=output_width)
        try:
            try:
                # One PhyMemMode switch for every stub read, undone (and the
                # mode put back if a Ctrl-C came between the packets) before
                # the output goes out.
                with phys_mode_kept_on_interrupt(), target.PHYS.session(), _no_cyclic_gc():
                    report, text = self._dump(args, progress)
                    out = to_json(report) if args.json else text
            finally:
                progress.erase()
            # Written here, a block of lines at a time, so that a Ctrl-C
            # while a dump of 100,000 lines goes out (or `q` at the pager)
            # ends it with the same one line.
            lines = out.split("\n")
            for start in range(0, len(lines), WRITE_LINES):
                gdb.write("\n".join(lines[start:start + WRITE_LINES]) + "\n")
        except KeyboardInterrupt:
            # Only reads were made, and QEMU's physical-memory mode is as it
            # was (PHYS.session, phys_mode_kept_on_interrupt).
            raise gdb.GdbError(f"gdbext: ptdump interrupted after {progress.tables} tables; "
                               "nothing changed") from None
        return None, None

    def _dump(self, args, progress: TerminalProgress):
        start = time.perf_counter()
        lo, hi = 0, 1 << 64
        if args.range:
            lo, hi = args.range
            if not 0 <= lo < hi <= 1 << 64:
                raise gdb.GdbError(f"ptdump: --range START END needs 0 <= START < END <= 2**64, "
                                   f"got {lo:#x} {hi:#x}")
        snap = _snapshot(args.fresh)
        notes: list[str] = []
        ctx = paging_context(snap, args.cr3, args.kpti, None, notes)
        before = len(snap.pages)
        prefetch_tables(snap, ctx, lo, hi, progress=lambda n: progress.update(tables=n))
        if args.kpti:
            _check_kpti_root(snap, ctx, notes)
        tables = set()

        def read_table(pa: int, size: int) -> bytes:
            tables.add(pa)
            return snap.read_phys(pa, size)

        problems: list = []
        dumped = dump_runs(read_table, ctx, va_start=lo, va_end=hi, problems=problems,
                           user_only=args.user,
                           progress=lambda n, leaves: progress.update(tables=n, entries=leaves))

        def text(view) -> str:
            return dump_text(view, output_width(), progress=lambda rows: progress.update(rows=rows))

        only = "user" if args.user else "kernel" if args.kernel else None
        cost = dict(tables_read=len(tables), fetched=len(snap.pages) - before, problems=problems, notes=notes)
        if not args.json and args.phys is None:
            # The text folds repeated mappings into one line: made from the
            # runs, without a Range for each of Linux's 65,000 ESPFIX ones.
            view = folded_view(dumped, ctx, only=only, wx=args.wx, limit=args.limit, va_range=args.range,
                               seconds=round(time.perf_counter() - start, 6), **cost)
            return None, text(view)
        view = dump_view(dumped.ranges(), ctx, only=only, wx=args.wx, phys=args.phys, limit=args.limit,
                         va_range=args.range, seconds=round(time.perf_counter() - start, 6), **cost)
        if not args.json:
            return None, text(view)
        return dump_report(view, cpl=snap.cpl, phys_source=target.PHYS.source), ""


_registered = [False]


def register() -> None:
    """Create the commands (gdbext.commands.register calls this once)."""
    if _registered[0]:
        return
    _registered[0] = True
    Pagewalk()
    Ptdump()
