"""The package's shape: only gdbext.target and gdbext.commands talk to gdb;
everything else (architecture, model, views, rules, tools) imports and runs
in a plain Python, as the unit tests and triage use it."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "gdbext"
GDB_SIDE = ("target", "commands")
PURE = sorted(p for p in PACKAGE.rglob("*.py")
              if p.relative_to(PACKAGE).parts[0] not in GDB_SIDE and p.name != "init.py")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("path", PURE, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_target_and_commands_import_gdb(path):
    assert "gdb" not in _imports(path), f"{path.relative_to(PACKAGE)} imports gdb"


@pytest.mark.parametrize("path", PURE, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_outside_gdb_imports_without_it(path):
    importlib.import_module(_module(path))


def test_the_loader_imports_nothing_but_the_standard_library_before_its_check():
    assert _imports(PACKAGE / "init.py") <= {"os", "sys", "importlib", "gdbext"}


def test_the_gdb_side_is_what_the_readme_says():
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")) == [
        "commands", "model", "rules", "target", "tools", "views", "x86"]


def test_every_gdb_side_module_imports_inside_gdb():
    """The gdb side, imported by a real gdb (ruff cannot see a name a module lacks)."""
    import shutil
    import subprocess

    if shutil.which("gdb") is None:
        pytest.skip("no gdb")
    modules = [_module(p) for p in sorted(PACKAGE.rglob("*.py"))
               if p.relative_to(PACKAGE).parts[0] in GDB_SIDE]
    script = f"import sys; sys.path.insert(0, {str(PACKAGE.parent)!r}); import importlib; " + "; ".join(
        f"importlib.import_module({m!r})" for m in modules) + "; print('imported', len(sys.modules) > 0)"
    proc = subprocess.run(["gdb", "-nx", "-batch", "-ex", f"source {PACKAGE / 'init.py'}", "-ex", f"python {script}"],
                          capture_output=True, text=True,
                          timeout=120, check=False)
    assert "imported True" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_help_gdbext_gives_the_overview_and_lists_every_subcommand():
    import shutil
    import subprocess

    if shutil.which("gdb") is None:
        pytest.skip("no gdb")
    proc = subprocess.run(["gdb", "-nx", "-batch", "-ex", f"source {PACKAGE / 'init.py'}", "-ex", "help gdbext"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert "info gdt [SEL]" in proc.stdout and "sysret-watch" in proc.stdout, proc.stdout + proc.stderr
    block = proc.stdout.split("List of gdbext subcommands:", 1)[1]
    listed = {line.split(" -- ")[0] for line in block.splitlines() if " -- " in line}
    assert {"gdbext info", "gdbext pagewalk", "gdbext ptdump", "gdbext sysret-check", "gdbext sysret-watch",
            "gdbext symbols"} <= listed, proc.stdout
