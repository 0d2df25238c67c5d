"""QEMU's dump-guest-memory cores and `info mtree -f`, read without gdb.

The cores here are written the way QEMU 7.2 writes them (dump/dump.c: an
ELF64 ET_CORE with one PT_NOTE of NT_PRSTATUS notes then "QEMU" notes, and a
PT_LOAD per RAM block at its guest-physical address; target/i386/arch_dump.c:
QEMUCPUState version 1, 440 bytes with kernel_gs_base), from the registers
and pages a real QEMU stop captured (tests/support/snapshots.py).  A real
core of a live stop is read in tests/integration/test_postmortem.py.
"""
from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from gdbext.model.machine_state import CpuState, MachineState, MachineStateError
from gdbext.model.qemu_core import NOT_IN_CORE, read_core
from gdbext.model.qemu_text import parse_ram_ranges
from gdbext.model.snapshot import PAGE, SnapshotError
from gdbext.views.common import to_json
from gdbext.views.cpl import cpl_report
from gdbext.views.gdt import gdt_report
from tests.support.snapshots import captured

FIXTURES = Path(__file__).parent / "fixtures"
GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "eflags")
EM_X86_64, ET_CORE, PT_LOAD, PT_NOTE = 62, 4, 1, 4


def _note(name: bytes, kind: int, desc: bytes) -> bytes:
    name += b"\0"
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name), len(desc), kind) + pad(name) + pad(desc)


def _qemu_state(snap, *, with_kgs: bool = True, flags_limit_bits: int = 0) -> bytes:
    size = 440 if with_kgs else 432
    out = struct.pack("<II", 1, size)
    out += struct.pack("<18Q", *(snap.regs.get(n, 0) for n in GPRS))
    for seg in (snap.segments[n] for n in ("cs", "ds", "es", "fs", "gs", "ss")):
        # QEMU's flag word also carries limit[19:16] in bits 16..19.
        out += struct.pack("<IIIIQ", seg.selector, seg.limit, seg.attrs | flags_limit_bits, 0, seg.base)
    for seg in (snap.ldtr, snap.tr):
        out += struct.pack("<IIIIQ", seg.selector, seg.limit, seg.attrs, 0, seg.base)
    for table in (snap.gdtr, snap.idtr):
        out += struct.pack("<IIIIQ", 0, table.limit, 0, 0, table.base)
    out += struct.pack("<5Q", snap.regs["cr0"], 0, snap.regs.get("cr2", 0), snap.regs["cr3"], snap.regs["cr4"])
    if with_kgs:
        out += struct.pack("<Q", snap.regs.get("k_gs_base", 0))
    return out


def _core(snaps, pages: dict[int, bytes], **kw) -> bytes:
    """An ELF64 core as QEMU writes one: notes first, then one PT_LOAD per run of pages."""
    notes = b"".join(_note(b"CORE", 1, bytes(336)) for _ in snaps)
    notes += b"".join(_note(b"QEMU", 0, _qemu_state(s, **kw)) for s in snaps)
    runs: list[tuple[int, bytes]] = []
    for pfn in sorted(pages):
        if runs and runs[-1][0] + len(runs[-1][1]) == pfn * PAGE:
            runs[-1] = (runs[-1][0], runs[-1][1] + pages[pfn])
        else:
            runs.append((pfn * PAGE, pages[pfn]))
    phnum = 1 + len(runs)
    offset = 64 + 56 * phnum
    headers = [struct.pack("<IIQQQQQQ", PT_NOTE, 0, offset, 0, 0, len(notes), len(notes), 0)]
    body = notes
    for start, data in runs:
        headers.append(struct.pack("<IIQQQQQQ", PT_LOAD, 0, offset + len(body), 0, start, len(data), len(data), 0))
        body += data
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", ET_CORE, EM_X86_64, 1, 0, 64, 0, 0, 64, 56, phnum, 64, 0, 0)
    return ehdr + b"".join(headers) + body


@pytest.mark.parametrize("scenario", ["ok", "linux", "sysret32"])
def test_core_gives_the_captured_vcpu_and_pages(scenario):
    snap = captured(scenario)[0]
    state = read_core(_core([snap], snap.pages, flags_limit_bits=0x000F0000))
    c = state.cpus[0]
    assert c.segments == snap.segments and c.tr == snap.tr and c.ldtr == snap.ldtr
    assert (c.gdtr, c.idtr) == (snap.gdtr, snap.idtr)
    for name in GPRS + ("cr0", "cr3", "cr4", "cs", "ss", "fs_base", "gs_base", "k_gs_base"):
        assert c.regs[name] == snap.regs[name], name
    assert c.cpl == snap.cpl
    assert {pfn: state.pages[pfn] for pfn in snap.pages} == snap.pages
    again = state.snapshot(0)
    assert to_json(gdt_report(again, with_star=False)) == to_json(gdt_report(captured(scenario)[0], with_star=False))
    # Long mode is certain there (CR0.PG, CR4.PAE, CS.L): LMA inferred, said so.
    assert c.regs["efer"] & (1 << 10)
    assert any(u.startswith("EFER: " + NOT_IN_CORE) and "LMA=LME=1 inferred" in u for u in state.unknown)
    assert to_json(cpl_report(again)) == to_json(cpl_report(captured(scenario)[0]))
    with pytest.raises(SnapshotError):
        again.msr(0xC0000081)


def test_compatibility_mode_is_not_taken_for_long_mode():
    snap = captured("sysret32")[0]
    cs = snap.segments["cs"]
    snap.segments["cs"] = type(cs)(0x23, 0, 0xFFFFFFFF, 0x00CFFB00)   # a 32-bit code segment: L=0
    state = read_core(_core([snap], snap.pages))
    assert any("vCPU 0's mode is not certain" in u for u in state.unknown)
    # Compatibility mode and legacy PAE paging look alike there: nothing is
    # decoded (a wrong mode would decode every table wrongly).
    with pytest.raises(SnapshotError, match="mode is not certain"):
        state.snapshot(0)


def test_sidecar_supplies_efer_and_msrs_only_for_the_same_stop():
    snap = captured("ok")[0]
    side = MachineState(cpus=[CpuState.of(snap)])
    state = read_core(_core([snap], snap.pages), side)
    assert state.cpus[0].regs["efer"] == snap.regs["efer"] and state.cpus[0].msrs == snap.msrs
    assert state.unknown == []
    other = CpuState.of(captured("ok")[0])
    other.regs["rip"] += 1
    with pytest.raises(MachineStateError, match="not of this stop: vCPU 0's RIP"):
        read_core(_core([snap], snap.pages), MachineState(cpus=[other]))


def test_older_qemu_without_kernel_gs_base():
    snap = captured("ok")[0]
    state = read_core(_core([snap], snap.pages, with_kgs=False))
    assert "k_gs_base" not in state.cpus[0].regs
    assert any("KERNEL_GS_BASE" in u for u in state.unknown)


def test_an_unsaved_page_of_a_core_is_an_error():
    snap = captured("ok")[0]
    state = read_core(_core([snap], snap.pages))
    missing = next(p for p in range(1, 1 << 20) if p not in snap.pages)
    with pytest.raises(SnapshotError, match="was not saved"):
        state.read_phys(missing * PAGE, 8)


@pytest.mark.parametrize("seed", range(8))
def test_damaged_cores_are_refused_in_one_line(seed):
    rng = random.Random(seed)
    snap = captured("ok")[0]
    data = bytearray(_core([snap], snap.pages))
    cut = rng.randrange(16, len(data) // 2)
    for damaged in (bytes(data[:cut]), bytes(data[:64]) + rng.randbytes(200)):
        try:
            read_core(damaged)
        except MachineStateError as exc:
            assert "\n" not in str(exc)
        else:
            pytest.fail("a damaged core was read")


def test_not_a_core():
    elf = bytearray(_core([captured("ok")[0]], {}))
    elf[16:18] = struct.pack("<H", 2)   # ET_EXEC
    with pytest.raises(MachineStateError, match="not an x86_64 core"):
        read_core(bytes(elf))


def test_ram_ranges_of_the_system_address_space_only():
    # QEMU 7.2, the bundled kernel's machine (-m 256): the RAM below the
    # (absent) VGA window and above 1 MiB; ROM, BIOS and I/O left out.
    for name, region in (("qemu72_mtree_f_ramfile.txt", "ram"), ("qemu72_mtree_f.txt", "pc.ram")):
        ranges = parse_ram_ranges((FIXTURES / name).read_text())
        assert ranges == [(0, 0xC0000, region), (0x100000, 0x10000000, region)], name
    assert parse_ram_ranges("") == []
