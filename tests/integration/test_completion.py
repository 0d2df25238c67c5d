"""Completion of options, choices and arguments, through gdb's own `complete`
command (what TAB shows at the prompt).  No target is needed."""
from __future__ import annotations

import pytest

from gdbext.tools.driver import GdbDriver


@pytest.fixture(scope="module")
def gdb(kernel_paths):
    with GdbDriver(kernel_paths.elf) as g:
        g.load_gdbext()
        yield g


def completions(gdb: GdbDriver, line: str) -> list[str]:
    return gdb.command(f"complete {line}").split("\n")[:-1]


@pytest.mark.parametrize("line, expected", [
    ("sysret-watch o", ["sysret-watch off", "sysret-watch on"]),
    ("sysret-watch on --w", ["sysret-watch on --warnings"]),
    ("ptdump --w", ["ptdump --wx"]),
    ("ptdump --k", ["ptdump --kernel", "ptdump --kpti"]),
    ("pagewalk $rip --access e", ["pagewalk $rip --access exec"]),
    ("info msr LS", ["info msr LSTAR"]),
    ("info msr kernel_g", ["info msr KERNEL_GS_BASE"]),
    ("sysret-check --opsize 3", ["sysret-check --opsize 32"]),
])
def test_options_choices_and_names_complete(gdb, line, expected):
    assert completions(gdb, line) == expected


def test_a_file_argument_completes_as_a_file_and_an_address_as_an_expression(gdb, kernel_paths):
    build = str(kernel_paths.elf.parent)
    assert f"gdbext-symbols {build}/kernel.elf" in completions(gdb, f"gdbext-symbols {build}/kernel.e")
    assert "pagewalk kmain" in completions(gdb, "pagewalk kmai")
