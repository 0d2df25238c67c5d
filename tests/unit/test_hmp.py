"""Parsing QEMU 7.2's `info registers` text, captured in each CPU mode."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gdbext.model.qemu_text import (
    HmpRegisters,
    captured_text,
    parse_all_info_registers,
    parse_info_lapic,
    parse_info_registers,
    parse_xp,
)
from gdbext.model.snapshot import SegmentCache, TableRegister
from gdbext.x86 import DecodeError

FIXTURES = Path(__file__).parent / "fixtures"
STATES = ["qemu72_reset", "qemu72_ovmf", "probe_pm_hlt", "probe_pm_user", "probe_lm_user",
          "probe_compat_user"]


def text(stem: str) -> str:
    return (FIXTURES / f"{stem}.txt").read_text()


def parse(stem: str) -> HmpRegisters:
    return parse_info_registers(text(stem))


def test_reset_state():
    r = parse("qemu72_reset")
    # The architectural reset state (SDM Vol. 3A table 10-1): CS f000 with base ffff0000.
    assert r.segments["cs"] == SegmentCache(0xF000, 0xFFFF0000, 0xFFFF, 0x9B00)
    assert r.rip == 0xFFF0 and r.rflags == 0x2 and r.cr0 == 0x60000010
    assert r.regs["edx"] == 0x00060FB1          # CPUID signature of QEMU's default CPU
    assert (r.mode_hint, r.cpl, r.halted, r.wide, r.cpu) == ("real", 0, False, False, 0)
    assert r.gdt == TableRegister(0, 0xFFFF) and r.idt == TableRegister(0, 0xFFFF)
    assert r.tr.attrs == 0x8B00 and r.ldt.attrs == 0x8200


def test_ovmf_state():
    r = parse("qemu72_ovmf")
    assert (r.mode_hint, r.cpl, r.wide, r.bases_truncated) == ("64-bit", 0, True, False)
    assert r.segments["cs"] == SegmentCache(0x38, 0, 0xFFFFFFFF, 0x00A09A00)
    assert r.raw_flags["cs"] == 0x00AF9A00       # as printed: limit[19:16] included
    assert r.segments["ds"].attrs == 0x00C09300 and r.raw_flags["ds"] == 0x00CF9300
    assert r.gdt == TableRegister(0x75DC000, 0x47) and r.idt == TableRegister(0x7059018, 0xFFF)
    assert (r.cr0, r.cr3, r.cr4, r.efer) == (0x80010033, 0x7801000, 0x668, 0xD00)
    assert r.regs["r8"] == 0xAF and r.regs["rsp"] == 0x7EEA6B0 and r.rip == 0x7049369
    assert r.regs["r14"] == 0x8000000000000003     # all 64 bits kept
    assert r.regs["dr7"] == 0x400 and r.regs["dr6"] == 0xFFFF0FF0 and r.regs["mxcsr"] == 0x1F80
    assert "cpl" not in r.regs and "st" not in r.regs and "fpr0" not in r.regs


def test_halted_protected_mode():
    r = parse("probe_pm_hlt")
    assert (r.mode_hint, r.halted, r.cpl, r.wide) == ("protected", True, 0, False)
    assert r.segments["cs"].selector == 0x30 and r.segments["cs"].default_big


def test_ring3_states():
    pm, lm, compat = parse("probe_pm_user"), parse("probe_lm_user"), parse("probe_compat_user")
    assert [s.cpl for s in (pm, lm, compat)] == [3, 3, 3]
    assert [s.mode_hint for s in (pm, lm, compat)] == ["protected", "64-bit", "compatibility"]
    assert lm.segments["cs"].long and not compat.segments["cs"].long
    assert lm.segments["cs"].dpl == 3 and lm.segments["ss"].selector == 0x23
    # IRET to ring 3 left DS/ES/FS/GS with DPL-0 descriptors: QEMU cleared their P bit.
    assert not pm.segments["ds"].present and pm.raw_flags["ds"] == 0x00CF1300
    # In compatibility mode the TR base above 4 GiB is printed cut to 32 bits.
    assert lm.tr.base == 0xFFFF800000106000
    assert compat.tr.base == 0x00106000 and compat.bases_truncated
    assert compat.gdt == lm.gdt                  # GDT/IDT bases stay 64-bit under LMA


def test_all_cpus():
    cpus = parse_all_info_registers(text("qemu72_ovmf_smp2_all"))
    assert [c.cpu for c in cpus] == [0, 1]
    assert [c.halted for c in cpus] == [False, True]
    assert cpus[0].idt.base != cpus[1].idt.base       # OVMF gives each CPU its own IDT
    with pytest.raises(DecodeError, match="2 CPU"):
        parse_info_registers(text("qemu72_ovmf_smp2_all"))


def test_text_without_header_and_with_crlf():
    body = text("qemu72_ovmf").split("CPU#0", 1)[1]
    r = parse_info_registers(body.replace("\n", "\r\n"))
    assert r.cpu is None and r.segments == parse("qemu72_ovmf").segments


@pytest.mark.parametrize("prefix, missing", [
    ("GDT=", "gdt"), ("TR ", "tr"), ("CS ", "cs"), ("EFER", "efer"), ("CR0", "cr0"),
    ("RIP", "rip"),
])
def test_missing_line_named(prefix, missing):
    lines = [ln for ln in text("qemu72_ovmf").splitlines() if not ln.startswith(prefix)]
    with pytest.raises(DecodeError, match=missing):
        parse_info_registers("\n".join(lines))


def test_duplicate_register():
    with pytest.raises(DecodeError, match="twice"):
        parse_info_registers(text("qemu72_ovmf") + "EFER=0000000000000000\n")


@pytest.mark.parametrize("junk", ["", "(qemu) ", "unknown command: 'info regs'",
                                  "Connection closed by foreign host."])
def test_not_register_text(junk):
    with pytest.raises(DecodeError):
        parse_info_registers(junk)


def test_xp_dump():
    address, data = parse_xp(text("qemu72_ovmf_gdt"))
    assert address == 0x75DC000 and len(data) == 0x48
    assert int.from_bytes(data[0x38:0x40], "little") == 0x00AF9A000000FFFF
    assert parse_xp("0000000000001000: 0x0201 0x0403\n") == (0x1000, bytes([1, 2, 3, 4]))
    for bad in ["", "1000: 0x01 0x0203", "1000: 0x01\n1008: 0x02", "1000 0x01"]:
        with pytest.raises(DecodeError):
            parse_xp(bad)


# --- robustness -------------------------------------------------------------------------

@given(st.text(max_size=400))
def test_random_text(junk):
    try:
        parse_info_registers(junk)
    except DecodeError:
        pass
    try:
        parse_xp(junk)
    except DecodeError:
        pass


@given(st.sampled_from(STATES), st.data())
def test_mangled_real_text(stem, data):
    """Real output with lines dropped, duplicated or cut never raises anything else."""
    lines = text(stem).splitlines()
    i = data.draw(st.integers(0, len(lines) - 1))
    how = data.draw(st.sampled_from(["drop", "dup", "cut", "garble"]))
    if how == "drop":
        del lines[i]
    elif how == "dup":
        lines.insert(i, lines[i])
    elif how == "cut":
        lines[i] = lines[i][:data.draw(st.integers(0, len(lines[i])))]
    else:
        pos = data.draw(st.integers(0, len(lines[i])))
        lines[i] = lines[i][:pos] + data.draw(st.text(max_size=5)) + lines[i][pos:]
    try:
        r = parse_info_registers("\n".join(lines))
    except DecodeError:
        return
    assert set(r.segments) == {"es", "cs", "ss", "ds", "fs", "gs"}

# --- info lapic ----------------------------------------------------------------------

# QEMU 7.2's `info lapic 0`: Debian's Linux 6.1 idle in HLT (its one-shot
# LAPIC timer armed), and the bundled kernel spinning (OVMF's periodic timer,
# left masked).
LAPIC_LINUX = """dumping local APIC state for CPU 0 

LVT0\t 0x00010700 active-hi edge  masked                      ExtINT (vec 0)
LVT1\t 0x00000400 active-hi edge                              NMI   
LVTPC\t 0x00010000 active-hi edge  masked                      Fixed  (vec 0)
LVTERR\t 0x000000fe active-hi edge                              Fixed  (vec 254)
LVTTHMR\t 0x00010000 active-hi edge  masked                      Fixed  (vec 0)
LVTT\t 0x000000ec active-hi edge                 one-shot     Fixed  (vec 236)
Timer\t DCR=0x3 (divide by 16) initial_count = 23725295 current_count = 18745666
SPIV\t 0x000001ff APIC enabled, focus=off, spurious vec 255
ICR\t 0x000c4610 physical edge assert all
ICR2\t 0x00000000
ESR\t 0x00000000
ISR\t (none)
IRR\t (none)

APR 0x00 TPR 0x10 DFR 0x0f LDR 0x01 PPR 0x10
"""

LAPIC_KERNEL = """dumping local APIC state for CPU 0 

LVT0\t 0x00010700 active-hi edge  masked                      ExtINT (vec 0)
LVT1\t 0x00000400 active-hi edge                              NMI   
LVTPC\t 0x00010000 active-hi edge  masked                      Fixed  (vec 0)
LVTERR\t 0x00010000 active-hi edge  masked                      Fixed  (vec 0)
LVTTHMR\t 0x00010000 active-hi edge  masked                      Fixed  (vec 0)
LVTT\t 0x00030020 active-hi edge  masked         periodic     Fixed  (vec 32)
Timer\t DCR=0xb (divide by 1) initial_count = 10000000 current_count = 7725095
SPIV\t 0x0000010f APIC enabled, focus=off, spurious vec 15
ICR\t 0x00000000 physical edge de-assert no-shorthand
ICR2\t 0x00000000 cpu 0 (APIC ID)
ESR\t 0x00000000
ISR\t (none)
IRR\t (none)

APR 0x00 TPR 0x00 DFR 0x0f LDR 0x00 PPR 0x00
"""


def test_lapic_linux_idle_timer_is_due():
    t = parse_info_lapic(LAPIC_LINUX)
    assert (t.masked, t.mode, t.vector, t.divider, t.current_count, t.ppr, t.enabled) == (
        False, "one-shot", 0xEC, 16, 18745666, 0x10, True)
    # QEMU's APIC bus is 1 GHz: a count lasts `divider` ns.
    assert t.next_interrupt_ns() == 18745666 * 16


def test_lapic_masked_timer_wakes_nothing():
    t = parse_info_lapic(LAPIC_KERNEL)
    assert (t.masked, t.mode, t.vector, t.divider) == (True, "periodic", 0x20, 1)
    assert t.next_interrupt_ns() is None


@pytest.mark.parametrize("change, due", [
    (lambda s: s.replace("0x000000ec", "0x000400ec").replace("one-shot    ", "tsc-deadline"), False),
    (lambda s: s.replace("current_count = 18745666", "current_count = 0"), False),
    (lambda s: s.replace("PPR 0x10", "PPR 0xe0"), False),      # vector 0xec: class 14, not above PPR's 14
    (lambda s: s.replace("PPR 0x10", "PPR 0xd0"), True),
    (lambda s: s.replace("APIC enabled", "APIC disabled"), False),
    (lambda s: s.replace("0x000000ec", "0x000200ec"), True),    # periodic
])
def test_lapic_when_the_timer_is_due(change, due):
    assert (parse_info_lapic(change(LAPIC_LINUX)).next_interrupt_ns() is not None) is due


def test_lapic_garbage_is_one_decode_error():
    for text in ("", "CPU#0\nRAX=0", LAPIC_LINUX.replace("Timer", "Tinmer")):
        with pytest.raises(DecodeError):
            parse_info_lapic(text)


def test_captured_text_decodes_gdb_18s_mi_stream_records():
    # gdb 18.1 under MI: `gdb.execute("monitor info registers 0", to_string=True)`
    # returns MI target-stream records instead of the text (captured live).
    captured = ('@"\\r\\n"\n@"CPU#0\\r\\n"\n@"EAX=00000000 EBX=00000000 ECX=00000000 EDX=00060fb1\\r\\n"\n'
                '@"quote \\" backslash \\\\ tab\\t octal \\101\\r\\n"\n')
    assert captured_text(captured) == ("\nCPU#0\nEAX=00000000 EBX=00000000 ECX=00000000 EDX=00060fb1\n"
                                      'quote " backslash \\ tab\t octal A\n')
    plain = "CPU#0\r\nEAX=00000000\r\n"
    assert captured_text(plain) == "CPU#0\nEAX=00000000\n"
    assert captured_text("") == ""
