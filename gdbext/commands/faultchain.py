"""`fault-chain` and `gdbext-qemu-log`: the failed deliveries QEMU logged, explained."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import gdb

from gdbext import target
from gdbext.commands.base import GdbextCommand, number_type
from gdbext.model.qemu_log import LogError, build_chain, read_tail
from gdbext.rules.delivery import memory_only
from gdbext.views.common import ReportError
from gdbext.views.faultchain import fault_chain_report, fault_chain_text

ENV = "GDBEXT_QEMU_LOG"
QEMU_FLAGS = "-d int,cpu_reset -D FILE -no-reboot -no-shutdown"
_KEY = "qemu-log"


@dataclass
class LogSetting:
    """The QEMU log of this connection; from GDBEXT_QEMU_LOG until set."""

    path: str | None
    source: str


def _setting() -> LogSetting:
    def make() -> LogSetting:
        env = os.environ.get(ENV) or None
        return LogSetting(env, f"${ENV}" if env else "unset")
    return target.current().of(_KEY, make)


def _log_path(given: str | None) -> str:
    if given:
        return given
    try:
        setting = _setting()
    except gdb.GdbError:   # no connection: the environment still names a log
        env = os.environ.get(ENV)
        setting = LogSetting(env or None, f"${ENV}" if env else "unset")
    if setting.path is None:
        raise ReportError(f"fault-chain: no QEMU log: start QEMU with `{QEMU_FLAGS}` and name FILE with "
                          f"`gdbext-qemu-log FILE`, `fault-chain --log FILE` or ${ENV}")
    return setting.path


class FaultChain(GdbextCommand):
    """Show the exceptions QEMU's log saw before a triple fault, and why each delivery failed.

Usage: fault-chain [--log FILE] [--last N] [--json]

When a handler cannot be reached (the vector past the IDT limit, a gate not
present or of a bad type, a selector that is not 64-bit code, an RSP0 or IST
stack not mapped) no breakpoint fires; QEMU's own log sees it.  Start QEMU
with
    -d int,cpu_reset -D FILE -no-reboot -no-shutdown
(TCG only; scripts/run-kernel --int-log does it): a triple fault then pauses
the VM with its state instead of resetting it.  Name the file with
`gdbext-qemu-log FILE`, $GDBEXT_QEMU_LOG, or --log FILE.

Shown: the chain that ended in the last triple fault (or, with none, the last
N exceptions, default 8), each event with its vector, error code, CS:RIP,
CPL, RSP and CR2 as QEMU logged them, then why each delivery failed, from the
IDT, GDT and TSS read from guest memory now with the IDTR, GDTR, TR and
control registers QEMU logged at that event (Intel SDM Vol. 3A 6.10-6.15,
7.7), and which pair made the #DF.  Only the end of the log is read.
JSON: {"log", "chain": [{"vector", "name", "error_code", "rip", "cpl", "cr2",
"rsp", "software", "explanation", ...}], "triple_fault", "vcpus", "summary",
"notes"}."""

    NAME = "fault-chain"
    WRAP_TEXT = True
    COMMAND_CLASS = gdb.COMMAND_STATUS

    def arguments(self, parser):
        parser.add_argument("--log", metavar="FILE")
        parser.add_argument("--last", type=number_type("a count of exceptions", 1, 4096), metavar="N")

    def run(self, args):
        path = _log_path(args.log)
        try:
            chain = build_chain(read_tail(path), last=args.last)
        except LogError as exc:
            raise ReportError(f"fault-chain: {exc}") from None
        notes: tuple[str, ...] = ()
        live_vcpus = None
        try:
            snap = target.snapshot()
            live_vcpus = len(gdb.selected_inferior().threads()) or None
        except gdb.GdbError as exc:
            snap = memory_only()
            notes = (f"the tables were not read ({str(exc).strip()}): reasons that need them are unknown",)
        report = fault_chain_report(path, chain, snap, live_vcpus=live_vcpus, extra_notes=notes)
        return report, lambda: fault_chain_text(report)


@dataclass(frozen=True)
class QemuLogReport:
    log: str | None
    source: str
    exists: bool


class QemuLog(GdbextCommand):
    """Set or show the QEMU interrupt log that fault-chain reads for this connection.

Usage: gdbext-qemu-log FILE | off | show [--json]

FILE is the -D file of a QEMU started with
    -d int,cpu_reset -D FILE -no-reboot -no-shutdown
`off` forgets it; `show` (or nothing) says which file is used.  Until set,
$GDBEXT_QEMU_LOG names it.  The setting lasts as long as the connection.
JSON: {"log", "source", "exists"}."""

    NAME = "gdbext-qemu-log"
    WRAP_TEXT = True
    COMMAND_CLASS = gdb.COMMAND_FILES
    POSITIONAL_COMPLETION = gdb.COMPLETE_FILENAME

    def arguments(self, parser):
        parser.add_argument("file", nargs="?", default="show", metavar="FILE|off|show")

    def run(self, args):
        setting = _setting()
        if args.file == "off":
            setting.path, setting.source = None, "off"
        elif args.file != "show":
            path = Path(args.file).expanduser()
            if not path.is_file():
                raise ReportError(f"gdbext-qemu-log: {args.file} is not a file (QEMU writes it once started "
                                  f"with {QEMU_FLAGS})")
            setting.path, setting.source = str(path.resolve()), "gdbext-qemu-log"
        report = QemuLogReport(setting.path, setting.source, bool(setting.path) and Path(setting.path).is_file())
        if setting.path is None:
            text = f"gdbext: no QEMU log ({setting.source}); fault-chain needs one: start QEMU with {QEMU_FLAGS}"
        else:
            missing = "" if report.exists else " (missing now)"
            text = f"gdbext: QEMU log {setting.path}{missing}, from {setting.source}"
        return report, text


def register() -> None:
    FaultChain()
    QemuLog()
