"""Text follows gdb's `width`: at 80 columns nothing is wider than the
terminal and nothing is lost; at 200 the text is what it is with no limit."""
from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.qemu

COMMANDS = ("info gdt", "info tss", "info idt", "info msr", "info cpl", "pagewalk $pc",
            "pagewalk $rsp --access write --user", "pagewalk 0xffff800000000000", "ptdump", "sysret-check",
            "iret-check")
HEX = re.compile(r"(?:0x)?([0-9a-f]{4,})")


def _facts(text: str) -> set[str]:
    """The numbers and words a reader takes from the text, wherever they stand."""
    numbers = {m.group(1).lstrip("0") or "0" for m in HEX.finditer(text)}
    words = {w for w in re.split(r"[\s;:,()\[\]]+", text) if w and not set(w) <= set("-=>")}
    return numbers | {w for w in words if not HEX.fullmatch(w)}


def test_every_view_fits_80_columns_and_is_unchanged_at_200(kernel_session):
    with kernel_session("spin") as (_qemu, gdb):
        gdb.command("tbreak user_main")
        gdb.resume_until_stop(60)
        for command in COMMANDS:
            gdb.command("set width 0")
            free = gdb.command(command)
            gdb.command("set width 200")
            wide = gdb.command(command)
            gdb.command("set width 80")
            narrow = gdb.command(command)
            if command == "ptdump":   # its summary line says what this run read and how long it took
                free, wide, narrow = (re.sub(r"\d+ tables read \(\d+ fetched from the target\), [0-9.]+ ms",
                                             "TABLES", t) for t in (free, wide, narrow))
            assert wide == free, command
            assert max(len(line) for line in narrow.splitlines()) <= 80, f"{command}:\n{narrow}"
            lost = _facts(free) - _facts(narrow)
            assert not lost, f"{command}: {sorted(lost)[:10]} missing at 80 columns:\n{narrow}"
            if command != "ptdump":   # (its JSON has the time it took)
                at_80 = gdb.command(command + " --json")
                gdb.command("set width 0")
                assert gdb.command(command + " --json") == at_80, command


def test_the_exception_views_fit_80_columns(qemu_factory, kernel_paths):
    from gdbext.tools.driver import GdbDriver

    qemu = qemu_factory(scenario="gdt-order", gdb_port=0, wait=True, int_log=True)
    with GdbDriver(kernel_paths.elf, timeout=60, target_exit=qemu.exit_summary) as gdb:
        gdb.load_gdbext()
        gdb.connect(qemu.gdb_port)
        gdb.command(f"gdbext-qemu-log {qemu.int_log_path}")
        gdb.command("set width 80")
        gdb.command("fault-watch on")
        stop = gdb.resume_until_stop(90)
        assert stop is not None and "fault-watch: stopped at an exception" in stop.console
        texts = {"stop": stop.console}
        for command in ("info fault", "fault-watch status", "fault-chain"):
            texts[command] = gdb.command(command)
        for name, text in texts.items():
            assert max(len(line) for line in text.splitlines()) <= 80, f"{name}:\n{text}"
        assert "#GP (General Protection, vector 13) error code 0x28" in " ".join(texts["info fault"].split())
