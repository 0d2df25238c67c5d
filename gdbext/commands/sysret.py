"""`sysret-check`, `sysret-watch` and `$sysret_ok()`.

The watch puts a breakpoint on every SYSRET instruction of the kernel and
on every WRMSR, and evaluates the rules (gdbext.rules.sysret) in the
breakpoint's stop() callback; the guest stops only when a rule fails.

A stop() callback may read registers and memory but cannot resume the
guest, so it cannot inject rdmsr.  The watch therefore reads STAR, LSTAR,
CSTAR and SFMASK once per vCPU when armed, and keeps them current from the
WRMSR breakpoints (ECX and EDX:EAX at a wrmsr say what is being written).

A check must cost little next to the stop itself (about a millisecond), so:
- QEMU's monitor (segment caches, GDTR, TR) is read again only when the CS
  or SS selector changed or an LGDT/LTR site ran on that vCPU (those sites
  are watched too, and only forget the kept state);
- memory is read exactly (8 bytes a page-table level), under one
  PhyMemMode switch per check, or by mmap with a shared RAM file;
- a passing verdict is kept with every input it read (gdbext.rules.memo);
  the next check on that vCPU first re-reads those inputs, and if all are
  equal the verdict stands without evaluating the rules again;
- a failing verdict made with kept monitor state is made again with a
  fresh one before the guest is stopped.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional

import gdb

from gdbext import target
from gdbext.commands.base import (
    GdbextCommand,
    address_arg,
    count_arg,
    int_argument,
    symbolize,
    write_fitted,
)
from gdbext.model.snapshot import (
    MSR_CSTAR,
    MSR_EFER,
    MSR_LSTAR,
    MSR_SFMASK,
    MSR_STAR,
    MSR_SYSENTER_EIP,
    Snapshot,
    SnapshotError,
)
from gdbext.rules import sysret as rules
from gdbext.rules.memo import Inputs, VerdictCache
from gdbext.views.sysret import _MARK, report_text
from gdbext.x86.insn import (
    Site,
    scan,
    scan_iret,
    scan_table_loads,
    scan_wrmsr,
    sites_from_elf,
    sysret_at,
)

# What the rules read besides registers; SYSENTER_EIP says whether 32-bit
# callers can exist (SR-OPSIZE).
WATCHED_MSRS = (MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_SFMASK, MSR_SYSENTER_EIP)
WRMSR_RULE_MSRS = (MSR_STAR, MSR_LSTAR, MSR_SFMASK, MSR_EFER, MSR_CSTAR, MSR_SYSENTER_EIP)
_MSR_NAME = {MSR_STAR: "STAR", MSR_LSTAR: "LSTAR", MSR_CSTAR: "CSTAR", MSR_SFMASK: "SFMASK", MSR_EFER: "EFER",
             MSR_SYSENTER_EIP: "SYSENTER_EIP"}


def _site_opsize(address: int) -> Optional[int]:
    try:
        code = target.read_virtual(address, min(16, (1 << 64) - address))
    except (gdb.MemoryError, gdb.error, OverflowError, ValueError, SnapshotError):
        return None
    return sysret_at(code)


def _describe(address: int, opsize: int) -> str:
    sym = symbolize(address)
    insn = "sysretq" if opsize == 64 else "sysretl"
    return f"{insn} at {address:#x}" + (f" <{sym}>" if sym else "")


# ---------------------------------------------------------------------------
# sysret-check
# ---------------------------------------------------------------------------

class SysretCheck(GdbextCommand):
    """Would a SYSRET executed now work?  Every rule, with values and consequence.

Usage: sysret-check [ADDRESS] [--opsize 32|64] [--json]

Evaluates every rule as if the sysret at ADDRESS (default: the instruction at
RIP) executed with the current registers.  When there is no sysret at that
address, it checks "a sysretq now".  One line per rule: pass, warning or
error, with the values involved and what Intel CPUs, AMD CPUs and QEMU do.
Rules: SR-SCE SR-MODE SR-CPL SR-RCX-CANONICAL SR-OPSIZE SR-STAR-CS SR-STAR-SS
SR-STAR-RPL SR-STAR-LIMIT SR-RIP-MAPPED SR-RSP-USER SR-RFLAGS SR-SWAPGS
SR-LSTAR SR-SFMASK SR-TSS-RSP0 SR-STAR-SYSCALL (see the README's rule table).
JSON: {"findings": [{"rule", "severity", "message", "consequence", "values"}],
"checked": [{"rule", "status", "message"}], "opsize", "address", "at_sysret"}."""

    NAME = "sysret-check"
    PHYS_SESSION = True
    WRAP_TEXT = True
    COMMAND_CLASS = gdb.COMMAND_STATUS

    def arguments(self, parser):
        parser.add_argument("address", nargs="?", type=address_arg)
        parser.add_argument("--opsize", type=count_arg, choices=(32, 64))

    def run(self, args):
        snap = target.snapshot()
        unknown = target.efer_unknown()
        if unknown:
            raise gdb.GdbError(f"sysret-check: EFER.SCE decides whether SYSRET runs at all, and {unknown}")
        address = snap.rip if args.address is None else args.address
        found = _site_opsize(address)
        opsize = args.opsize or found or 64
        _prefetch_msrs(snap)
        report = rules.evaluate(snap, opsize=opsize)
        where = _describe(address, opsize) if found else (
            f"no sysret at {address:#x}; checking a sysret{'q' if opsize == 64 else 'l'} executed now")
        doc = report.to_json()
        doc.update({"address": address, "at_sysret": found is not None, "cpu": snap.cpu})
        return doc, lambda: report_text(report, where)


def _prefetch_msrs(snap: Snapshot) -> None:
    """All MSRs the rules need, in one injection; the watch's copy when armed."""
    known = WATCH.msrs.get(snap.cpu)
    if WATCH.armed and known:
        snap.msrs.update(known)
        return
    try:
        target.read_msrs(snap, list(WATCHED_MSRS))
    except gdb.GdbError:
        pass  # each rule that needs one says it was skipped, and why


# ---------------------------------------------------------------------------
# sysret-watch
# ---------------------------------------------------------------------------

@dataclass
class Watch:
    armed: bool = False
    warnings: bool = False
    sites: List[Site] = field(default_factory=list)
    iret_sites: List[Site] = field(default_factory=list)
    wrmsr_sites: List[int] = field(default_factory=list)
    table_sites: List[int] = field(default_factory=list)
    breakpoints: List[gdb.Breakpoint] = field(default_factory=list)
    msrs: Dict[int, Dict[int, int]] = field(default_factory=dict)   # cpu -> MSR -> value
    verdicts: VerdictCache = field(default_factory=VerdictCache)
    checks: int = 0
    iret_checks: int = 0
    wrmsr_checks: int = 0
    table_loads: int = 0
    findings: int = 0
    check_seconds: float = 0.0
    reused_seconds: float = 0.0     # of check_seconds: sysret checks whose verdict was reused
    source: str = ""
    memory: str = ""
    dropped: int = 0
    last: Optional[dict] = None

    def status(self) -> dict:
        return {"armed": self.armed, "warnings": self.warnings,
                "sites": [s.address for s in self.sites], "wrmsr_sites": self.wrmsr_sites,
                "iret_sites": [s.address for s in self.iret_sites], "iret_checks": self.iret_checks,
                "table_load_sites": self.table_sites,
                "checks": self.checks, "wrmsr_checks": self.wrmsr_checks, "table_loads": self.table_loads,
                "findings": self.findings, "reused_verdicts": self.verdicts.hits,
                "source": self.source, "memory": self.memory, "dropped_candidates": self.dropped,
                "mean_check_ms": round(1000 * self.check_seconds / max(1, self._all_checks), 3),
                "mean_reused_ms": round(1000 * self.reused_seconds / max(1, self.verdicts.hits), 3),
                "mean_evaluated_ms": round(1000 * (self.check_seconds - self.reused_seconds)
                                           / max(1, self._all_checks - self.verdicts.hits), 3),
                "last_finding": self.last}

    @property
    def _all_checks(self) -> int:
        return self.checks + self.iret_checks + self.wrmsr_checks

    def msrs_for(self, cpu: int) -> Dict[int, int]:
        known = self.msrs.get(cpu)
        if known is None:
            # A vCPU the watch has not seen yet: most kernels program the same
            # syscall MSRs on every CPU; take another CPU's.
            known = next(iter(self.msrs.values()), {})
        return known


class _SessionWatch:
    """`WATCH`: the watch of the current session.  Its breakpoints, counts and
    MSRs belong to one connection (target.Session), and go with it."""

    def __getattr__(self, name: str):
        return getattr(_watch(), name)

    def __setattr__(self, name: str, value) -> None:
        setattr(_watch(), name, value)


def _watch() -> Watch:
    session = target.current()
    # The MSRs the watch learns at wrmsr sites are the session's: $msr() in a
    # breakpoint condition and sysret-check read them there too.
    return session.of("sysret-watch", lambda: Watch(msrs=session.msrs))


WATCH = _SessionWatch()


# The watch of the last connection that ended, for `sysret-watch status`
# after the guest exited: a record of what was, never used to check anything.
_ENDED: List[Optional[Watch]] = [None]


def _forget_watch(session: target.Session) -> None:
    """The connection ended: the watch's breakpoints are at its kernel's sites."""
    watch = session.state.get("sysret-watch")
    if watch is None:
        return
    _ENDED[0] = watch
    if not watch.armed:
        return
    for bp in watch.breakpoints:
        if bp.is_valid():
            bp.delete()
    watch.breakpoints = []
    watch.armed = False
    gdb.write("gdbext: sysret-watch is off: the connection it watched ended\n")


def _no_rdmsr(number: int) -> int:
    raise SnapshotError(f"MSR {number:#x} is not known to the watch (it cannot run rdmsr inside a stop)")


def _snapshot_in_stop(regs: Optional[target.LiveRegisters] = None) -> Snapshot:
    """A snapshot inside a breakpoint's stop(): no rdmsr, the watch's MSRs."""
    with target.in_stop_callback():
        snap = target.stop_snapshot(regs)
    snap.msrs.update(WATCH.msrs_for(snap.cpu))
    snap.msr_reader = _no_rdmsr
    return snap


def check_here(opsize: int) -> Optional[rules.Report]:
    """The watch's check at a sysret site: None when it passes, else the report.

    Call inside stop() with target.in_stop_callback() and PHYS.session().
    """
    cpu = target.selected_cpu()
    key = (cpu, opsize)
    msrs = WATCH.msrs_for(cpu)
    live = target.LiveRegisters()
    kept = target.monitor_state(cpu, live)
    if WATCH.verdicts.lookup(key, live.get, msrs, target.PHYS.read, kept):
        return None
    snap = _snapshot_in_stop(live)
    report = rules.evaluate(snap, opsize=opsize)
    if report.ok(warnings=WATCH.warnings):
        WATCH.verdicts.store(key, Inputs.of(snap.regs, snap.msrs, snap.read_log or [], snap.monitor))
        return None
    # Fail: never on kept monitor state alone.  Read it again and decide.
    target.forget_monitor(cpu)
    snap = _snapshot_in_stop(live)
    report = rules.evaluate(snap, opsize=opsize)
    return None if report.ok(warnings=WATCH.warnings) else report


class ReturnSiteBreakpoint(gdb.Breakpoint):
    """A watched SYSRET or IRET site: its check runs in stop(), timed, and the
    guest stops only on a failing report.  Subclasses name the instruction,
    the counter of the watch they add to, and how to check and describe."""

    KIND = "sysret"               # the finding's "kind" in JSON
    COUNTER = "checks"            # the Watch field counting these checks
    STOPPED = "a sysret"          # "stopped before a sysret that would go wrong"
    LABEL = "check"               # "check at 0x... failed"

    def __init__(self, site: Site):
        super().__init__(f"*{site.address:#x}", gdb.BP_BREAKPOINT, internal=True)
        self.site = site
        self.silent = True

    def check(self):
        return check_here(self.site.opsize)

    def text(self, report) -> str:
        return report_text(report, _describe(self.site.address, self.site.opsize), verbose=False)

    def stop(self) -> bool:
        t0 = time.perf_counter()
        hits = WATCH.verdicts.hits
        try:
            with target.in_stop_callback(), target.PHYS.session():
                report = self.check()
        except KeyboardInterrupt:
            return True  # Ctrl-C (or SIGINT) during a check: the user wants the guest stopped
        except Exception as exc:  # noqa: BLE001 - a watch must never kill the session
            gdb.write(f"sysret-watch: {self.LABEL} at {self.site.address:#x} failed: {exc}\n", gdb.STDERR)
            return True
        finally:
            spent = time.perf_counter() - t0
            WATCH.check_seconds += spent
            if WATCH.verdicts.hits != hits:
                WATCH.reused_seconds += spent
        setattr(WATCH, self.COUNTER, getattr(WATCH, self.COUNTER) + 1)
        if report is None:
            return False
        WATCH.findings += 1
        doc = report.to_json()
        doc.update({"address": self.site.address, "cpu": target.selected_cpu(), "kind": self.KIND})
        WATCH.last = doc
        write_fitted(f"sysret-watch: stopped before {self.STOPPED} that would go wrong\n" + self.text(report))
        return True


class SysretBreakpoint(ReturnSiteBreakpoint):
    pass


class TableLoadBreakpoint(gdb.Breakpoint):
    """An LGDT or LTR site: the vCPU's kept monitor state is about to go stale."""

    def __init__(self, address: int):
        super().__init__(f"*{address:#x}", gdb.BP_BREAKPOINT, internal=True)
        self.silent = True

    def stop(self) -> bool:
        try:
            target.forget_monitor(target.selected_cpu())
        except Exception:  # noqa: BLE001 - nothing kept is fine too: forget all
            target.forget_monitor()
        WATCH.table_loads += 1
        return False


class WrmsrBreakpoint(gdb.Breakpoint):
    def __init__(self, address: int):
        super().__init__(f"*{address:#x}", gdb.BP_BREAKPOINT, internal=True)
        self.address = address
        self.silent = True

    def stop(self) -> bool:
        t0 = time.perf_counter()
        try:
            frame = gdb.newest_frame()
            number = int(frame.read_register("rcx")) & 0xFFFFFFFF
            if number not in WRMSR_RULE_MSRS:
                return False
            value = ((int(frame.read_register("rdx")) & 0xFFFFFFFF) << 32) | (int(frame.read_register("rax")) & 0xFFFFFFFF)
            with target.in_stop_callback(), target.PHYS.session():
                snap = _snapshot_in_stop()
                results = rules.check_msr_write(snap, number, value)
            if number in WATCHED_MSRS:
                WATCH.msrs.setdefault(snap.cpu, {})[number] = value
        except KeyboardInterrupt:
            return True
        except Exception as exc:  # noqa: BLE001
            gdb.write(f"sysret-watch: wrmsr check at {self.address:#x} failed: {exc}\n", gdb.STDERR)
            return True
        finally:
            WATCH.check_seconds += time.perf_counter() - t0
        WATCH.wrmsr_checks += 1
        bad = [r for r in results if r.status == "error" or (WATCH.warnings and r.status == "warning")]
        if not bad:
            return False
        WATCH.findings += 1
        sym = symbolize(self.address)
        where = f"wrmsr at {self.address:#x}{f' <{sym}>' if sym else ''} writing {_MSR_NAME[number]} = {value:#x}"
        WATCH.last = {"kind": "wrmsr", "address": self.address, "msr": number, "value": value, "cpu": snap.cpu,
                      "findings": [{"rule": r.rule, "severity": r.status, "message": r.message,
                                    "consequence": r.consequence, "values": dict(r.values)} for r in bad]}
        lines = [f"sysret-watch: stopped at a wrmsr that sets up a sysret to fail: {where}"]
        for r in bad:
            lines.append(f"  {_MARK[r.status]} {r.rule:17} {r.message}")
            if r.consequence:
                lines.append(f"  {'':7} {'':17} -> {r.consequence}")
        write_fitted("\n".join(lines))
        return True


@dataclass
class _Found:
    sysret: List[Site]
    wrmsr: List[int]
    table_loads: List[int]
    source: str
    dropped: int = 0     # candidates not proven to start an instruction
    iret: List[Site] = field(default_factory=list)


def _find_sites(snap: Snapshot, with_iret: bool = True) -> _Found:
    """Every SYSRET, WRMSR, LGDT and LTR the kernel's code holds: candidates by
    their bytes, kept only where decoding from a known instruction start
    lands on them (gdbext.target.code)."""
    code = target.kernel_code(snap)
    found = _Found([], [], [], code.source)
    symbols = {}
    for name in target.elf_files():
        try:
            sysret, _ = sites_from_elf(name)
        except (OSError, ValueError):
            continue
        symbols.update({s.address: s.symbol for s in sysret})
    for region in code.regions:
        found.sysret += [replace(s, symbol=symbols.get(s.address)) for s in scan(region.code, region.base)]
        if with_iret:
            found.iret += scan_iret(region.code, region.base)
        found.wrmsr += scan_wrmsr(region.code, region.base)
        found.table_loads += scan_table_loads(region.code, region.base)
    kept, found.dropped = code.prove([s.address for s in found.sysret + found.iret] + found.wrmsr
                                     + found.table_loads)
    found.sysret = sorted((s for s in found.sysret if s.address in kept), key=lambda s: s.address)
    found.iret = sorted((replace(s, symbol=symbolize(s.address)) for s in found.iret if s.address in kept),
                        key=lambda s: s.address)
    found.wrmsr = [a for a in found.wrmsr if a in kept]
    found.table_loads = [a for a in found.table_loads if a in kept]
    return found


def arm(warnings: bool, with_wrmsr: bool = True, with_iret: bool = True) -> str:
    from gdbext.commands.iret import IretBreakpoint

    disarm()
    snap = target.snapshot()
    found = _find_sites(snap, with_iret)
    if not found.sysret:
        raise gdb.GdbError(f"sysret-watch: no SYSRET instruction found ({found.source})")
    cpus = [t for t in gdb.selected_inferior().threads()]
    original = gdb.selected_thread()
    notes = []
    try:
        for thread in cpus:
            thread.switch()
            s = target.snapshot()
            try:
                # Arming asks for the MSRs: a halted vCPU is woken for them, and said so.
                WATCH.msrs[s.cpu] = target.read_msrs(s, list(WATCHED_MSRS), wake=True)
                if s.woke_ns is not None:
                    notes.append(f"vCPU {s.cpu} was halted in HLT: its LAPIC timer fired {s.woke_ns / 1e6:.1f} ms "
                                 "early to read its MSRs; that interrupt is pending")
            except (gdb.GdbError, SnapshotError) as exc:
                notes.append(f"vCPU {s.cpu}: MSRs not read ({str(exc).removeprefix('gdbext: ')}); "
                             "they are learnt from the wrmsr sites")
    finally:
        original.switch()
    WATCH.sites = found.sysret
    WATCH.iret_sites = found.iret if with_iret else []
    WATCH.wrmsr_sites = sorted(set(found.wrmsr)) if with_wrmsr else []
    WATCH.table_sites = sorted(set(found.table_loads))
    WATCH.breakpoints = [SysretBreakpoint(s) for s in found.sysret]
    WATCH.breakpoints += [IretBreakpoint(s) for s in WATCH.iret_sites]
    WATCH.breakpoints += [WrmsrBreakpoint(a) for a in WATCH.wrmsr_sites]
    WATCH.breakpoints += [TableLoadBreakpoint(a) for a in WATCH.table_sites]
    WATCH.armed = True
    WATCH.warnings = warnings
    WATCH.source = found.source
    WATCH.dropped = found.dropped
    WATCH.memory = target.PHYS.source
    WATCH.checks = WATCH.iret_checks = WATCH.wrmsr_checks = WATCH.findings = WATCH.table_loads = 0
    WATCH.check_seconds = WATCH.reused_seconds = 0.0
    WATCH.verdicts.clear()
    WATCH.last = None
    target.forget_monitor()
    head = (f"sysret-watch: armed on {len(found.sysret)} sysret site(s), {len(WATCH.iret_sites)} iret site(s) "
            f"and {len(WATCH.wrmsr_sites)} wrmsr site(s) from {found.source}; stops on "
            f"{'errors and warnings' if warnings else 'errors'}")
    if found.dropped:
        notes.append(f"{found.dropped} byte pattern(s) not proven to start an instruction were left out "
                     "(decoding from a known instruction start does not land on them)")
    if not target.PHYS.shared:
        notes.append("guest memory is read through the gdb stub; with QEMU on this machine (and ptrace "
                     "rights on it) or guest RAM in a shared file, each check is several times cheaper")
    return "\n".join([head] + ["  " + n for n in notes])


def disarm() -> None:
    for bp in WATCH.breakpoints:
        if bp.is_valid():
            bp.delete()
    WATCH.breakpoints = []
    WATCH.armed = False
    WATCH.verdicts.clear()


class SysretWatch(GdbextCommand):
    """Stop the guest right before a SYSRET or an IRETQ that would go wrong.

Usage: sysret-watch on [--warnings] [--no-wrmsr] [--no-iret] | off | status [--json]

on: find every SYSRET instruction in the kernel's code (from the ELF files gdb
has loaded, read with pyelftools; with none, by scanning the kernel's
executable pages) and break on each, evaluating every sysret-check rule there;
the guest stops only when a rule fails (with --warnings, on warnings too) and
the diagnosis is printed.  Every WRMSR site is watched too: a write of STAR,
LSTAR, SFMASK or EFER that cannot work stops at the wrmsr, naming it.
Every IRET site is watched too (--no-iret: not), evaluating every iret-check
rule on the frame at RSP: a return to ring 3 that would fault or hand ring 3
what it must not have stops there; returns into the kernel pass quickly.
Sites are only addresses proven to start an instruction (decoded forward
from symbols or known entry points); the candidates left out are counted.
LGDT and LTR sites are watched as well, only to know when GDTR or TR change.
While the guest hits watched sites fast, gdb may drop a Ctrl-C that lands as
it steps over one: press it again.
off: remove the breakpoints.  status: sites, checks made, findings, verdicts
reused (a check whose every input -- registers, MSRs, monitor state, bytes
of memory -- was unchanged since an earlier pass), mean check time.
JSON (status): {"armed", "sites": [addresses], "iret_sites", "checks" (sysret),
"iret_checks", "wrmsr_checks", "findings", "dropped_candidates", ...}."""

    NAME = "sysret-watch"
    LIVE_ONLY = True
    WRAP_TEXT = True
    COMMAND_CLASS = gdb.COMMAND_BREAKPOINTS

    def arguments(self, parser):
        parser.add_argument("action", choices=("on", "off", "status"))
        parser.add_argument("--warnings", action="store_true")
        parser.add_argument("--no-wrmsr", action="store_true")
        parser.add_argument("--no-iret", action="store_true")

    def run(self, args):
        if args.action == "on":
            text = arm(args.warnings, not args.no_wrmsr, not args.no_iret)
            return WATCH.status(), text
        if args.action == "off":
            disarm()
            return WATCH.status(), "sysret-watch: off"
        watch, ended = _watch_for_status()
        st = watch.status()
        st["connection_ended"] = ended
        real = list(watch.sites)
        text = ("sysret-watch: the connection ended; its last status: " if ended else "sysret-watch: ")
        text += (f"{'armed' if st['armed'] else 'off'}; {len(real)} sysret site(s), "
                f"{len(st['iret_sites'])} iret site(s), {len(st['wrmsr_sites'])} wrmsr site(s); "
                f"{st['checks']} sysret check(s), {st['iret_checks']} iret check(s), "
                f"{st['wrmsr_checks']} wrmsr check(s), {st['findings']} finding(s); "
                f"{st['reused_verdicts']} verdict(s) reused unchanged; mean check {st['mean_check_ms']} ms "
                f"({st['mean_reused_ms']} ms reused, {st['mean_evaluated_ms']} ms evaluated)")
        if st["armed"]:
            text += f"\n  memory: {st['memory']}; {len(st['table_load_sites'])} LGDT/LTR site(s) watched"
        if st["armed"]:
            text += "\n  sites: " + " ".join(
                f"{s.address:#x}" + (f" <{s.symbol}>" if s.symbol else "") for s in real[:16])
            if len(real) > 16:
                text += f" ... ({len(real)} in all)"
        return st, text


def _watch_for_status() -> "tuple[Watch, bool]":
    """The current session's watch, or the ended one's when there is no target."""
    try:
        watch = _watch()
        target.require_qemu()   # no watch can exist on another stub: say why in one line
        return watch, False
    except target.TargetError:
        if target.peek() is not None:
            raise
        if _ENDED[0] is None:
            return Watch(), False   # no target yet: a watch that was never on
        return _ENDED[0], True


class SysretOk(gdb.Function):
    """$sysret_ok([32|64]) - 1 if the sysret at RIP (or a sysretq now) would pass every error rule, else 0.

The operand size is the sysret's at RIP, else 64; 32 or 64 overrides it.
In a breakpoint condition no rdmsr can run (it would step the guest), so the
MSRs are the ones this session already knows for that vCPU: read by `info
msr` or `sysret-check` at an earlier stop, or kept current by `sysret-watch
on` (which also follows every wrmsr).  If a rule needs an MSR not known yet,
the condition fails with one line saying so: stop once and run `info msr`."""

    def __init__(self) -> None:
        super().__init__("sysret_ok")

    def invoke(self, *args):
        if len(args) > 1:
            raise gdb.GdbError("$sysret_ok: takes at most one argument, the operand size 32 or 64")
        size = None
        if args:
            size = int_argument("$sysret_ok", args[0])
            if size not in (32, 64):
                raise gdb.GdbError(f"$sysret_ok: the operand size is 32 or 64, not {size}")
        snap = target.snapshot()
        if target.efer_unknown():
            raise gdb.GdbError(f"$sysret_ok: {target.efer_unknown()}")
        if size is None:
            size = _site_opsize(snap.rip) or 64
        if target.in_condition():
            known = target.known_msrs(snap.cpu)
            missing = [_MSR_NAME.get(n, f"{n:#x}") for n in WATCHED_MSRS if n not in known and n not in snap.msrs]
            if missing:
                raise gdb.GdbError(f"$sysret_ok: inside a condition it uses the MSRs already read, and "
                                   f"{', '.join(missing)} of vCPU {snap.cpu} are not: stop once and run "
                                   "`info msr` (or `sysret-watch on`), then continue")
            for number, value in known.items():
                snap.msrs.setdefault(number, value)
        else:
            _prefetch_msrs(snap)
        return int(rules.evaluate(snap, opsize=size).ok())


def register() -> None:
    target.on_drop(_forget_watch)
    SysretCheck()
    SysretWatch()
    SysretOk()
