"""fault-watch and info fault against the bundled kernel, with no symbols.

gdb loads a copy of the kernel with every symbol stripped (objcopy
--strip-all), or nothing at all: the watch must find the handlers from the
live IDT alone.  The oracle is the kernel's own serial FAULT line, printed by
its handler once gdb continues from the watch's stop (kernel/README.md), and
the scenario table there.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from gdbext.tools.driver import GdbDriver, GdbError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kernel"))
import kernel_log  # tests/kernel/kernel_log.py: the serial log parser

pytestmark = pytest.mark.qemu

BOOT_TIMEOUT = 90.0
ERROR_CODE_VECTORS = {8, 10, 11, 12, 13, 14, 17, 21, 29, 30}   # SDM Vol. 3A table 6-1

# scenario -> (vector, error code or None, CPL, mode), from kernel/README.md's table.
FAULTS = {
    "gdt-order": (13, 0x28, 0, "64-bit"),
    "sce-off": (6, None, 0, "64-bit"),
    "rcx-noncanonical": (13, 0x0, 3, "64-bit"),
    "user-page-supervisor": (14, 0x15, 3, "64-bit"),
    "user-page-nx": (14, 0x15, 3, "64-bit"),
    "no-swapgs": (14, 0x2, 0, "64-bit"),
    "kernel-rsp": (14, 0x5, 3, "64-bit"),
    "sysret32": (14, 0x5, 3, "compatibility"),
    "double-fault": (8, 0x0, 0, "64-bit"),
    "iret-cs-rpl0": (13, 0x28, 0, "64-bit"),
    "iret-ss-dpl0": (13, 0x10, 0, "64-bit"),
    "iret-supervisor-page": (14, 0x15, 3, "64-bit"),
}


@pytest.fixture(scope="module")
def no_symbols_elf(kernel_paths, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("elf") / "kernel-nosyms.elf"
    subprocess.run(["objcopy", "--strip-all", str(kernel_paths.elf), str(out)], check=True)
    listing = subprocess.run(["nm", str(out)], check=False, capture_output=True, text=True)
    assert "no symbols" in listing.stderr, listing.stdout[:200]
    return out


@pytest.fixture
def start(qemu_factory):
    """start(scenario, elf) -> (qemu, gdb) with a paused guest at the reset vector."""
    drivers = []

    def run(scenario: str, elf: Path | None):
        qemu = qemu_factory(scenario=scenario, gdb_port=0, wait=True)
        gdb = GdbDriver(elf, timeout=60, target_exit=qemu.exit_summary)
        drivers.append(gdb)
        gdb.load_gdbext()
        gdb.connect(qemu.gdb_port)
        return qemu, gdb

    try:
        yield run
    finally:
        for gdb in drivers:
            gdb.close()


def register(gdb: GdbDriver, expression: str) -> int:
    return int(re.search(r"0x[0-9a-f]+", gdb.command(f"print/x {expression}")).group(0), 16)


def run_to_exit(gdb: GdbDriver, qemu) -> str:
    stop = gdb.resume_until_stop(BOOT_TIMEOUT)
    assert stop is not None and stop.reason == "exited", f"the guest did not exit: {stop}"
    qemu.wait(30)
    return qemu.serial_text()


@pytest.mark.parametrize("scenario", sorted(FAULTS))
def test_fault_caught_at_the_idt_handler_without_symbols(start, no_symbols_elf, scenario):
    vector, code, cpl, mode = FAULTS[scenario]
    qemu, gdb = start(scenario, no_symbols_elf)
    # Armed at the reset vector: no IDT yet; the kernel's LIDT is followed.
    armed = gdb.json("fault-watch on" + (" --user" if cpl == 3 else ""))
    assert armed["armed"] and armed["lidt_sites"] and not armed["idt"][0]["long_mode"]
    stop = gdb.resume_until_stop(BOOT_TIMEOUT)
    assert stop is not None and stop.reason != "exited", f"{scenario}: no stop, got {stop}"
    r = gdb.json("info fault")
    assert register(gdb, "$pc") == r["handler"]          # stopped at the handler's first instruction
    text = gdb.command("info fault")
    assert f"vector {vector})" in text and len(max(text.splitlines()[:6], key=len)) <= 110

    log = run_to_exit(gdb, qemu)
    truth = kernel_log.fault(log)
    assert truth is not None, log[-2000:]
    assert (r["vector"], r["rip"], r["cs"], r["rflags"], r["rsp"], r["ss"], r["cpl"]) == (
        truth.vector, truth.rip, truth.cs, truth.rflags, truth.rsp, truth.ss, truth.cpl)
    assert (vector, cpl) == (truth.vector, truth.cpl)
    if vector in ERROR_CODE_VECTORS:
        assert r["error_code"] == truth.error == code
    else:
        assert r["error_code"] is None and truth.error == 0
    assert r["mode"] == mode and r["source"] == "idt-breakpoint" and r["symbol"] is None
    assert r["cpu"] == 0 and r["candidates"] == [vector]
    if vector == 14:
        assert r["cr2"] == truth.cr2
        assert r["decoded"]["value"] == code and r["walk"]["va"] == truth.cr2
        assert "refused" in r["walk_verdict"], r["walk_verdict"]
        mode_word = "user" if code & 4 else "supervisor"
        assert r["walk_verdict"].startswith(mode_word)
    if vector == 13:
        assert r["decoded"]["index"] == code >> 3 and r["decoded"]["table"] == "GDT"
        if code:
            # The descriptor the error code names (kernel/README.md): gdt-order hands
            # its IRETQ the user data descriptor 0x28 as CS; iret-cs-rpl0 names the
            # user code descriptor 0x28 (its RPL 0 is what is wrong); iret-ss-dpl0
            # names the kernel data descriptor 0x10 as SS.
            kind = {"gdt-order": "data", "iret-cs-rpl0": "code", "iret-ss-dpl0": "data"}[scenario]
            assert r["descriptor"]["found"] and r["descriptor"]["fields"]["kind"] == kind
        else:
            assert r["descriptor"] is None
    if vector == 6:
        assert r["bytes_at_rip"].startswith("48 0f 07")      # the sysretq that EFER.SCE=0 refuses
        assert r["instruction"].startswith("sysret")
    status = gdb.json("fault-watch status")
    assert status["connection_ended"] and status["stops"] == 1 and status["idt_loads"] >= 1


def test_ok_runs_to_its_end_with_the_watch_on(start, no_symbols_elf):
    qemu, gdb = start("ok", no_symbols_elf)
    gdb.command("fault-watch on --user")
    log = run_to_exit(gdb, qemu)
    assert kernel_log.exit_line(log)["how"] == "ok" and kernel_log.fault(log) is None
    status = gdb.json("fault-watch status")
    assert status["hits"] == 0 and status["stops"] == 0 and status["last"] is None
    assert status["idt_loads"] >= 1 and len(status["breakpoints"]) == 32
    # (GdbDriver.command would replace gdb's error with QEMU's exit summary.)
    result, _ = gdb.mi('-interpreter-exec console "info fault"', final=("done", "error"))
    assert result["message"] == "error" and "no exception caught" in result["payload"]["msg"]


def test_record_never_stops_and_keeps_the_record(start, no_symbols_elf):
    qemu, gdb = start("user-page-nx", no_symbols_elf)
    gdb.command("fault-watch on --user --record")
    log = run_to_exit(gdb, qemu)                         # the kernel's own handler ran
    truth = kernel_log.fault(log)
    doc = gdb.json("info fault --all")
    assert [(r["vector"], r["error_code"], r["rip"], r["cpl"]) for r in doc["records"]] == [
        (truth.vector, truth.error, truth.rip, truth.cpl)]
    assert doc["counts"] == {"14": {"3": 1}}
    # The kernel reported the fault and exited: the faulting fetch never ran again.
    assert doc["records"][0]["resumed"] is False
    status = gdb.json("fault-watch status")
    assert status["record"] and status["stops"] == 0 and len(status["records"]) == 1


def test_follows_the_kernels_lidt_from_the_firmwares_idt(start, kernel_paths):
    """No ELF in gdb at all: armed at the kernel's entry, still under OVMF's IDT
    (the loader does not load one); the LIDT site is found by scanning the
    kernel's executable pages, and the kernel's #GP is caught at its own handler."""
    from elftools.elf.elffile import ELFFile

    with open(kernel_paths.elf, "rb") as f:
        entry = ELFFile(f)["e_entry"]
    qemu, gdb = start("gdt-order", None)
    gdb.command(f"tbreak *{entry:#x}")
    stop = gdb.resume_until_stop(BOOT_TIMEOUT)
    assert stop is not None and register(gdb, "$pc") == entry
    armed = gdb.json("fault-watch on")
    firmware = armed["idt"][0]
    assert firmware["long_mode"] and len(firmware["handlers"]) == 32, firmware
    assert all(a < 1 << 47 for a in firmware["handlers"].values())   # OVMF's, identity-mapped
    assert armed["lidt_sites"] and armed["lidt_source"].startswith("scan of")
    stop = gdb.resume_until_stop(BOOT_TIMEOUT)
    assert stop is not None and stop.reason != "exited"
    status = gdb.json("fault-watch status")
    r = status["last"]
    assert r["vector"] == 13 and r["error_code"] == 0x28
    loaded = re.search(r"idt loaded: base=(0x[0-9a-f]+) limit=(0x[0-9a-f]+)", qemu.serial_text())
    assert loaded, qemu.serial_text()[-2000:]
    assert (status["idt"][0]["base"], status["idt"][0]["limit"]) == (int(loaded[1], 16), int(loaded[2], 16))
    assert status["idt_loads"] >= 1 and r["handler"] == status["handlers"]["13"]
    assert r["handler"] not in firmware["handlers"].values()
    truth = kernel_log.fault(run_to_exit(gdb, qemu))
    assert (truth.vector, truth.error, truth.rip) == (13, 0x28, r["rip"])


def test_bad_arguments_give_one_clear_line(kernel_paths):
    with GdbDriver(Path(kernel_paths.elf), timeout=30) as gdb:
        gdb.load_gdbext()
        for argument in ("bogus", "on --nonsense", "", "on --vectors 32", "on --vectors 5-3",
                         "on --vectors x", "off --user", "status --record", "on --vectors"):
            with pytest.raises(GdbError) as info:
                gdb.command(f"fault-watch {argument}")
            message = str(info.value)
            assert "Traceback" not in message and len(message.strip().splitlines()) == 1, message
            assert "fault-watch" in message
        with pytest.raises(GdbError, match=r"^info fault: no exception caught"):
            gdb.command("info fault")
        assert gdb.json("fault-watch status")["armed"] is False
        assert "--record" in gdb.command("help fault-watch") and "--all" in gdb.command("help info fault")
