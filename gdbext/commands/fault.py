"""`fault-watch` and `info fault`: exceptions caught at their handlers, from the live IDT.

The watch reads each vCPU's IDT (IDTR from QEMU's monitor, the gates from
memory) and puts one internal breakpoint on each distinct handler of a
present gate of the watched vectors.  Nothing else is watched, so a guest
that takes no exception never stops for it.  At a handler's first instruction,
before it pushed anything, RSP points at the frame the CPU pushed (SDM Vol.
3A 6.14.2); stop() decodes it (gdbext.x86.faults), checks that it is one
(RSP's 16-byte alignment says whether an error code was pushed; RFLAGS bit 1
and the CS/SS RPLs must be right; this vCPU's IDT must have this handler for
the vector), and then stops the guest with the report, or records it.

IDT changes are followed: every LIDT site (from the ELF files gdb loaded, or
found by scanning the kernel's executable pages) has a breakpoint on the
instruction after it, where the new IDTR is read and the gates again; and
every stop the watch sees re-reads the 32 gates (one read) and compares.
New handlers get breakpoints at once; breakpoints on handlers no vCPU uses
any more do nothing and are deleted at the next stop of the guest.

A ring-3 exception (with --user) is followed to its end under TCG: a
one-shot breakpoint on the faulting RIP says whether the kernel ran that
instruction again in the same address space (CR3's root) -- demand paging
and copy-on-write do; a fault that kills the process (SIGSEGV) never does.
Under KVM a breakpoint is an int3 written into guest memory, on a page that
may not even be present yet: `resumed` stays unknown there.
"""
from __future__ import annotations

import dataclasses
import re
from collections import deque
from dataclasses import dataclass, field

import gdb

from gdbext import target
from gdbext.commands.base import GdbextCommand, symbolize, write_fitted
from gdbext.model.linear import read_linear
from gdbext.model.snapshot import Snapshot, SnapshotError
from gdbext.views.common import ReportError, hx, long_mode, report_dict
from gdbext.views.fault import FaultReport, fault_line, fault_report, fault_text
from gdbext.x86 import DecodeError
from gdbext.x86.faults import (
    candidate_vectors,
    decode_frame,
    error_code_pushed,
    frame_problems,
)
from gdbext.x86.idt import decode_idt
from gdbext.x86.insn import scan_lidt
from gdbext.x86.paging import CR3_ROOT_MASK

EXCEPTION_VECTORS = 32
GATE_BYTES = 16
MAX_RECORDS = 64
MAX_RESUME_WATCHES = 64      # faulting RIPs followed at once; past that, `resumed` stays unknown
_ALL = tuple(range(EXCEPTION_VECTORS))


@dataclass
class IdtState:
    """What the watch knows of one vCPU's IDT: handlers by vector (present
    interrupt/trap gates of the first 32 only), and the bytes they came from."""

    base: int
    limit: int
    long_mode: bool
    raw: bytes = b""
    handlers: dict[int, int] = field(default_factory=dict)
    note: str = ""

    def doc(self, cpu: int) -> dict:
        return {"cpu": cpu, "base": self.base, "limit": self.limit, "long_mode": self.long_mode,
                "handlers": {str(v): a for v, a in sorted(self.handlers.items())}, "note": self.note or None}


@dataclass
class FaultWatch:
    armed: bool = False
    vectors: tuple[int, ...] = _ALL
    user: bool = False
    record: bool = False
    idts: dict[int, IdtState] = field(default_factory=dict)
    breakpoints: dict[int, FaultBreakpoint] = field(default_factory=dict)   # handler -> breakpoint
    lidt_breakpoints: list[gdb.Breakpoint] = field(default_factory=list)
    lidt_sites: list[tuple[int, int]] = field(default_factory=list)         # (address, length)
    lidt_source: str = ""
    idt_loads: int = 0
    hits: int = 0
    stops: int = 0
    not_exceptions: int = 0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)         # vector(s) -> CPL -> n
    records: deque[FaultReport] = field(default_factory=lambda: deque(maxlen=MAX_RECORDS))
    last: FaultReport | None = None
    track_resume: bool = False                                              # TCG: follow CPL-3 faults
    resume_breakpoints: dict[int, ResumeBreakpoint] = field(default_factory=dict)   # RIP -> breakpoint

    def resumed(self, report: FaultReport) -> None:
        """`report`'s faulting instruction ran again: say so in its record."""
        done = dataclasses.replace(report, resumed=True)
        for i, r in enumerate(self.records):
            if r is report:
                self.records[i] = done
        if self.last is report:
            self.last = done

    def follow(self, report: FaultReport) -> FaultReport:
        """A CPL-3 record, with `resumed` False until its RIP runs again (None: not followed)."""
        if not self.track_resume or report.cr3 is None:
            return report
        bp = self.resume_breakpoints.get(report.rip)
        if bp is None:
            if len(self.resume_breakpoints) >= MAX_RESUME_WATCHES:
                return report
            bp = self.resume_breakpoints[report.rip] = ResumeBreakpoint(report.rip)
        tracked = dataclasses.replace(report, resumed=False)
        bp.waiting.append((report.cr3 & CR3_ROOT_MASK, tracked))
        bp.enabled = True
        return tracked

    def handler_vectors(self) -> dict[int, set[int]]:
        """Every handler address any vCPU uses for a watched vector -> those vectors."""
        out: dict[int, set[int]] = {}
        for idt in self.idts.values():
            for vector, address in idt.handlers.items():
                if vector in self.vectors:
                    out.setdefault(address, set()).add(vector)
        return out

    def status(self) -> dict:
        first = next(iter(sorted(self.idts.items())), None)
        return {"armed": self.armed, "vectors": list(self.vectors), "user": self.user, "record": self.record,
                "handlers": ({str(v): a for v, a in sorted(first[1].handlers.items()) if v in self.vectors}
                             if first else {}),
                "breakpoints": sorted(self.handler_vectors()),
                "idt": [idt.doc(cpu) for cpu, idt in sorted(self.idts.items())],
                "lidt_sites": [a for a, _ in self.lidt_sites], "lidt_source": self.lidt_source,
                "idt_loads": self.idt_loads, "hits": self.hits, "stops": self.stops,
                "entered_not_by_exception": self.not_exceptions, "counts": self.counts,
                "records": [report_dict(r) for r in self.records] if self.record else [],
                "last": report_dict(self.last) if self.last is not None else None}


def _watch() -> FaultWatch:
    return target.current().of("fault-watch", FaultWatch)


# The watch of the last connection that ended: `fault-watch status` and
# `info fault` after the guest exited show what it caught, nothing more.
_ENDED: list[FaultWatch | None] = [None]


def _delete(bps) -> None:
    for bp in bps:
        if bp.is_valid():
            bp.delete()


def _forget_watch(session: target.Session) -> None:
    watch = session.state.get("fault-watch")
    if watch is None:
        return
    _ENDED[0] = watch
    if not watch.armed:
        return
    _disarm(watch)
    gdb.write("gdbext: fault-watch is off: the connection it watched ended\n")


def _disarm(watch: FaultWatch) -> None:
    _delete(watch.breakpoints.values())
    _delete(watch.lidt_breakpoints)
    _delete(watch.resume_breakpoints.values())
    watch.breakpoints = {}
    watch.lidt_breakpoints = []
    watch.resume_breakpoints = {}
    watch.armed = False


def _prune(*_event) -> None:
    """At a stop of the guest: delete breakpoints on handlers no vCPU uses now
    (stop() callbacks may not delete breakpoints, so they wait until here)."""
    session = target.peek()
    watch = session.state.get("fault-watch") if session is not None else None
    if watch is None or not watch.armed:
        return
    used = watch.handler_vectors()
    for address in [a for a in watch.breakpoints if a not in used]:
        bp = watch.breakpoints.pop(address)
        if bp.is_valid():
            bp.delete()
    for rip in [r for r, bp in watch.resume_breakpoints.items() if not bp.waiting]:
        bp = watch.resume_breakpoints.pop(rip)
        if bp.is_valid():
            bp.delete()


# ---------------------------------------------------------------------------
# Reading the IDT
# ---------------------------------------------------------------------------

def read_idt(snap: Snapshot) -> IdtState:
    """The first 32 gates of the vCPU's IDT, one read."""
    base, limit = snap.idtr.base, snap.idtr.limit
    if not snap.cr0 & 1 or not long_mode(snap):
        return IdtState(base, limit, False, note="not in IA-32e mode: no 64-bit IDT yet; waiting for an LIDT")
    size = min(limit + 1, EXCEPTION_VECTORS * GATE_BYTES)
    try:
        raw = read_linear(snap, base, size)
    except (SnapshotError, DecodeError) as exc:
        return IdtState(base, limit, True, note=f"the IDT at {base:#x} is not readable: {exc}")
    return _state_from(base, limit, raw)


def _state_from(base: int, limit: int, raw: bytes) -> IdtState:
    handlers = {g.vector: g.offset for g in decode_idt(raw, min(limit, len(raw) - 1) if raw else 0)
                if g.present and not g.truncated and g.kind in ("interrupt-gate", "trap-gate")}
    note = "" if handlers else "no present gate among vectors 0-31"
    return IdtState(base, limit, True, raw, handlers, note)


def _refresh(watch: FaultWatch, snap: Snapshot) -> IdtState:
    """Re-read this vCPU's 32 gates (one read) and follow a change."""
    known = watch.idts.get(snap.cpu)
    if known is not None and known.long_mode and (known.base, known.limit) == (snap.idtr.base, snap.idtr.limit):
        try:
            raw = read_linear(snap, known.base, len(known.raw)) if known.raw else b""
        except (SnapshotError, DecodeError):
            raw = None
        if raw == known.raw:
            return known
    state = read_idt(snap)
    watch.idts[snap.cpu] = state
    _place(watch)
    return state


def _place(watch: FaultWatch) -> None:
    """A breakpoint on every handler in use that has none.  (Creating one is
    safe inside stop(): gdb inserts it when it resumes the guest.)"""
    for address in watch.handler_vectors():
        if address not in watch.breakpoints:
            watch.breakpoints[address] = FaultBreakpoint(address)


# ---------------------------------------------------------------------------
# The breakpoints
# ---------------------------------------------------------------------------

def _instruction(address: int) -> str | None:
    try:
        target.PHYS.leave()   # gdb disassembles from virtual memory
        insn = gdb.selected_inferior().architecture().disassemble(address)[0]
    except (gdb.error, gdb.MemoryError, IndexError, ValueError, OverflowError):
        return None
    return insn["asm"].strip()


def _count(watch: FaultWatch, candidates: list[int], cpl: int) -> None:
    key = "/".join(map(str, candidates))
    per = watch.counts.setdefault(key, {})
    per[str(cpl)] = per.get(str(cpl), 0) + 1


def at_handler(address: int) -> tuple[FaultReport | None, bool]:
    """The check at a handler's first instruction: the report of the exception
    (None: not one, or one the watch ignores) and whether to stop the guest.
    Call inside target.in_stop_callback() and PHYS.session()."""
    watch = _watch()
    watch.hits += 1
    live = target.LiveRegisters()
    snap = target.stop_snapshot(live)
    idt = _refresh(watch, snap)
    here = [v for v in watch.vectors if idt.handlers.get(v) == address]
    rsp = live["rsp"]
    pushed = error_code_pushed(rsp)
    if not here or pushed is None:
        watch.not_exceptions += 1      # not this vCPU's handler, or RSP is no frame's
        return None, False
    try:
        frame = decode_frame(read_linear(snap, rsp, 48 if pushed else 40), rsp, pushed)
    except (SnapshotError, DecodeError):
        watch.not_exceptions += 1
        return None, False
    candidates = candidate_vectors(here, pushed)
    if not candidates or frame_problems(frame):
        watch.not_exceptions += 1      # e.g. INT n to a vector that has an error code, or a call
        return None, False
    _count(watch, candidates, frame.cpl)
    if frame.cpl == 3 and not watch.user:
        return None, False             # a kernel handles user faults as normal work
    stop = not watch.record
    if stop:
        # The report is shown: read the monitor again rather than trust kept state.
        target.forget_monitor(snap.cpu)
        snap = target.stop_snapshot(live)
    return fault_report(snap, frame, tuple(candidates), address, symbolize=symbolize), stop


class FaultBreakpoint(gdb.Breakpoint):
    def __init__(self, address: int):
        super().__init__(f"*{address:#x}", gdb.BP_BREAKPOINT, internal=True)
        self.address = address
        self.silent = True

    def stop(self) -> bool:
        try:
            with target.in_stop_callback(), target.PHYS.session():
                report, stop = at_handler(self.address)
            if report is None:
                return False
            # gdb disassembles through its own memory reads: outside the
            # physical-memory session, at the vCPU's own CR3.  Compatibility-mode
            # code would be decoded as 64-bit code: not shown (fault_report says so).
            if report.mode != "compatibility" and (stop or report.cpl != 3):
                report = dataclasses.replace(report, instruction=_instruction(report.rip))
        except KeyboardInterrupt:
            return True
        except Exception as exc:  # noqa: BLE001 - a watch must never kill the session
            gdb.write(f"fault-watch: check at {self.address:#x} failed: {exc}\n", gdb.STDERR)
            return True
        watch = _watch()
        if report.cpl == 3:
            report = watch.follow(report)
        watch.records.append(report)
        watch.last = report
        if not stop:
            return False
        watch.stops += 1
        write_fitted("fault-watch: stopped at an exception\n" + fault_text(report))
        return True


class ResumeBreakpoint(gdb.Breakpoint):
    """The RIP of ring-3 faults still waiting to be resumed: each waits for
    that instruction to run again at CPL 3 under its own CR3 root."""

    def __init__(self, rip: int):
        super().__init__(f"*{rip:#x}", gdb.BP_BREAKPOINT, internal=True)
        self.silent = True
        self.waiting: list[tuple[int, FaultReport]] = []    # (CR3 root, record)

    def stop(self) -> bool:
        try:
            frame = gdb.newest_frame()
            if int(frame.read_register("cs")) & 3 != 3:
                return False
            root = int(frame.read_register("cr3")) & CR3_ROOT_MASK
        except (gdb.error, ValueError):
            return False
        watch = _watch()
        still = []
        for waiting_root, report in self.waiting:
            if waiting_root == root:
                watch.resumed(report)
            else:
                still.append((waiting_root, report))
        self.waiting = still
        if not still:
            self.enabled = False     # deleted at the next stop of the guest (not from stop())
        return False


class LidtDoneBreakpoint(gdb.Breakpoint):
    """The instruction after an LIDT site: IDTR holds the new value here."""

    def __init__(self, address: int):
        super().__init__(f"*{address:#x}", gdb.BP_BREAKPOINT, internal=True)
        self.address = address
        self.silent = True

    def stop(self) -> bool:
        try:
            with target.in_stop_callback(), target.PHYS.session():
                watch = _watch()
                target.forget_monitor(target.selected_cpu())
                snap = target.stop_snapshot()
                watch.idts[snap.cpu] = read_idt(snap)
                watch.idt_loads += 1
                _place(watch)
        except KeyboardInterrupt:
            return True
        except Exception as exc:  # noqa: BLE001
            gdb.write(f"fault-watch: IDT re-read after the LIDT before {self.address:#x} failed: {exc}\n",
                      gdb.STDERR)
            return True
        return False


# ---------------------------------------------------------------------------
# Arming
# ---------------------------------------------------------------------------

def _elf_files() -> list[str]:
    return [o.filename for o in gdb.objfiles()
            if o.filename and not o.filename.startswith("system-supplied") and o.is_valid()]


def _lidt_sites(snap: Snapshot) -> tuple[list[tuple[int, int]], str]:
    """LIDT instructions (address, length) of the kernel's code, proven to
    start an instruction (gdbext.target.code)."""
    code = target.kernel_code(snap)
    found = sorted({site for r in code.regions for site in scan_lidt(r.code, r.base)})
    kept, dropped = code.prove(a for a, _ in found)
    source = code.source + (f"; {dropped} candidate(s) not proven to start an instruction left out"
                            if dropped else "")
    return [(a, n) for a, n in found if a in kept], source


def arm(vectors: tuple[int, ...], user: bool, record: bool) -> str:
    watch = _watch()
    _disarm(watch)
    snap = target.snapshot()
    sites, source = _lidt_sites(snap)
    idts: dict[int, IdtState] = {}
    original = gdb.selected_thread()
    try:
        for thread in gdb.selected_inferior().threads():
            thread.switch()
            s = target.snapshot()
            with target.PHYS.session():
                idts[s.cpu] = read_idt(s)
    finally:
        original.switch()
    watch.vectors, watch.user, watch.record = vectors, user, record
    watch.track_resume = user and not target.uses_kvm()
    watch.idts = idts
    watch.lidt_sites, watch.lidt_source = sites, source
    watch.idt_loads = watch.hits = watch.stops = watch.not_exceptions = 0
    watch.counts = {}
    watch.records.clear()
    watch.last = None
    # After each LIDT candidate; a candidate that is no real instruction start
    # gives an address execution never reaches, or one more harmless re-read.
    watch.lidt_breakpoints = [LidtDoneBreakpoint(a + n) for a, n in sorted({(a, n) for a, n in sites})]
    _place(watch)
    watch.armed = True
    what = "CPL 0 and CPL 3" if user else "CPL 0 (CPL 3 ignored: --user to catch them)"
    how = "recording, never stopping" if record else "stopping the guest"
    head = (f"fault-watch: armed on {len(watch.breakpoints)} handler(s) of vectors {_spans(vectors)}, "
            f"{what}, {how}")
    sites_line = f"  LIDT sites: {len(sites)} from {source}"
    if not sites:
        sites_line += "; IDT changes are seen only at the watch's stops"
    lines = [head, sites_line]
    for cpu, idt in sorted(idts.items()):
        lines.append(f"  vCPU {cpu}: IDT base={hx(idt.base)} limit={hx(idt.limit)}"
                     + (f": {idt.note}" if idt.note else f", {len(idt.handlers)} gate(s) of 0-31 present"))
    return "\n".join(lines)


def _spans(vectors) -> str:
    out, run = [], []
    for v in sorted(vectors):
        if run and v == run[-1] + 1:
            run.append(v)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [v]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(out)


_VECTOR = re.compile(r"0[xX][0-9a-fA-F]+|[1-9][0-9]*|0")


def vector_list(text: str) -> tuple[int, ...]:
    """'0-31', '13,14', '6,13-14' -> the vectors, each in 0..31."""
    import argparse

    vectors: set[int] = set()
    for part in text.split(","):
        ends = part.strip().split("-")
        if len(ends) > 2 or not all(_VECTOR.fullmatch(e.strip()) for e in ends):
            raise argparse.ArgumentTypeError(f"{text!r} is not a list of vectors such as 0-31 or 13,14")
        lo, hi = (int(e, 0) for e in (ends[0], ends[-1]))
        if not lo <= hi < EXCEPTION_VECTORS:
            raise argparse.ArgumentTypeError(f"{part.strip()!r}: vectors are 0..31, low to high")
        vectors.update(range(lo, hi + 1))
    return tuple(sorted(vectors))


vector_list.__name__ = "a vector list"


def _watch_for_status() -> tuple[FaultWatch, bool]:
    try:
        watch = _watch()
        target.require_qemu()
        return watch, False
    except target.TargetError:
        if target.peek() is not None:
            raise
        if _ENDED[0] is None:
            return FaultWatch(), False
        return _ENDED[0], True


class FaultWatchCommand(GdbextCommand):
    """Stop the guest when it takes an exception (vectors 0-31), at the handler.

Usage: fault-watch on [--vectors LIST] [--user] [--record] | off | status [--json]

on: read every vCPU's IDT and break on each distinct handler of a present
gate of the watched vectors (LIST: 0-31 by default, e.g. 13,14 or 0-8,13).
At the handler's first instruction the frame the CPU pushed is decoded: the
vector and name, the faulting RIP with its symbol and instruction, the CPL
and mode it faulted in, RSP/SS, RFLAGS; for #PF the error code bit by bit,
CR2 and the walk of CR2 saying where and why the access was refused; for
#TS #NP #SS #GP (#DF, #AC) the selector error code and the descriptor or
gate it names; for #UD the bytes at RIP.  Exceptions taken at CPL 0 stop
the guest; those at CPL 3 are ignored (a kernel handles them as normal work)
unless --user.  --record never stops: the last 64 are kept, with counts per
vector and CPL (`info fault --all`).  A handler shared by several vectors is
reported with every vector it could be.  LIDT sites (from the ELF files gdb
loaded, else a scan of the kernel's executable pages) are watched, so a new
IDT is followed; needs no symbols.  Only handler entries are watched: a
guest that takes no exception never stops for it (scripts/bench-fault-watch
measures what it costs).
off: remove the breakpoints.  status: vectors, handlers, each vCPU's IDT,
counts, records (--record) and the last exception.
JSON (status): {"armed", "vectors", "user", "record", "handlers": {vector:
address}, "idt": [{"cpu", "base", "limit", "handlers"}], "lidt_sites",
"idt_loads", "counts": {vector: {cpl: n}}, "entered_not_by_exception",
"records", "last"}."""

    NAME = "fault-watch"
    LIVE_ONLY = True
    WRAP_TEXT = True
    COMMAND_CLASS = gdb.COMMAND_BREAKPOINTS

    def arguments(self, parser):
        parser.add_argument("action", choices=("on", "off", "status"))
        parser.add_argument("--vectors", type=vector_list, metavar="LIST")
        parser.add_argument("--user", action="store_true")
        parser.add_argument("--record", action="store_true")

    def run(self, args):
        if args.action != "on" and (args.vectors is not None or args.user or args.record):
            raise gdb.GdbError(f"fault-watch: --vectors, --user and --record go with `on`, not `{args.action}`")
        if args.action == "on":
            text = arm(args.vectors or _ALL, args.user, args.record)
            return _watch().status(), text
        if args.action == "off":
            watch = _watch()
            _disarm(watch)
            return watch.status(), "fault-watch: off"
        watch, ended = _watch_for_status()
        st = watch.status()
        st["connection_ended"] = ended
        return st, _status_text(watch, ended)


def _status_text(watch: FaultWatch, ended: bool) -> str:
    head = "fault-watch: the connection ended; its last status: " if ended else "fault-watch: "
    head += "armed" if watch.armed else "off"
    if watch.armed or watch.hits:
        head += (f"; vectors {_spans(watch.vectors)}; {len(watch.breakpoints)} handler breakpoint(s)"
                 f"\n  {watch.hits} hit(s), {watch.stops} stop(s), {watch.not_exceptions} entered not by "
                 f"an exception\n  {len(watch.lidt_sites)} LIDT site(s), {watch.idt_loads} IDT load(s) seen")
    lines = [head]
    for cpu, idt in sorted(watch.idts.items()):
        lines.append(f"  vCPU {cpu}: IDT base={hx(idt.base)} limit={hx(idt.limit)}"
                     + (f" ({idt.note})" if idt.note else ""))
        cells = [f"{vector:2} {hx(address, 16)}" for vector, address in sorted(idt.handlers.items())
                 if vector in watch.vectors]
        lines += ["    " + "   ".join(cells[i:i + 3]) for i in range(0, len(cells), 3)]
    if watch.counts:
        lines.append("  counts: " + ", ".join(
            f"{key} CPL{cpl}: {n}" for key, per in sorted(watch.counts.items()) for cpl, n in sorted(per.items())))
    if watch.record and watch.records:
        lines.append(f"  records: {len(watch.records)} (info fault --all)")
    if watch.last is not None:
        lines.append("  last: " + fault_line(watch.last))
    return "\n".join(lines)


class InfoFault(GdbextCommand):
    """The last exception fault-watch caught, decoded.

Usage: info fault [--all] [--json]

Shows the report fault-watch printed when it stopped (or recorded): vector
and name, faulting RIP, symbol and instruction, CPL and mode, RSP/SS,
RFLAGS, the error code decoded, CR2 and its page walk for #PF, the
descriptor a selector error code names, the bytes at RIP for #UD.  --all:
every record kept (the last 64, with `fault-watch on --record`), one line
each.  Says so in one line when nothing was caught.
On a saved machine state (gdbext-open): what fault-watch had caught when it
was saved.
JSON: the report {"vector", "name", "error_code", "rip", "cs", "rflags",
"rsp", "ss", "cpl", "mode", "cr2", "symbol", "instruction", "cpu", "source",
"handler", "decoded", "walk", "descriptor", "bytes_at_rip", ...}; with
--all {"records": [reports], "counts"}."""

    NAME = "info fault"
    WRAP_TEXT = True
    COMMAND_CLASS = gdb.COMMAND_STATUS

    def arguments(self, parser):
        parser.add_argument("--all", action="store_true")

    def run(self, args):
        saved = target.offline()
        if saved is not None:
            return _saved_faults(saved, args.all)
        watch, ended = _watch_for_status()
        when = " (the connection ended)" if ended else ""
        if args.all:
            records = list(watch.records) or ([watch.last] if watch.last is not None else [])
            if not records:
                raise ReportError(_none_caught(watch))
            doc = {"records": [report_dict(r) for r in records], "counts": watch.counts}
            return doc, "\n".join([f"{len(records)} exception(s) caught{when}:"] + [fault_line(r) for r in records])
        if watch.last is None:
            raise ReportError(_none_caught(watch))
        last = watch.last
        return last, lambda: (f"last exception{when}:\n" if ended else "") + fault_text(last)


def fault_state() -> dict | None:
    """What `info fault` and `info fault --all` show now, JSON and text, for
    a machine state saved at this stop (gdbext-save); None if nothing was caught."""
    session = target.peek()
    watch = session.state.get("fault-watch") if session is not None else None
    if watch is None or watch.last is None:
        return None
    records = list(watch.records) or [watch.last]
    return {"last": {"json": report_dict(watch.last), "text": fault_text(watch.last)},
            "all": {"json": {"records": [report_dict(r) for r in records], "counts": watch.counts},
                    "text": "\n".join([f"{len(records)} exception(s) caught:"] + [fault_line(r) for r in records])}}


def _saved_faults(saved, everything: bool):
    """`info fault` on a saved machine state: what fault-watch had caught when it was saved."""
    faults = (saved.machine.extra or {}).get("fault")
    if not faults:
        raise ReportError(f"info fault: no exception had been caught when {saved.name} was saved "
                          "(fault-watch was off or caught none)")
    shown = faults["all" if everything else "last"]
    return shown["json"], shown["text"]


def _none_caught(watch: FaultWatch) -> str:
    if watch.armed:
        return "info fault: no exception caught yet (fault-watch is on)"
    return "info fault: no exception caught (fault-watch is off: `fault-watch on` arms it)"


def register() -> None:
    target.on_drop(_forget_watch)
    gdb.events.stop.connect(_prune)
    FaultWatchCommand()
    InfoFault()
