"""Drive a real gdb through its machine interface (pygdbmi), with every wait bounded.

Used by triage, the benchmarks and the integration tests: they run gdb with
gdbext loaded against QEMU's stub, type the same commands a person would, and
read the same output (or its --json form).
"""
from __future__ import annotations

import itertools
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
INIT = Path(__file__).resolve().parents[1] / "init.py"


def dependency_dirs() -> List[str]:
    """The directories this Python imports tabulate and pyelftools from."""
    import importlib.util

    dirs: List[str] = []
    for module in ("tabulate", "elftools"):
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin:
            continue
        origin = Path(spec.origin)
        # a package (elftools/__init__.py) or a module (tabulate.py, or tabulate/__init__.py)
        where = origin.parent.parent if origin.name == "__init__.py" else origin.parent
        if str(where) not in dirs:
            dirs.append(str(where))
    return dirs


class GdbError(Exception):
    """A gdb command answered with an error; the message is gdb's."""


class GdbTimeout(Exception):
    """gdb did not answer in time."""


def _mi_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Stop:
    reason: str
    payload: Dict = field(default_factory=dict)
    console: str = ""

    @property
    def address(self) -> Optional[int]:
        frame = self.payload.get("frame") or {}
        addr = frame.get("addr")
        return int(addr, 16) if addr else None


class GdbDriver:
    """One gdb process.  Always `close()` it (or use it as a context manager)."""

    def __init__(self, elf: Optional[Path] = None, gdb: Optional[str] = None, timeout: float = 30.0,
                 target_exit: Optional[Callable[[], Optional[str]]] = None):
        """target_exit: says why the target is gone (e.g. `Qemu.exit_summary`),
        or None while it runs; a failed command then raises that, not gdb's
        "The program is not being run" or "no target"."""
        from pygdbmi.gdbcontroller import GdbController

        # $GDBEXT_GDB picks another gdb for every driver (the tests, triage).
        argv = [gdb or os.environ.get("GDBEXT_GDB", "gdb"), "--nx", "--quiet", "--interpreter=mi3"]
        if elf is not None:
            argv.append(str(elf))
        self._gdb = GdbController(command=argv, time_to_check_for_additional_output_sec=0.05)
        self.timeout = timeout
        self.target_exit = target_exit
        self._tokens = itertools.count(1)
        self._pending: List[Dict] = []
        self.closed = False
        self.target_gone = False
        # gdb stays in synchronous MI, as a CLI session is: gdbext's rdmsr
        # injection steps the guest from inside a command, which only
        # completes in place when execution is synchronous.  A running guest
        # is interrupted with SIGINT, as Ctrl-C does at a terminal.
        self.command("set pagination off")
        self.command("set confirm off")
        self.command("set width 0")

    # -- low level -----------------------------------------------------------
    def _read(self, timeout: float) -> List[Dict]:
        return self._gdb.get_gdb_response(timeout_sec=timeout, raise_error_on_timeout=False)

    def mi(self, command: str, timeout: Optional[float] = None,
           final: tuple = ("done", "error", "running", "connected", "exit")) -> tuple[Dict, List[Dict]]:
        """Send one MI command; return its result record and everything before it.

        `final`: the result classes that end the command.  A CLI command that
        steps the guest inside (gdbext's rdmsr injection) answers `^running`
        first and `^done` when it is really finished."""
        token = next(self._tokens)
        self._gdb.write(f"{token}{command}", read_response=False)
        deadline = time.monotonic() + (timeout or self.timeout)
        seen: List[Dict] = []
        while True:
            batch = self._pending or self._read(min(0.5, max(0.0, deadline - time.monotonic())))
            self._pending = []
            for i, msg in enumerate(batch):
                if msg.get("type") == "result" and msg.get("token") == token and msg.get("message") in final:
                    # What came after the result in the same read belongs to
                    # whatever is next: keep it for the next reader.
                    self._pending = batch[i + 1:]
                    return msg, seen
                seen.append(msg)
            if time.monotonic() > deadline:
                raise GdbTimeout(f"gdb gave no answer to {command!r} in {timeout or self.timeout:.0f}s")

    def command(self, text: str, timeout: Optional[float] = None) -> str:
        """A CLI command as typed at the prompt; returns what it printed.
        It must end at a prompt: run the guest with resume_until_stop()."""
        result, seen = self.mi(f"-interpreter-exec console {_mi_quote(text)}", timeout, final=("done", "error"))
        out = "".join(m.get("payload") or "" for m in seen if m.get("type") in ("console", "output", "target"))
        self._stops_seen = [m for m in seen if m.get("type") == "notify" and m.get("message") == "stopped"]
        if result.get("message") == "error":
            raise GdbError(self._gone() or (result.get("payload") or {}).get("msg", "error").strip())
        return out

    def command_interrupted(self, text: str, after: float,
                            timeout: Optional[float] = None) -> tuple[bool, str]:
        """Run a CLI command and send gdb one SIGINT (Ctrl-C) `after` seconds
        into it.  Returns (finished, text): True and what it printed if it
        ended normally, False and gdb's error message if it failed (the
        interrupt, if it landed in time).  A SIGINT that arrives after the
        command ended is absorbed before this returns."""
        token = next(self._tokens)
        self._gdb.write(f"{token}-interpreter-exec console {_mi_quote(text)}", read_response=False)
        time.sleep(after)
        proc = self._gdb.gdb_process
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + (timeout or self.timeout)
        seen: List[Dict] = []
        result = None
        while result is None:
            if time.monotonic() > deadline:
                raise GdbTimeout(f"gdb gave no answer to {text!r} in {timeout or self.timeout:.0f}s")
            batch = self._pending or self._read(0.5)
            self._pending = []
            for i, msg in enumerate(batch):
                if msg.get("type") == "result" and msg.get("token") == token:
                    result, self._pending = msg, batch[i + 1:]
                    break
                seen.append(msg)
        # An idle gdb turns a late SIGINT into "Quit" for whatever comes next:
        # let a harmless command take it.
        try:
            self.command("echo")
        except GdbError:
            pass
        out = "".join(m.get("payload") or "" for m in seen if m.get("type") in ("console", "output", "target"))
        if result.get("message") == "error":
            return False, (result.get("payload") or {}).get("msg", "error").strip()
        return True, out

    def _gone(self) -> Optional[str]:
        return self.target_exit() if self.target_exit is not None else None

    def json(self, text: str, timeout: Optional[float] = None):
        out = self.command(text + " --json", timeout)
        try:
            return json.loads(out)
        except ValueError:
            raise GdbError(f"{text} --json printed no JSON: {out[:200]!r}") from None

    # -- sessions --------------------------------------------------------------
    def load_gdbext(self) -> str:
        """Source gdbext; GdbError if it did not load (gdb reports an error in
        a sourced Python file only as printed text)."""
        # gdb embeds the system Python: tell it where this Python found
        # gdbext's dependencies (an installed gdbext's venv, say).
        sites = os.pathsep.join(dependency_dirs())
        if sites:
            self.command(f"python import os; os.environ.setdefault('GDBEXT_SITE_PACKAGES', {sites!r})")
        result, seen = self.mi(f"-interpreter-exec console {_mi_quote(f'source {INIT}')}", final=("done", "error"))
        out = "".join(m.get("payload") or "" for m in seen if m.get("type") in ("console", "output", "target", "log"))
        if result.get("message") == "error" or "Traceback" in out or "gdbext: not loaded" in out:
            lines = [line for line in out.strip().splitlines() if line.strip()]
            raise GdbError("gdbext did not load: " + (lines[-1] if lines else (result.get("payload") or {}).get("msg", "")))
        return out

    def connect(self, port: int, host: str = "127.0.0.1") -> str:
        return self.command(f"target remote {host}:{port}", timeout=30)

    def resume_until_stop(self, timeout: float, command: str = "-exec-continue") -> Optional[Stop]:
        """Continue and wait for the next stop; None if it did not stop in time
        (the target is then interrupted, so it is stopped either way)."""
        result, _ = self.mi(command)
        if result.get("message") == "error":
            raise GdbError(self._gone() or (result.get("payload") or {}).get("msg", "error"))
        stop = self._wait_stop(timeout)
        if stop is None and not self.target_gone:
            self.interrupt()
        return stop

    def interrupt(self) -> Optional[Stop]:
        """Stop a running guest (SIGINT to gdb, as Ctrl-C)."""
        proc = self._gdb.gdb_process
        if proc is None or proc.poll() is not None:
            return None
        # gdb drops a SIGINT that lands while it steps over a breakpoint (it
        # is waiting for no stop reply then); under sysret-watch that is most
        # of a stop, at a thousand stops a second.  One that lands in a
        # Python stop() callback stops the guest.  So: send it again, often,
        # until the guest stops.  A spare one that reaches gdb once it is idle
        # only makes it print "Quit".
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            os.kill(proc.pid, signal.SIGINT)
            stop = self._wait_stop(0.3)
            if stop is not None or self.target_gone:
                return stop
        return None

    def _wait_stop(self, timeout: float) -> Optional[Stop]:
        deadline = time.monotonic() + timeout
        console = []
        while time.monotonic() < deadline:
            batch = self._pending or self._read(min(0.5, max(0.0, deadline - time.monotonic())))
            self._pending = []
            for i, msg in enumerate(batch):
                if msg.get("type") in ("console", "target", "output", "log"):
                    console.append(msg.get("payload") or "")
                if msg.get("type") == "notify" and msg.get("message") == "stopped":
                    payload = msg.get("payload") or {}
                    self._pending = batch[i + 1:]
                    return Stop(payload.get("reason", ""), payload, "".join(console))
                if msg.get("type") == "notify" and msg.get("message") == "thread-group-exited":
                    # QEMU exited (the guest powered off or asked isa-debug-exit to end
                    # it): gdb says only that the connection closed.
                    self.target_gone = True
                    self._pending = batch[i + 1:]
                    return Stop("exited", msg.get("payload") or {}, "".join(console))
        return None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._gdb.write("-gdb-exit", read_response=False)
        except Exception:  # noqa: BLE001 - gdb may already be gone
            pass
        proc = self._gdb.gdb_process
        try:
            if proc is not None:
                proc.wait(timeout=5)
        except Exception:  # noqa: BLE001
            pass
        self._gdb.exit()  # kills if still alive

    def __enter__(self) -> "GdbDriver":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
