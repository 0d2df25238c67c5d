"""scripts/run-kernel as a user runs it: exit statuses, the scenario list,
--timeout, and cleanup when it is signalled."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gdbext.tools import launch

RUN_KERNEL = launch.ROOT / "scripts" / "run-kernel"


def run_kernel(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUN_KERNEL), *args], check=False, capture_output=True, text=True,
                          timeout=timeout)


def test_list_prints_the_scenarios_in_order():
    result = run_kernel("--list")
    assert result.returncode == 0
    assert tuple(result.stdout.split()) == launch.SCENARIOS


def test_unknown_scenario_exits_2_listing_the_valid_ones():
    result = run_kernel("--scenario", "no-such-mistake")
    assert result.returncode == 2
    assert "unknown scenario 'no-such-mistake'" in result.stderr
    assert all(name in result.stderr for name in launch.SCENARIOS)


@pytest.mark.qemu
def test_ok_exits_0_and_streams_the_log_without_terminal_escapes(kernel_paths):
    result = run_kernel("--scenario", "ok")
    assert result.returncode == 0, result.stderr
    assert "[user] hello from ring 3" in result.stdout
    assert "[kernel] exit: ok" in result.stdout
    assert "\x1b" not in result.stdout


@pytest.mark.qemu
def test_a_guest_fault_exits_1(kernel_paths, tmp_path):
    serial = tmp_path / "com1.log"
    result = run_kernel("--scenario", "sce-off", "--serial", str(serial))
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""  # the log went to the file
    assert "FAULT vector=6 (#UD)" in serial.read_text()


@pytest.mark.qemu
def test_timeout_on_spin_exits_124_and_stops_qemu(kernel_paths):
    result = run_kernel("--scenario", "spin", "--gdb", "--timeout", "8")
    assert result.returncode == 124, result.stderr
    pid = int(re.search(r"QEMU pid (\d+)", result.stderr).group(1))
    assert not Path(f"/proc/{pid}").exists()
    assert re.search(r"attach: gdb \S*kernel\.elf -ex 'target remote 127\.0\.0\.1:\d+'", result.stderr)
    assert "source " in result.stderr and "init.py" in result.stderr


@pytest.mark.qemu
def test_sigterm_stops_qemu_and_exits_130(kernel_paths):
    proc = subprocess.Popen([sys.executable, str(RUN_KERNEL), "--scenario", "spin", "--gdb"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "QEMU pid" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
        pid = int(re.search(r"QEMU pid (\d+)", line).group(1))
        assert Path(f"/proc/{pid}").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 130
        assert not Path(f"/proc/{pid}").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.qemu
def test_int_log_logs_the_guest_exceptions_and_the_kernel_still_reports_them(kernel_paths):
    result = run_kernel("--scenario", "sce-off", "--int-log")
    assert result.returncode == 1, result.stderr
    assert "FAULT vector=6 (#UD)" in result.stdout
    assert re.search(r"QEMU's interrupt log in \S+qemu-int\.log", result.stderr)
    assert "triple fault" not in result.stderr


def test_chain_printed_after_a_triple_fault_reads_qemus_log(capsys):
    # The printer run-kernel calls once the log says "Triple fault", on a real log.
    import importlib.machinery
    import importlib.util
    import types

    loader = importlib.machinery.SourceFileLoader("run_kernel_script", str(RUN_KERNEL))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    log = Path(__file__).parents[1] / "unit" / "fixtures" / "qemu_log" / "empty_idt_qemu72.log"
    module.print_chain(types.SimpleNamespace(int_log_path=log, ram_path=None))
    out = capsys.readouterr().out
    assert "#UD at 0x100027; vector 6 is past the IDT limit 0x0: #GP(0x32);" in out.replace("\n  ", " ")
    assert all(len(line) <= 80 for line in out.splitlines())


@pytest.mark.qemu
def test_gdbs_kill_is_not_called_a_reset(kernel_paths):
    """QEMU exits 0 after gdb's `kill` as after a reset; it also says
    "Terminated via GDBstub", and run-kernel tells it from a reset by that."""
    from gdbext.tools.driver import GdbDriver

    proc = subprocess.Popen([sys.executable, str(RUN_KERNEL), "--scenario", "spin", "--gdb", "--wait"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        deadline = time.monotonic() + 60
        seen = ""
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            seen += line
            m = re.search(r"127\.0\.0\.1:(\d+)", line)
            port = int(m.group(1)) if m else None
        assert port is not None, seen
        with GdbDriver(kernel_paths.elf, timeout=30) as gdb:
            gdb.command(f"target remote 127.0.0.1:{port}")
            gdb.command("kill")
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = seen + err
    assert "QEMU exited with status 0: ended by gdb's `kill` (QEMU: Terminated via GDBstub), not a reset" in err, err
    assert "guest reset" not in err
