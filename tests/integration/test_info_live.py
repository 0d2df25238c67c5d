"""The info commands against QEMU's own view of the CPU, on the bundled kernel.

At each moment of the boot (reset, the loader's hand-over before the kernel's
GDT, after the kernel's setup, ring 3) every value gdbext shows must equal what
QEMU's monitor prints for the same vCPU (`monitor info registers N`, parsed with
gdbext.model.qemu_text) or what the kernel logged on its serial line.  Reading must change
nothing: the vCPU's whole register dump, gdb's registers and the bytes at RIP and
in the GDT are hashed before and after each command.
"""
from __future__ import annotations

import hashlib
import re

import pytest

from gdbext.model.qemu_text import ATTR_MASK, HmpRegisters, parse_info_registers
from gdbext.tools.driver import GdbDriver, Stop

pytestmark = pytest.mark.qemu

# Intel SDM Vol. 3A 3.4.5 (segment descriptors), bits of the high dword.
ACCESSED = 1 << 8  # type bit 0 of a code/data descriptor: set by the CPU on load
TSS_BUSY = 1 << 9  # type bit 1 of a TSS descriptor (3.5 / 7.2.2): 9 available, 0xB busy
SEGMENTS = ("es", "cs", "ss", "ds", "fs", "gs")
BOOT_TIMEOUT = 90.0  # OVMF alone takes a few seconds; TCG under parallel load more


def run_to(gdb: GdbDriver, location: str, timeout: float = BOOT_TIMEOUT) -> Stop:
    """A temporary breakpoint at `location`, continue, and insist it was hit.

    A temporary one, so no breakpoint is left at RIP where rdmsr injection
    steps."""
    gdb.command(f"tbreak {location}")
    stop = gdb.resume_until_stop(timeout)
    assert stop is not None, f"no stop at {location} within {timeout:g} s"
    assert stop.reason == "breakpoint-hit", f"stopped for {stop.reason!r}, not at {location}"
    assert stop.address == symbol_address(gdb, location)
    return stop


def refused(gdb: GdbDriver, command: str) -> str:
    """The one-line error of a command that must fail; nothing else may be printed."""
    result, seen = gdb.mi(f'-interpreter-exec console "{command}"')
    printed = "".join(m.get("payload") or "" for m in seen if m.get("type") in ("console", "log", "output"))
    assert result.get("message") == "error", f"{command} did not fail: {printed[:300]!r}"
    message = (result.get("payload") or {}).get("msg", "")
    assert "Traceback" not in printed + message, printed + message
    assert message.strip() and "\n" not in message.strip(), message
    return message


def monitor(gdb: GdbDriver, cpu: int = 0) -> HmpRegisters:
    return parse_info_registers(gdb.command(f"monitor info registers {cpu}"))


def symbol_address(gdb: GdbDriver, name: str) -> int:
    text = gdb.command(f"info address {name}")
    match = re.search(r"\b(0x[0-9a-f]+)\b", text)
    assert match, f"gdb gave no address for {name}: {text!r}"
    return int(match.group(1), 16)


def entry_attrs(entry: dict) -> int:
    """The attribute bits of a GDT entry's high dword, as QEMU keeps them in a cache."""
    return ((entry["raw"] & 0xFFFF_FFFF_FFFF_FFFF) >> 32) & ATTR_MASK


def log_value(serial: str, line_start: str, key: str) -> int:
    match = re.search(rf"^\[kernel\] {re.escape(line_start)}.*\b{key}=(0x[0-9a-f]+)", serial, re.MULTILINE)
    assert match, f"no {key}= on a {line_start!r} line of the serial log"
    return int(match.group(1), 16)


def check_cpl_and_efer(gdb: GdbDriver, hmp: HmpRegisters, cpu: int = 0) -> dict:
    cpl = gdb.json("info cpl")
    assert cpl["cpu"] == cpu
    assert cpl["cpl"] == hmp.cpl
    assert cpl["mode"] == hmp.mode_hint
    assert cpl["rip"] == hmp.rip
    assert cpl["cs"] == hmp.segments["cs"].selector
    assert gdb.command("print $cpl()").split("=")[1].strip() == str(hmp.cpl)
    msr = gdb.json("info msr EFER")
    assert msr["msrs"]["EFER"] == hmp.efer
    return cpl


def check_gdt(gdb: GdbDriver, hmp: HmpRegisters) -> dict:
    """GDTR and every live segment's table entry against QEMU's caches.

    --no-star: the table needs no MSR, so this comparison does not depend on the
    rdmsr injection that reading STAR takes (that is checked on its own)."""
    gdt = gdb.json("info gdt --no-star")
    assert (gdt["base"], gdt["limit"]) == (hmp.gdt.base, hmp.gdt.limit)
    by_index = {e["index"]: e for e in gdt["entries"]}
    live = {name: hmp.segments[name] for name in SEGMENTS}
    live["tr"] = hmp.tr
    compared = 0
    for name, cache in live.items():
        if cache.selector & ~3 == 0:
            continue  # a null selector has no entry to compare (its cache is QEMU's)
        entry = by_index[cache.selector >> 3]
        # LTR marks the descriptor busy in memory; QEMU's TR cache keeps the
        # type it loaded (9, available), so the busy bit is not compared for TR.
        ignore = ACCESSED | (TSS_BUSY if name == "tr" else 0)
        assert entry_attrs(entry) & ~ignore == cache.attrs & ~ignore, (
            f"{name}={cache.selector:#x}: GDT attrs {entry_attrs(entry):#x} != cache {cache.attrs:#x}")
        assert name.upper() in entry["used_by"]
        compared += 1
    assert compared >= 2  # at least CS and SS are live
    return gdt


def test_reset_is_real_mode_and_gdt_refuses(kernel_session):
    with kernel_session("spin") as (_qemu, gdb):
        hmp = monitor(gdb)
        assert hmp.mode_hint == "real"
        cpl = check_cpl_and_efer(gdb, hmp)
        assert (cpl["mode"], cpl["cpl"]) == ("real", 0)
        assert "real mode" in refused(gdb, "info gdt")
        assert "real mode" in refused(gdb, "info gdt --no-star")


def test_values_equal_qemu_from_loader_to_ring3(kernel_session):
    with kernel_session("spin") as (qemu, gdb):
        # The kernel's entry: the loader has left boot services, the GDT is still
        # the firmware's (setup_gdt has not run).
        run_to(gdb, "kmain")
        hmp = monitor(gdb)
        check_cpl_and_efer(gdb, hmp)
        firmware_gdt = check_gdt(gdb, hmp)
        assert hmp.tr.selector == 0

        # Everything the kernel sets up is done; the next step is the sysret.
        run_to(gdb, "enter_user")
        hmp = monitor(gdb)
        cpl = check_cpl_and_efer(gdb, hmp)
        assert (cpl["cpl"], cpl["mode"]) == (0, "64-bit")
        serial = qemu.serial_text()
        gdt = check_gdt(gdb, hmp)
        assert gdt["base"] == log_value(serial, "gdt loaded:", "base") != firmware_gdt["base"]
        assert gdt["limit"] == log_value(serial, "gdt loaded:", "limit")
        msrs = gdb.json("info msr")["msrs"]
        assert msrs["STAR"] == log_value(serial, "syscall msrs:", "star") == 0x001B_0008_0000_0000
        assert msrs["LSTAR"] == symbol_address(gdb, "syscall_entry") == log_value(serial, "syscall msrs:", "lstar")
        assert msrs["SFMASK"] == log_value(serial, "syscall msrs:", "sfmask")
        assert msrs["EFER"] == hmp.efer == log_value(serial, "syscall msrs:", "efer")
        assert gdb.command('print $msr("STAR")').split("=")[1].strip() == str(msrs["STAR"])
        assert gdb.json("info gdt")["star"] == msrs["STAR"]
        tss = gdb.json("info tss")
        assert tss["base"] == hmp.tr.base
        assert tss["selector"] == hmp.tr.selector == log_value(serial, "tss loaded:", "selector")
        assert tss["rsp"][0] == log_value(serial, "tss loaded:", "rsp0")
        idt = gdb.json("info idt")
        assert (idt["base"], idt["limit"]) == (hmp.idt.base, hmp.idt.limit)
        assert idt["base"] == log_value(serial, "idt loaded:", "base")
        gates = {g["vector"]: g for g in idt["gates"]}
        for vector in (13, 14):
            assert gates[vector]["handler"] == symbol_address(gdb, f"isr_{vector}")
            assert gates[vector]["symbol"] == f"isr_{vector}"
            assert gates[vector]["selector"] == hmp.segments["cs"].selector
        assert gdb.json("info idt 14")["gates"] == [gates[14]]

        # Ring 3: the user program's C entry, called from user_start after the sysret.
        run_to(gdb, "user_main")
        hmp = monitor(gdb)
        cpl = check_cpl_and_efer(gdb, hmp)
        assert (cpl["cpl"], cpl["mode"]) == (3, "64-bit")
        assert check_gdt(gdb, hmp)["base"] == gdt["base"]
        assert gdb.json("info msr STAR")["msrs"]["STAR"] == msrs["STAR"]
        assert gdb.command('print $msr("STAR")').split("=")[1].strip() == str(msrs["STAR"])
        assert gdb.json("info tss")["rsp"][0] == tss["rsp"][0]


def state_digest(gdb: GdbDriver) -> str:
    """The vCPU's whole monitor dump (segment flag words included, to the bit),
    every gdb register, the code at RIP and the GDT."""
    hmp_text = gdb.command("monitor info registers 0")
    hmp = parse_info_registers(hmp_text)
    regs = gdb.command("info all-registers")
    code = gdb.command("x/16xb $pc")
    gdt = gdb.command(f"x/{hmp.gdt.limit + 1}xb {hmp.gdt.base:#x}")
    return hashlib.sha256(f"{hmp_text}\0{regs}\0{code}\0{gdt}".encode()).hexdigest()


# Every one must leave the vCPU as it was.  In ring 3, commands that read an MSR
# other than EFER and the bases go through ring 0 and back (GDT slots and CR4
# patched for the steps, then a SYSRET or a reload puts CS/SS back).
COMMANDS = ("info gdt --no-star", "info tss", "info idt", "info msr EFER", "info cpl",
            "info gdt", "info msr", "info msr STAR")


@pytest.mark.parametrize("memory", ["ram-file", "qemu-process", "stub"])
def test_commands_change_nothing_in_ring0_and_ring3(kernel_session, memory):
    """Through the stub, a command's physical reads share one PhyMemMode
    switch while rdmsr injection steps and writes at virtual addresses: the
    stub must be back in virtual mode for those, and after the command."""
    with kernel_session("spin", ram_file=memory == "ram-file") as (_qemu, gdb):
        if memory == "stub":
            gdb.command("python import os; os.environ['GDBEXT_MEMORY'] = 'stub'")
        for location, ring3 in (("enter_user", False), ("user_main", True)):
            run_to(gdb, location)
            assert gdb.json("info cpl")["cpl"] == (3 if ring3 else 0)
            for command in COMMANDS:
                before = state_digest(gdb)
                gdb.command(command)
                assert state_digest(gdb) == before, f"{command} at {location} changed the vCPU's state"
                mode = gdb.command("maint packet qqemu.PhyMemMode")
                assert 'received: "0"' in mode, f"{command} left PhyMemMode on: {mode!r}"
        assert gdb.json("ptdump --limit 0")["phys_source"].startswith(
            {"ram-file": "shared RAM file", "qemu-process": "QEMU process memory", "stub": "gdb stub"}[memory])


def test_bad_arguments_give_one_line_errors(kernel_session):
    with kernel_session("spin", connect=False) as (qemu, gdb):
        refused(gdb, "info gdt")
        gdb.connect(qemu.gdb_port)
        run_to(gdb, "enter_user")
        for command, words in (("info msr NOPE", "unknown MSR"),
                               ("info gdt 0x1238", "past the GDT limit"),
                               ("info gdt 0x12345", "outside 0x0..0xffff (a selector)"),
                               ("info idt 300", "outside 0..255")):
            assert words in refused(gdb, command)


def test_second_vcpu_is_read_from_its_own_monitor_block(kernel_session):
    with kernel_session("spin", smp=2) as (_qemu, gdb):
        run_to(gdb, "enter_user")
        gdb.command("thread 2")
        cpl = gdb.json("info cpl")
        hmp = monitor(gdb, 1)
        assert cpl["cpu"] == 1
        # The kernel runs on CPU 0 only: CPU 1 waits for a SIPI, so its state
        # differs from CPU 0's, and gdbext must show CPU 1's.
        assert cpl["rip"] == hmp.rip != monitor(gdb, 0).rip
        assert (cpl["cpl"], cpl["mode"], cpl["halted"]) == (hmp.cpl, hmp.mode_hint, hmp.halted)
