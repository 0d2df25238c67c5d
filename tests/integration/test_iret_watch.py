"""The watch's iretq checks, iret-check and $iret_ok() against the bundled kernel.

Each broken scenario boots paused under gdb with `sysret-watch on`, then
runs; it must stop with the expected IR- rule *before* the iretq executes
(RIP still at the iretq, whose label is in kernel/README.md's scenario
table, with the fault the table names).  `ok` and `iret-ok` must run to
their end with no finding, every iretq they execute checked.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from gdbext.tools.driver import GdbDriver, GdbError

pytestmark = pytest.mark.qemu

BOOT_TIMEOUT = 90.0

# scenario -> (the error rule, the iretq's label, what the consequence names)
BROKEN = {
    "iret-cs-rpl0": ("IR-CS-RPL", "enter_user_iretq", "#GP(0x28)"),
    "iret-ss-dpl0": ("IR-SS", "enter_user_iretq", "#GP(0x10)"),
    "iret-supervisor-page": ("IR-RIP-MAPPED", "enter_user_iretq", "#PF(0x15)"),
    # SYSRET works (fixed caches); the iretq after int $0x80 reloads CS=0x2b, a data
    # descriptor.  The watch stops first at the wrmsr of STAR and at the sysret.
    "gdt-order": ("IR-CS", "int80_return_iretq", "#GP(0x28)"),
}


@pytest.fixture
def gdb_session(qemu_factory, kernel_paths) -> Iterator:
    drivers = []

    def start(scenario: str) -> GdbDriver:
        qemu = qemu_factory(scenario=scenario, gdb_port=0, wait=True, ram_file=True)
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


def address_of(gdb: GdbDriver, expression: str) -> int:
    out = gdb.command(f"print/x (unsigned long){expression}")
    return int(re.search(r"0x[0-9a-f]+", out).group(0), 16)


def run_to_iret_finding(gdb: GdbDriver, limit: int = 40) -> dict:
    """Continue past sysret and wrmsr findings (gdt-order: every sysret) to the first iret one."""
    for _ in range(limit):
        stop = gdb.resume_until_stop(BOOT_TIMEOUT)
        assert stop is not None and stop.reason != "exited", f"no stop, got {stop}"
        last = gdb.json("sysret-watch status")["last_finding"]
        assert last is not None, "the guest stopped without a finding"
        if last["kind"] == "iret":
            return last
    raise AssertionError(f"no iret finding in {limit} stops")


@pytest.mark.parametrize("scenario", sorted(BROKEN))
def test_broken_iret_stops_before_the_iretq(gdb_session, scenario):
    rule, label, fault = BROKEN[scenario]
    gdb = gdb_session(scenario)
    armed = gdb.command("sysret-watch on")
    assert re.search(r"[1-9]\d* iret site", armed), armed
    last = run_to_iret_finding(gdb)
    errors = [f for f in last["findings"] if f["severity"] == "error"]
    assert rule in {f["rule"] for f in errors}, last["findings"]
    assert any(fault in f["consequence"] for f in errors if f["rule"] == rule), errors

    # Still before the iretq: RIP is the site, the labelled instruction.
    pc = address_of(gdb, "$pc")
    assert pc == last["address"] == address_of(gdb, f"&{label}")
    assert "iretq" in gdb.command("x/i $pc")

    check = gdb.json("iret-check")
    assert check["at_iret"] and rule in {f["rule"] for f in check["findings"]}
    assert check["frame"]["at"] == address_of(gdb, "$rsp")
    assert check["ring3"] is True
    assert gdb.command("print $iret_ok()").strip().endswith("= 0")
    assert re.search(rf"ERROR\s+{rule}\s", gdb.command("iret-check"))


@pytest.mark.parametrize("scenario", ["ok", "iret-ok"])
def test_good_scenario_runs_to_the_end_with_every_iretq_checked(gdb_session, scenario):
    gdb = gdb_session(scenario)
    gdb.command("sysret-watch on")
    # A user breakpoint on the good iretq, beside the watch's own.
    label = "enter_user_iretq" if scenario == "iret-ok" else "int80_return_iretq"
    gdb.command(f"tbreak *{label}")
    stop = gdb.resume_until_stop(BOOT_TIMEOUT)
    assert stop is not None and address_of(gdb, "$pc") == address_of(gdb, f"&{label}")
    assert gdb.command("print $iret_ok()").strip().endswith("= 1")
    check = gdb.json("iret-check")
    assert check["at_iret"] and check["findings"] == [] and check["returns_to_cpl"] == 3
    assert check["frame"]["cs"] == 0x2B and check["frame"]["ss"] == 0x23

    elsewhere = address_of(gdb, "&syscall_entry")
    assert "checking an iretq executed now" in gdb.command(f"iret-check {elsewhere:#x}")

    stop = gdb.resume_until_stop(BOOT_TIMEOUT)
    assert stop is not None and stop.reason == "exited", stop
    status = gdb.json("sysret-watch status")
    assert status["findings"] == 0 and status["last_finding"] is None
    assert status["iret_checks"] >= 1 and status["iret_sites"]


def test_bad_arguments_give_one_clear_line(kernel_paths):
    with GdbDriver(Path(kernel_paths.elf), timeout=30) as gdb:
        gdb.load_gdbext()
        for command in ("iret-check --opsize 8", "iret-check 1 2", "print $iret_ok(7)",
                        "print $iret_ok(64, 1)", "sysret-watch on --no-iret=1"):
            with pytest.raises(GdbError) as info:
                gdb.command(command)
            message = str(info.value)
            assert "Traceback" not in message and len(message.strip().splitlines()) == 1, message
