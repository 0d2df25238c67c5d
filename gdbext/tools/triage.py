"""Scripted triage for CI: boot a guest under gdb, watch it, report what went wrong.

    gdbext-triage --scenario gdt-order --json report.json --junit junit.xml

Boots QEMU paused with a gdb stub on a free port, attaches gdb with gdbext
loaded, arms `sysret-watch`, breaks where the kernel reports exceptions, and
runs the guest until one of: a sysret-watch finding, a guest exception, the
--until point, the guest's exit, or --timeout.  It then collects every info
command's JSON (each failure is recorded, never fatal) and writes a readable
report, optionally a JSON report and JUnit XML.

Exit status: 0 clean; 1 a finding, a guest exception, a guest that reported
failure, or a timeout (a hang is a finding for CI); 2 the triage itself could
not run (bad flag, missing file, QEMU or gdb failed to start).

This module never imports gdb: it runs in a plain Python and drives gdb
through gdbext.tools.driver, so QEMU and gdb are always stopped in `finally`.
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import shlex
import os
import re
import signal
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gdbext.rules.iret import RULES as IRET_RULES
from gdbext.rules.sysret import RULES as SYSRET_RULES
from gdbext.tools import launch
from gdbext.x86.bits import RFLAGS_IF, rflags_names
from gdbext.x86.idt import EXCEPTION_NAMES

EXIT_CLEAN, EXIT_FAILED, EXIT_UNUSABLE = 0, 1, 2

# Functions a kernel calls when it takes an exception; a breakpoint there
# stops the guest with the exception's frame still in hand.  The bundled
# kernel's fault_report takes a struct interrupt_frame * in RDI.
FAULT_SYMBOLS = ("fault_report",)
# struct interrupt_frame (kernel/src/fault.h): 15 GPRs, vector, error, then
# the frame the CPU pushed (Intel SDM Vol. 3A 6.14.1 "64-Bit Mode Stack Frame").
FRAME_WORDS = 22
FRAME_INDEX = {"vector": 15, "error_code": 16, "rip": 17, "cs": 18, "rflags": 19, "rsp": 20, "ss": 21}

# Mnemonics: Intel SDM Vol. 3A table 6-1 "Protected-Mode Exceptions and Interrupts".

# The kernel's one-line report, kept in the serial log even when no
# breakpoint caught the exception (no ELF, or --no-watch on another kernel).
FAULT_LINE = re.compile(r"FAULT vector=(\d+)(?: \(([^)]*)\))? error=(0x[0-9a-fA-F]+|0) cr2=(0x[0-9a-fA-F]+|0)"
                        r" rip=(0x[0-9a-fA-F]+|0)(?: cs=(0x[0-9a-fA-F]+|0))?")

# Where the report's exception can come from, in the order they are
# believed: the bundled kernel's fault_report breakpoint (the frame it was
# handed), gdbext's IDT breakpoints (`fault-watch`, any kernel: a stop at a
# handler's first instruction), QEMU's own -d int log (`fault-chain`: also
# deliveries that failed, up to a triple fault), and last the bundled
# kernel's FAULT line in the serial log.  An exception's "source" names one.
FAULT_SOURCES = ("kernel-report", "idt-breakpoint", "qemu-log", "serial log")

COMMAND_TIMEOUT = 20.0
EXIT_WAIT_SECONDS = 5.0
DEFAULT_TIMEOUT = 60.0

# A hang is described from a few samples of the vCPU: interrupted, read,
# continued for a moment, HANG_SAMPLES times.
HANG_SAMPLES = 5
HANG_SAMPLE_RUN = 0.1

# A watch that cannot arm at attach (paging off, no SYSRET mapped yet: Linux
# still in its decompressor) is tried again while the guest runs in slices
# of ARM_SLICE seconds: at a stop where paging is on and the paging state
# (CR3, RIP's half) changed since the last try, or ARM_RETRY seconds later.
ARM_SLICE = 0.3
ARM_RETRY = 2.0
CR0_PG = 1 << 31  # Intel SDM Vol. 3A 2.5 "Control Registers"


class TriageError(Exception):
    """The triage could not run (exit status 2); the message is one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one clear line, not a usage dump
        raise TriageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="triage", description="Boot a guest under gdb with gdbext, watch it, and report.",
                epilog="Arguments after -- go to QEMU.  Exit: 0 clean, 1 finding/exception/timeout, 2 unusable.")
    boot = p.add_mutually_exclusive_group()
    boot.add_argument("--scenario", help=f"a bundled-kernel scenario ({', '.join(launch.SCENARIOS)}); default ok")
    boot.add_argument("--efi", type=Path, help="boot this EFI application (or .img FAT image) under OVMF")
    boot.add_argument("--kernel", type=Path, help="boot this Linux bzImage or Multiboot v1 image (QEMU's -kernel)")
    boot.add_argument("--drive", type=Path, help="boot this raw disk image (the guest's writes are not kept)")
    boot.add_argument("--cdrom", type=Path, help="boot this ISO image")
    p.add_argument("--firmware", choices=launch.FIRMWARES,
                   help="for --drive/--cdrom: bios (SeaBIOS, the default) or uefi (OVMF)")
    p.add_argument("--initrd", type=Path, help="with --kernel: the initrd (Linux) or first module (Multiboot)")
    p.add_argument("--append", help="with --kernel: its command line (default for Linux: console=ttyS0)")
    p.add_argument("--elf", type=Path, help="symbols for gdb (default: the bundled kernel.elf)")
    p.add_argument("--until", help="stop cleanly here: SYMBOL or *ADDRESS")
    p.add_argument("--timeout", type=float, help=f"seconds the guest may run before that counts as a hang"
                   f" (default {DEFAULT_TIMEOUT:g}); a failure")
    p.add_argument("--run-for", type=float, metavar="SECONDS",
                   help="run this long; a guest still running then is clean (for kernels that never exit)")
    p.add_argument("--json", dest="json_path", type=Path, help="write the JSON report here")
    p.add_argument("--junit", type=Path, help="write JUnit XML here")
    p.add_argument("--serial", type=Path, help="keep the serial log in this file")
    p.add_argument("--warnings", action="store_true", help="sysret-watch stops on warnings too")
    p.add_argument("--no-watch", action="store_true", help="do not arm sysret-watch")
    p.add_argument("--user-faults", action="store_true",
                   help="an exception taken in ring 3 is a finding too (by default the kernel handles it)")
    p.add_argument("--iret", action="store_true",
                   help="for a Linux bzImage, watch its iretq sites too (off there: its boot returns from "
                        "thousands of page faults by iretq, each a stop)")
    p.add_argument("--no-int-log", action="store_true",
                   help="do not have QEMU log the exceptions it delivers (-d int); without the log a triple "
                        "fault is only a reset")
    p.add_argument("--save-state", type=Path, metavar="FILE",
                   help="save the machine state at the stop (every vCPU, its tables, stacks and code; "
                        "gdbext-save) with this report in it: `gdbext-open FILE` in gdb, or --from FILE")
    p.add_argument("--save-ram", action="store_true",
                   help="save all guest RAM in the machine state too (to --save-state FILE, else next to "
                        "the --json report)")
    boot.add_argument("--from", dest="from_file", type=Path, metavar="FILE",
                      help="boot nothing: render the report saved in a --save-state FILE again "
                           "(text, --json, --junit)")
    return p


@dataclass
class Triage:
    """Everything the report says; to_json() is the --json document."""

    scenario: str | None
    # What was booted: {"medium", "image", "kernel_kind", "firmware", "append", "console_appended"}.
    boot: dict[str, Any] = field(default_factory=dict)
    # sysret-watch: {"armed", "armed_at_s" (seconds into the run; 0 at
    # attach), "paging" (CR0.PG when it armed), "sites", "wrmsr_sites",
    # "source", "attempts", "last_error"}.
    watch: dict[str, Any] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)
    exception: dict[str, Any] | None = None
    # How exceptions could be caught this run, by source (see FAULT_SOURCES),
    # and what the IDT breakpoints recorded and the QEMU log chained.
    fault_capture: dict[str, str] = field(default_factory=dict)
    fault_records: list[dict[str, Any]] = field(default_factory=list)
    fault_chain: dict[str, Any] | None = None
    panic: str | None = None     # Linux's "Kernel panic - not syncing: ..." line, if the log has one
    exit_code: int | None = None
    stopped_because: str = ""
    # Where the vCPU was when the run ended: {"rip", "symbol", "instruction"}.
    stop: dict[str, Any] | None = None
    # Why a timeout is one ("did not exit", "did not reach --until"), and the
    # seconds allowed; run_for: the --run-for seconds a clean run lasted.
    timeout_reason: str = ""
    limit_seconds: float | None = None
    run_for: float | None = None
    # Where a hung vCPU spins (describe_hang); None unless stopped_because is "timeout".
    hang: dict[str, Any] | None = None
    guest_status: str = ""
    serial_log: str = ""
    state: dict[str, Any] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    # The machine state saved at the stop (--save-state): {"file" (its name,
    # no directory), "bytes", "seconds", "pages", "ram", "cpus"}; None if not saved.
    saved_state: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Triage":
        """The report a --json document (or a saved machine state) holds."""
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(doc, dict) or "stopped_because" not in doc:
            raise TriageError("the file holds no triage report")
        return cls(**{k: v for k, v in doc.items() if k in names})

    @property
    def guest_failed(self) -> bool:
        return self.exit_code is not None and self.exit_code != launch.EXIT_SUCCESS

    @property
    def failed_otherwise(self) -> bool:
        """The guest failed whatever exceptions it took: it exited badly,
        hung, triple-faulted, stopped at a finding, or its kernel panicked."""
        return (self.guest_failed or bool(self.panic) or bool(self.findings)
                or self.stopped_because in ("timeout", "triple-fault", "exception"))

    @property
    def status(self) -> int:
        if (self.findings or self.exception or self.stopped_because in ("timeout", "triple-fault")
                or self.guest_failed or self.panic):
            return EXIT_FAILED
        return EXIT_CLEAN

    def to_json(self) -> dict[str, Any]:
        return {"boot": self.boot, "watch": self.watch, "findings": self.findings,
                "fault_capture": self.fault_capture, "fault_records": self.fault_records,
                "fault_chain": self.fault_chain, "panic": self.panic, "exception": self.exception, "exit_code": self.exit_code,
                "guest_status": self.guest_status, "stopped_because": self.stopped_because,
                "stop": self.stop, "timeout_reason": self.timeout_reason,
                "limit_seconds": self.limit_seconds, "run_for": self.run_for, "hang": self.hang,
                "scenario": self.scenario, "serial_log": self.serial_log, "state": self.state,
                "durations": self.durations, "errors": self.errors, "saved_state": self.saved_state,
                "status": self.status}


# ---------------------------------------------------------------------------
# Parsing what gdb and the guest print
# ---------------------------------------------------------------------------

def exception_name(vector: int) -> str:
    if vector in EXCEPTION_NAMES:
        return EXCEPTION_NAMES[vector][0] or "CSO"  # 9: coprocessor segment overrun, no mnemonic
    return "reserved" if 0 <= vector < 32 else "interrupt"


def parse_fault_line(serial: str) -> dict[str, Any] | None:
    """The first FAULT line of the bundled kernel's log, as an exception record."""
    m = FAULT_LINE.search(serial)
    if m is None:
        return None
    vector = int(m.group(1))
    return {"vector": vector, "name": m.group(2) or exception_name(vector), "error_code": int(m.group(3), 16),
            "rip": int(m.group(5), 16), "cr2": int(m.group(4), 16),
            "cs": int(m.group(6), 16) if m.group(6) else None, "symbol": None, "source": "serial log"}


def parse_words(text: str) -> list[int]:
    """gdb's `output/x` of an array: {0x1, 0x2, ...} (gdb folds repeats as `<repeats N times>`)."""
    words: list[int] = []
    for item in text.strip().strip("{}").split(","):
        m = re.match(r"\s*(0x[0-9a-fA-F]+|\d+)(?:\s*<repeats (\d+) times>)?", item)
        if m:
            words += [int(m.group(1), 0)] * int(m.group(2) or 1)
    return words


def findings_from_watch(last: dict[str, Any] | None) -> list[dict[str, Any]]:
    """sysret-watch's last finding, one record per failed rule."""
    if not last:
        return []
    where = {"kind": last.get("kind"), "address": last.get("address"), "cpu": last.get("cpu")}
    return [dict(f, **where) for f in last.get("findings", [])]


def _symbolize(driver, address: int) -> str | None:
    try:
        out = driver.command(f"info symbol {address:#x}", timeout=COMMAND_TIMEOUT).strip()
    except Exception:  # noqa: BLE001 - a missing symbol is only a missing name
        return None
    return None if not out or out.startswith("No symbol") else out.split(" in section")[0]


# gdb's `x/i $pc`: "=> 0xffffffff800013dc <enable_sce+12>:\twrmsr"
_X_I = re.compile(r"^(?:=>)?\s*(0x[0-9a-fA-F]+)(?:\s+<([^>]*)>)?:\s*(.*?)\s*$", re.MULTILINE)


def parse_x_i(text: str) -> dict[str, Any] | None:
    """{"rip", "symbol", "instruction"} from gdb's `x/i` output; None if it is not that."""
    m = _X_I.search(text)
    if m is None:
        return None
    return {"rip": int(m.group(1), 16), "symbol": m.group(2), "instruction": m.group(3) or None}


def where(driver) -> dict[str, Any] | None:
    """RIP, its symbol and the instruction there, as gdb disassembles it."""
    try:
        # gdb's code cache can hold bytes read before a physical-memory read.
        driver.command("maint flush dcache", timeout=COMMAND_TIMEOUT)
        return parse_x_i(driver.command("x/i $pc", timeout=COMMAND_TIMEOUT))
    except Exception:  # noqa: BLE001 - an unreadable RIP is said as "not known"
        return None


_EXCEPTION_KEYS = ("vector", "name", "error_code", "rip", "cs", "cpl", "cr2", "symbol")


def exception_from_fault_record(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """An exception record of `fault-watch status --json` ("records"/"last")
    as the report's exception, source "idt-breakpoint"."""
    if not record or record.get("vector") is None:
        return None
    exc = {k: record.get(k) for k in _EXCEPTION_KEYS}
    exc["name"] = exc["name"] or exception_name(exc["vector"])
    exc["source"] = "idt-breakpoint"
    exc["resumed"] = record.get("resumed")      # None: not followed (kernel mode, or KVM)
    return exc


def exception_from_chain(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """The last delivery of `fault-chain --json` ({"chain": [...], "triple_fault"})
    as the report's exception, source "qemu-log"; the whole chain is kept in
    the report beside it."""
    chain = (doc or {}).get("chain") or []
    if not chain:
        return None
    exc = {k: chain[-1].get(k) for k in _EXCEPTION_KEYS}
    if exc["vector"] is not None:
        exc["name"] = exc["name"] or exception_name(exc["vector"])
    exc["source"] = "qemu-log"
    exc["triple_fault"] = bool(doc.get("triple_fault"))
    exc["chain_length"] = len(chain)
    return exc


PANIC_LINE = re.compile(r"Kernel panic - not syncing: .*")


def kernel_panic(serial: str) -> str | None:
    """Linux's panic line: the kernel gave up, whether or not it then spins."""
    m = PANIC_LINE.search(launch.serial_clean(serial))
    return m.group(0).strip() if m else None


def user_fault(exc: dict[str, Any]) -> bool:
    return exc.get("cpl") == 3


def _exception_from_frame(driver) -> dict[str, Any]:
    words = parse_words(driver.command(f"output/x *(unsigned long (*)[{FRAME_WORDS}])$rdi", timeout=COMMAND_TIMEOUT))
    if len(words) != FRAME_WORDS:
        raise TriageError(f"could not read the exception frame at RDI ({len(words)} words)")
    exc: dict[str, Any] = {k: words[i] for k, i in FRAME_INDEX.items()}
    exc["name"] = exception_name(exc["vector"])
    exc["cr2"] = int(driver.command("output/x $cr2", timeout=COMMAND_TIMEOUT).strip(), 16)
    exc["symbol"] = _symbolize(driver, exc["rip"])
    exc["source"] = "kernel-report"
    return exc


# ---------------------------------------------------------------------------
# Collecting state
# ---------------------------------------------------------------------------

def _idt_summary(doc: dict[str, Any]) -> dict[str, Any]:
    gates = [g for g in doc.get("gates", []) if g.get("present")]
    return dict(doc, gates=gates)


def _run_json(driver, command: str, scratch: Path) -> Any:
    path = scratch / "capture.json"
    try:
        path.unlink(missing_ok=True)
        driver.command(f"python import gdbext.commands.base as _c; _c.capture_to_file({command + ' --json'!r}, {str(path)!r})",
                       timeout=COMMAND_TIMEOUT)
        doc = json.loads(path.read_text())
    except Exception as exc:  # noqa: BLE001 - collecting never stops the report
        return {"error": f"{type(exc).__name__}: {exc}"}
    if "error" in doc:
        return {"error": "unavailable" if "Undefined command" in doc["error"] else doc["error"]}
    try:
        return json.loads(doc["output"])
    except ValueError:
        return {"error": f"{command} --json printed no JSON: {doc['output'][:200]!r}"}


def collect_state(driver, extra_addresses: dict[str, int]) -> dict[str, Any]:
    """Every command's JSON; a failed command becomes {"error": ...}."""
    state: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gdbext-triage-") as scratch:
        def run(command: str) -> Any:
            return _run_json(driver, command, Path(scratch))

        for name in ("info cpl", "info gdt", "info tss", "info idt", "info msr", "sysret-check",
                     "sysret-watch status"):
            state[name] = run(name)
        if "gates" in state["info idt"]:
            state["info idt"] = _idt_summary(state["info idt"])
        for reg in ("rip", "rsp", "rcx"):
            state[f"pagewalk ${reg}"] = run(f"pagewalk ${reg}")
        for label, address in extra_addresses.items():
            state[f"pagewalk {label}"] = run(f"pagewalk {address:#x}")
        state["ptdump --wx"] = run("ptdump --wx")
    return state


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------

def check_output_path(flag: str, path: Path | None) -> None:
    """Refuse, before the guest boots, a report path that cannot be written."""
    if path is None:
        return
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise TriageError(f"{flag} {path}: is a directory")
    if not parent.is_dir():
        raise TriageError(f"{flag} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise TriageError(f"{flag} {path}: not writable")


def _options(args: argparse.Namespace, qemu_args: list[str]) -> launch.QemuOptions:
    for flag, path in (("--json", args.json_path), ("--junit", args.junit), ("--serial", args.serial)):
        check_output_path(flag, path)
    for label, path in (("EFI image", args.efi), ("kernel", args.kernel), ("drive image", args.drive),
                        ("cdrom image", args.cdrom), ("initrd", args.initrd), ("ELF", args.elf)):
        if path is not None and not path.is_file():
            raise TriageError(f"{label} {path} not found")
    if args.firmware is not None and args.drive is None and args.cdrom is None:
        raise TriageError("--firmware is for --drive or --cdrom (--efi always boots under OVMF)")
    if args.run_for is not None and args.timeout is not None:
        raise TriageError("--run-for and --timeout exclude each other: --run-for ends cleanly, --timeout fails")
    for flag, value in (("--timeout", args.timeout), ("--run-for", args.run_for)):
        if value is not None and not value > 0:
            raise TriageError(f"{flag} must be positive")
    opts = launch.QemuOptions(
        scenario=args.scenario or "ok", gdb_port=0, wait=True, serial_path=args.serial,
        efi_image=args.efi, kernel=args.kernel, initrd=args.initrd, append=_append(args),
        drive=args.drive, cdrom=args.cdrom, firmware=args.firmware, extra_args=list(qemu_args),
        int_log=int_log_wanted(args, qemu_args), keep_after_shutdown=int_log_wanted(args, qemu_args))
    try:
        opts.validate()
    except launch.LaunchError as exc:
        raise TriageError(str(exc)) from None
    return opts


LINUX_CONSOLE = "console=ttyS0"


def int_log_wanted(args: argparse.Namespace, qemu_args: Sequence[str]) -> bool:
    """QEMU's interrupt log (-d int,cpu_reset, -no-shutdown) is what sees a
    triple fault and every failed delivery.  It costs ~14 us an interrupt or
    exception delivered (scripts/bench-int-log): nothing measurable on a
    Linux boot, so it is on unless --no-int-log, or QEMU's arguments already
    use -d/-D or KVM (the log is TCG's)."""
    if args.no_int_log:
        return False
    return not any("kvm" in a or a in ("-d", "-D") for a in qemu_args)


def _append(args: argparse.Namespace) -> str | None:
    """--append, or for a Linux bzImage without one console=ttyS0: Linux
    prints nothing on the serial port unless told to, and the serial log is
    half of a report."""
    if args.append is not None or args.kernel is None:
        return args.append
    try:
        kind = launch.kernel_image_kind(args.kernel)
    except OSError as exc:
        raise TriageError(f"kernel {args.kernel}: {exc.strerror}") from None
    return LINUX_CONSOLE if kind == "linux" else None


def boot_summary(args: argparse.Namespace, opts: launch.QemuOptions) -> dict[str, Any]:
    medium, image = next(((m, i) for m, i in (("efi", args.efi), ("kernel", args.kernel), ("drive", args.drive),
                                              ("cdrom", args.cdrom)) if i is not None), ("bundled", None))
    return {"medium": medium, "image": None if image is None else str(image),
            "kernel_kind": launch.kernel_image_kind(args.kernel) if args.kernel else None,
            "firmware": ("uefi" if medium in ("efi", "bundled") else "bios" if medium == "kernel"
                         else opts.firmware or "bios"),
            "append": opts.append, "console_appended": args.append is None and opts.append == LINUX_CONSOLE}


def _bundled(args: argparse.Namespace) -> bool:
    return args.efi is None and args.kernel is None and args.drive is None and args.cdrom is None


def _break(driver, location: str) -> int | None:
    """A breakpoint's number, or None when gdb cannot place it (no such symbol)."""
    from gdbext.tools.driver import GdbError

    try:
        out = driver.command(f"break {location}", timeout=COMMAND_TIMEOUT)
    except GdbError:
        return None
    m = re.search(r"Breakpoint (\d+) at", out)
    return int(m.group(1)) if m else None


def describe_hang(driver, samples: int = HANG_SAMPLES) -> dict[str, Any]:
    """Where a guest that did not stop spins: RIP, symbol, instruction, HLT and IF.

    Called with the guest stopped.  Reads vCPU 0 `samples` times (QEMU's
    `info registers` for HLT and RFLAGS.IF, gdb's x/i for the instruction),
    letting it run HANG_SAMPLE_RUN seconds between reads.  If the guest
    stops by itself meanwhile (a breakpoint), sampling ends there: that
    stop is reported in "interrupted_by".
    """
    from gdbext.model.qemu_text import captured_text, parse_info_registers

    taken: list[dict[str, Any]] = []
    hang: dict[str, Any] = {"samples": taken, "interrupted_by": None}
    for _ in range(samples):
        # Run first each time: where the run itself was cut off is biased
        # (an interrupt lands where gdb can take it).
        stop = driver.resume_until_stop(HANG_SAMPLE_RUN)
        if stop is not None:
            hang["interrupted_by"] = stop.reason or "a stop"
            break
        sample: dict[str, Any] = dict(where(driver) or {})
        try:
            regs = parse_info_registers(captured_text(driver.command("monitor info registers 0",
                                                                     timeout=COMMAND_TIMEOUT)))
        except Exception as exc:  # noqa: BLE001 - a missing sample is said, not fatal
            sample["error"] = f"info registers: {exc}"
        else:
            rflags = regs.regs.get("rfl", regs.regs.get("efl", 0))
            sample.update(rip=sample.get("rip", regs.regs.get("rip", regs.regs.get("eip"))),
                          halted=regs.halted, cpl=regs.cpl, mode=regs.mode_hint,
                          **{"if": bool(rflags & RFLAGS_IF)})
        taken.append(sample)
    good = [t for t in taken if "halted" in t]
    rips = list(dict.fromkeys(t["rip"] for t in taken if t.get("rip") is not None))
    # The sample most others share the RIP of (the first of them on a tie).
    at = max(good, key=lambda t: sum(u.get("rip") == t.get("rip") for u in good)) if good else None
    hang.update(rips=rips, halted=bool(good) and all(t["halted"] for t in good), at=at,
                cpl=at["cpl"] if at else None, **{"if": at["if"] if at else None})
    return hang


def hang_text(hang: dict[str, Any]) -> str:
    """vCPU 0 halted (HLT) with IF 0, CPL 0, at 0x1000 <halt>: hlt (5 samples, 1 RIP)"""
    n = len(hang.get("samples", []))
    if not any("halted" in t for t in hang.get("samples", [])):
        return f"vCPU 0 could not be sampled ({n} attempt(s))"
    state = "halted (HLT)" if hang["halted"] else "spinning, not halted"
    text = f"vCPU 0 {state}; at {_location(hang['at'])} with IF {int(bool(hang['if']))}, CPL {hang['cpl']}"
    rips = hang.get("rips", [])
    text += f" ({n} sample(s), {len(rips)} distinct RIP(s)"
    if len(rips) > 1:
        text += ": " + " ".join(_hex(r) for r in rips[:6])
    if hang.get("interrupted_by"):
        text += f"; sampling ended by a stop: {hang['interrupted_by']}"
    return text + ")"


def _watch_status(driver) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gdbext-triage-") as scratch:
        return _run_json(driver, "sysret-watch status", Path(scratch))


def run(args: argparse.Namespace, qemu_args: list[str]) -> Triage:
    from gdbext.tools.driver import GdbDriver, GdbError, GdbTimeout

    t_start = time.monotonic()
    opts = _options(args, qemu_args)
    elf = args.elf
    report = Triage(scenario=opts.scenario if _bundled(args) else None, boot=boot_summary(args, opts))
    try:
        if _bundled(args):
            paths = launch.build_kernel()
            elf = elf or paths.elf
        qemu = launch.Qemu(opts)
    except launch.LaunchError as exc:
        raise TriageError(str(exc)) from None
    driver = None
    try:
        try:
            qemu.start()
        except launch.LaunchError as exc:
            raise TriageError(str(exc)) from None
        report.durations["boot_qemu"] = round(time.monotonic() - t_start, 3)
        t = time.monotonic()
        try:
            driver = GdbDriver(elf=elf, timeout=COMMAND_TIMEOUT, target_exit=qemu.exit_summary)
            driver.load_gdbext()
            driver.connect(qemu.gdb_port)
            if qemu.int_log_path is not None:
                driver.command(f"gdbext-qemu-log {qemu.int_log_path}", timeout=COMMAND_TIMEOUT)
        except (GdbError, GdbTimeout, OSError) as exc:
            raise TriageError(f"gdb could not attach: {exc}") from None
        report.durations["attach_gdb"] = round(time.monotonic() - t, 3)
        t = time.monotonic()
        arming = Arming(driver, args, report)
        arming.attempt(0.0)
        report.durations["arm"] = round(time.monotonic() - t, 3)
        fault_bp = next((n for n in (_break(driver, s) for s in FAULT_SYMBOLS) if n is not None), None)
        report.fault_capture["kernel-report"] = ("breakpoint on " + FAULT_SYMBOLS[0] if fault_bp is not None
                                                 else "no " + "/".join(FAULT_SYMBOLS) + " symbol")
        arm_fault_watch(driver, args, report)
        if arming.pending:
            arming.refault = lambda: arm_fault_watch(driver, args, report)
        until_bp = None
        if args.until:
            until_bp = _break(driver, args.until)
            if until_bp is None:
                raise TriageError(f"--until {args.until}: gdb cannot place a breakpoint there")
        report.limit_seconds = args.run_for or args.timeout or DEFAULT_TIMEOUT
        t = time.monotonic()
        stop = _run_guest(driver, report.limit_seconds, arming)
        report.durations["run"] = round(time.monotonic() - t, 3)
        _classify(driver, qemu, stop, fault_bp, until_bp, report, args)
        alive = not driver.target_gone and qemu.running
        if alive:
            report.stop = where(driver)
        report.panic = kernel_panic(qemu.serial_text())
        gather_faults(driver, args, report, alive)
        watch_before = None
        if report.stopped_because == "timeout" and not driver.target_gone and qemu.running:
            t = time.monotonic()
            # The watch's breakpoints would catch every sample at a watched
            # site (an interrupt lands in their stop()): sample without them.
            if not args.no_watch:
                watch_before = _watch_status(driver)
                if watch_before.get("armed"):
                    driver.command("sysret-watch off", timeout=COMMAND_TIMEOUT)
                    report.errors.append("sysret-watch was turned off after the timeout, to sample where the "
                                         "vCPU runs; its status is from before")
            report.hang = describe_hang(driver)
            report.durations["hang_samples"] = round(time.monotonic() - t, 3)
        t = time.monotonic()
        if not driver.target_gone and qemu.running:
            extra = {"exception.rip": report.exception["rip"]} if report.exception else {}
            report.state = collect_state(driver, extra)
            if watch_before is not None and "error" not in watch_before:
                report.state["sysret-watch status"] = watch_before
            if state_path(args) is not None:
                save_state(driver, state_path(args), args.save_ram, report)
        else:
            report.errors.append("the guest exited: no CPU state to collect")
        report.durations["collect"] = round(time.monotonic() - t, 3)
    finally:
        # The log as it was where the guest stopped: once gdb detaches the
        # guest runs on until QEMU is stopped, and would write past it.
        report.serial_log = qemu.serial_text()
        if driver is not None:
            driver.close()
        qemu.stop()
    if report.exception is None and report.stopped_because in ("guest-exit", "timeout"):
        report.exception = parse_fault_line(report.serial_log)
    report.fault_capture["serial log"] = "FAULT line" if parse_fault_line(report.serial_log) else "no FAULT line"
    if qemu.int_log_path is None:
        report.fault_capture.setdefault("qemu-log", "off (--no-int-log, KVM or your own -d/-D)")
    report.durations["total"] = round(time.monotonic() - t_start, 3)
    return report


def _run_guest(driver, limit: float, arming: Arming):
    """Run the guest until it stops by itself (a Stop) or `limit` seconds
    pass (None; the guest is then interrupted, so it is stopped either way).
    While the watch is not armed, run in slices and try to arm between them."""
    start = time.monotonic()
    while True:
        left = limit - (time.monotonic() - start)
        if left <= 0:
            return None
        if not arming.pending:
            return driver.resume_until_stop(left)
        stop = driver.resume_until_stop(min(ARM_SLICE, left))
        if stop is not None:
            return stop
        arming.attempt(time.monotonic() - start)


class Arming:
    """`sysret-watch on`, at attach and, until it works, between run slices."""

    def __init__(self, driver, args: argparse.Namespace, report: Triage):
        self.driver = driver
        self.command = "sysret-watch on" + (" --warnings" if args.warnings else "")
        if (report.boot or {}).get("kernel_kind") == "linux" and not args.iret:
            # Linux's early boot returns from thousands of page faults by
            # iretq, each a watch stop of ~15 ms under TCG: it would not boot.
            self.command += " --no-iret"
        self.report = report
        self.pending = not args.no_watch
        self.refault = None         # re-arms fault-watch where the sysret watch arms late
        self._last_key: tuple | None = None
        self._last_try = 0.0
        report.watch = {"armed": False, "attempts": 0, "last_error": "--no-watch" if args.no_watch else None}

    def _paging_key(self) -> tuple[bool, int, bool] | None:
        """(CR0.PG, CR3's table address, RIP in the upper half), read from gdb's registers."""
        try:
            cr0, cr3, rip = (int(self.driver.command(f"output/x ${r}", timeout=COMMAND_TIMEOUT).strip(), 16)
                             for r in ("cr0", "cr3", "pc"))
        except Exception:  # noqa: BLE001 - unreadable now: try at the next slice
            return None
        return bool(cr0 & CR0_PG), cr3 & ~0xFFF, bool(rip >> 63)

    def attempt(self, at: float) -> bool:
        """Try to arm (`at`: seconds into the run); True once armed."""
        if not self.pending:
            return self.report.watch.get("armed", False)
        key = self._paging_key()
        first = self.report.watch["attempts"] == 0
        # After the first try: the scan needs page tables, and a retry in the
        # same paging state finds what the last one did: wait for a change.
        if not first and (key is None or not key[0]
                          or (key == self._last_key and at - self._last_try < ARM_RETRY)):
            return False
        self._last_key, self._last_try = key, at
        self.report.watch["attempts"] += 1
        try:
            text = self.driver.command(self.command, timeout=120)
        except Exception as exc:  # noqa: BLE001 - a kernel with no sysret (yet) is still worth running
            self.report.watch["last_error"] = str(exc).removeprefix("sysret-watch: ")
            return False
        self.pending = False
        if self.refault is not None:
            self.refault()          # the kernel's own IDT is loaded by now
        status = _watch_status(self.driver)
        m = re.search(r"site\(s\) from (.*?); stops on", text)
        self.report.watch.update(
            armed=True, armed_at_s=round(at, 3), paging=None if key is None else key[0],
            sites=len(status.get("sites", [])), wrmsr_sites=len(status.get("wrmsr_sites", [])),
            iret_sites=len(status.get("iret_sites", [])), iret="--no-iret" not in self.command,
            source=m.group(1) if m else None, last_error=None)
        return True


def watch_text(w: dict[str, Any]) -> str | None:
    """sysret-watch: armed 3.2 s into the run (paging on), 4 sysret site(s) from ..."""
    if not w or w.get("last_error") == "--no-watch":
        return None
    if not w.get("armed"):
        return (f"never armed ({w.get('attempts', 0)} attempt(s)); last: {w.get('last_error')}")
    when = "at attach" if not w.get("armed_at_s") else f"{w['armed_at_s']:.1f} s into the run"
    paging = {True: "paging on", False: "paging off: breakpoints by address", None: "paging not known"}[
        w.get("paging")]
    iret = (f", {w.get('iret_sites')} iret site(s)" if w.get("iret") else
            ", iretq not watched (a Linux boot returns from thousands of faults by iretq: --iret)")
    return (f"armed {when} ({paging}), {w.get('sites')} sysret site(s){iret}, {w.get('wrmsr_sites')} wrmsr site(s)"
            + (f" from {w['source']}" if w.get("source") else "")
            + (f", after {w['attempts']} attempts" if w.get("attempts", 1) > 1 else ""))


def _json_command(driver, command: str) -> Any:
    with tempfile.TemporaryDirectory(prefix="gdbext-triage-") as scratch:
        return _run_json(driver, command, Path(scratch))


def arm_fault_watch(driver, args: argparse.Namespace, report: Triage) -> None:
    """Exceptions on any kernel: `fault-watch on --record` puts breakpoints on
    the live IDT's handlers for vectors 0-31 (with --user-faults, `--user`:
    ring-3 faults stop too).  Where gdbext has no fault-watch command, the
    capture is recorded as "unavailable" and the other sources still work."""
    vectors = fault_vectors(args, report)
    command = ("fault-watch on --record" + (" --user" if args.user_faults else "")
               + (f" --vectors {vectors}" if vectors else ""))
    doc = _json_command(driver, command)
    error = doc.get("error") if isinstance(doc, dict) else None
    state = "armed" if isinstance(doc, dict) and doc.get("armed") else "not armed"
    if vectors and not error:
        state += (f" on vectors {vectors}: Linux takes page faults by the thousand as its normal work "
                  "(each one a stop); --user-faults watches #PF too")
    report.fault_capture["idt-breakpoint"] = error or state


LINUX_VECTORS = "0-13,15-31"


def fault_vectors(args: argparse.Namespace, report: Triage) -> str | None:
    """The vectors fault-watch breaks on: all of 0-31, except #PF under a
    Linux bzImage, whose early boot builds its page tables on demand and
    whose every process is demand-paged (a stop of ~15 ms each under TCG,
    scripts/bench-fault-watch); --user-faults asks for them anyway."""
    if args.user_faults or (report.boot or {}).get("kernel_kind") != "linux":
        return None
    return LINUX_VECTORS


def gather_faults(driver, args: argparse.Namespace, report: Triage, alive: bool) -> None:
    """What `fault-watch status` recorded and `fault-chain` read from QEMU's
    -d int log, after the run.  The report's exception comes from the first
    source that has one (FAULT_SOURCES order); a ring-3 exception counts only
    with --user-faults (the kernel handles it: a process is killed, not the OS)."""
    # After the guest exited, `fault-watch status` still shows what the
    # watch of that connection caught.
    status = _json_command(driver, "fault-watch status")
    if isinstance(status, dict) and "error" not in status:
        report.fault_records = list(status.get("records") or [])
        records = [r for r in map(exception_from_fault_record, report.fault_records) if r]
        if report.exception is None and args.user_faults:
            # Demand paging and copy-on-write are resumed; a fault that
            # kills the process (SIGSEGV) is not.
            unresumed = [r for r in records if user_fault(r) and r.get("resumed") is False]
            unknown = [r for r in records if user_fault(r) and r.get("resumed") is None]
            if unresumed:
                report.exception = dict(unresumed[0], note="a ring-3 exception whose instruction never ran "
                                                           "again: the kernel did not resume it")
            elif unknown:
                report.exception = dict(unknown[-1], note="a ring-3 exception; whether the kernel resumed it is "
                                                          "not known (KVM)")
        # A kernel takes exceptions as part of its work (a #PF on a user page
        # it copies to, a fixed-up rdmsr): one tells the story only when the
        # guest then failed, and a #PF on a user address is left out.
        kernel = [r for r in records if not user_fault(r)
                  and not (r.get("vector") == 14 and r.get("cr2") is not None and not r["cr2"] >> 63)]
        if report.exception is None and kernel and report.failed_otherwise:
            report.exception = dict(kernel[-1], note="the last exception the guest took in ring 0 before it failed")
    if not alive:
        report.fault_capture.setdefault("qemu-log", "not read: the guest exited")
        return
    if report.stopped_because != "triple-fault" and report.exception is not None:
        report.fault_capture.setdefault("qemu-log", "not needed: the exception was caught before")
        return
    chain = _json_command(driver, "fault-chain")
    if isinstance(chain, dict) and "error" in chain:
        report.fault_capture["qemu-log"] = chain["error"]
        return
    report.fault_chain = chain
    report.fault_capture["qemu-log"] = f"{len(chain.get('chain') or [])} deliveries logged"
    # Deliveries that worked are a kernel at work; the log is the story only
    # of a triple fault, or of a guest that failed with nothing else to say.
    if report.stopped_because == "triple-fault" or (report.exception is None and report.failed_otherwise):
        report.exception = exception_from_chain(chain) or report.exception


def _guest_shutdown_status(driver, qemu: launch.Qemu, stop) -> int | None:
    """A pause with no triple fault under -no-shutdown is the guest's own
    shutdown: since QEMU 9 its isa-debug-exit write is one.  `monitor quit`
    then ends QEMU with the status the guest asked for."""
    if not qemu.opts.keep_after_shutdown or stop.payload.get("signal-name") != "SIGQUIT" or qemu.triple_faulted():
        return None
    try:
        driver.command("monitor quit", timeout=COMMAND_TIMEOUT)
    except Exception:  # noqa: BLE001 - the stub goes away as QEMU quits
        pass
    try:
        return qemu.wait(EXIT_WAIT_SECONDS)
    except TimeoutError:
        return None


def _classify(driver, qemu: launch.Qemu, stop, fault_bp: int | None, until_bp: int | None,
              report: Triage, args: argparse.Namespace) -> None:
    """Why the guest stopped, and what that says."""
    if stop is None:
        if args.run_for is not None:
            # A kernel that runs on (an OS idling, a server loop) is healthy.
            report.stopped_because = "ran-for"
            report.run_for = args.run_for
            report.guest_status = f"ran {args.run_for:g} s, still running"
        else:
            report.stopped_because = "timeout"
            report.timeout_reason = f"did not reach --until {args.until}" if args.until else "did not exit"
            report.guest_status = f"{report.timeout_reason} within {report.limit_seconds:g} s"
        return
    if stop.reason == "exited" or driver.target_gone:
        report.stopped_because = "guest-exit"
        try:
            report.exit_code = qemu.wait(EXIT_WAIT_SECONDS)
        except TimeoutError:
            report.errors.append("gdb lost the target but QEMU is still running")
        report.guest_status = launch.describe_status(report.exit_code)
        if qemu.kernel_started() is False:
            report.guest_status += " before the kernel's first line"
        return
    status = _guest_shutdown_status(driver, qemu, stop)
    if status is not None:
        report.stopped_because = "guest-exit"
        report.exit_code = status
        report.guest_status = launch.describe_status(status)
        return
    if qemu.triple_faulted():
        # -no-shutdown: QEMU paused the VM with the state of the failed
        # delivery, and gdb saw SIGQUIT; fault-chain explains it from the log.
        report.stopped_because = "triple-fault"
        report.guest_status = launch.describe_status(launch.EXIT_TRIPLE_FAULT)
        return
    bkpt = stop.payload.get("bkptno")
    number = int(bkpt) if bkpt and bkpt.lstrip("-").isdigit() else None
    if fault_bp is not None and number == fault_bp:
        report.stopped_because = "exception"
        try:
            report.exception = _exception_from_frame(driver)
        except Exception as exc:  # noqa: BLE001
            report.errors.append(f"exception frame: {exc}")
            report.exception = {"vector": None, "name": "unknown", "error_code": None, "rip": stop.address,
                                "cr2": None, "cs": None, "symbol": None, "source": "kernel-report"}
        return
    if until_bp is not None and number == until_bp:
        report.stopped_because = "until"
        return
    report.findings = findings_from_watch(_watch_status(driver).get("last_finding"))
    report.stopped_because = "finding" if report.findings else f"stopped: {stop.reason or 'unknown'}"
    if not report.findings:
        report.errors.append(f"the guest stopped for an unexpected reason: {stop.reason} {stop.console.strip()[:200]}")
        report.findings = [{"rule": "TRIAGE-UNEXPECTED-STOP", "severity": "error",
                            "message": f"the guest stopped: {stop.reason}", "address": stop.address}]


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------

def _hex(value: int | None) -> str:
    return "-" if value is None else f"{value:#x}"


def _location(where: dict[str, Any]) -> str:
    """0xffffffff800013dc <enable_sce+12>: wrmsr"""
    text = _hex(where.get("rip"))
    if where.get("symbol"):
        text += f" <{where['symbol']}>"
    if where.get("instruction"):
        text += f": {where['instruction']}"
    return text


def cpu_line(cpl: dict[str, Any]) -> str:
    """`info cpl --json` in one line: numbers in hex, RFLAGS by flag name."""
    rflags = cpl.get("rflags")
    names = cpl.get("rflags_flags") or (rflags_names(rflags) if isinstance(rflags, int) else [])
    parts = [f"CPL {cpl.get('cpl')}", f"{cpl.get('mode')} mode", f"IOPL {cpl.get('iopl')}",
             f"IF {int(bool(cpl.get('if')))}", f"RFLAGS {_hex(rflags)} [{' '.join(names)}]",
             f"CS {_hex(cpl.get('cs'))}", f"SS {_hex(cpl.get('ss'))}",
             f"vCPU {cpl.get('cpu')}" + (" halted in HLT" if cpl.get("halted") else "")]
    return ", ".join(parts)


def _first(text: str, limit: int = 160) -> str:
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= limit else line[:limit - 3] + "..."


def chain_lines(doc: dict[str, Any] | None) -> list[str]:
    """QEMU's logged deliveries, one per line, each with why it failed."""
    chain = (doc or {}).get("chain") or []
    if not chain:
        return []
    head = f"  fault chain (QEMU's log, {len(chain)} deliveries"
    head += ", ending in a triple fault):" if doc.get("triple_fault") else "):"
    out = [head]
    for c in chain:
        what = c.get("name") or f"vector {c.get('vector')}"
        if c.get("error_code") is not None:
            what += f"({c['error_code']:#x})"
        where = f" at {_hex(c.get('rip'))} CPL {c.get('cpl')}" + (f" CR2 {c['cr2']:#x}" if c.get("cr2") else "")
        out.append(f"    {what}{where}: {c.get('explanation') or c.get('outcome') or 'delivered'}")
    return out


def text_report(report: Triage) -> str:
    verdict = {EXIT_CLEAN: "CLEAN", EXIT_FAILED: "FAILED"}[report.status]
    because = report.stopped_because
    if because in ("timeout", "ran-for"):
        because += f": the guest {report.guest_status}"
    lines = [f"triage: {verdict}: stopped because {because}"
             + (f" (scenario {report.scenario})" if report.scenario else "")]
    if report.boot and report.boot.get("medium") != "bundled":
        b = report.boot
        kind = {"linux": "Linux bzImage", "multiboot": "Multiboot image", "unknown": "kernel image"}.get(
            b.get("kernel_kind") or "", b["medium"])
        line = f"  boot: {kind} {b.get('image')} under {b.get('firmware')}"
        if b.get("console_appended"):
            line += f"; {LINUX_CONSOLE} appended (no --append given)"
        lines.append(line)
    if watch_text(report.watch):
        lines.append(f"  sysret-watch: {watch_text(report.watch)}")
    if report.exit_code is not None:
        lines.append(f"  guest exit: status {report.exit_code} ({report.guest_status})")
    if report.hang:
        lines.append(f"  hang: {hang_text(report.hang)}")
    if report.panic:
        lines.append(f"  kernel panic: {report.panic}")
    for f in report.findings:
        lines.append(f"  finding {f.get('severity', 'error'):7} {f['rule']:17} {f.get('message', '')}")
        if f.get("consequence"):
            lines.append(f"  {'':25} -> {f['consequence']}")
    e = report.exception
    if e:
        lines.append(f"  exception: vector {e.get('vector')} {e.get('name')} error {_hex(e.get('error_code'))} "
                     f"rip {_hex(e.get('rip'))}{' <' + e['symbol'] + '>' if e.get('symbol') else ''} "
                     f"cs {_hex(e.get('cs'))} cr2 {_hex(e.get('cr2'))}")
        lines.append(f"    caught by: {e.get('source')}" + (", ending in a triple fault" if e.get("triple_fault")
                                                            else ""))
        if e.get("note"):
            lines.append(f"    {e['note']}")
    lines += chain_lines(report.fault_chain)
    if report.stop:
        lines.append(f"  stopped at: {_location(report.stop)}")
    cpl = report.state.get("info cpl")
    if isinstance(cpl, dict) and "error" not in cpl:
        lines.append(f"  cpu: {cpu_line(cpl)}")
    failed = [name for name, doc in report.state.items() if isinstance(doc, dict) and "error" in doc]
    if failed:
        lines.append("  not collected: " + "; ".join(f"{n}: {_first(report.state[n]['error'])}" for n in failed))
    if report.saved_state:
        st = report.saved_state
        lines.append(f"  machine state: {st.get('file')} ({st.get('bytes') or 0:,} bytes"
                     + (", all RAM" if st.get("ram") else "") + f"): `gdbext-open {st.get('file')}` in gdb "
                     "looks further, `--from` renders this report again")
    for err in report.errors:
        lines.append(f"  note: {err}")
    lines.append("  durations: " + ", ".join(f"{k} {v:.1f}s" for k, v in report.durations.items()))
    tail = [line for line in launch.serial_clean(report.serial_log).splitlines() if line.strip()][-8:]
    if tail:
        lines.append("  serial log (last lines):")
        lines += [f"    {line}" for line in tail]
    return "\n".join(lines)


# Characters XML 1.0 cannot hold (firmware logs carry escape sequences).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: str) -> str:
    """Text JUnit XML can hold: no terminal escapes, no characters XML 1.0 refuses."""
    return _NOT_XML.sub("?", launch.serial_clean(text))


def junit_xml(report: Triage) -> str:
    """One testcase per sysret rule, one for the guest's exception, one for its exit."""
    suite = ET.Element("testsuite", name="gdbext-triage")
    failures = 0

    def case(name: str, failure: str | None, detail: str = "") -> None:
        nonlocal failures
        tc = ET.SubElement(suite, "testcase", classname="gdbext-triage", name=name)
        if failure is not None:
            failures += 1
            ET.SubElement(tc, "failure", message=xml_text(failure)).text = xml_text(detail or failure)

    by_rule: dict[str, list[dict[str, Any]]] = {}
    for f in report.findings:
        by_rule.setdefault(f["rule"], []).append(f)
    known = [r.id for r in SYSRET_RULES + IRET_RULES]     # one testcase per rule of the watch
    for rule in known + sorted(set(by_rule) - set(known)):
        found = by_rule.get(rule)
        case(rule, found[0].get("message", rule) if found else None,
             "\n".join(f"{f.get('message', '')} -> {f.get('consequence', '')}" for f in found or []))
    e = report.exception
    case("guest exception",
         None if e is None else f"vector {e.get('vector')} {e.get('name')} error {_hex(e.get('error_code'))} "
                                f"at {_hex(e.get('rip'))}")
    exit_failure = None
    if report.stopped_because == "timeout":
        exit_failure = f"timeout: the guest {report.guest_status or 'neither exited nor stopped'}"
        if report.hang:
            exit_failure += f"; {hang_text(report.hang)}"
    elif report.guest_failed:
        exit_failure = f"guest exit status {report.exit_code} ({report.guest_status})"
    elif report.panic:
        exit_failure = report.panic
    elif report.stopped_because == "triple-fault":
        exit_failure = "triple fault: " + ((report.fault_chain or {}).get("summary") or "see the fault chain")
    serial = launch.serial_clean(report.serial_log)
    case("guest exit", exit_failure, serial[-4000:] if exit_failure else "")
    suite.set("tests", str(len(suite)))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("time", f"{report.durations.get('total', 0.0):.3f}")
    ET.SubElement(suite, "system-out").text = xml_text(serial)
    return ET.tostring(suite, encoding="unicode")


# ---------------------------------------------------------------------------
# The machine state at the stop (--save-state, --save-ram, --from)
# ---------------------------------------------------------------------------

SAVE_TIMEOUT = 180.0   # --save-ram of a large guest through the stub


def state_path(args: argparse.Namespace) -> Path | None:
    """Where the machine state goes: --save-state FILE, or with --save-ram
    alone next to the --json report."""
    if getattr(args, "save_state", None) is not None:
        return args.save_state
    if getattr(args, "save_ram", False) and args.json_path is not None:
        return args.json_path.with_name(args.json_path.name.removesuffix(".json") + ".state.json.gz")
    return None


def check_state_path(args: argparse.Namespace) -> None:
    if args.save_ram and state_path(args) is None:
        raise TriageError("--save-ram: give --save-state FILE (or --json FILE, to save next to it)")
    check_output_path("--save-state", state_path(args))


def save_state(driver, path: Path, ram: bool, report: Triage) -> None:
    """gdbext-save at the stop; a failure is a note in the report, never fatal."""
    from gdbext.tools.driver import GdbError, GdbTimeout

    t = time.monotonic()
    command = f"gdbext-save {shlex.quote(str(path))}" + (" --ram" if ram else "")
    try:
        doc = driver.json(command, timeout=SAVE_TIMEOUT if ram else COMMAND_TIMEOUT)
    except (GdbError, GdbTimeout) as exc:
        report.errors.append(f"the machine state was not saved: {_first(str(exc))}")
        return
    report.saved_state = {"file": path.name, "bytes": doc.get("bytes"), "seconds": doc.get("seconds"),
                          "pages": doc.get("pages"), "ram": doc.get("ram"), "cpus": doc.get("cpus")}
    report.durations["save_state"] = round(time.monotonic() - t, 3)


# The guest's own text (its serial log, its kernel command line): kept as it is.
_GUEST_TEXT = frozenset({"serial_log", "append"})
# An absolute path with at least one directory: /DIR/.../NAME.
_ABS_PATH = re.compile(r"(?<![\w.~-])(/(?:[\w.+@-]+/)+)([\w.+@-]*)")


def without_paths(doc: Any) -> Any:
    """`doc` with each absolute path whose directory exists on this machine
    (or is a temporary one) cut to its last part (a machine-state file names no path of the machine
    that wrote it).  The guest's own text (_GUEST_TEXT) is kept."""
    temporary = tempfile.gettempdir().rstrip("/") + "/"

    def cut(match: re.Match) -> str:
        # Temporary directories (QEMU's log) are gone by now: cut them too.
        ours = os.path.isdir(match.group(1)) or match.group(1).startswith(temporary)
        return match.group(2) if ours else match.group(0)

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return _ABS_PATH.sub(cut, value)
        if isinstance(value, dict):
            return {k: (v if k in _GUEST_TEXT else walk(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(json.loads(json.dumps(doc, default=str)))


def embed_report(path: Path, report: Triage, args: argparse.Namespace) -> None:
    """Put the finished report into the saved machine state, for --from."""
    # The JSON is edited as it is: the memory runs stay compressed as saved.
    try:
        doc = json.loads(gzip.decompress(path.read_bytes()))
    except (EOFError, ValueError) as exc:
        raise OSError(f"{path}: cannot add the report: {exc}") from None
    doc["report"] = without_paths(report.to_json())
    text = json.dumps(doc, separators=(",", ":")).encode()
    temporary = path.with_name(path.name + ".part")
    temporary.write_bytes(gzip.compress(text, compresslevel=1, mtime=0))
    os.replace(temporary, path)


def report_from_state(path: Path) -> Triage:
    """The report a --save-state file holds (for --from)."""
    from gdbext.model.machine_state import MachineState, MachineStateError

    try:
        state = MachineState.decode(path.read_bytes())
    except OSError as exc:
        raise TriageError(f"--from {path}: {exc.strerror or exc}") from None
    except MachineStateError as exc:
        raise TriageError(f"--from {path}: {exc}") from None
    if state.report is None:
        raise TriageError(f"--from {path}: a machine state with no triage report in it (gdbext-save writes "
                          "none; triage --save-state does)")
    return Triage.from_json(state.report)


def _split_qemu_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def _terminate(signum: int, frame: object) -> None:
    # CI cancels a job with SIGTERM: unwind through the finally blocks that stop QEMU and gdb.
    raise KeyboardInterrupt


def program_name(argv0: str) -> str:
    """The name the user typed: `gdbext-triage` installed, `triage` from the
    checkout's scripts/ (which runs this module with PROG set)."""
    name = os.environ.get("GDBEXT_TRIAGE_PROG") or Path(argv0).name
    return "gdbext-triage" if name in ("", "triage.py", "__main__.py", "-c") else name


def main(argv: Sequence[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    ours, qemu_args = _split_qemu_args(sys.argv[1:] if argv is None else argv)
    prog = program_name(sys.argv[0] if sys.argv else "")
    try:
        parser = build_parser()
        parser.prog = prog
        args = parser.parse_args(ours)
        if args.from_file is not None:
            if qemu_args or args.save_state or args.save_ram:
                raise TriageError("--from FILE boots nothing: no QEMU arguments, --save-state or --save-ram")
            report = report_from_state(args.from_file)
        else:
            check_state_path(args)
            report = run(args, qemu_args)
    except TriageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    except KeyboardInterrupt:
        print(f"{prog}: error: interrupted", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        print(text_report(report), flush=True)
    except BrokenPipeError:  # `triage ... | head`: the files below still get written
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stays open until exit, as stdout would
    try:
        if args.json_path:
            args.json_path.write_text(json.dumps(report.to_json(), indent=1, default=str) + "\n")
        if args.junit:
            args.junit.write_text(junit_xml(report) + "\n")
        if args.from_file is None and report.saved_state is not None:
            embed_report(state_path(args), report, args)
    except OSError as exc:
        print(f"{prog}: error: cannot write the report: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    return report.status


if __name__ == "__main__":
    sys.exit(main())
