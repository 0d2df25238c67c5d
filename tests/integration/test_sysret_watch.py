"""sysret-watch, sysret-check and $sysret_ok() against the bundled kernel.

Each scenario boots paused under gdb with the watch armed, then runs.  A
broken scenario must stop with the right rule *before* the faulting
instruction executes (RIP still at the sysret or wrmsr); the `ok` scenario
must run to its end without a finding.  Expected rules follow
kernel/src/syscall_entry.S and the scenario table in gdbext/launch.py.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from gdbext.tools.driver import GdbDriver, GdbError

pytestmark = pytest.mark.qemu

BOOT_TIMEOUT = 90.0  # OVMF alone takes ~3 s; TCG under a loaded 2-core machine is slow

# scenario -> (rule ids any one of which the finding must name, symbol of the site, instruction there)
BROKEN = {
    "star-rpl0": ({"SR-STAR-RPL"}, "setup_syscall", "wrmsr"),
    "gdt-order": ({"SR-STAR-CS", "SR-STAR-SS"}, "setup_syscall", "wrmsr"),
    "sce-off": ({"SR-SCE"}, "enter_user_sysret", "sysretq"),
    "rcx-noncanonical": ({"SR-RCX-CANONICAL"}, "syscall_return_sysret_unchecked", "sysretq"),
    "user-page-supervisor": ({"SR-RIP-MAPPED"}, "enter_user_sysret", "sysretq"),
    "user-page-nx": ({"SR-RIP-MAPPED"}, "enter_user_sysret", "sysretq"),
    "iopl3": ({"SR-RFLAGS"}, "enter_user_sysret", "sysretq"),
    # IF clear in ring 3 is legal, only almost surely a bug: a warning, which the
    # watch stops on with --warnings (see WARNINGS).
    "if-off": ({"SR-RFLAGS"}, "enter_user_sysret", "sysretq"),
    "no-swapgs": ({"SR-SWAPGS"}, "syscall_return_sysret_no_swapgs", "sysretq"),
    "kernel-rsp": ({"SR-RSP-USER"}, "syscall_return_sysret_kernel_rsp", "sysretq"),
    # sysretl from 64-bit code: the return runs in compatibility mode, where
    # the stack is ESP = the low half of a user RSP above 4 GiB, a kernel page.
    "sysret32": ({"SR-RSP-USER"}, "syscall_return_sysretl", "sysretl"),
}


@pytest.fixture
def gdb_session(qemu_factory, kernel_paths) -> Iterator:
    """start(scenario) -> a GdbDriver connected to a paused guest with gdbext loaded."""
    drivers = []

    def start(scenario: str, ram_file: bool = True) -> GdbDriver:
        qemu = qemu_factory(scenario=scenario, gdb_port=0, wait=True, ram_file=ram_file)
        gdb = GdbDriver(Path(kernel_paths.elf), timeout=60)
        drivers.append(gdb)
        gdb.load_gdbext()
        gdb.connect(qemu.gdb_port)
        return gdb

    try:
        yield start
    finally:
        for gdb in drivers:
            gdb.close()


def symbol_address(gdb: GdbDriver, name: str) -> int:
    out = gdb.command(f"print/x (unsigned long)&{name}")
    return int(re.search(r"0x[0-9a-f]+", out).group(0), 16)


def register(gdb: GdbDriver, expression: str) -> int:
    out = gdb.command(f"print/x {expression}")
    return int(re.search(r"0x[0-9a-f]+", out).group(0), 16)


def error_rules(findings: list) -> set:
    return {f["rule"] for f in findings if f["severity"] == "error"}


# Scenarios whose mistake is a warning (README, "Severity"): armed with --warnings.
WARNINGS = {"if-off"}


def finding_rules(scenario: str, findings: list) -> set:
    severity = "warning" if scenario in WARNINGS else "error"
    return {f["rule"] for f in findings if f["severity"] == severity}


# Memory read from the QEMU process (no RAM file) and through the gdb stub
# (PhyMemMode), instead of the shared RAM file, for a few scenarios that read
# page tables, the GDT and the TSS.
OTHER_MEMORY = ("gdt-order", "user-page-nx", "kernel-rsp")
MEMORY_SOURCE = {"ram-file": "shared RAM file", "qemu-process": "QEMU process memory", "stub": "gdb stub"}


@pytest.mark.parametrize("scenario, memory", [(s, "ram-file") for s in sorted(BROKEN)] +
                         [(s, m) for s in OTHER_MEMORY for m in ("qemu-process", "stub")])
def test_broken_scenario_stops_before_the_fault(gdb_session, scenario, memory):
    rules, symbol, mnemonic = BROKEN[scenario]
    gdb = gdb_session(scenario, ram_file=memory == "ram-file")
    if memory == "stub":
        gdb.command("python import os; os.environ['GDBEXT_MEMORY'] = 'stub'")
    armed = gdb.command("sysret-watch on" + (" --warnings" if scenario in WARNINGS else ""))
    assert ("read through the gdb stub" in armed) is (memory == "stub"), armed
    assert gdb.json("sysret-watch status")["memory"].startswith(MEMORY_SOURCE[memory])
    stop = gdb.resume_until_stop(BOOT_TIMEOUT)
    assert stop is not None and stop.reason != "exited", f"{scenario}: no stop, got {stop}"

    status = gdb.json("sysret-watch status")
    last = status["last_finding"]
    assert status["findings"] == 1 and last is not None
    assert finding_rules(scenario, last["findings"]) & rules, last["findings"]

    # Still before the instruction: RIP is the site, which has not executed.
    # (MI reports no frame for the watch's internal breakpoints: ask gdb.)
    pc = register(gdb, "$pc")
    assert pc == last["address"]
    assert f"<{symbol}" in gdb.command("x/i $pc") and mnemonic in gdb.command("x/i $pc")
    if mnemonic != "wrmsr":
        assert pc == symbol_address(gdb, symbol)
    else:
        assert gdb.command("info symbol $pc").startswith(f"{symbol} + ")

    check = gdb.json("sysret-check")
    assert finding_rules(scenario, check["findings"]) & rules, check["findings"]
    assert check["at_sysret"] is (mnemonic != "wrmsr")
    opsize = 32 if mnemonic == "sysretl" else 64
    # $sysret_ok() is 1 when no error rule fails: a warning alone passes.
    ok = "1" if scenario in WARNINGS else "0"
    assert gdb.command(f"print $sysret_ok({opsize})").strip().endswith(f"= {ok}")


@pytest.mark.parametrize("memory", sorted(MEMORY_SOURCE))
def test_ok_scenario_runs_to_the_end_and_a_good_sysret_passes(gdb_session, memory):
    gdb = gdb_session("ok", ram_file=memory == "ram-file")
    if memory == "stub":
        gdb.command("python import os; os.environ['GDBEXT_MEMORY'] = 'stub'")
    gdb.command("sysret-watch on")
    # A user breakpoint on the correct sysret, beside the watch's own.
    gdb.command("tbreak *syscall_return_sysret")
    stop = gdb.resume_until_stop(BOOT_TIMEOUT)
    assert stop is not None and register(gdb, "$pc") == symbol_address(gdb, "syscall_return_sysret")
    assert gdb.command("print $sysret_ok()").strip().endswith("= 1")
    check = gdb.json("sysret-check")
    assert check["at_sysret"] and error_rules(check["findings"]) == set()

    elsewhere = symbol_address(gdb, "syscall_entry")
    text = gdb.command(f"sysret-check {elsewhere:#x}")
    assert "checking a sysretq executed now" in text
    assert gdb.json(f"sysret-check {elsewhere:#x}")["at_sysret"] is False

    stop = gdb.resume_until_stop(BOOT_TIMEOUT)
    assert stop is not None and stop.reason == "exited", stop
    status = gdb.json("sysret-watch status")
    assert status["checks"] > 0 and status["findings"] == 0 and status["last_finding"] is None
    # Armed at the reset vector: the kernel's own LGDT and LTR ran under the watch.
    assert status["table_loads"] >= 2 and status["table_load_sites"]
    assert status["memory"].startswith(MEMORY_SOURCE[memory])


def test_bad_arguments_give_one_clear_line(kernel_paths):
    # Arguments are refused before any target is needed: no QEMU here.
    with GdbDriver(Path(kernel_paths.elf), timeout=30) as gdb:
        gdb.load_gdbext()
        _refuses_bad_arguments(gdb)


def _refuses_bad_arguments(gdb: GdbDriver) -> None:
    for argument in ("bogus", "on --nonsense", ""):
        with pytest.raises(GdbError) as info:
            gdb.command(f"sysret-watch {argument}")
        message = str(info.value)
        assert "Traceback" not in message and len(message.strip().splitlines()) == 1, message
        assert "sysret-watch" in message
    assert gdb.json("sysret-watch status")["armed"] is False
