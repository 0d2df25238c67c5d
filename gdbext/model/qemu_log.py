"""QEMU's interrupt log (`-d int,cpu_reset -D FILE`) read into the chain of
exceptions that led to a triple fault.

QEMU (TCG) writes, for every event it delivers in protected or long mode
(target/i386/tcg/seg_helper.c, do_interrupt_all), one line and then the
register dump `info registers` prints (x86_cpu_dump_state):

    check_exception old: 0xffffffff new 0xd           (exceptions only)
         1: v=0d e=0032 i=0 cpl=0 IP=0008:0000000000100027 pc=0000000000100027
            SP=0010:0000000000006f08 env->regs[R_EAX]=000000002badb002
    EAX=2badb002 EBX=... (RAX=... in 64-bit code) ... EFER=0000000000000000

all of it on one line up to "env->regs[R_EAX]=" (older QEMUs print " EAX="
there, and " CR2=" takes its place for a #PF).  Before the record of an
exception (not of an INT n or a hardware interrupt), excp_helper.c's
check_exception logs `check_exception old: 0xOLD new 0xNEW`: OLD is the
contributory or page-fault exception being delivered (0xffffffff when none),
NEW the one just raised; a record v=08 after it is QEMU's escalation to a
double fault (Intel SDM Vol. 3A 6.15, "Interrupt 8", tables 6-4 and 6-5).
With OLD = 0x8 it logs `Triple fault` instead (under cpu_reset) and asks for
a reset, which -no-reboot turns into a shutdown and -no-shutdown into a
pause, with the vCPU state intact.  QEMU 8 and later also log
`Servicing hardware INT=0xNN` before a hardware interrupt's record (7.2 does
that only under -d in_asm).  `CPU Reset (CPU n)` starts a reset's dump.
The same lines in QEMU 7.2 and 10.0.

Nothing on a record names the vCPU: with several vCPUs the records of all
of them interleave, and a chain may mix vCPUs.

A busy guest logs a record per interrupt (about 1.3 KiB each in 64-bit
code), so only the tail of the file is read (read_tail), and a watcher
(TripleFaultWatch) reads only what was appended since it last looked.
No gdb import: this runs in the launcher, the tests and inside gdb.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from gdbext.model.qemu_text import HmpRegisters, parse_info_registers
from gdbext.x86 import DecodeError
from gdbext.x86.idt import vector_name

# How much of the end of the log to read by default: several hundred
# records, far more than a chain of failed deliveries (at most four).
DEFAULT_TAIL_BYTES = 1 << 20
# The start of the log, scanned for `CPU Reset (CPU n)` only (QEMU resets
# every vCPU at start-up, about 2.5 KiB of dump each).
HEAD_BYTES = 1 << 20
DEFAULT_LAST = 8

NO_EXCEPTION = 0xFFFFFFFF  # check_exception's "old" when nothing is being delivered

_RECORD = re.compile(
    r"^ *(?P<index>\d+): v=(?P<vector>[0-9a-f]{2}) e=(?P<error>[0-9a-f]{4,}) i=(?P<int>\d) "
    r"cpl=(?P<cpl>\d) IP=(?P<cs>[0-9a-f]{4}):(?P<ip>[0-9a-f]+) pc=(?P<pc>[0-9a-f]+) "
    r"SP=(?P<ss>[0-9a-f]{4}):(?P<sp>[0-9a-f]+)"
    r"(?: CR2=(?P<cr2>[0-9a-f]+)| (?:env->regs\[R_EAX\]|EAX)=(?P<eax>[0-9a-f]+))?\s*$")
_CHECK = re.compile(r"^check_exception old: 0x(?P<old>[0-9a-f]+) new 0x(?P<new>[0-9a-f]+)\s*$")
_HARDWARE = re.compile(r"^Servicing (?:virtual )?hardware INT=0x(?P<vector>[0-9a-f]+)\s*$")
_RESET = re.compile(r"^CPU Reset \(CPU (?P<cpu>\d+)\)\s*$")
_TRIPLE = "Triple fault"
# A line of another log item ("SMM: enter", "SMM: after RSM"): a dump has none.
_OTHER_ITEM = re.compile(r"^[A-Z][A-Za-z ]*: ")
_RESET_BYTES = re.compile(rb"^CPU Reset \(CPU (\d+)\)$", re.MULTILINE)

# Intel SDM Vol. 3A 6.15 "Interrupt 8", table 6-4 "Interrupt and Exception
# Classes": contributory exceptions; 14 is the page-fault class; every
# other exception and interrupt is benign.
CONTRIBUTORY = frozenset({0, 10, 11, 12, 13})
PAGE_FAULT = 14
DOUBLE_FAULT = 8
# What a failed delivery can raise (SDM 6.12.1.1, 6.14; 7.7 for #TS).
DELIVERY_FAULTS = frozenset({8, 10, 11, 12, 13, 14})


def exception_class(vector: int) -> str:
    """"contributory", "page fault" or "benign" (SDM Vol. 3A table 6-4)."""
    if vector in CONTRIBUTORY:
        return "contributory"
    return "page fault" if vector == PAGE_FAULT else "benign"


def escalates(first: int, second: int) -> str:
    """What the CPU does when `second` is raised while delivering `first`
    (SDM Vol. 3A table 6-5 "Conditions for Generating a Double Fault"):
    "double fault", "shutdown" (a fault while delivering #DF) or "serial"
    (the second is handled after the first, nothing escalates)."""
    if first == DOUBLE_FAULT:
        return "shutdown"
    a, b = exception_class(first), exception_class(second)
    if (a == "contributory" and b == "contributory") or (a == "page fault" and b != "benign"):
        return "double fault"
    return "serial"


@dataclass(frozen=True)
class Escalation:
    """One `check_exception old: 0xOLD new 0xNEW` line; old is None for 0xffffffff."""

    old: int | None
    new: int


@dataclass(frozen=True)
class Record:
    """One delivery QEMU logged (a `N: v=..` line and its register dump).

    rip/rsp: the instruction and stack pointer when the event came (before
    any stack switch).  software: INT n, INT3, INTO (i=1).  hardware: an
    external interrupt (a `Servicing hardware INT` line came first, or no
    check_exception line did and the vector is not an exception's).
    escalation: the check_exception line logged just before (exceptions only).
    cr2: from the line for a #PF, else from the dump.  offset: byte offset
    of the line in the file.
    """

    offset: int
    index: int
    vector: int
    error_code: int
    software: bool
    hardware: bool
    cpl: int
    cs: int
    rip: int
    pc: int
    ss: int
    rsp: int
    line_cr2: int | None
    escalation: Escalation | None
    dump: str = field(repr=False, compare=False)

    @property
    def name(self) -> str:
        return vector_name(self.vector) or f"vector {self.vector:#x}"

    @property
    def exception(self) -> bool:
        """An exception (a fault, trap or abort), not INT n or an interrupt."""
        return self.escalation is not None and not self.software and not self.hardware

    @cached_property
    def registers(self) -> HmpRegisters | None:
        """The register dump, parsed; None when it is missing or cut off."""
        try:
            return parse_info_registers(self.dump)
        except DecodeError:
            return None

    @property
    def cr2(self) -> int | None:
        if self.line_cr2 is not None:
            return self.line_cr2
        regs = self.registers
        return regs.regs.get("cr2") if regs is not None else None

    def same_state(self, other: Record) -> bool:
        """The CPU was where `other` left it: nothing was delivered in between."""
        return (self.cs, self.rip, self.ss, self.rsp, self.cpl) == (other.cs, other.rip, other.ss, other.rsp, other.cpl)


@dataclass(frozen=True)
class Marker:
    """`Triple fault` (kind "triple-fault", with the check_exception line that
    caused it) or `CPU Reset (CPU n)` (kind "reset")."""

    offset: int
    kind: str
    cpu: int | None = None
    escalation: Escalation | None = None


Event = Record | Marker


@dataclass(frozen=True)
class LogTail:
    """What was read: the events from byte `start` to `end` of a log of `size` bytes."""

    path: str
    size: int
    start: int
    end: int
    events: tuple[Event, ...]
    reset_cpus: frozenset[int] = frozenset()

    @property
    def records(self) -> tuple[Record, ...]:
        return tuple(e for e in self.events if isinstance(e, Record))

    @property
    def complete(self) -> bool:
        """The whole file was read (no record may have been cut off before `start`)."""
        return self.start == 0

    @property
    def vcpus(self) -> int | None:
        """vCPUs seen reset (QEMU resets each at start-up); None if none was seen."""
        return max(self.reset_cpus) + 1 if self.reset_cpus else None


def linked(previous: Record, record: Record) -> bool:
    """Was `record` raised while QEMU delivered `previous` (its delivery failed)?

    A failed delivery leaves the registers as they were, so the record
    shows the same CS:RIP, SS:RSP and CPL, and is an exception a delivery
    can raise.  Where the previous event is contributory or a #PF, QEMU's
    check_exception names it as the one being delivered; when it says none
    (0xffffffff), the previous delivery succeeded and the handler returned
    to the same instruction, which faulted again.
    """
    if not record.exception or record.escalation is None or not record.same_state(previous):
        return False
    old = record.escalation.old
    if previous.exception and exception_class(previous.vector) != "benign":
        return old == previous.vector
    return record.escalation.new in DELIVERY_FAULTS


def parse_text(text: str, base: int = 0, *, path: str = "", size: int | None = None) -> LogTail:
    """The events of log text (whole lines); `base` is its byte offset in the file."""
    events: list[Event] = []
    resets: set[int] = set()
    pending_check: Escalation | None = None
    pending_hw: int | None = None
    current: dict | None = None   # the record whose dump is being collected
    dump: list[str] = []
    offset = base

    def finish() -> None:
        nonlocal current, dump
        if current is not None:
            events.append(Record(**current, dump="\n".join(dump)))
        current, dump = None, []

    for line in text.splitlines(keepends=True):
        here = offset
        offset += len(line.encode("utf-8", "surrogateescape")) if not line.isascii() else len(line)
        stripped = line.rstrip("\n")
        match = _RECORD.match(stripped)
        if match:
            finish()
            current = _record_fields(match, here, pending_check, pending_hw)
            pending_check, pending_hw = None, None
            continue
        match = _CHECK.match(stripped)
        if match:
            finish()
            old = int(match["old"], 16)
            pending_check = Escalation(None if old == NO_EXCEPTION else old, int(match["new"], 16))
            continue
        if stripped.startswith(_TRIPLE):
            finish()
            events.append(Marker(here, "triple-fault", escalation=pending_check))
            pending_check = None
            continue
        match = _RESET.match(stripped)
        if match:
            finish()
            cpu = int(match["cpu"])
            resets.add(cpu)
            events.append(Marker(here, "reset", cpu=cpu))
            continue
        match = _HARDWARE.match(stripped)
        if match:
            finish()
            pending_hw = int(match["vector"], 16)
            continue
        if current is not None:
            if stripped and stripped[0].isupper() and not _OTHER_ITEM.match(stripped):
                dump.append(stripped)
            else:
                finish()   # a line of another log item (SMM:, in_asm...): the dump ended
    finish()
    return LogTail(path=path, size=offset if size is None else size, start=base, end=offset,
                   events=tuple(events), reset_cpus=frozenset(resets))


def _record_fields(match: re.Match, offset: int, check: Escalation | None, hw: int | None) -> dict:
    vector = int(match["vector"], 16)
    software = match["int"] != "0"
    hardware = hw == vector or (check is None and not software and vector >= 32)
    cr2 = match["cr2"]
    return {
        "offset": offset,
        "index": int(match["index"]),
        "vector": vector,
        "error_code": int(match["error"], 16),
        "software": software,
        "hardware": hardware,
        "cpl": int(match["cpl"]),
        "cs": int(match["cs"], 16),
        "rip": int(match["ip"], 16),
        "pc": int(match["pc"], 16),
        "ss": int(match["ss"], 16),
        "rsp": int(match["sp"], 16),
        "line_cr2": int(cr2, 16) if cr2 is not None else None,
        "escalation": None if hardware or software else check,
    }


class LogError(Exception):
    """The log cannot be read; the message is one line."""


def _open(path: str | os.PathLike):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise LogError(f"QEMU log {path} does not exist (start QEMU with -d int,cpu_reset -D {path})") from None
    except OSError as exc:
        raise LogError(f"QEMU log {path} cannot be read: {exc.strerror or exc}") from None


def read_tail(path: str | os.PathLike, max_bytes: int = DEFAULT_TAIL_BYTES) -> LogTail:
    """The events of the last `max_bytes` of the log, from its first whole
    record on; plus the vCPUs named by `CPU Reset` lines at its start."""
    with _open(path) as f:
        size = os.fstat(f.fileno()).st_size
        start = max(0, size - max_bytes)
        f.seek(start)
        data = f.read(size - start)
        if start == 0:
            head = b""
        else:
            f.seek(0)
            head = f.read(min(HEAD_BYTES, start))
    if start > 0:
        # Skip to the first line that starts a record, a check_exception or a
        # marker: the bytes before it are the end of a record cut in two.
        cut = re.search(rb"^(?: *\d+: v=|check_exception |Triple fault|CPU Reset |Servicing )", data, re.MULTILINE)
        skip = cut.start() if cut else len(data)
        data, start = data[skip:], start + skip
    # A line QEMU is still writing is left for the next read.
    last_newline = data.rfind(b"\n")
    data = data[:last_newline + 1]
    tail = parse_text(data.decode("utf-8", "surrogateescape"), start, path=str(path), size=size)
    cpus = set(tail.reset_cpus) | {int(m) for m in _RESET_BYTES.findall(head)}
    return LogTail(path=tail.path, size=size, start=tail.start, end=tail.end, events=tail.events,
                   reset_cpus=frozenset(cpus))


# -- the chain ---------------------------------------------------------------


@dataclass(frozen=True)
class Chain:
    """The exceptions that led to a triple fault, or the last exceptions.

    records: oldest first.  delivery_failed[i]: records[i + 1] was raised
    while QEMU delivered records[i] (see `linked`); the last entry says
    whether the last record's delivery failed (True when a triple fault
    followed it).  final: the check_exception line before `Triple fault`:
    what QEMU raised while delivering the #DF.  vcpus: from the log's
    `CPU Reset` lines, None when none was read.
    """

    records: tuple[Record, ...]
    delivery_failed: tuple[bool, ...]
    triple_fault: bool
    final: Escalation | None
    vcpus: int | None
    notes: tuple[str, ...]
    complete: bool


def build_chain(tail: LogTail, last: int | None = None) -> Chain:
    """The chain of the last triple fault in `tail` (the failed deliveries
    that ended in it), or, with no triple fault, the last `last` (default
    DEFAULT_LAST) exceptions with the events their deliveries failed on.
    With `last`, a triple fault's chain is cut to its last `last` records."""
    if last is not None and last <= 0:
        raise ValueError("last must be positive")
    events = list(tail.events)
    notes: list[str] = []
    fault_at = next((i for i in range(len(events) - 1, -1, -1)
                     if isinstance(events[i], Marker) and events[i].kind == "triple-fault"), None)
    if fault_at is not None:
        marker = events[fault_at]
        assert isinstance(marker, Marker)
        run = _failed_run(events[:fault_at])
        if last is not None:
            run = run[-last:]
        failed = tuple(True for _ in run)
        later = [e for e in events[fault_at + 1:] if isinstance(e, Record)]
        if later:
            notes.append(f"{len(later)} more deliveries were logged after the triple fault "
                         "(the machine was reset and ran again): this is the last triple fault's chain")
        if not run:
            notes.append("the log has a triple fault but no exception record before it in the part read")
        final = marker.escalation
    else:
        run, failed = _last_exceptions(events, last or DEFAULT_LAST)
        final = None
    if run and not tail.complete and run[0] is _first_record(events):
        notes.append(f"only the last {tail.end - tail.start} bytes of the log were read; "
                     "earlier records of this chain may be cut off")
    vcpus = tail.vcpus
    if vcpus is not None and vcpus > 1:
        notes.append(f"{vcpus} vCPUs: QEMU's log does not say which vCPU took each event, "
                     "so the chain may mix vCPUs")
    return Chain(records=tuple(run), delivery_failed=failed, triple_fault=fault_at is not None,
                 final=final, vcpus=vcpus, notes=tuple(notes), complete=tail.complete)


def _first_record(events: list[Event]) -> Record | None:
    return next((e for e in events if isinstance(e, Record)), None)


def _failed_run(events: list[Event]) -> list[Record]:
    """The records before a triple fault, back to the first whose delivery
    did not fail on the one before (a reset stops the walk too)."""
    run: list[Record] = []
    for event in reversed(events):
        if isinstance(event, Marker):
            break
        if run and not linked(event, run[-1]):
            break
        run.append(event)
    run.reverse()
    return run


def _last_exceptions(events: list[Event], count: int) -> tuple[list[Record], tuple[bool, ...]]:
    """The last `count` exceptions, each with the earlier events whose
    failed delivery raised it (an INT n or interrupt that could not be
    delivered starts a chain too)."""
    records = [e for e in events if isinstance(e, Record)]
    keep: list[int] = []
    for i in range(len(records) - 1, -1, -1):
        if len(keep) >= count:
            break
        if records[i].exception or (keep and keep[-1] == i + 1 and linked(records[i], records[i + 1])):
            keep.append(i)
    keep.reverse()
    chosen = [records[i] for i in keep]
    failed = tuple(i + 1 < len(records) and linked(records[i], records[i + 1]) for i in keep)
    return chosen, failed


# -- watching a log that grows ------------------------------------------------


class TripleFaultWatch:
    """Whether a log has said `Triple fault` yet, reading only what was
    appended since the last look (a busy guest's log grows by megabytes a
    second)."""

    NEEDLE = b"\nTriple fault"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.offset = 0
        self.found_at: int | None = None
        self._carry = b"\n"

    def check(self, chunk: int = 4 << 20) -> bool:
        if self.found_at is not None:
            return True
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                return self._scan(f, chunk)
        except OSError:
            return False

    def _scan(self, f, chunk: int) -> bool:
        while True:
            data = f.read(chunk)
            if not data:
                return False
            window = self._carry + data
            hit = window.find(self.NEEDLE)
            if hit >= 0:
                self.found_at = self.offset - len(self._carry) + hit + 1
                return True
            self._carry = window[-len(self.NEEDLE):]
            self.offset += len(data)
