"""Where guest memory is read from, on QEMUs started as people start them.

A QEMU on this machine with no RAM file is read through /proc/PID/mem, found
from gdb's own socket whether the stub listens on TCP or on a unix socket;
a gdb without ptrace rights on that QEMU (another user) falls back to the
stub and says why.  Every source gives the same dump as the stub's."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gdbext.tools import launch
from gdbext.tools.driver import GdbDriver

pytestmark = pytest.mark.qemu

READY = r"spin: counter="


def _dump(gdb: GdbDriver) -> list:
    return gdb.json("ptdump --fresh", timeout=120)["ranges"]


def _stub_dump(gdb: GdbDriver) -> list:
    gdb.command("python import os, gdbext.target as t, gdbext.target.memory as m; "
                "os.environ['GDBEXT_MEMORY'] = 'stub'; s = t.current(); s.phys = m.PhysicalMemory(); "
                "s.snapshots.clear()")
    try:
        doc = gdb.json("ptdump --fresh", timeout=120)
        assert doc["phys_source"].startswith("gdb stub")
        return doc["ranges"]
    finally:
        gdb.command("python import os; os.environ.pop('GDBEXT_MEMORY', None)")


def test_a_unix_socket_stub_is_read_from_the_qemu_process(kernel_paths):
    with tempfile.TemporaryDirectory(prefix="gdbext-sock-") as tmp:
        sock = str(Path(tmp) / "gdb.sock")
        opts = launch.QemuOptions(scenario="spin", ram_file=False,
                                  extra_args=("-gdb", f"unix:{sock},server=on,wait=off"))
        with launch.Qemu(opts) as qemu:
            qemu.wait_serial(READY, timeout=90)
            with GdbDriver(elf=kernel_paths.elf, timeout=60) as gdb:
                gdb.load_gdbext()
                gdb.command(f"target remote {sock}", timeout=30)
                status = gdb.json("gdbext-status")
                assert status["memory_source"] == "qemu-process", status
                assert status["memory"] == f"QEMU process memory /proc/{qemu.process.pid}/mem"
                assert sock in status["connection"]
                assert _dump(gdb) == _stub_dump(gdb)


def _gdb_as_nobody(tmp_path: Path) -> str:
    """A gdb run as user nobody (no rights on root's QEMU), or skip."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run gdb as another user")
    wrapper = tmp_path / "gdb-as-nobody"
    wrapper.write_text(f'#!/bin/sh\nexec setpriv --reuid=65534 --regid=65534 --clear-groups '
                       f'{shutil.which(os.environ.get("GDBEXT_GDB", "gdb"))} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    tmp_path.chmod(0o755)
    root = Path(__file__).resolve().parents[2]
    probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                            "-c", f"import os; os.listdir({str(root / 'gdbext')!r})"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("user nobody cannot read this checkout")
    return str(wrapper)


def test_a_gdb_without_rights_on_qemu_falls_back_to_the_stub(kernel_paths, tmp_path):
    gdb_binary = _gdb_as_nobody(tmp_path)
    opts = launch.QemuOptions(scenario="spin", gdb_port=0, ram_file=False)
    with launch.Qemu(opts) as qemu:
        qemu.wait_serial(READY, timeout=90)
        with GdbDriver(gdb=gdb_binary, timeout=60) as gdb:
            gdb.load_gdbext()
            gdb.connect(qemu.gdb_port)
            status = gdb.json("gdbext-status")
            assert status["memory_source"] == "stub", status
            # The reason is said: the process is there but not readable by this user.
            assert status["not_used"] and any("not visible" in w or "ptrace" in w for w in status["not_used"]), status
            text = gdb.command("gdbext-status")
            assert "not used:" in text
            stub = gdb.json("ptdump --fresh")["ranges"]
        with GdbDriver(elf=kernel_paths.elf, timeout=60) as gdb:
            gdb.load_gdbext()
            gdb.connect(qemu.gdb_port)
            assert gdb.json("gdbext-status")["memory_source"] == "qemu-process"
            assert _dump(gdb) == stub
