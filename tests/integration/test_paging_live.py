"""pagewalk and ptdump on a live QEMU, with QEMU itself as the oracle.

Targets: OVMF alone (firmware page tables: identity, 2 MiB and 1 GiB pages),
and the bundled kernel in scenario `spin` (a higher-half kernel, 4 KiB user
pages, NX, read-only text), each once through the gdb stub's physical-memory
mode and once with guest RAM in a shared file that gdbext maps directly.

Oracles, none of them gdbext's code:
- `monitor info tlb`: every leaf page, large pages once, as
  `VA: PA XGPDACTUW` with the LEAF entry's bits (X = NX, P = PS, C = PCD,
  T = PWT).  ptdump shows EFFECTIVE rights (U/S and R/W ANDed over all
  levels, NX ORed), so a leaf bit can only grant what ptdump shows, never
  less: effective U implies leaf U, effective W implies leaf W, leaf NX
  implies not executable.  Equality is checked on sampled walks, whose
  levels show every entry, against the AND/OR of those entries;
- `monitor gva2gpa VA`: QEMU's own translation;
- bytes: N bytes read at the VA (gdb, through the CPU's page tables) equal N
  bytes read at the walked physical address (the stub in PhyMemMode);
- `monitor info registers`: CR4.LA57, for the number of levels.
"""
from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import os
import random
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gdbext.tools import launch
from gdbext.tools.driver import GdbDriver, GdbError
from gdbext.views.common import to_json
from gdbext.views.pagewalk import walk_report, walk_text
from gdbext.views.ptdump import (
    FOLD_AT_LEAST,
    _range_row,
    dump_report,
    dump_text,
    dump_view,
    fold_repeats,
)
from gdbext.x86.paging import PagingContext, Range, dump, walk

live = pytest.mark.qemu  # the tests that boot QEMU

OVMF_RAM_MIB = 256
OVMF_BOOT_SECONDS = 3.0
LONG_MODE_TIMEOUT = 30.0
WALK_SAMPLES = 50
BYTE_SAMPLES = 12

TLB_LINE = re.compile(r"^([0-9a-f]{16}): ([0-9a-f]{16}) ([-X][-G][-P][-D][-A][-C][-T][-U][-W])\s*$", re.MULTILINE)
CR4_LA57 = 1 << 12


# ---------------------------------------------------------------------------
# The oracle's text
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class TlbPage:
    """One line of `info tlb`: a leaf entry's own bits (QEMU target/i386/monitor.c)."""

    va: int
    pa: int
    nx: bool
    global_: bool
    large: bool
    dirty: bool
    accessed: bool
    pcd: bool
    pwt: bool
    user: bool
    writable: bool


def parse_info_tlb(text: str) -> list[TlbPage]:
    pages = []
    for m in TLB_LINE.finditer(text.replace("\r", "")):
        bits = m.group(3)
        pages.append(TlbPage(int(m.group(1), 16), int(m.group(2), 16),
                             *(c != "-" for c in bits)))
    return pages


def test_parse_info_tlb_reads_each_bit_from_its_column():
    # Lines as QEMU 7.2 printed them for the bundled kernel.
    text = ("0000000000200000: 0000000000200000 X-P-----W\r\n"
            "0000000000402000: 000000000e6d3000 X--DA--UW\n"
            "ffffffff80000000: 000000000e6e3000 -G--ACT--\n")
    a, b, c = parse_info_tlb(text)
    assert (a.va, a.pa, a.nx, a.large, a.writable, a.user) == (0x200000, 0x200000, True, True, True, False)
    assert (b.pa, b.dirty, b.accessed, b.user, b.writable, b.large) == (0xE6D3000, True, True, True, True, False)
    assert (c.va, c.global_, c.pcd, c.pwt, c.nx, c.writable) == (0xFFFFFFFF80000000, True, True, True, False, False)


# ---------------------------------------------------------------------------
# The reports and their text, on real tables without QEMU
# ---------------------------------------------------------------------------

FIXTURE = Path(__file__).resolve().parent.parent / "unit" / "fixtures" / "paging" / "ovmf_max.json"


@pytest.fixture(scope="module")
def ovmf_tables():
    """OVMF's page tables as QEMU 7.2 held them (captured with `xp`, see the fixture's script)."""
    doc = json.loads(FIXTURE.read_text())
    tables = {int(pa, 16): bytes.fromhex(data) for pa, data in doc["tables"].items()}

    def read(pa: int, size: int) -> bytes:
        base = pa & ~0xFFF
        return tables.get(base, bytes(4096))[pa - base:pa - base + size]

    ctx = PagingContext(cr3=doc["cr3"], cr0=doc["cr0"], cr4=doc["cr4"], efer=doc["efer"])
    return read, ctx


def test_walk_report_of_a_real_1gib_page(ovmf_tables):
    read, ctx = ovmf_tables
    r = walk_report(walk(read, ctx, 0x4000_0123), ctx)
    assert [(lv.name, lv.table, lv.index, lv.entry) for lv in r.levels] == [
        ("PML4", 0xFC01000, 0, 0xFC02023), ("PDPT", 0xFC02000, 1, 0x4000_0083)]
    assert r.levels[1].flags == ("P", "RW", "PS") and r.levels[1].page_size == 1 << 30
    assert (r.pa, r.page_size, r.user, r.writable, r.executable) == (
        0x4000_0123, 1 << 30, False, True, True)
    # CR0.WP=1, EFER.NXE=1, no SMEP/SMAP: the kernel may do anything, a user nothing.
    assert r.context.wp and r.context.nxe and not r.context.smep
    user, sup = r.access["user"], r.access["supervisor"]
    assert [user[k].error_code for k in ("read", "write", "exec")] == [0x5, 0x7, 0x15]
    assert user["exec"].error_bits == ("P", "U/S", "I/D")
    assert "U/S=0 at PML4" in user["read"].reason
    assert not any(a.faults for a in sup.values())
    text = walk_text(r)
    assert "-> 1 GiB page" in text and "=> physical 0x40000123  (1 GiB page, offset 0x123)" in text
    assert "user read, user write, user exec: user-mode access to a supervisor-mode page" in text


def test_walk_report_says_where_the_walk_stops(ovmf_tables):
    read, ctx = ovmf_tables
    r = walk_report(walk(read, ctx, 0xFFFF_8000_0000_0000), ctx, modes=("supervisor",), accesses=("write",))
    assert r.pa is None and r.problem_level == "PML4"
    doc = json.loads(to_json(r))
    assert doc["levels"] == [{"name": "PML4", "table": 0xFC01000, "index": 256, "entry_address": 0xFC01800,
                            "entry": 0, "present": False, "flags": [], "reserved": 0, "leaf": False,
                            "span": 1 << 39, "problem": "not present (P=0)"}]
    assert doc["access"] == {"supervisor": {"write": {
        "faults": True, "error_code": 0x2, "error_bits": ["W/R"], "reason": "not present at PML4 (entry 0x0)"}}}
    text = walk_text(r)
    assert "<- not present (P=0)" in text and "not mapped: not present at PML4 (entry 0x0)" in text


def test_walk_text_of_a_non_canonical_address_is_one_line(ovmf_tables):
    read, ctx = ovmf_tables
    text = walk_text(walk_report(walk(read, ctx, 0x0000_8000_0000_0000), ctx))
    assert text == ("pagewalk: 0x800000000000 is not canonical for 4-level paging (bits 63:47 must all "
                    "equal bit 47): any access raises #GP (#SS for stack accesses), not #PF")


def test_dump_view_report_and_text_agree_on_real_tables(ovmf_tables):
    read, ctx = ovmf_tables
    ranges = dump(read, ctx)
    view = dump_view(ranges, ctx, tables_read=7, fetched=7, seconds=0.0012)
    report = dump_report(view)
    assert report.total == report.shown == len(ranges) == 30
    assert sum(r["pages"] for r in report.ranges) == 3068  # the lines of the captured `info tlb`
    assert json.loads(to_json(report))["ranges"][1] == {"va_start": 0xEC00000, "va_end": 0xEE00000, "pa_start": 0xEC00000,
                                   "size": 0x200000, "page_size": 0x200000, "pages": 1, "user": False,
                                   "writable": False, "executable": True, "global": False, "pkey": None}
    lines = dump_text(view).splitlines()
    assert lines[1] == "30 ranges, 7 tables read (7 fetched from the target), 1.2 ms"
    assert len(lines) == 3 + 30
    assert lines[4] == "0x000000000ec00000 0x000000000ee00000     2 MiB 0x00000ec00000  2 MiB S   R   X  -"
    wx = dump_view(ranges, ctx, wx=True, limit=1)
    assert wx.total == len([r for r in ranges if r.writable and r.executable]) and len(wx.ranges) == 1
    assert dump_text(wx).splitlines()[-1] == f"... {wx.total - 1} more (raise --limit)"
    found = dump_view(ranges, ctx, phys=0xEC00010)
    assert found.phys_vas == (0xEC00010,)
    assert json.loads(to_json(dump_report(found)))["phys"] == {"pa": 0xEC00010, "vas": [0xEC00010]}


def _espfix(count: int) -> list[Range]:
    # Linux 6.1's ESPFIX area as ptdump saw it under QEMU: one read-only,
    # global, no-execute 4 KiB frame mapped every 64 KiB.
    return [Range(0xFFFFFF7B0000B000 + k * 0x10000, 0xFFFFFF7B0000C000 + k * 0x10000, 0x4848000, 4096,
                  False, False, False, True, 0, 1) for k in range(count)]


def test_text_folds_a_repeated_mapping_into_one_line():
    before = Range(0xFFFFFE0000000000, 0xFFFFFE0000001000, 0x3FC2E000, 4096, False, True, False, True, 0, 1)
    folded = fold_repeats([before, *_espfix(65536)])
    assert folded[0] == (before, 1, 0)
    assert folded[1] == (_espfix(1)[0], 65536, 0x10000) and len(folded) == 2
    assert _range_row(*folded[1]).endswith("x65536: the same frames again every 0x10000, up to 0xffffff7bffffc000")
    # Fewer than FOLD_AT_LEAST stay one line each.
    assert [n for _, n, _ in fold_repeats(_espfix(FOLD_AT_LEAST - 1))] == [1] * (FOLD_AT_LEAST - 1)


_ranges = st.lists(
    st.tuples(st.integers(1, 4), st.integers(0, 3), st.sampled_from([4096, 1 << 21]), st.booleans(),
              st.booleans(), st.integers(0, 2)),
    max_size=40)


@given(_ranges)
def test_folding_loses_and_invents_nothing(spec):
    """Expanding every folded line gives back exactly the ranges, in order."""
    ranges, va = [], 0x1000_0000
    for gap, frame, size, user, writable, pkey in spec:
        va += (gap - 1) * size
        ranges.append(Range(va, va + size, frame * size, size, user, writable, True, False, pkey, 1))
        va += size
    out = []
    for first, count, stride in fold_repeats(ranges):
        for k in range(count):
            out.append(dataclasses.replace(first, va_start=first.va_start + k * stride,
                                           va_end=first.va_end + k * stride))
    assert out == ranges
    ctx = PagingContext(cr3=0x1000, cr0=0x8001_0001, cr4=0x20, efer=0xD00)
    assert len(dump_text(dump_view(ranges, ctx)).splitlines()) >= 2


# ---------------------------------------------------------------------------
# Sessions: one QEMU and one gdb with gdbext, both always ended
# ---------------------------------------------------------------------------

class Session:
    def __init__(self, name: str, gdb: GdbDriver, ram_mib: int, ram_file: bool):
        self.name = name
        self.gdb = gdb
        self.ram_mib = ram_mib
        self.ram_file = ram_file
        self.is_kernel = name.startswith("kernel")
        self.is_linux = name.startswith("linux")
        self._tlb: list[TlbPage] | None = None
        self._dump: dict | None = None

    def cmd(self, text: str, timeout: float = 120) -> str:
        return self.gdb.command(text, timeout=timeout)

    def json(self, text: str, timeout: float = 120):
        return self.gdb.json(text, timeout=timeout)

    def info_tlb(self) -> list[TlbPage]:
        """The oracle's pages, read once: the guest stays stopped for the whole module."""
        if self._tlb is None:
            self._tlb = parse_info_tlb(self.cmd("monitor info tlb"))
        return self._tlb

    def dump(self) -> dict:
        """`ptdump --json`, read once, like info_tlb."""
        if self._dump is None:
            self._dump = self.json("ptdump")
        return self._dump

    def gva2gpa(self, va: int) -> int | None:
        out = self.cmd(f"monitor gva2gpa {va:#x}").strip()
        if out == "Unmapped":
            return None
        m = re.fullmatch(r"gpa: (0x[0-9a-f]+)", out)
        assert m, f"unexpected gva2gpa answer {out!r}"
        return int(m.group(1), 16)

    def cr4(self) -> int:
        m = re.search(r"CR4=([0-9a-f]+)", self.cmd("monitor info registers"))
        assert m
        return int(m.group(1), 16)

    def read(self, address: int, size: int) -> bytes:
        out = self.cmd(f"python print(gdb.selected_inferior().read_memory({address:#x}, {size}).tobytes().hex())")
        return bytes.fromhex(out.strip())

    def read_physical(self, pa: int, size: int) -> bytes:
        """gdb's own read with QEMU's stub in physical mode, put back after."""
        self.cmd("maint flush dcache")
        self.cmd("maint packet Qqemu.PhyMemMode:1")
        try:
            return self.read(pa, size)
        finally:
            self.cmd("maint packet Qqemu.PhyMemMode:0")
            self.cmd("maint flush dcache")


def _wait_long_mode(gdb: GdbDriver) -> None:
    """Let the guest run in short bursts until it is stopped in 64-bit mode."""
    deadline = time.monotonic() + LONG_MODE_TIMEOUT
    while True:
        mode = gdb.json("info cpl")["mode"]
        if mode == "64-bit":
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the guest is still in {mode} mode after {LONG_MODE_TIMEOUT:.0f} s")
        gdb.resume_until_stop(0.5)


def _attach(port: int, elf=None) -> GdbDriver:
    gdb = GdbDriver(elf=elf)
    try:
        gdb.load_gdbext()
        gdb.connect(port)
        _wait_long_mode(gdb)
    except BaseException:
        gdb.close()
        raise
    return gdb


def _ovmf_argv(port: int, ram_path: str | None) -> list[str]:
    argv = ["qemu-system-x86_64", "-machine", "q35" + (",memory-backend=ram" if ram_path else ""),
            "-cpu", "max", "-m", f"{OVMF_RAM_MIB}M", "-bios", str(launch.ovmf_path()),
            "-display", "none", "-nic", "none", "-monitor", "none", "-gdb", f"tcp:127.0.0.1:{port}"]
    if ram_path:
        argv += ["-object", f"memory-backend-file,id=ram,size={OVMF_RAM_MIB}M,mem-path={ram_path},share=on"]
    return argv


def _start_ovmf(ram_file: bool) -> tuple:
    """OVMF alone on a free port; retried when another process takes the port first."""
    ram_path = None
    if ram_file:
        fd, ram_path = tempfile.mkstemp(prefix="gdbext-test-ram-", dir="/dev/shm")
        os.close(fd)
    for _ in range(3):
        port = launch.free_port()
        proc = subprocess.Popen(_ovmf_argv(port, ram_path), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(OVMF_BOOT_SECONDS)
        if proc.poll() is None:
            return proc, port, ram_path
        stderr = proc.communicate()[1].decode(errors="replace")
        if "Address already in use" not in stderr and "Failed to bind" not in stderr:
            break
    if ram_path:
        os.unlink(ram_path)
    raise AssertionError(f"QEMU did not start: {stderr.strip()[:300]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


TARGETS = ("ovmf", "ovmf-ramfile", "kernel", "kernel-ramfile", "linux")
LINUX_RAM_MIB = 1024


@pytest.fixture(scope="module", params=TARGETS)
def session(request) -> Iterator[Session]:
    name = request.param
    ram_file = name.endswith("ramfile")
    if name.startswith("ovmf"):
        proc, port, ram_path = _start_ovmf(ram_file)
        gdb = None
        try:
            gdb = _attach(port)
            yield Session(name, gdb, OVMF_RAM_MIB, ram_file)
        finally:
            if gdb is not None:
                gdb.close()
            _stop(proc)
            if ram_path:
                os.unlink(ram_path)
        return
    if name == "linux":
        # Debian's kernel with -cpu max: 5-level paging, KPTI, SMEP, SMAP, PKE.
        from tests.support import linuxguest

        try:
            guest = linuxguest.prepare()
        except RuntimeError as exc:
            pytest.skip(f"no Linux guest: {exc}")
        opts = launch.QemuOptions(kernel=guest.vmlinuz, initrd=guest.initrd, append=guest.append,
                                  gdb_port=0, memory_mib=LINUX_RAM_MIB, ram_file=ram_file)
        ready, elf = linuxguest.READY, None
    else:
        opts = launch.QemuOptions(scenario="spin", gdb_port=0, ram_file=ram_file)
        ready, elf = r"spin: counter=", request.getfixturevalue("kernel_paths").elf
    with launch.Qemu(opts) as qemu:
        qemu.wait_serial(ready, timeout=180)
        with _attach(qemu.gdb_port, elf) as gdb:
            yield Session(name, gdb, opts.memory_mib, ram_file)


# ---------------------------------------------------------------------------
# Helpers over ptdump's JSON
# ---------------------------------------------------------------------------

class Ranges:
    """ptdump's ranges, searchable by VA."""

    def __init__(self, ranges: list[dict]):
        self.ranges = sorted(ranges, key=lambda r: r["va_start"])
        self.starts = [r["va_start"] for r in self.ranges]

    def at(self, va: int) -> dict | None:
        i = bisect.bisect_right(self.starts, va) - 1
        if i >= 0 and va < self.ranges[i]["va_end"]:
            return self.ranges[i]
        return None


def _tlb_page_size(page: TlbPage, r: dict) -> int:
    return r["page_size"] if page.large else 4096


# ---------------------------------------------------------------------------
# ptdump against info tlb
# ---------------------------------------------------------------------------

@live
def test_ptdump_lists_every_tlb_page_with_its_frame_size_and_bits(session):
    d = session.json("ptdump --fresh")
    tlb = session.info_tlb()
    assert tlb, "info tlb listed nothing"
    assert d["levels"] == (5 if session.cr4() & CR4_LA57 else 4)
    assert d["problems"] == []
    # The same leaf pages, no more and no fewer: info tlb prints a large
    # page once, and a range counts its pages of its own page size.
    assert sum(r["pages"] for r in d["ranges"]) == len(tlb)
    ranges = Ranges(d["ranges"])
    for page in tlb:
        r = ranges.at(page.va)
        assert r is not None, f"{page.va:#x} is in info tlb but in no ptdump range"
        assert r["pa_start"] + (page.va - r["va_start"]) == page.pa, hex(page.va)
        assert (r["page_size"] > 4096) == page.large, hex(page.va)
        assert page.va % r["page_size"] == 0 and page.pa % r["page_size"] == 0, hex(page.va)
        assert r["global"] == page.global_, hex(page.va)
        # Effective rights can only be narrower than the leaf's own bits.
        assert page.user or not r["user"], hex(page.va)
        assert page.writable or not r["writable"], hex(page.va)
        assert not (page.nx and r["executable"]), hex(page.va)


@live
@pytest.mark.parametrize("session", ["kernel"], indirect=True)
def test_ptdump_rights_differ_where_the_guest_made_them_differ(session):
    """Not a vacuous comparison: the kernel's tables mix user and supervisor,
    read-only and writable, NX and executable pages, and ptdump shows each kind."""
    d = session.dump()
    kinds = {(r["user"], r["writable"], r["executable"]) for r in d["ranges"]}
    assert (True, False, True) in kinds        # user code
    assert (True, True, False) in kinds        # user data and stack
    assert (False, False, True) in kinds       # kernel text
    assert (False, True, False) in kinds       # kernel data, identity map
    assert not any(w and x for _, w, x in kinds)  # the bundled kernel keeps W^X


# ---------------------------------------------------------------------------
# pagewalk against gva2gpa, info tlb and the bytes themselves
# ---------------------------------------------------------------------------

def _sample_vas(session: Session, count: int, in_ram: bool = False) -> list[int]:
    """Random VAs inside random info-tlb pages (the same ones on every run);
    with in_ram, only pages whose frame is in guest RAM (not MMIO)."""
    rng = random.Random(session.name)
    tlb = session.info_tlb()
    if in_ram:
        tlb = [p for p in tlb if p.pa < session.ram_mib << 20]
    ranges = Ranges(session.dump()["ranges"])
    vas = []
    for page in rng.sample(tlb, min(count, len(tlb))):
        size = min(_tlb_page_size(page, ranges.at(page.va)), (session.ram_mib << 20) - page.pa) \
            if in_ram else _tlb_page_size(page, ranges.at(page.va))
        vas.append(page.va + rng.randrange(size))
    return vas


@live
def test_pagewalk_agrees_with_gva2gpa_on_random_mapped_addresses(session):
    vas = _sample_vas(session, WALK_SAMPLES)
    assert len(vas) == WALK_SAMPLES
    for va in vas:
        w = session.json(f"pagewalk {va:#x}")
        assert w["va"] == va
        assert w["pa"] is not None, f"{va:#x}: {w['problem']}"
        assert w["pa"] == session.gva2gpa(va), hex(va)


@live
def test_pagewalk_finds_holes_unmapped_like_qemu(session):
    d = session.dump()
    ranges = Ranges(d["ranges"])
    half = 1 << (56 if d["levels"] == 5 else 47)
    # Gaps between ranges, the end of the last, and the bottom of the
    # upper half (OVMF maps one run from 0 up, and nothing above).
    candidates = [a["va_end"] for a, b in itertools.pairwise(ranges.ranges) if a["va_end"] < b["va_start"]]
    candidates += [ranges.ranges[-1]["va_end"], (1 << 64) - half]
    holes = [va for va in candidates if (va < half or va >= (1 << 64) - half) and ranges.at(va) is None][:10]
    assert holes, "no unmapped canonical address found"
    for va in holes:
        w = session.json(f"pagewalk {va:#x}")
        assert w["pa"] is None and session.gva2gpa(va) is None, hex(va)
        # Said at the level where the walk stops, like the CPU.
        assert w["problem"].startswith("not present at " + w["levels"][-1]["name"])
        assert w["levels"][-1]["present"] is False
        assert all(lv["present"] for lv in w["levels"][:-1])
        read = w["access"]["supervisor"]["read"]
        assert read["faults"] and read["error_code"] == 0  # P=0, read, supervisor


@live
def test_pagewalk_levels_match_the_leaf_bits_and_combine_into_the_rights(session):
    tlb = {p.va: p for p in session.info_tlb()}
    ranges = Ranges(session.dump()["ranges"])
    for va in _sample_vas(session, 20):
        w = session.json(f"pagewalk {va:#x}")
        leaf = w["levels"][-1]
        page = tlb[va & ~(w["page_size"] - 1)]
        flags = set(leaf["flags"])
        assert leaf["leaf"] and leaf["page_size"] == w["page_size"]
        for name, bit in (("US", page.user), ("RW", page.writable), ("NX", page.nx),
                          ("G", page.global_), ("PS", page.large), ("D", page.dirty),
                          ("A", page.accessed), ("PCD", page.pcd), ("PWT", page.pwt)):
            assert (name in flags) == bit, f"{va:#x}: {name} in {sorted(flags)} vs info tlb"
        # SDM Vol. 3A 4.6.1: U/S and R/W ANDed over all levels, XD ORed.
        all_flags = [set(lv["flags"]) for lv in w["levels"]]
        assert w["user"] == all("US" in f for f in all_flags)
        assert w["writable"] == all("RW" in f for f in all_flags)
        assert w["executable"] == (not any("NX" in f for f in all_flags))
        # ...and ptdump says the same of the range holding this VA.
        r = ranges.at(va)
        assert (r["user"], r["writable"], r["executable"]) == (w["user"], w["writable"], w["executable"])


@live
def test_bytes_at_the_walked_physical_address_are_the_bytes_at_the_va(session):
    vas = [va & ~0x3F for va in _sample_vas(session, BYTE_SAMPLES, in_ram=True)]
    # The code being run is never zeros (most of Linux's pages are one
    # zero-filled ESPFIX frame mapped 65,536 times).
    vas.append(int(session.cmd("python print(int(gdb.parse_and_eval('$pc')))")) & ~0x3F)
    if session.is_kernel:
        # The kernel's own text, so that VA and PA surely differ.
        vas.append(int(session.cmd("python print(int(gdb.parse_and_eval('&kmain')))")) & ~0x3F)
    assert len(vas) >= BYTE_SAMPLES
    moved = nonzero = 0
    for va in vas:
        w = session.json(f"pagewalk {va:#x}")
        assert w["pa"] < session.ram_mib << 20
        virt = session.read(va, 64)
        phys = session.read_physical(w["pa"], 64)
        assert virt == phys, f"{va:#x} -> {w['pa']:#x}"
        moved += va != w["pa"]
        nonzero += any(virt)
    assert nonzero, "every sample read zeros: the comparison proves nothing"
    if session.is_kernel or session.is_linux:
        assert moved, "every sample was identity-mapped: the comparison proves nothing"


@live
def test_pagewalk_takes_gdb_expressions(session):
    w = session.json("pagewalk $rip")
    rip = int(session.cmd("python print(int(gdb.parse_and_eval('$rip')))"))
    assert w["va"] == rip and w["pa"] == session.gva2gpa(rip)
    assert w["executable"]
    if session.is_kernel:
        w = session.json("pagewalk &user_main --user --access exec")
        assert w["va"] == int(session.cmd("python print(int(gdb.parse_and_eval('&user_main')))"))
        assert w["access"] == {"user": {"exec": {"faults": False, "error_code": None, "error_bits": [],
                                                 "reason": "allowed: user-mode exec"}}}


# ---------------------------------------------------------------------------
# The local fast paths answer exactly as the stub does
# ---------------------------------------------------------------------------

# The session's memory source swapped for a stub-only one (and back).
STUB_ONLY = ("import os, gdbext.target as t, gdbext.target.memory as m; os.environ['GDBEXT_MEMORY'] = 'stub'; "
             "s = t.current(); s.saved_phys = s.phys; s.phys = m.PhysicalMemory(); s.snapshots.clear()")
RESTORE = ("import os, gdbext.target as t; os.environ.pop('GDBEXT_MEMORY', None); "
           "s = t.current(); s.phys = getattr(s, 'saved_phys', s.phys); s.snapshots.clear()")


@live
def test_local_memory_and_stub_give_the_same_answers(session):
    """QEMU runs here: guest RAM is read from its shared RAM file when it has
    one, else from the QEMU process (/proc/PID/mem), never through the stub;
    and either gives exactly the stub's answers."""
    first = session.json("ptdump --fresh")
    vas = _sample_vas(session, 10)
    walks = [session.json(f"pagewalk {va:#x}") for va in vas]
    expected = "shared RAM file" if session.ram_file else "QEMU process memory /proc/"
    assert first["phys_source"].startswith(expected), (
        f"QEMU is local{' with a RAM file' if session.ram_file else ''} but gdbext read "
        f"through {first['phys_source']}")
    assert first["fetched"] == first["tables_read"] > 0
    session.cmd("python " + STUB_ONLY)
    try:
        second = session.json("ptdump --fresh")
        assert second["phys_source"] == "gdb stub (PhyMemMode); GDBEXT_MEMORY=stub"
        assert second["fetched"] == second["tables_read"] == first["tables_read"]
        assert second["ranges"] == first["ranges"]
        for va, walk in zip(vas, walks):
            again = session.json(f"pagewalk {va:#x}")
            assert {k: v for k, v in again.items() if k != "phys_source"} == \
                   {k: v for k, v in walk.items() if k != "phys_source"}
    finally:
        session.cmd("python " + RESTORE)
        session.cmd("ptdump --fresh --limit 0")


# ---------------------------------------------------------------------------
# Filters, CR3 choices, caching
# ---------------------------------------------------------------------------

@live
def test_filters_select_from_the_full_dump(session):
    full = session.dump()["ranges"]
    assert [r for r in full if r["user"]] == session.json("ptdump --user")["ranges"]
    assert [r for r in full if not r["user"]] == session.json("ptdump --kernel")["ranges"]
    wx = [r for r in full if r["writable"] and r["executable"]]
    assert sorted(wx, key=lambda r: not r["user"]) == session.json("ptdump --wx")["ranges"]
    limited = session.json("ptdump --limit 2")
    assert limited["ranges"] == full[:2] and limited["total"] == len(full)
    assert limited["shown"] == min(2, len(full))
    # --range keeps the pages overlapping the window, whole.
    r = full[len(full) // 2]
    window = session.json(f"ptdump --range {r['va_start']:#x} {r['va_start'] + 1:#x}")
    assert window["ranges"] and all(x["va_start"] <= r["va_start"] < x["va_end"] for x in window["ranges"])
    # --phys finds the VA back from its frame.
    pa = r["pa_start"] + (r["va_end"] - r["va_start"]) // 2
    found = session.json(f"ptdump --phys {pa:#x}")
    assert r["va_start"] + (pa - r["pa_start"]) in found["phys"]["vas"]


@live
def test_tables_are_read_once_per_stop(session):
    first = session.json("ptdump --fresh --limit 0")
    assert first["fetched"] >= first["tables_read"] > 0
    again = session.json("ptdump --limit 0")
    assert again["fetched"] == 0
    assert (again["total"], again["tables_read"]) == (first["total"], first["tables_read"])


@live
def test_cr3_option_and_the_kpti_toggle(session):
    live = session.dump()
    cr3 = live["cr3"]
    # PCID / PWT / PCD bits below bit 12 are not part of the root address.
    same = session.json(f"ptdump --cr3 {cr3 | 0x18:#x}")
    assert same["root"] == live["root"] and same["ranges"] == live["ranges"]
    other = session.json("ptdump --kpti --limit 0")
    assert other["cr3"] == cr3 ^ 0x1000
    half = "user" if other["cr3"] & 0x1000 else "kernel"
    assert f"KPTI: walking the {half} half of the pair, CR3 {other['cr3']:#x}" in other["notes"][0]
    if session.is_linux:
        assert not any("page-table isolation" in n for n in other["notes"]), other["notes"]
    if session.is_kernel:
        # The bundled kernel does not isolate page tables and keeps the page
        # next to its PML4 zero (paging.c's alloc_pml4): the command says it
        # is not looking at a page table, and why.
        assert any("has no present entry" in n and "page-table isolation" in n
                   for n in other["notes"]), other["notes"]
    w = session.json("pagewalk $rip --kpti")
    assert w["context"]["cr3"] == cr3 ^ 0x1000


@live
@pytest.mark.parametrize("session", ["linux"], indirect=True)
def test_linux_kpti_halves_smap_and_protection_keys(session):
    """Linux (pti=on, -cpu max): the kernel half maps user memory no-execute
    (its top-level user entries carry NX), the user half maps the user's code
    executable and little of the kernel; SMAP refuses the kernel's data
    accesses to user pages; PKRU's AD bit for key 0 refuses a user read."""
    assert session.dump()["levels"] == 5
    base = session.dump()["cr3"] & ~0x1FFF
    kernel_half = session.json(f"ptdump --cr3 {base:#x}")["ranges"]
    user_half = session.json(f"ptdump --cr3 {base | 0x1000:#x}")["ranges"]
    user_in_kernel_half = [r for r in kernel_half if r["user"]]
    assert user_in_kernel_half and not any(r["executable"] for r in user_in_kernel_half)
    code = [r for r in user_half if r["user"] and r["executable"]]
    assert code
    # The user half keeps only what entry and exit need of the kernel (the
    # cpu entry area, the ESPFIX stacks, the entry text), each where the
    # kernel half has it; the direct map of all RAM is not there.
    kernel_map = Ranges(kernel_half)
    for r in user_half:
        if not r["user"]:
            same = kernel_map.at(r["va_start"])
            assert same is not None and same["pa_start"] + r["va_start"] - same["va_start"] == r["pa_start"]
    sup_bytes = [sum(r["size"] for r in half if not r["user"]) for half in (kernel_half, user_half)]
    assert sup_bytes[0] > 3 * sup_bytes[1] and sup_bytes[0] > LINUX_RAM_MIB << 20
    va = code[0]["va_start"]
    w = session.json(f"pagewalk {va:#x} --cr3 {base | 0x1000:#x}")
    assert w["context"]["smap"] and w["context"]["smep"] and w["context"]["pke"] and w["pkey"] == 0
    # SMAP refuses the kernel's read unless the guest stopped between its stac
    # and clac (a user copy), where EFLAGS.AC=1 allows it.
    if w["rflags_ac"]:
        assert w["access"]["supervisor"]["read"]["error_code"] is None
    else:
        assert w["access"]["supervisor"]["read"]["error_code"] == 0x1  # P: SMAP, EFLAGS.AC=0
    assert w["access"]["supervisor"]["exec"]["error_code"] == 0x11  # P, I/D: SMEP
    assert w["access"]["user"]["read"] == {"faults": False, "error_code": None, "error_bits": [],
                                           "reason": "allowed: user-mode read; protection key 0 not checked "
                                                     "(PKRU unknown)"}
    assert any(n.startswith("PKRU unknown") for n in w["notes"])
    # PKRU.AD0=1 (SDM Vol. 3A 4.6.2): data accesses to key-0 user pages fault, with PK set.
    w = session.json(f"pagewalk {va:#x} --cr3 {base | 0x1000:#x} --pkru 1 --user --access read")
    assert w["access"]["user"]["read"]["error_code"] == 0x25  # P, U/S, PK
    assert w["access"]["user"]["read"]["error_bits"] == ["P", "U/S", "PK"]
    # The kernel half refuses the same fetch for NX, set at the PML5 entry.
    w = session.json(f"pagewalk {va:#x} --cr3 {base:#x} --user --access exec")
    assert "XD=1 at PML5" in w["access"]["user"]["exec"]["reason"]


# ---------------------------------------------------------------------------
# Bad input: one clear line, never a traceback
# ---------------------------------------------------------------------------

BAD = {
    "pagewalk nonsense": "pagewalk: argument va: not a number or expression",
    "pagewalk 0x1 --access bogus": "pagewalk: argument --access: invalid choice: 'bogus'",
    "pagewalk": "pagewalk: the following arguments are required: va",
    "pagewalk 0x1 --user --supervisor": "pagewalk: argument --supervisor: not allowed with argument --user",
    "ptdump --range 5 1": "ptdump: --range START END needs 0 <= START < END",
    "ptdump --limit -1": "ptdump: -1 is negative",
    "ptdump --limit 1.5": "ptdump: argument --limit: not an integer: '1.5' (double)",
    "pagewalk 0x10000000000000000": "pagewalk: argument va: not a number or expression: '0x10000000000000000'",
    "ptdump --user --kernel": "ptdump: argument --kernel: not allowed with argument --user",
    "ptdump --phys": "ptdump: argument --phys: expected one argument",
}


@live
@pytest.mark.parametrize("session", ["ovmf"], indirect=True)
def test_bad_input_is_one_clear_line(session):
    for command, start in BAD.items():
        with pytest.raises(GdbError) as err:
            session.cmd(command)
        message = str(err.value)
        assert message.startswith(start), (command, message)
        assert "\n" not in message and "Traceback" not in message, (command, message)
    # A non-canonical address is an answer, not an error: one plain line...
    out = session.cmd("pagewalk 0x8000000000000000").strip()
    assert "\n" not in out and "not canonical" in out and "#GP" in out
    # ...and in JSON, no translation and a #GP for every access.
    w = session.json("pagewalk 0x8000000000000000")
    assert w["canonical"] is False and w["pa"] is None and w["levels"] == []
    assert all(a["faults"] and a["error_code"] is None
               for mode in w["access"].values() for a in mode.values())
    # gdb is still fine afterwards.
    assert session.json("info cpl")["mode"] == "64-bit"
