"""gdb stubs that are not QEMU, for tests of what gdbext says to them.

    with gdbserver() as stub:          # Debian's gdbserver serving /bin/sleep
        gdb.connect(stub.port)

Standard library only (no gdbext import).  The port is a free one picked at
run time (another is tried if gdbserver loses the race for it), readiness is
read from gdbserver's own "Listening on port" line -- never probed with a TCP
connect, which would take the stub's one connection -- and leaving the
context kills gdbserver and the process it serves, whatever happened.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 20.0
PORT_ATTEMPTS = 3


@dataclass
class Gdbserver:
    port: int
    pid: int           # gdbserver's
    inferior_pid: int  # the process it serves
    log: Path          # its stdout and stderr

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaps counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


def _kill(proc: subprocess.Popen, inferior_pid: int) -> None:
    for target in (lambda: os.killpg(proc.pid, signal.SIGKILL),
                   lambda: proc.kill(),
                   lambda: os.kill(inferior_pid, signal.SIGKILL) if inferior_pid else None):
        try:
            target()
        except (ProcessLookupError, PermissionError, OSError):
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 10
    while inferior_pid and not _gone(inferior_pid) and time.monotonic() < deadline:
        time.sleep(0.02)


@contextmanager
def gdbserver(program: Sequence[str] = ("/bin/sleep", "100")) -> Iterator[Gdbserver]:
    """Debian's gdbserver on 127.0.0.1:<a free port>, serving `program` (started stopped at its entry)."""
    exe = shutil.which("gdbserver")
    if exe is None:
        raise RuntimeError("gdbserver not found: install the Debian package gdbserver (apt-get install -y gdbserver)")
    tempdir = Path(tempfile.mkdtemp(prefix="gdbext-gdbserver-"))
    proc = None
    inferior_pid = 0
    try:
        for attempt in range(PORT_ATTEMPTS):
            port = _free_port()
            log = tempdir / f"gdbserver-{attempt}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen([exe, f"127.0.0.1:{port}", *program], stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + START_TIMEOUT
            text = ""
            while time.monotonic() < deadline:
                text = log.read_text(errors="replace")
                created = re.search(r"Process .* created; pid = (\d+)", text)
                if created:
                    inferior_pid = int(created.group(1))
                if re.search(rf"^Listening on port {port}$", text, re.M):
                    break
                if proc.poll() is not None:
                    break
                time.sleep(0.02)
            else:
                raise RuntimeError(f"gdbserver did not listen on port {port} within {START_TIMEOUT:g} s: {text!r}")
            if proc.poll() is None:
                yield Gdbserver(port, proc.pid, inferior_pid, log)
                return
            _kill(proc, inferior_pid)
            inferior_pid = 0
            if "already in use" not in text and "bind" not in text.lower():
                raise RuntimeError(f"gdbserver exited at start: {text!r}")
        raise RuntimeError(f"gdbserver could not bind a port in {PORT_ATTEMPTS} attempts")
    finally:
        if proc is not None:
            _kill(proc, inferior_pid)
            assert proc.poll() is not None, "a gdbserver outlived its test"
            assert not inferior_pid or _gone(inferior_pid), "gdbserver's inferior outlived its test"
        shutil.rmtree(tempdir, ignore_errors=True)
