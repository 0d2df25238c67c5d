"""One debugging session's state belongs to its connection (issue 15).

Real gdb with gdbext loaded, against real QEMU (and, for a stub that is not
QEMU, Debian's gdbserver):

- reconnect A -> B in one gdb: every answer is B's (GDT bytes against B's own
  monitor, `sysret-check` against B's mistake), with and without a RAM file,
  and with A killed first;
- QEMU killed under gdb: the next command says the connection was lost, never
  a table from a cache;
- a stub that is not QEMU: every command says so in one line, also after a
  QEMU session in the same gdb; and QEMU after such a stub works;
- $cpl(), $sysret_ok(), $msr() in breakpoint conditions and `commands` blocks;
- looking never changes the patient: a halted vCPU stays halted unless the
  user asks for `info msr --wake`;
- an MSR QEMU does not implement is shown with that caveat.

Oracles owe nothing to gdbext: QEMU's monitor (`info registers N`, `gva2gpa`,
`xp`), the kernel's serial log, gdb's own symbols and registers.
"""
from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from gdbext.tools.driver import GdbDriver, GdbError
from stubs import gdbserver
from test_info_live import monitor, refused, run_to, symbol_address

pytestmark = pytest.mark.qemu

RUN_TIMEOUT = 90.0          # a boot to a breakpoint: OVMF alone takes seconds, more under load

# kernel/README.md: the GDT the kernel builds, and STAR.
STAR_OK = 0x001B_0008_0000_0000
# gdt-order (gdt.c fill_user_descriptors): user code 64 at 0x20, user data at
# 0x28, so SYSRETQ's CS = STAR[63:48]+16 = 0x2b selects a data descriptor.
GDT_ORDER_RULE = "SR-STAR-CS"
# star-rpl0 (syscall.c star_value): STAR[63:48] = 0x18, RPL 0; every sysret,
# the correct path's syscall_return_sysret included, fails SR-STAR-RPL.
STAR_RPL0_RULE = "SR-STAR-RPL"

CONDITION_ERROR = "Error in testing breakpoint condition"
RDMSR_ONLY = ("STAR", "LSTAR", "CSTAR", "SFMASK")  # no gdb register holds these
# MSRs gdb's registers hold (FIELD-NOTES: QEMU's stub exposes them), with the register's name.
FROM_REGISTERS = {"EFER": "efer", "FS_BASE": "fs_base", "GS_BASE": "gs_base", "KERNEL_GS_BASE": "k_gs_base"}

# Every gdbext command and function, as typed at the prompt.
EVERY_COMMAND = ("info gdt", "info tss", "info idt", "info msr", "info cpl", "pagewalk $pc", "ptdump",
                 "sysret-check", "sysret-watch on", "sysret-watch status",
                 "print $cpl()", 'print $msr("STAR")', "print $sysret_ok()")


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def mi_escaped(command: str) -> str:
    """A CLI command as the inside of an MI C-string (test_info_live.refused quotes it as is)."""
    return command.replace("\\", "\\\\").replace('"', '\\"')


def refused_in_one_line(gdb: GdbDriver, command: str) -> str:
    """`refused`, and the refusal is gdbext's own: not an uncaught Python exception
    (gdb prints those as "Python Exception <class ...>" / "Error occurred in Python")."""
    message = refused(gdb, mi_escaped(command))
    assert not message.startswith("Error occurred in Python"), f"{command}: {message}"
    return message


def value_of(gdb: GdbDriver, expression: str) -> int:
    """`print/x EXPR` as an integer (gdb evaluates it, e.g. a convenience function)."""
    out = gdb.command(f"print/x {expression}")
    match = re.search(r"= (0x[0-9a-f]+)", out)
    assert match, f"print/x {expression} printed {out!r}"
    return int(match.group(1), 16)


def register(gdb: GdbDriver, name: str) -> int:
    return value_of(gdb, f"${name}")


def monitor_gdt_qwords(gdb: GdbDriver, base: int, limit: int) -> list[int]:
    """The GDT's bytes as QEMU reads them: `gva2gpa` for each page, `xp /Ngx` there."""
    qwords: list[int] = []
    va, end = base, base + limit + 1
    while va < end:
        chunk = min(end, (va | 0xFFF) + 1) - va
        out = gdb.command(f"monitor gva2gpa {va:#x}")
        match = re.search(r"gpa: (0x[0-9a-f]+)", out)
        assert match, f"QEMU could not translate {va:#x}: {out!r}"
        dump = gdb.command(f"monitor xp /{chunk // 8}gx {int(match.group(1), 16):#x}")
        qwords += [int(word, 16) for line in dump.splitlines() for word in line.split(":", 1)[1].split()]
        va += chunk
    assert len(qwords) == (limit + 1) // 8
    return qwords


def gdt_differences(gdb: GdbDriver) -> tuple[dict, list[str]]:
    """`info gdt --json` against the monitor of the QEMU gdb is connected to
    now: (the report, each difference in words)."""
    hmp = monitor(gdb)
    gdt = gdb.json("info gdt")
    if (gdt["base"], gdt["limit"]) != (hmp.gdt.base, hmp.gdt.limit):
        return gdt, [f"GDTR shown as {gdt['base']:#x}/{gdt['limit']:#x}, QEMU has {hmp.gdt.base:#x}/{hmp.gdt.limit:#x}"]
    qwords = monitor_gdt_qwords(gdb, hmp.gdt.base, hmp.gdt.limit)
    wrong = []
    for entry in gdt["entries"]:
        index, size = entry["index"], entry["size"]
        want = qwords[index] | ((qwords[index + 1] << 64) if size == 16 else 0)
        if entry["raw"] != want:
            wrong.append(f"GDT[{index}] shown as {entry['raw']:#x} ({entry['kind']}), QEMU's memory holds {want:#x}")
    return gdt, wrong


def check_gdt_is_this_guests(gdb: GdbDriver) -> dict:
    gdt, wrong = gdt_differences(gdb)
    assert not wrong, "not this guest's GDT: " + "; ".join(wrong)
    return gdt


def error_rules(report: dict) -> set[str]:
    return {f["rule"] for f in report["findings"] if f["severity"] == "error"}


def resume(gdb: GdbDriver, timeout: float):
    """Continue to the next stop; (stop, everything gdb printed on the way,
    including what a breakpoint's `commands` printed after the stop)."""
    stop = gdb.resume_until_stop(timeout)
    after = gdb.command("echo")   # output that came after the stop record
    return stop, (stop.console if stop else "") + after


def resume_logging_packets(gdb: GdbDriver, timeout: float):
    """resume() with gdb's remote packets logged (`set debug remote 1`):
    (stop, what gdb printed without the packet log, the packet log)."""
    gdb.command("set debug remote 1")
    try:
        stop, printed = resume(gdb, timeout)
    finally:
        gdb.command("set debug remote 0")
    lines = printed.splitlines()
    # A log line may follow other output on the same line: look for the tag anywhere.
    return (stop, "\n".join(line for line in lines if "[remote]" not in line),
            [line for line in lines if "[remote]" in line])


def steps_after_the_stop(packets: list[str]) -> list[str]:
    """The vCont packets sent after gdb's last continue: once that continue's
    stop reply arrives (gdb 13 logs it only as "wait: exit"), a vCont before
    the stop is reported can only be the breakpoint condition running the
    guest (an injected rdmsr is one step).  gdb's own step over a breakpoint
    whose condition was false is followed by another continue."""
    resumed = [i for i, line in enumerate(packets) if re.search(r"Sending packet: \$(vCont;c|c#)", line)]
    assert resumed, "no continue packet in gdb's remote log"
    return [line for line in packets[resumed[-1] + 1:] if "Sending packet: $vCont" in line]


def bp_number(gdb: GdbDriver, command: str) -> int:
    out = gdb.command(command)
    match = re.search(r"reakpoint (\d+) at", out)
    assert match, f"{command}: {out!r}"
    return int(match.group(1))


def syscall_lines(serial: str) -> list[str]:
    return re.findall(r"^\[kernel\] syscall #(\d+)", serial, re.M)


@contextmanager
def stopped_guest(kernel_session, scenario: str, location: str, ram_file: bool = True) -> Iterator:
    """A guest booted to `location` by a gdb of its own, then left there
    (`disconnect` closes the connection without resuming QEMU), so another
    gdb finds it stopped.  Yields (qemu, that helper gdb's first sysret-check)."""
    with kernel_session(scenario, ram_file=ram_file) as (qemu, helper):
        run_to(helper, location)
        report = helper.json("sysret-check")
        helper.command("disconnect")
        yield qemu, report


# ---------------------------------------------------------------------------
# 1. Reconnect A -> B in one gdb
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("a_ram, b_ram, kill_a", [
    (True, True, False),
    (True, False, False),
    (True, True, True),
], ids=["both-ram-files", "b-without-ram-file", "a-killed-first"])
def test_reconnect_answers_are_the_new_guests(kernel_session, a_ram, b_ram, kill_a):
    """A = `ok`, B = `gdt-order`, both at enter_user_sysret (same kernel, same
    addresses; only B's GDT entries 4 and 5 are swapped).  After `target
    remote B` the GDT must be B's bytes and sysret-check must fail SR-STAR-CS."""
    with stopped_guest(kernel_session, "gdt-order", "enter_user_sysret", ram_file=b_ram) as (qemu_b, fresh):
        # B alone, seen by a gdb that never saw A: the mistake is visible.
        assert GDT_ORDER_RULE in error_rules(fresh), fresh["findings"]
        with kernel_session("ok", ram_file=a_ram) as (qemu_a, gdb):
            run_to(gdb, "enter_user_sysret")
            gdt_a = check_gdt_is_this_guests(gdb)
            assert error_rules(gdb.json("sysret-check")) == set()
            gdb.command("disconnect")
            if kill_a:
                ram_a = qemu_a.ram_path
                qemu_a.stop()
                assert not qemu_a.running and ram_a is not None and not ram_a.exists()
            gdb.connect(qemu_b.gdb_port)
            assert monitor(gdb).rip == symbol_address(gdb, "enter_user_sysret")
            _gdt_b, wrong = gdt_differences(gdb)
            report = gdb.json("sysret-check")
            if GDT_ORDER_RULE not in error_rules(report):
                verdict = next(c for c in report["checked"] if c["rule"] == GDT_ORDER_RULE)
                wrong.append(f"sysret-check on B (gdt-order): {verdict['status']} {GDT_ORDER_RULE}: {verdict['message']}")
            assert not wrong, "after `target remote B`, answers that are not B's:\n" + "\n".join(wrong)
            assert [e["raw"] for e in _gdt_b["entries"]] != [e["raw"] for e in gdt_a["entries"]]


# ---------------------------------------------------------------------------
# 2. QEMU killed under gdb
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["stop", "sigkill"])
def test_qemu_killed_under_gdb_says_connection_lost(kernel_session, how):
    """gdb itself notices nothing until it sends a packet (its register cache
    still answers `info registers`); the first gdbext command after the kill
    must not print the cached table."""
    with kernel_session("ok") as (qemu, gdb):
        run_to(gdb, "enter_user_sysret")
        gdb.command("info gdt")                 # the state is now cached
        if how == "stop":
            qemu.stop()
        else:
            os.kill(qemu.pid, signal.SIGKILL)
            qemu.process.wait(10)
        assert not qemu.running
        message = refused_in_one_line(gdb, "info gdt")
        assert "connection" in message.lower() and "lost" in message.lower(), message
        # And afterwards: still a one-line refusal, never a table.
        refused_in_one_line(gdb, "info gdt")


# ---------------------------------------------------------------------------
# 3. A gdb stub that is not QEMU
# ---------------------------------------------------------------------------

def check_every_command_says_not_qemu(gdb: GdbDriver) -> None:
    problems = []
    for command in EVERY_COMMAND:
        try:
            message = refused_in_one_line(gdb, command)
        except AssertionError as exc:
            problems.append(str(exc).splitlines()[0])
            continue
        if "not QEMU" not in message:
            problems.append(f"{command}: {message}")
    assert not problems, "on a stub that is not QEMU:\n" + "\n".join(problems)


@pytest.fixture
def stub() -> Iterator:
    """Debian's gdbserver serving /bin/sleep on a free port; killed at the end."""
    with gdbserver() as server:
        yield server


def test_gdbserver_every_command_says_not_qemu(stub):
    with GdbDriver(timeout=60) as gdb:
        gdb.load_gdbext()
        gdb.connect(stub.port)
        check_every_command_says_not_qemu(gdb)


def test_gdbserver_after_a_qemu_session_says_not_qemu(kernel_session, stub):
    """The "is this QEMU?" answer must not outlive the QEMU connection."""
    with kernel_session("ok") as (_qemu, gdb):
        run_to(gdb, "enter_user_sysret")
        gdb.command("info gdt")
        gdb.command("disconnect")
        gdb.connect(stub.port)
        check_every_command_says_not_qemu(gdb)


def test_qemu_after_gdbserver_works(kernel_paths, qemu_factory, stub):
    qemu = qemu_factory(scenario="ok", wait=True, gdb_port=0)
    with GdbDriver(elf=kernel_paths.elf, timeout=60) as gdb:
        gdb.load_gdbext()
        gdb.connect(stub.port)
        for command in EVERY_COMMAND:   # whatever they answer there (tested above): they ran
            gdb.mi(f'-interpreter-exec console "{mi_escaped(command)}"')
        gdb.command("disconnect")
        # gdb took /usr/bin/sleep from gdbserver as its program: the kernel's
        # symbols back, as anyone would before the next target.
        gdb.command(f"file {kernel_paths.elf}")
        gdb.connect(qemu.gdb_port)
        run_to(gdb, "enter_user_sysret")
        try:
            for command in EVERY_COMMAND:
                gdb.command(command)                # raises GdbError with gdb's message if refused
        finally:
            gdb.command("sysret-watch off")
        assert value_of(gdb, "$cpl()") == 0
        assert value_of(gdb, '$msr("STAR")') == STAR_OK
        assert value_of(gdb, "$sysret_ok()") == 1
        assert gdb.json("info gdt")["base"] == monitor(gdb).gdt.base


# ---------------------------------------------------------------------------
# 4. The functions in breakpoint conditions and commands blocks
# ---------------------------------------------------------------------------

def test_cpl_condition_true_stops_in_ring3(kernel_session):
    with kernel_session("ok") as (_qemu, gdb):
        user_main = symbol_address(gdb, "user_main")
        bp_number(gdb, "break user_main if $cpl() == 3")
        stop, printed, packets = resume_logging_packets(gdb, RUN_TIMEOUT)
        assert CONDITION_ERROR not in printed, printed[-600:]
        assert stop is not None and stop.reason == "breakpoint-hit" and stop.address == user_main, stop
        assert not steps_after_the_stop(packets), "the condition ran the guest"
        assert monitor(gdb).rip == user_main and monitor(gdb).cpl == 3
        assert value_of(gdb, "$cpl()") == 3


def test_cpl_condition_false_never_stops(kernel_session):
    """`spin` reaches user_main once, then makes system calls forever: a second
    breakpoint on syscall_entry is the next stop when the condition is false."""
    with kernel_session("spin") as (_qemu, gdb):
        bp_number(gdb, "break user_main if $cpl() == 0")
        bp_number(gdb, "tbreak syscall_entry")
        stop, printed = resume(gdb, RUN_TIMEOUT)
        assert CONDITION_ERROR not in printed, printed[-600:]
        assert stop is not None and stop.address == symbol_address(gdb, "syscall_entry"), (
            f"stopped at {stop and stop.address and hex(stop.address)}, not syscall_entry: {printed[-600:]}")
        assert monitor(gdb).cpl == 0


def learn_msrs_at_first_sysret(gdb: GdbDriver) -> dict:
    """Stop once where the MSRs are set (enter_user_sysret) and check there, so
    the session knows them: a condition cannot run rdmsr (the guest would have
    to step) and uses what the session already knows."""
    run_to(gdb, "enter_user_sysret")
    return gdb.json("sysret-check")


def test_sysret_ok_condition_never_stops_on_ok(kernel_session):
    with kernel_session("ok") as (qemu, gdb):
        assert error_rules(learn_msrs_at_first_sysret(gdb)) == set()
        bp_number(gdb, "break syscall_return_sysret if $sysret_ok() == 0")
        bp_number(gdb, "tbreak qemu_exit")      # the kernel's last function, before QEMU exits
        stop, printed = resume(gdb, RUN_TIMEOUT)
        assert CONDITION_ERROR not in printed, printed[-600:]
        assert stop is not None and stop.address == symbol_address(gdb, "qemu_exit"), (
            f"stopped at {stop and stop.address and hex(stop.address)}, not qemu_exit: {printed[-600:]}")
        assert "exit: ok" in qemu.serial_text()


def test_sysret_ok_condition_stops_on_star_rpl0(kernel_session):
    """star-rpl0: every sysret fails SR-STAR-RPL, and the guest runs on under
    QEMU, so the condition holds at the first syscall_return_sysret."""
    with kernel_session("star-rpl0") as (qemu, gdb):
        assert STAR_RPL0_RULE in error_rules(learn_msrs_at_first_sysret(gdb))
        sysret = symbol_address(gdb, "syscall_return_sysret")
        bp_number(gdb, "break syscall_return_sysret if $sysret_ok() == 0")
        stop, printed, packets = resume_logging_packets(gdb, RUN_TIMEOUT)
        assert CONDITION_ERROR not in printed, printed[-600:]
        assert stop is not None and stop.reason == "breakpoint-hit" and stop.address == sysret, stop
        assert not steps_after_the_stop(packets), "the condition ran the guest (an rdmsr is a step)"
        # The first hit, and the condition did not run the guest on: the
        # first system call (write) is the only one the kernel has logged.
        assert syscall_lines(qemu.serial_text()) == ["1"], qemu.serial_tail()
        assert monitor(gdb).rip == sysret
        assert value_of(gdb, "$sysret_ok()") == 0
        assert STAR_RPL0_RULE in error_rules(gdb.json("sysret-check"))


@pytest.mark.parametrize("holds", [True, False])
def test_msr_condition(kernel_session, holds):
    with kernel_session("ok") as (qemu, gdb):
        learn_msrs_at_first_sysret(gdb)
        entry = symbol_address(gdb, "syscall_entry")
        sysret = symbol_address(gdb, "syscall_return_sysret")
        op = "==" if holds else "!="
        bp_number(gdb, f'break syscall_return_sysret if $msr("LSTAR") {op} {entry:#x}')
        bp_number(gdb, "tbreak qemu_exit")
        if holds:
            stop, printed, packets = resume_logging_packets(gdb, RUN_TIMEOUT)
        else:
            stop, printed = resume(gdb, RUN_TIMEOUT)
        assert CONDITION_ERROR not in printed, printed[-600:]
        assert stop is not None, printed[-600:]
        if holds:
            assert stop.address == sysret, f"stopped at {stop.address and hex(stop.address)}: {printed[-600:]}"
            assert not steps_after_the_stop(packets), "the condition ran the guest (an rdmsr is a step)"
            assert syscall_lines(qemu.serial_text()) == ["1"], qemu.serial_tail()
            assert monitor(gdb).rip == sysret
        else:
            assert stop.address == symbol_address(gdb, "qemu_exit"), (
                f"stopped at {stop.address and hex(stop.address)}, not qemu_exit: {printed[-600:]}")


def test_functions_in_commands_blocks(kernel_session):
    """`commands` run once the stop is complete: values, in ring 3 and ring 0."""
    with kernel_session("ok") as (_qemu, gdb):
        entry = symbol_address(gdb, "syscall_entry")
        printf = 'printf "GDBEXT cpl=%d lstar=%#lx ok=%d\\n", $cpl(), $msr("LSTAR"), $sysret_ok()'
        for location in ("user_main", "syscall_return_sysret"):
            number = bp_number(gdb, f"tbreak {location}")
            # Not `silent`: with it gdb's MI stop record carries no frame.
            result, _ = gdb.mi(f'-break-commands {number} "{mi_escaped(printf)}"')
            assert result.get("message") == "done", result
        seen = []
        for location, cpl, ok in (("user_main", 3, None), ("syscall_return_sysret", 0, 1)):
            stop, printed = resume(gdb, RUN_TIMEOUT)
            assert stop is not None and stop.address == symbol_address(gdb, location), (stop, printed[-600:])
            assert "Error" not in printed and "Traceback" not in printed, printed[-600:]
            match = re.search(r"GDBEXT cpl=(\d+) lstar=(0x[0-9a-f]+) ok=(\d+)", printed)
            assert match, f"the commands block at {location} printed {printed[-600:]!r}"
            seen.append(match.groups())
            assert int(match.group(1)) == cpl and int(match.group(2), 16) == entry
            if ok is not None:
                assert int(match.group(3)) == ok
        assert len(seen) == 2


# ---------------------------------------------------------------------------
# 5. Looking never changes the patient
# ---------------------------------------------------------------------------

def all_monitor_dumps(gdb: GdbDriver, cpus: int) -> dict[int, str]:
    return {cpu: gdb.command(f"monitor info registers {cpu}") for cpu in range(cpus)}


def test_halted_vcpu_stays_halted_bundled_smp2(kernel_session):
    """Two vCPUs, stopped while the firmware boots: CPU 1 (gdb thread 2) waits
    in OVMF's AP loop, `cli; hlt` (HLT=1, IF=0, LAPIC timer masked), so only
    an NMI would wake it.  (Later it will not do: once the loader has left
    boot services, OVMF parks the APs in a MONITOR/MWAIT loop, and QEMU's TCG
    MWAIT with more than one vCPU does not sleep, so CPU 1 spins, HLT=0.)
    No command may run it, and with IF=0 even --wake cannot: the rdmsr-only
    MSRs stay unavailable, with the reason."""
    with kernel_session("spin", smp=2) as (_qemu, gdb):
        for _ in range(40):
            gdb.resume_until_stop(0.3)      # interrupted after 0.3 s
            hmp = monitor(gdb, 1)
            if hmp.halted:
                break
        assert hmp.halted, "CPU 1 never seen halted in the firmware"
        assert not hmp.rflags & (1 << 9), "CPU 1 is expected halted with IF=0"
        gdb.command("thread 2")
        before = all_monitor_dumps(gdb, 2)
        for command in ("info gdt", "info msr"):
            try:
                gdb.command(command)
            except GdbError as exc:
                # A halted AP may still be in real mode, where there is no GDT to show.
                assert "real mode" in str(exc), exc
            assert all_monitor_dumps(gdb, 2) == before, f"{command} changed a vCPU"
        msr = gdb.json("info msr")
        assert msr["cpu"] == 1
        for name in RDMSR_ONLY:
            assert msr["msrs"][name] is None and msr["errors"].get(name), (name, msr)
        for name, reg in FROM_REGISTERS.items():
            assert msr["msrs"][name] == register(gdb, reg), (name, msr)
        woken = gdb.json("info msr --wake")
        for name in RDMSR_ONLY:
            assert woken["msrs"][name] is None and woken["errors"].get(name), (name, woken)
        assert all_monitor_dumps(gdb, 2) == before, "info msr --wake changed a vCPU nothing can wake"


# The Linux guest (test_linux_guest: Debian's kernel, `gdbext.mode=idle`) is
# the one here whose vCPU halts with IF=1 and a running LAPIC timer: the only
# kind --wake can wake.  Its fixtures and monitor helpers are reused as is.
from test_linux_guest import _differences, _machine_state, boot, guest, parse_monitor  # noqa: E402,F401


def stop_halted(b) -> object:
    g = b.gdb
    for _ in range(20):
        g.resume_until_stop(0.5)        # interrupted after half a second
        m = parse_monitor(g.command("monitor info registers 0"))
        if m.halted:
            return m
    pytest.fail("never found the idle guest halted")


def test_halted_vcpu_stays_halted_until_wake(guest):
    with boot(guest, mode="idle") as b:
        g = b.gdb
        m = stop_halted(b)
        before = _machine_state(g, m.gdt_base, m.gdt_limit)
        g.command("info gdt")               # reads STAR for its "used by" column
        changed = _differences(before, _machine_state(g, m.gdt_base, m.gdt_limit))
        assert not changed, f"info gdt woke the halted vCPU:\n{changed}"

        msr = g.json("info msr")
        changed = _differences(before, _machine_state(g, m.gdt_base, m.gdt_limit))
        assert not changed, f"info msr (no --wake) woke the halted vCPU:\n{changed}"
        for name in RDMSR_ONLY:
            assert msr["msrs"][name] is None, f"{name} read without --wake: {msr}"
            assert "--wake" in msr["errors"].get(name, ""), (name, msr["errors"])
        for name, reg in FROM_REGISTERS.items():
            assert msr["msrs"][name] == register(g, reg), (name, msr)

        woken = g.json("info msr --wake")
        assert woken["msrs"]["LSTAR"] == b.ksyms["entry_SYSCALL_64"], woken
        for name in RDMSR_ONLY:
            assert woken["msrs"][name] is not None, (name, woken["errors"])
        assert any("halted" in n and re.search(r"wak|wok", n) for n in woken["notes"]), woken["notes"]
        assert not parse_monitor(g.command("monitor info registers 0")).halted


# ---------------------------------------------------------------------------
# 6. An MSR QEMU does not implement
# ---------------------------------------------------------------------------

def test_unimplemented_msr_is_shown_with_a_caveat(kernel_session):
    with kernel_session("ok") as (_qemu, gdb):
        run_to(gdb, "enter_user_sysret")
        report = gdb.json("info msr 0x12345678")
        assert list(report["msrs"].values()) == [0], report    # QEMU TCG's rdmsr answers 0
        assert any("QEMU" in n and "implement" in n for n in report["notes"]), (
            f"no caveat that QEMU may not implement it: {report['msrs']}, notes {report['notes']}")
