"""ptdump on a process with many pages: Linux's pages guest under QEMU.

The guest (tests.support.linuxguest, mode "pages") runs bin/pages
(tests/linux/pages.asm): it touches PAGES pages, one every other page of an
anonymous mapping, says `PAGES READY N VA STRIDE` and spins in ring 3.  gdb
interrupts it there (CPL 3, the process's CR3).  Oracles: the program's own
line (how many pages, where) and QEMU's `monitor info tlb` (every leaf page
of the live CR3, walked by QEMU), read through a file so that its ~3 MB
cannot be credited to another MI command.

Guest RAM is read through the stub's physical-memory mode (no RAM file, and
GDBEXT_MEMORY=stub, not the local QEMU process's memory), so the Ctrl-C tests
interrupt dumps that switch QEMU's PhyMemMode.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gdbext.tools import launch
from gdbext.tools.driver import GdbDriver
from tests.support import linuxguest

PAGES = 20_000          # the CI size; scripts/bench-scale runs 25,000 to 100,000
BOOT_TIMEOUT = 240.0
PROGRAM_TEXT = (0x400000, 0x500000)   # ld's default place for bin/pages' code
TLB_LINE = re.compile(r"^([0-9a-f]{16}): ([0-9a-f]{16}) ([-X][-G][-P][-D][-A][-C][-T][-U][-W])\s*$",
                      re.MULTILINE)
INTERRUPTED = re.compile(r"^gdbext: ptdump interrupted after (\d+) tables; nothing changed$")


@dataclass
class PagesGuest:
    qemu: launch.Qemu
    gdb: GdbDriver
    pages: int
    first_va: int
    stride: int


@pytest.fixture(scope="module")
def pages_guest(tmp_path_factory) -> Iterator[PagesGuest]:
    guest = linuxguest.prepare()
    if not guest.has_pages:
        pytest.skip("bin/pages was not built: install nasm and binutils (scripts/setup does)")
    g = guest.variant(mode="pages", pages=PAGES)
    qemu = launch.Qemu(launch.QemuOptions(kernel=g.vmlinuz, initrd=g.initrd, append=g.append,
                                          memory_mib=1024, gdb_port=0, ram_file=False))
    gdb = None
    try:
        qemu.start()
        qemu.wait_serial(r"^PAGES (READY|FAILED)", BOOT_TIMEOUT)
        ready = linuxguest.parse_pages_ready(qemu.serial_text())
        assert ready is not None, qemu.serial_text()[-2000:]
        gdb = GdbDriver(timeout=120)
        gdb.load_gdbext()
        gdb.command("python import os; os.environ['GDBEXT_MEMORY'] = 'stub'")
        gdb.connect(qemu.gdb_port)
        yield PagesGuest(qemu, gdb, *ready)
    finally:
        if gdb is not None:
            gdb.close()
        qemu.stop()
        assert not qemu.running, "a QEMU outlived its test"


def stop_in_program(p: PagesGuest) -> dict:
    """Interrupt the guest until it is stopped at CPL 3 in bin/pages' spin loop."""
    for _ in range(50):
        cpl = p.gdb.json("info cpl")
        if cpl["cpl"] == 3 and PROGRAM_TEXT[0] <= cpl["rip"] < PROGRAM_TEXT[1]:
            monitor = p.gdb.command("monitor info registers 0")
            assert "CPL=3" in monitor, monitor
            return cpl
        p.gdb.resume_until_stop(0.2)
    raise AssertionError("never stopped in bin/pages at CPL 3")


def info_tlb(p: PagesGuest, path: Path) -> dict[int, tuple[int, str]]:
    """QEMU's `info tlb`: VA -> (PA, leaf bits), through a file."""
    p.gdb.command(f"python import gdbext.commands.base as _c; _c.capture_to_file('monitor info tlb', {str(path)!r})",
                  timeout=300)
    doc = json.loads(path.read_text())
    assert "output" in doc, doc
    return {int(m.group(1), 16): (int(m.group(2), 16), m.group(3))
            for m in TLB_LINE.finditer(doc["output"].replace("\r", ""))}


def ptdump_json(p: PagesGuest, args: str, path: Path) -> dict:
    p.gdb.command(f"python import gdbext.commands.base as _c; _c.capture_to_file('ptdump {args} --json', "
                  f"{str(path)!r})", timeout=300)
    doc = json.loads(path.read_text())
    assert "output" in doc, doc
    return json.loads(doc["output"])


def pages_of(ranges: list[dict], lo: int, hi: int) -> dict[int, dict]:
    """Each 4 KiB page of the ranges inside [lo, hi): VA -> (its PA, the range)."""
    out = {}
    for r in ranges:
        if r["va_end"] <= lo or r["va_start"] >= hi:
            continue
        assert r["page_size"] == 4096, r
        for i in range(r["pages"]):
            out[r["va_start"] + i * 4096] = (r["pa_start"] + i * 4096, r)
    return out


@pytest.mark.qemu
def test_user_half_at_cpl3_has_every_touched_page_as_info_tlb_says(pages_guest, tmp_path):
    p = pages_guest
    stop_in_program(p)
    lo, hi = p.first_va, p.first_va + p.pages * p.stride
    d = ptdump_json(p, "--user --fresh", tmp_path / "ptdump.json")
    assert d["cpl"] == 3 and d["problems"] == []
    assert d["phys_source"].startswith("gdb stub"), d["phys_source"]
    mine = pages_of(d["ranges"], lo, hi)
    # The program's own word: PAGES pages, one every STRIDE bytes, each
    # written, so each has a frame of its own (no zero page, no huge page).
    touched = {p.first_va + i * p.stride for i in range(p.pages)}
    assert len(mine) >= p.pages
    assert touched <= set(mine), f"{len(touched - set(mine))} touched pages missing"
    assert len({pa for pa, _ in mine.values()}) == len(mine), "two pages share a frame"
    for va in touched:
        r = mine[va][1]
        assert r["user"] and r["writable"] and not r["executable"], r

    # QEMU's own walk of the same CR3: the same pages at the same frames.
    tlb = {va: v for va, v in info_tlb(p, tmp_path / "tlb.json").items() if lo <= va < hi}
    assert set(tlb) == set(mine), (f"{len(set(tlb) - set(mine))} pages only in info tlb, "
                                   f"{len(set(mine) - set(tlb))} only in ptdump")
    for va, (pa, bits) in tlb.items():
        assert mine[va][0] == pa, f"{va:#x}: ptdump PA {mine[va][0]:#x}, info tlb {pa:#x}"
        assert bits.endswith("UW") and bits[0] == "X" and bits[2] == "-", f"{va:#x}: {bits}"
    # And the whole user half: every user page info tlb lists (U at the
    # leaf) is in the dump or under an upper level that takes U/S away.
    all_tlb = info_tlb(p, tmp_path / "tlb.json")
    dumped = {va for r in d["ranges"] for va in range(r["va_start"], r["va_end"], r["page_size"])}
    assert dumped <= set(all_tlb), "ptdump --user lists a page QEMU does not map"
    assert sum(r["pages"] for r in d["ranges"]) == len(dumped)


def _machine_state(g: GdbDriver) -> tuple[str, str, str]:
    mode = g.command("python print(gdb.selected_inferior().connection.send_packet('qqemu.PhyMemMode'))").strip()
    return g.command("monitor info registers 0"), g.command("info registers"), mode


@pytest.mark.qemu
def test_ctrl_c_stops_ptdump_with_one_line_and_changes_nothing(pages_guest):
    p = pages_guest
    g = p.gdb
    stop_in_program(p)
    before = _machine_state(g)
    assert before[2] == "b'0'", before[2]
    # How long a whole dump takes here (tables read again through the stub,
    # ~85,000 ranges with Linux's ESPFIX area): the interrupts are sent
    # within it.
    g.command("maint flush register-cache")
    started = time.monotonic()
    whole = g.command("ptdump --fresh", timeout=300)
    seconds = time.monotonic() - started
    assert "ranges" in whole.splitlines()[1]
    interrupted = []
    for fraction in (0.5, 0.3, 0.15, 0.7, 0.05):
        g.command("maint flush register-cache")
        finished, text = g.command_interrupted("ptdump --fresh", after=seconds * fraction, timeout=300)
        assert "Traceback" not in text and "Error occurred in Python" not in text, text
        if finished:
            assert text.splitlines()[1].split(",")[0] == whole.splitlines()[1].split(",")[0], text[:300]
            continue
        assert "\n" not in text and INTERRUPTED.match(text), repr(text)
        interrupted.append(int(INTERRUPTED.match(text).group(1)))
        # Nothing changed: the vCPU, gdb's registers, and QEMU back in virtual-address mode.
        assert _machine_state(g) == before
    assert interrupted, f"no interrupt landed within a {seconds:.2f} s dump"
    # The next dump is whole, and the same.
    again = g.command("ptdump --fresh", timeout=300)
    assert again.splitlines()[1].split(",")[0] == whole.splitlines()[1].split(",")[0]
    assert _machine_state(g) == before
    print(f"\nptdump --fresh: {seconds:.2f} s; interrupted after {interrupted} tables")


@pytest.mark.qemu
def test_ctrl_c_while_tables_are_read_leaves_phys_mode_as_it_was(pages_guest):
    """Interrupts sent in the first tens of milliseconds of a fresh dump, while
    its tables are read level by level under QEMU's PhyMemMode (entered and
    left once per level): whatever it interrupts, the mode is back at 0."""
    p = pages_guest
    g = p.gdb
    stop_in_program(p)
    before = _machine_state(g)
    outcomes = []
    for i in range(16):
        g.command("maint flush register-cache")
        finished, text = g.command_interrupted("ptdump --fresh --limit 1", after=0.004 * i, timeout=300)
        assert "Traceback" not in text and "Error occurred in Python" not in text, text
        # An interrupt before the command's Python code runs is gdb's own "Quit".
        assert finished or text == "Quit" or INTERRUPTED.match(text), repr(text)
        outcomes.append("done" if finished else "quit" if text == "Quit" else "ptdump")
        assert _machine_state(g) == before, f"after an interrupt at {0.004 * i:.3f} s ({outcomes[-1]})"
    print(f"\noutcomes: {outcomes}")
    assert "ptdump" in outcomes, outcomes


# ---------------------------------------------------------------------------
# At a terminal: the progress line, and Ctrl-C typed there
# ---------------------------------------------------------------------------

def _controlling_terminal() -> None:
    """In the child: a session of its own with the terminal (stdin) as its
    controlling terminal, so that a ^C typed there is a SIGINT to gdb."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """gdb on a pseudo-terminal (stdin, stdout and stderr), as a person runs it."""

    def __init__(self, port: int, columns: int = 120):
        from gdbext.tools.driver import INIT, dependency_dirs

        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
        env = dict(os.environ, GDBEXT_SITE_PACKAGES=os.pathsep.join(dependency_dirs()), TERM="xterm",
                   GDBEXT_MEMORY="stub")
        self.proc = subprocess.Popen(
            [os.environ.get("GDBEXT_GDB", "gdb"), "--nx", "--quiet", "-iex", "set pagination off",
             "-iex", "set confirm off", "-ex", f"source {INIT}", "-ex", f"target remote 127.0.0.1:{port}"],
            stdin=slave, stdout=slave, stderr=slave, preexec_fn=_controlling_terminal, env=env)
        os.close(slave)
        self.seen = b""
        self.until(b"(gdb) ", 60)

    def until(self, wanted: bytes, timeout: float) -> bytes:
        """Read until `wanted` appears after what was read before; return what came."""
        start = len(self.seen)
        deadline = time.monotonic() + timeout
        while wanted not in self.seen[start:]:
            left = deadline - time.monotonic()
            assert left > 0, f"no {wanted!r} on the terminal: {self.seen[start:][-600:]!r}"
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    chunk = os.read(self.master, 1 << 16)
                except OSError:
                    chunk = b""
                assert chunk, f"the terminal closed: {self.seen[start:][-600:]!r}"
                self.seen += chunk
        return self.seen[start:]

    def type(self, text: bytes) -> None:
        os.write(self.master, text)

    def close(self) -> None:
        try:
            self.type(b"quit\n")
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


@pytest.mark.qemu
def test_progress_line_and_ctrl_c_at_a_terminal(pages_guest):
    p = pages_guest
    stop_in_program(p)
    before = _machine_state(p.gdb)
    p.gdb.command("disconnect")     # QEMU's stub takes one debugger at a time
    term = None
    try:
        term = Terminal(p.qemu.gdb_port)
        # Show the line from the first table on (not after a second), so that
        # the test knows when the dump is running and needs no long dump.
        term.type(b"python import gdbext.views.text as _t; _t.TerminalProgress.DELAY = 0\n")
        term.until(b"(gdb) ", 30)
        term.type(b"ptdump --fresh --limit 3\n")
        out = term.until(b"(gdb) ", 300)
        assert b"\rptdump: " in out and b"tables read" in out and b"(Ctrl-C stops it)" in out, out[-600:]
        line = out[out.index(b"\rptdump: "):]
        assert len(line.split(b"\x1b[K")[0]) <= 120, "the progress line is wider than the terminal"
        # Erased before the first line of the dump, which is then as without it.
        erase = out.rindex(b"\r\x1b[K")
        assert erase < out.index(b"ptdump  CR3="), out[-600:]
        assert b"... " in out[erase:] and b"more (raise --limit)" in out[erase:]
        # Not in what a script captures (to_string: not typed, so no line).
        term.type(b"python print(repr(gdb.execute('ptdump --limit 1', to_string=True))[:60])\n")
        captured = term.until(b"(gdb) ", 300)
        assert b"\rptdump: " not in captured and b"'ptdump  CR3=" in captured, captured[-600:]

        # Ctrl-C typed while the dump runs: one line, no traceback.
        mark = len(term.seen)
        term.type(b"ptdump --fresh\n")
        term.until(b"\rptdump: ", 300)
        term.type(b"\x03")
        term.until(b"(gdb) ", 300)
        out = term.seen[mark:]
        assert b"Traceback" not in out and b"Error occurred in Python" not in out, out[-600:]
        message = re.search(rb"gdbext: ptdump interrupted after (\d+) tables; nothing changed\r?\n", out)
        assert message, out[-600:]
        assert out.rindex(b"\r\x1b[K") < message.start(), "the progress line was not erased first"
        term.type(b"python print('mode', gdb.selected_inferior().connection.send_packet('qqemu.PhyMemMode'))\n")
        assert b"mode b'0'" in term.until(b"(gdb) ", 30)
    finally:
        if term is not None:
            term.close()
        p.gdb.connect(p.qemu.gdb_port)
    assert _machine_state(p.gdb) == before
