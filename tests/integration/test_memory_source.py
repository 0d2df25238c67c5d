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


# Inside gdb: a Ctrl-C after every packet of each command in turn.  gdb raises
# a Ctrl-C that lands while a packet is on the wire once the packet is done,
# so these are the moments it can strike; after each, QEMU's PhyMemMode must
# be 0 again and the command must have ended.
_INTERRUPTS = r'''
import json, os, signal, gdb
import gdbext.target as t, gdbext.target.memory as m, gdbext.target.remote as r
os.environ["GDBEXT_MEMORY"] = "stub"
s = t.current(); s.phys = m.PhysicalMemory(); s.snapshots.clear()
real = r._connection

class Interrupting:
    def __init__(self, conn, at):
        self.conn, self.at = conn, at
    def send_packet(self, packet):
        reply = self.conn.send_packet(packet)
        COUNT[0] += 1
        if COUNT[0] == self.at:
            # Ctrl-C right after this packet: gdb raises it at Python's next
            # instruction (or, SIGINT blocked, once it is unblocked).
            os.kill(os.getpid(), signal.SIGINT)
        return reply
    def is_valid(self):
        return self.conn.is_valid()

def run(command, at):
    COUNT[0] = 0
    gdb.execute("maint flush register-cache"); t.invalidate()
    r._connection = lambda: Interrupting(real(), at)
    try:
        gdb.execute(command, to_string=True)
        outcome = "done"
    except KeyboardInterrupt:
        outcome = "interrupted"
    except gdb.error as exc:
        outcome = "error: " + str(exc)
    finally:
        r._connection = real
    return outcome, COUNT[0]

def state():
    """The registers and the code at RIP, read as the stub has them."""
    regs = t.send_packet("g")
    rip = int(gdb.parse_and_eval("$pc")) & (2**64 - 1)
    return regs, t.send_packet(f"m{rip:x},10"), t.send_packet("qqemu.PhyMemMode")

COUNT = [0]
report = {}
for command in COMMANDS:
    _, packets = run(command, 0)
    left_on = []
    changed = []
    for at in range(1, packets + 1):
        before = state()
        outcome, _ = run(command, at)
        mode = t.send_packet("qqemu.PhyMemMode").strip()
        if mode == b"0" and state() != before:
            changed.append(at)
        if mode != b"0":
            left_on.append(at)
            t.send_packet("Qqemu.PhyMemMode:0")
    report[command] = {"packets": packets, "left_on": left_on, "changed": changed}
with open(RESULT, "w") as f:
    json.dump(report, f)
'''

COMMANDS = ("info tss", "info idt", "info gdt --no-star", "info gdt", "pagewalk $pc --fresh",
            "ptdump --fresh --limit 3", "info cpl")


def test_ctrl_c_after_any_packet_never_leaves_the_stub_in_physical_mode(kernel_paths, tmp_path):
    import json

    script, result = tmp_path / "interrupts.py", tmp_path / "result"
    script.write_text(f"RESULT = {str(result)!r}\nCOMMANDS = {COMMANDS!r}\n" + _INTERRUPTS)
    opts = launch.QemuOptions(scenario="spin", gdb_port=0, ram_file=False)
    with launch.Qemu(opts) as qemu:
        qemu.wait_serial(READY, timeout=90)
        with GdbDriver(elf=kernel_paths.elf, timeout=120) as gdb:
            gdb.load_gdbext()
            gdb.connect(qemu.gdb_port)
            gdb.interrupt()
            gdb.command(f"source {script}", timeout=300)
    report = json.loads(result.read_text())
    assert all(r["packets"] >= 3 for c, r in report.items() if c != "info cpl"), report   # switched and read
    assert {c: r["left_on"] for c, r in report.items() if r["left_on"]} == {}, report
    # Nor is anything in the guest left changed (rdmsr injection writes at RIP and steps).
    assert {c: r["changed"] for c, r in report.items() if r["changed"]} == {}, report


@pytest.mark.parametrize("ram_file", [True, False], ids=["ram-file", "qemu-process"])
def test_a_local_source_is_closed_quietly_when_the_connection_ends(kernel_paths, ram_file):
    """disconnect drops the session and closes its RAM map or /proc/PID/mem:
    no Python exception from gdb's event, and the next connection reads again."""
    opts = launch.QemuOptions(scenario="spin", gdb_port=0, ram_file=ram_file)
    with launch.Qemu(opts) as qemu:
        qemu.wait_serial(READY, timeout=90)
        with GdbDriver(elf=kernel_paths.elf, timeout=60) as gdb:
            gdb.load_gdbext()
            gdb.connect(qemu.gdb_port)
            first = gdb.json("ptdump --fresh")
            assert first["phys_source"].startswith("shared RAM file" if ram_file else "QEMU process memory")
            result, seen = gdb.mi('-interpreter-exec console "disconnect"')
            printed = "".join(m.get("payload") or "" for m in seen if m.get("type") in ("console", "log", "output"))
            assert result.get("message") == "done" and "Exception" not in printed and "Traceback" not in printed, printed
            gdb.connect(qemu.gdb_port)
            again = gdb.json("ptdump --fresh")
            assert again["phys_source"] == first["phys_source"] and again["ranges"] == first["ranges"]
