"""gdbext as other people get it: a wheel installed into a fresh virtual
environment, loaded next to an extension that owns some of its names, and a
checkout sourced over an installed copy.

The gdb-only tests run gdb in batch mode with no target; the wheel test boots
the packaged kernel under QEMU from a directory that is not the checkout.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from gdbext.tools import launch

ROOT = Path(__file__).resolve().parents[2]
INIT = ROOT / "gdbext" / "init.py"

pytestmark = pytest.mark.skipif(shutil.which("gdb") is None, reason="no gdb")

# A stand-in for bata24's GEF fork as far as names go: `pagewalk` is a prefix
# command (with `pagewalk x64` under it) and ptdump, pt, pw are its aliases.
GEF_LIKE = '''
import gdb

class Walk(gdb.Command):
    """other-extension pagewalk"""
    def __init__(self):
        super().__init__("pagewalk", gdb.COMMAND_USER, prefix=True)
    def invoke(self, arg, from_tty):
        gdb.write("OTHER pagewalk [%s]\\n" % arg)

class WalkX64(gdb.Command):
    """other-extension pagewalk x64"""
    def __init__(self):
        super().__init__("pagewalk x64", gdb.COMMAND_USER)
    def invoke(self, arg, from_tty):
        gdb.write("OTHER pagewalk x64\\n")

Walk()
WalkX64()
for alias in ("ptdump", "pt", "pw"):
    try:
        gdb.execute("alias %s = pagewalk" % alias)
    except gdb.error as exc:
        gdb.write("OTHER could not alias %s: %s\\n" % (alias, exc))
'''


def _gdb(*commands: str, cwd: Path | None = None, env: dict | None = None) -> str:
    argv = ["gdb", "-nx", "-batch"]
    for command in commands:
        argv += ["-ex", command]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL)
    return proc.stdout + proc.stderr


def _env(**extra: str) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("GDBEXT_")}
    env.update(extra)
    return env


def test_help_gdbext_lists_every_command_under_the_prefix():
    out = _gdb(f"source {INIT}", "help gdbext", env=_env())
    listed = [line.split(" -- ")[0] for line in out.splitlines() if line.startswith("gdbext ") and " -- " in line]
    for name in ("gdbext info", "gdbext pagewalk", "gdbext ptdump", "gdbext sysret-check", "gdbext sysret-watch",
                 "gdbext symbols", "gdbext fault-watch"):
        assert name in listed, out
    out = _gdb(f"source {INIT}", "help gdbext info", env=_env())
    for sub in ("gdt", "tss", "idt", "msr", "cpl", "fault"):
        assert f"gdbext info {sub} -- " in out, out


def test_an_extension_loaded_first_keeps_its_names_and_gdbext_says_how_to_reach_its_own(tmp_path):
    other = tmp_path / "other.py"
    other.write_text(GEF_LIKE)
    out = _gdb(f"source {other}", f"source {INIT}", "pagewalk x64", "ptdump", "gdbext pagewalk 0 --bogus",
               "gdbext ptdump --bogus", "info gdt --bogus", env=_env())
    notes = [line for line in out.splitlines() if line.startswith("gdbext: another extension owns")]
    assert notes == ["gdbext: another extension owns `pagewalk`, `ptdump`; "
                     "gdbext's are `gdbext pagewalk`, `gdbext ptdump`"], out
    assert "OTHER pagewalk x64" in out and "OTHER pagewalk []" in out
    # gdbext's own commands answer under the prefix (here: their one-line argument error).
    assert "pagewalk: unrecognized arguments: --bogus (see `help gdbext pagewalk`)" in out
    assert "ptdump: unrecognized arguments: --bogus (see `help gdbext ptdump`)" in out
    assert "info gdt: unrecognized arguments: --bogus (see `help info gdt`)" in out
    assert "Traceback" not in out


def test_an_extension_loaded_later_takes_a_name_and_the_prefixed_command_still_works(tmp_path):
    other = tmp_path / "other.py"
    other.write_text(GEF_LIKE)
    out = _gdb(f"source {INIT}", f"source {other}", "pagewalk x64", "gdbext pagewalk 0 --bogus",
               "sysret-watch status --bogus", env=_env())
    assert "OTHER pagewalk x64" in out
    assert "pagewalk: unrecognized arguments: --bogus (see `help gdbext pagewalk`)" in out
    assert "sysret-watch: unrecognized arguments: --bogus" in out
    assert "another extension owns" not in out


def test_sourcing_a_tree_loads_that_tree_over_a_copy_loaded_before(tmp_path):
    copy = tmp_path / "elsewhere"
    shutil.copytree(ROOT / "gdbext", copy / "gdbext", ignore=shutil.ignore_patterns("__pycache__"))
    venv = ROOT / ".venv"
    out = _gdb(f"source {copy / 'gdbext' / 'init.py'}",
               "python import gdbext; print('FIRST', gdbext.__file__)",
               f"source {INIT}",
               "python import gdbext, gdbext.commands.base as b; print('SECOND', gdbext.__file__, b.__file__)",
               "help pagewalk", env=_env(GDBEXT_VENV=str(venv)))
    assert f"FIRST {copy / 'gdbext' / '__init__.py'}" in out, out
    assert f"SECOND {ROOT / 'gdbext' / '__init__.py'} {ROOT / 'gdbext' / 'commands' / 'base.py'}" in out, out
    assert f"gdbext: loaded from {ROOT / 'gdbext'}, in place of the copy from {copy / 'gdbext'}" in out
    assert "another extension owns" not in out  # its own names from the first copy are taken over
    assert "Walk the page tables" in out
    assert "Traceback" not in out


def test_a_missing_dependency_is_one_line_naming_the_command(tmp_path):
    copy = tmp_path / "clone"
    shutil.copytree(ROOT / "gdbext", copy / "gdbext", ignore=shutil.ignore_patterns("__pycache__"))
    out = _gdb(f"source {copy / 'gdbext' / 'init.py'}", "help pagewalk", env=_env())
    import importlib.util as _u  # noqa: F401 - the test's Python has them; gdb's need not
    probe = _gdb("python import tabulate, elftools; print('HAS-DEPS')", env=_env())
    if "HAS-DEPS" in probe:
        pytest.skip("gdb's own Python has tabulate and pyelftools: nothing is missing")
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines[0].startswith("gdbext: not loaded: gdb's Python (python3."), out
    assert "scripts/setup" in lines[0] and "-m pip install" in lines[0]
    assert "Traceback" not in out
    assert 'Undefined command: "pagewalk"' in out


def _copy_checkout(dest: Path) -> Path:
    """The source tree (no git needed) with the built kernel, mtimes kept so
    make is a no-op; nothing made by a run (venvs, builds, caches)."""
    skip = shutil.ignore_patterns(".git", ".venv", "build", "__pycache__", "*.egg-info", ".pytest_cache",
                                  ".hypothesis", ".ruff_cache")
    shutil.copytree(ROOT, dest, ignore=skip, symlinks=True)
    shutil.copytree(launch.BUILD_DIR, dest / "kernel" / "build", symlinks=True,
                    ignore=shutil.ignore_patterns(".build.lock"))
    return dest


@pytest.mark.qemu
def test_the_wheel_carries_the_kernel_and_triage_runs_from_anywhere(tmp_path, kernel_paths):
    source = _copy_checkout(tmp_path / "src")
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps",
                    "-w", str(dist), str(source)], check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("gdbext-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True, timeout=300)
    # Its dependencies come from this test's environment, not the network.
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "gdbext-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    packaged = site / "gdbext" / "kernel_image"
    assert sorted(p.name for p in packaged.iterdir()) == ["BOOTX64.EFI", "esp.img", "kernel.elf"]
    assert (packaged / "kernel.elf").read_bytes() == kernel_paths.elf.read_bytes()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _env()
    env.pop("PYTHONPATH", None)
    usage = subprocess.run([str(venv / "bin" / "gdbext-triage"), "--help"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: gdbext-triage"), usage.stdout + usage.stderr
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "from gdbext.tools import launch; print(launch.build_kernel().elf)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)
    assert where.stdout.strip() == str(packaged / "kernel.elf"), where.stderr
    proc = subprocess.run([str(venv / "bin" / "gdbext-triage"), "--scenario", "gdt-order", "--json", "report.json"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads((elsewhere / "report.json").read_text())
    # The installed gdbext found the bad STAR at its wrmsr: gdb loaded the
    # packaged kernel.elf's symbols and the installed extension.
    assert report["scenario"] == "gdt-order" and report["stopped_because"] == "finding"
    assert "SR-STAR-CS" in {f["rule"] for f in report["findings"]}
    assert report["state"]["info cpl"]["cpl"] == 0
    assert not list(site.rglob(".build.lock")) and not (site / "kernel").exists()
    assert not list(elsewhere.glob("kernel*"))
