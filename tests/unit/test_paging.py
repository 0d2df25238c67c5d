"""The page-table walker, access checks and dumper (gdbext.x86.paging).

Expectations are worked out by hand from Intel SDM Vol. 3A chapter 4; the
OVMF fixture is a real page-table set captured from QEMU 7.2 with its
`info tlb` output as the oracle (see fixtures/paging/capture_ovmf.py).
"""
from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gdbext.model.snapshot import SegmentCache, Snapshot, TableRegister
from gdbext.x86 import DecodeError, paging
from gdbext.x86.bits import (
    CR0_WP,
    CR4_PCIDE,
    CR4_PKE,
    CR4_SMAP,
    CR4_SMEP,
    EFER_NXE,
    is_canonical,
)
from gdbext.x86.paging import (
    PTE_A,
    PTE_D,
    PTE_G,
    PTE_P,
    PTE_PAT,
    PTE_PAT_LARGE,
    PTE_PCD,
    PTE_PS,
    PTE_PWT,
    PTE_RW,
    PTE_US,
    PTE_XD,
    PagingContext,
    PagingError,
    Range,
    check_access,
    dump,
    find_phys,
    walk,
    wx_ranges,
)
from tests.support.fakemem import (
    CR0_LONG,
    CR4_LONG,
    EFER_LONG,
    FakeMemory,
    PageTables,
    canonical,
)

GIB = 1 << 30
MIB2 = 1 << 21
K4 = 1 << 12
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "paging")


def _walk(pt: PageTables, va: int, **ctx_kw):
    ctx = pt.ctx(**ctx_kw)
    return walk(pt.mem.read, ctx, va), ctx


# -- context -------------------------------------------------------------------

def test_root_masks_pcid_and_flags():
    # CR3 = root | PCID 0xabc with CR4.PCIDE=1 (SDM 4.5, Table 4-13).
    ctx = PagingContext(cr3=0x1234_5000 | 0xABC, cr0=CR0_LONG, cr4=CR4_LONG | CR4_PCIDE,
                        efer=EFER_LONG)
    assert ctx.root == 0x1234_5000 and ctx.pcide
    # PWT/PCD (bits 3, 4) and bit 63 (no-flush hint as software writes it).
    ctx = PagingContext(cr3=(1 << 63) | 0x7_F801_0018, cr0=CR0_LONG, cr4=CR4_LONG, efer=EFER_LONG)
    assert ctx.root == 0x7_F801_0000


def test_context_from_real_ovmf_registers():
    # CR0=0x80010033 CR4=0x668 EFER=0xd00 as QEMU showed them under OVMF.
    ctx = PagingContext(cr3=0xFC01000, cr0=0x80010033, cr4=0x668, efer=0xD00)
    assert ctx.wp and ctx.nxe and ctx.long_mode and ctx.paging
    assert not (ctx.la57 or ctx.smep or ctx.smap or ctx.pke or ctx.pcide)


def test_from_snapshot_takes_registers():
    regs = {"cr0": CR0_LONG, "cr3": 0x5000 | 5, "cr4": CR4_LONG | CR4_PKE, "efer": EFER_LONG,
            "pkru": 0x55555554}
    seg = SegmentCache(0, 0, 0, 0)
    snap = Snapshot(regs=regs, segments={}, gdtr=TableRegister(0, 0), idtr=TableRegister(0, 0),
                    ldtr=seg, tr=seg, cpl=0)
    ctx = PagingContext.from_snapshot(snap, maxphyaddr=40)
    assert ctx.root == 0x5000 and ctx.pkru == 0x55555554 and ctx.maxphyaddr == 40 and ctx.pke
    assert PagingContext.from_snapshot(snap).maxphyaddr == 52


@pytest.mark.parametrize("va,bits,ok", [
    (0x0000_7FFF_FFFF_FFFF, 48, True),
    (0x0000_8000_0000_0000, 48, False),
    (0xFFFF_8000_0000_0000, 48, True),
    (0xFFFF_7FFF_FFFF_FFFF, 48, False),
    (0x0000_8000_0000_0000, 57, True),
    (0x00FF_FFFF_FFFF_FFFF, 57, True),
    (0x0100_0000_0000_0000, 57, False),
    (0xFF00_0000_0000_0000, 57, True),
])
def test_canonical(va, bits, ok):
    assert is_canonical(va, bits) is ok


# -- walks -------------------------------------------------------------------

def test_four_level_walk_by_hand():
    pt = PageTables()
    va = 0x7F12_3456_7ABC  # indices PML4 0xfe, PDPT 0x48, PD 0x1a2, PT 0x167, offset 0xabc
    pt.map(va & ~0xFFF, 0x8_7654_3000, user=True, extra=PTE_A | PTE_D)
    w, _ = _walk(pt, va)
    assert [lv.name for lv in w.levels] == ["PML4", "PDPT", "PD", "PT"]
    assert [lv.index for lv in w.levels] == [0xFE, 0x48, 0x1A2, 0x167]
    assert w.levels[0].table == pt.root
    assert w.levels[-1].entry == 0x8_7654_3067  # P RW US A D
    assert w.levels[-1].flags == ("P", "RW", "US", "A", "D")
    assert w.pa == 0x8_7654_3ABC and w.page_size == K4
    assert (w.user, w.writable, w.executable, w.global_) == (True, True, True, False)
    assert w.problem is None and w.canonical
    assert [lv.leaf for lv in w.levels] == [False, False, False, True]
    assert w.levels[-1].address == w.levels[-1].table + 8 * 0x167


def test_pcid_bits_do_not_move_the_root():
    pt = PageTables()
    pt.map(0x1000, 0x5000)
    w, _ = _walk(pt, 0x1000, cr4=CR4_LONG | CR4_PCIDE, cr3_low=0xFFF)
    assert w.pa == 0x5000


def test_five_level_walk():
    pt = PageTables(levels=5)
    va = 0xFF11_2233_4455_6ABC  # PML5 0x111, PML4 0x44, PDPT 0xcd, PD 0x22, PT 0x156
    pt.map(va & ~0xFFF, 0x1234_5000)
    w, ctx = _walk(pt, va)
    assert ctx.la57
    assert [lv.name for lv in w.levels] == ["PML5", "PML4", "PDPT", "PD", "PT"]
    assert [lv.index for lv in w.levels] == [0x111, 0x44, 0xCD, 0x22, 0x156]
    assert w.pa == 0x1234_5ABC and w.canonical
    # The same address is non-canonical without LA57: bits 63:47 differ.
    assert not is_canonical(va, 48)


def test_one_gib_page_with_pat():
    pt = PageTables()
    entry = pt.map(canonical(0xFFFF_8880_0000_0000), 0x1_4000_0000, GIB, global_=True, nx=True,
                   extra=PTE_PAT_LARGE | PTE_PCD)
    w, _ = _walk(pt, 0xFFFF_8880_1234_5678)
    assert len(w.levels) == 2 and w.levels[-1].leaf and w.levels[-1].entry == entry
    assert w.pa == 0x1_4000_0000 + 0x1234_5678 and w.page_size == GIB
    assert w.levels[-1].flags == ("P", "RW", "PCD", "PS", "G", "PAT", "NX")
    assert w.global_ and not w.executable and not w.user


def test_two_mib_page_pat_is_bit_12_and_4k_pat_is_bit_7():
    pt = PageTables()
    pt.map(0x4000_0000, 0x20_0000, MIB2, extra=PTE_PAT_LARGE | PTE_PWT)
    pt.map(0x6000_0000, 0x7000, extra=PTE_PAT)
    big, _ = _walk(pt, 0x4001_2345)
    assert big.pa == 0x21_2345 and big.page_size == MIB2
    assert "PAT" in big.levels[-1].flags and "PS" in big.levels[-1].flags
    small, _ = _walk(pt, 0x6000_0010)
    assert small.pa == 0x7010 and small.levels[-1].flags == ("P", "RW", "PAT")


def test_not_present_stops_the_walk():
    pt = PageTables()
    pt.map(0x40_0000, 0x9000)
    w, _ = _walk(pt, 0x40_1000)
    assert w.pa is None and w.problem == "not present at PT (entry 0x0)"
    assert len(w.levels) == 4 and not w.levels[-1].present
    w, _ = _walk(pt, 0x80_0000_0000)
    assert w.problem == "not present at PML4 (entry 0x0)" and len(w.levels) == 1


def test_non_present_entry_keeps_its_bits_but_no_meaning():
    pt = PageTables()
    pt.map(0x1000, 0x2000)
    pt.set_entry(0x1000, "PT", 0xDEAD_B000 | PTE_RW)  # swapped-out style: P=0
    w, _ = _walk(pt, 0x1000)
    assert w.problem == "not present at PT (entry 0xdeadb002)"
    assert w.levels[-1].flags == () and w.levels[-1].reserved == 0


def test_non_canonical():
    pt = PageTables()
    w, ctx = _walk(pt, 0x0000_8000_0000_0000)
    assert not w.canonical and w.levels == () and w.pa is None
    assert w.problem == "non-canonical address for 4-level paging"
    a = check_access(w, ctx, "read", user=True)
    assert a.faults and a.error_code is None and "#GP" in a.reason
    pt5 = PageTables(levels=5)
    w, _ = _walk(pt5, 0x0100_0000_0000_0000)
    assert w.problem == "non-canonical address for 5-level paging"


def test_paging_disabled_is_identity_and_legacy_modes_are_refused():
    pt = PageTables()
    w, ctx = _walk(pt, 0x1234_5678, cr0=1)
    assert w.pa == 0x1234_5678 and w.levels == ()
    assert not check_access(w, ctx, "write", user=True).faults
    with pytest.raises(PagingError):
        dump(pt.mem.read, ctx)
    with pytest.raises(PagingError, match="PAE"):
        walk(pt.mem.read, pt.ctx(efer=EFER_NXE), 0)


def test_short_read_is_a_decode_error():
    ctx = PageTables().ctx()
    with pytest.raises(DecodeError, match="short read"):
        walk(lambda pa, n: b"\x01", ctx, 0)
    with pytest.raises(PagingError, match="short read"):
        dump(lambda pa, n: b"", ctx)


# -- reserved bits (SDM 4.5.4, Tables 4-15 to 4-20) -------------------------------

def test_bits_above_maxphyaddr_are_reserved():
    pt = PageTables()
    pt.map(0x1000, (1 << 45) | 0x3000)
    w, ctx = _walk(pt, 0x1000, maxphyaddr=40)
    assert w.pa is None
    assert w.levels[-1].reserved == 1 << 45
    assert w.problem == f"reserved bits {1 << 45:#x} set in PT entry {(1 << 45) | 0x3003:#x}"
    # RSVD and P set, W/R and U/S from the access (SDM 4.7).
    assert check_access(w, ctx, "read", user=False).error_code == 0x9
    assert check_access(w, ctx, "write", user=True).error_code == 0xF
    # The same entry is fine with 52 physical address bits.
    w, _ = _walk(pt, 0x1000)
    assert w.pa == (1 << 45) | 0x3000


def test_nx_is_reserved_without_efer_nxe():
    pt = PageTables()
    pt.map(0x1000, 0x3000, nx=True)
    w, ctx = _walk(pt, 0x1000, efer=EFER_LONG & ~EFER_NXE)
    assert w.levels[-1].reserved == PTE_XD and "NX" not in w.levels[-1].flags
    # I/D stays 0 for a fetch without NXE and SMEP.
    assert check_access(w, ctx, "exec", user=False).error_code == 0x9
    w, ctx = _walk(pt, 0x1000)
    assert w.pa == 0x3000 and not w.executable and "NX" in w.levels[-1].flags


def test_ps_in_pml4_is_reserved():
    pt = PageTables()
    pt.map(0x1000, 0x3000)
    pml4e = pt.get_entry(0x1000, "PML4")
    pt.set_entry(0x1000, "PML4", pml4e | PTE_PS)
    w, _ = _walk(pt, 0x1000)
    assert w.levels[0].reserved == PTE_PS and len(w.levels) == 1
    assert w.problem.startswith("reserved bits 0x80 set in PML4 entry")


def test_large_page_frame_reserved_bits():
    pt = PageTables()
    # 1 GiB page: bits 29:13 reserved, bit 12 is PAT (SDM Table 4-17).
    pt.map(0x4000_0000, 0x4000_0000, GIB, extra=1 << 13)
    w, _ = _walk(pt, 0x4000_0000)
    assert w.levels[-1].reserved == 1 << 13 and w.pa is None
    pt.map(0x8000_0000, 0x4000_0000, GIB, extra=1 << 29)
    assert _walk(pt, 0x8000_0000)[0].levels[-1].reserved == 1 << 29
    pt.map(0xC000_0000, 0x4000_0000, GIB, extra=PTE_PAT_LARGE)
    assert _walk(pt, 0xC000_0000)[0].pa == 0x4000_0000
    # 2 MiB page: bits 20:13 reserved (SDM Table 4-19); bit 21 is address.
    pt.map(0x1_0000_0000, 0x20_0000, MIB2, extra=1 << 20)
    assert _walk(pt, 0x1_0000_0000)[0].levels[-1].reserved == 1 << 20
    pt.map(0x1_0020_0000, 0x40_0000, MIB2)
    assert _walk(pt, 0x1_0020_0000)[0].pa == 0x40_0000


def test_reserved_entries_are_not_dumped_but_reported():
    pt = PageTables()
    pt.map(0x1000, 0x3000)
    pt.map(0x2000, (1 << 50) | 0x4000)
    problems: list = []
    ranges = dump(pt.mem.read, pt.ctx(maxphyaddr=46), problems=problems)
    assert [(r.va_start, r.pa_start) for r in ranges] == [(0x1000, 0x3000)]
    assert problems == [(0x2000, f"reserved bits {1 << 50:#x} set in PT entry {(1 << 50) | 0x4003:#x}")]


# -- effective rights across levels (SDM 4.6.1) ----------------------------------

def test_supervisor_upper_level_makes_user_leaf_supervisor():
    pt = PageTables()
    pt.map(0x40_0000, 0x9000, user=True)
    pt.set_entry(0x40_0000, "PDPT", pt.get_entry(0x40_0000, "PDPT") & ~PTE_US)
    w, ctx = _walk(pt, 0x40_0000)
    assert "US" in w.levels[-1].flags and not w.user
    a = check_access(w, ctx, "read", user=True)
    assert a.faults and a.error_code == 0x5  # P | U/S
    assert "U/S=0 at PDPT" in a.reason
    assert not check_access(w, ctx, "read", user=False).faults
    [r] = dump(pt.mem.read, ctx)
    assert not r.user


def test_read_only_upper_level_and_cr0_wp():
    pt = PageTables()
    pt.map(0x40_0000, 0x9000, user=True)
    pt.set_entry(0x40_0000, "PD", pt.get_entry(0x40_0000, "PD") & ~PTE_RW)
    w, ctx = _walk(pt, 0x40_0000)
    assert not w.writable
    a = check_access(w, ctx, "write", user=False)
    assert a.faults and a.error_code == 0x3 and "CR0.WP=1" in a.reason and "R/W=0 at PD" in a.reason
    ctx_nowp = pt.ctx(cr0=CR0_LONG & ~CR0_WP)
    assert not check_access(w, ctx_nowp, "write", user=False).faults
    # User-mode writes ignore CR0.WP.
    assert check_access(w, ctx_nowp, "write", user=True).error_code == 0x7
    assert not check_access(w, ctx, "read", user=True).faults


def test_nx_at_an_upper_level_only():
    pt = PageTables()
    pt.map(0x40_0000, 0x9000)
    pt.set_entry(0x40_0000, "PML4", pt.get_entry(0x40_0000, "PML4") | PTE_XD)
    w, ctx = _walk(pt, 0x40_0000)
    assert "NX" not in w.levels[-1].flags and not w.executable
    a = check_access(w, ctx, "exec", user=False)
    assert a.error_code == 0x11 and "XD=1 at PML4" in a.reason  # P | I/D
    assert not check_access(w, ctx, "read", user=False).faults
    [r] = dump(pt.mem.read, ctx)
    assert not r.executable


def test_smep():
    pt = PageTables()
    pt.map(0x40_0000, 0x9000, user=True)
    w, ctx = _walk(pt, 0x40_0000, cr4=CR4_LONG | CR4_SMEP)
    a = check_access(w, ctx, "exec", user=False)
    assert a.error_code == 0x11 and "SMEP" in a.reason
    assert not check_access(w, ctx, "exec", user=True).faults
    assert not check_access(w, pt.ctx(), "exec", user=False).faults
    # Without NXE the I/D bit still reports the fetch because SMEP is on.
    ctx = pt.ctx(cr4=CR4_LONG | CR4_SMEP, efer=EFER_LONG & ~EFER_NXE)
    assert check_access(w, ctx, "exec", user=False).error_code == 0x11


def test_smap_and_eflags_ac():
    pt = PageTables()
    pt.map(0x40_0000, 0x9000, user=True)
    pt.map(0x80_0000, 0xA000)
    w, ctx = _walk(pt, 0x40_0000, cr4=CR4_LONG | CR4_SMAP)
    a = check_access(w, ctx, "read", user=False)
    assert a.error_code == 0x1 and "SMAP" in a.reason
    assert check_access(w, ctx, "write", user=False).error_code == 0x3
    assert not check_access(w, ctx, "read", user=False, rflags_ac=True).faults
    assert not check_access(w, ctx, "exec", user=False).faults  # SMAP is data only
    kernel = walk(pt.mem.read, ctx, 0x80_0000)
    assert not check_access(kernel, ctx, "read", user=False).faults


def test_not_present_error_codes():
    pt = PageTables()
    w, ctx = _walk(pt, 0x1000)
    assert check_access(w, ctx, "read", user=False).error_code == 0x0
    assert check_access(w, ctx, "write", user=True).error_code == 0x6
    assert check_access(w, ctx, "exec", user=True).error_code == 0x14
    ctx = pt.ctx(efer=EFER_LONG & ~EFER_NXE)
    assert check_access(w, ctx, "exec", user=True).error_code == 0x4


def test_unknown_access_kind():
    pt = PageTables()
    w, ctx = _walk(pt, 0x1000)
    with pytest.raises(PagingError):
        check_access(w, ctx, "fetch", user=True)


# -- protection keys (SDM 4.6.2) ------------------------------------------------

def test_protection_keys_with_pkru():
    pt = PageTables()
    pt.map(0x40_0000, 0x9000, user=True, pkey=5)
    pt.map(0x80_0000, 0xA000, user=True, pkey=3)
    ad5 = 1 << 10
    wd3 = 1 << 7
    cr4 = CR4_LONG | CR4_PKE
    w, ctx = _walk(pt, 0x40_0000, cr4=cr4, pkru=ad5 | wd3)
    assert w.pkey == 5 and "PK=5" in w.levels[-1].flags
    a = check_access(w, ctx, "read", user=True)
    assert a.error_code == 0x25 and "PKRU.AD5=1" in a.reason  # P | U/S | PK
    assert not check_access(w, ctx, "exec", user=True).faults  # keys ignore fetches
    # Supervisor data accesses to user pages are checked too.
    assert check_access(w, ctx, "read", user=False).error_code == 0x21
    w3 = walk(pt.mem.read, ctx, 0x80_0000)
    assert not check_access(w3, ctx, "read", user=True).faults
    assert check_access(w3, ctx, "write", user=True).error_code == 0x27
    assert check_access(w3, ctx, "write", user=False).error_code == 0x23
    # With CR0.WP=0, WD does not stop supervisor writes.
    ctx_nowp = pt.ctx(cr4=cr4, pkru=wd3, cr0=CR0_LONG & ~CR0_WP)
    assert not check_access(w3, ctx_nowp, "write", user=False).faults


def test_pk_bit_is_set_even_when_ordinary_rights_also_refuse():
    # SDM 4.7: PK depends only on the key, PKRU, the access and CR0.WP.
    pt = PageTables()
    pt.map(0x40_0000, 0x9000, user=True, writable=False, pkey=2)
    w, ctx = _walk(pt, 0x40_0000, cr4=CR4_LONG | CR4_PKE, pkru=1 << 5)  # WD2
    a = check_access(w, ctx, "write", user=True)
    assert a.error_code == 0x27
    assert "read-only" in a.reason and "PKRU.WD2=1" in a.reason
    assert not check_access(w, ctx, "read", user=True).faults


def test_protection_keys_unknown_pkru_and_pke_off():
    pt = PageTables()
    pt.map(0x40_0000, 0x9000, user=True, pkey=5)
    w, ctx = _walk(pt, 0x40_0000, cr4=CR4_LONG | CR4_PKE)
    a = check_access(w, ctx, "read", user=True)
    assert not a.faults and "PKRU unknown" in a.reason
    w, ctx = _walk(pt, 0x40_0000, pkru=0xFFFF_FFFF)
    assert w.pkey is None and not check_access(w, ctx, "read", user=True).faults
    assert f"AVL={5 << 59:#x}" in w.levels[-1].flags


def test_pkeys_do_not_apply_to_supervisor_pages_under_pke():
    pt = PageTables()
    pt.map(0x40_0000, 0x9000, pkey=1)
    w, ctx = _walk(pt, 0x40_0000, cr4=CR4_LONG | CR4_PKE, pkru=0xFFFF_FFFF)
    assert not check_access(w, ctx, "write", user=False).faults


def test_avl_bits_are_shown():
    pt = PageTables()
    pt.map(0x1000, 0x2000, extra=(1 << 9) | (1 << 52))
    pml4e = pt.get_entry(0x1000, "PML4")
    pt.set_entry(0x1000, "PML4", pml4e | PTE_G | PTE_D)  # ignored in a table pointer
    w, _ = _walk(pt, 0x1000)
    assert w.levels[-1].flags[-1] == f"AVL={(1 << 9) | (1 << 52):#x}"
    assert w.levels[0].flags == ("P", "RW", "US", f"AVL={PTE_G | PTE_D:#x}")
    assert w.levels[0].reserved == 0 and w.pa == 0x2000


# -- dump ------------------------------------------------------------------------

def test_dump_merges_contiguous_pages_and_splits_on_change():
    pt = PageTables()
    pt.map_range(0x40_0000, 0x10_0000, 8 * K4)             # 8 pages, one run
    pt.map(0x40_8000, 0x10_9000)                            # PA gap
    pt.map(0x40_9000, 0x10_A000, writable=False)            # rights change
    pt.map_range(0x60_0000, 0x80_0000, 2 * MIB2, MIB2)      # two 2 MiB pages
    pt.map(0xA0_0000, 0xC0_0000)                            # size change after a 4K page
    ranges = dump(pt.mem.read, pt.ctx())
    assert [(r.va_start, r.va_end, r.pa_start, r.page_size, r.pages, r.writable) for r in ranges] == [
        (0x40_0000, 0x40_8000, 0x10_0000, K4, 8, True),
        (0x40_8000, 0x40_9000, 0x10_9000, K4, 1, True),
        (0x40_9000, 0x40_A000, 0x10_A000, K4, 1, False),
        (0x60_0000, 0xA0_0000, 0x80_0000, MIB2, 2, True),
        (0xA0_0000, 0xA0_1000, 0xC0_0000, K4, 1, True),
    ]


def test_dump_merges_across_table_boundaries():
    pt = PageTables()
    # 4 MiB of 4K pages spanning two PTs and the end of one PD.
    pt.map_range(GIB - MIB2, 0x100_0000, 2 * MIB2)
    [r] = dump(pt.mem.read, pt.ctx())
    assert (r.va_start, r.va_end, r.pages) == (GIB - MIB2, GIB + MIB2, 1024)


def test_dump_upper_half_is_sign_extended_and_sorted():
    pt = PageTables()
    pt.map(0xFFFF_FFFF_FFFF_F000, 0x5000, global_=True)
    pt.map(0xFFFF_8000_0000_0000, 0x6000)
    pt.map(0x7FFF_FFFF_F000, 0x7000, user=True)
    ranges = dump(pt.mem.read, pt.ctx())
    assert [r.va_start for r in ranges] == [0x7FFF_FFFF_F000, 0xFFFF_8000_0000_0000,
                                            0xFFFF_FFFF_FFFF_F000]
    assert ranges[-1].va_end == 1 << 64 and ranges[-1].global_
    # Not merged across the non-canonical hole even though the PAs are adjacent.
    assert len(ranges) == 3


def test_dump_five_level():
    pt = PageTables(levels=5)
    pt.map(0xFF11_2233_4455_6000, 0x1000)
    pt.map(0x00FF_FFFF_FFFF_F000, 0x2000)
    ranges = dump(pt.mem.read, pt.ctx())
    assert [(r.va_start, r.pa_start) for r in ranges] == [
        (0x00FF_FFFF_FFFF_F000, 0x2000), (0xFF11_2233_4455_6000, 0x1000)]


def test_dump_window():
    pt = PageTables()
    pt.map_range(0x40_0000, 0x10_0000, 16 * K4)
    pt.map(0x4000_0000, 0x4000_0000, GIB)
    ranges = dump(pt.mem.read, pt.ctx(), va_start=0x40_3000, va_end=0x40_5000)
    assert [(r.va_start, r.pages) for r in ranges] == [(0x40_3000, 2)]
    # A large page overlapping the window is returned whole.
    ranges = dump(pt.mem.read, pt.ctx(), va_start=0x5000_0000, va_end=0x5000_1000)
    assert [(r.va_start, r.page_size) for r in ranges] == [(0x4000_0000, GIB)]
    assert dump(pt.mem.read, pt.ctx(), va_start=0x8000_0000, va_end=0x9000_0000) == []


def test_shared_tables_are_read_once_and_both_aliases_dumped():
    pt = PageTables()
    pt.map(0x1000, 0x9000)
    pdpt = pt.get_entry(0, "PML4")
    pt.set_entry(canonical(0xFFFF_8000_0000_0000), "PML4", pdpt)  # slot 256 -> same PDPT
    pt.mem.reads.clear()
    ranges = dump(pt.mem.read, pt.ctx())
    assert [(r.va_start, r.pa_start) for r in ranges] == [
        (0x1000, 0x9000), (0xFFFF_8000_0000_1000, 0x9000)]
    assert set(pt.mem.reads.values()) == {1} and len(pt.mem.reads) == 4
    assert find_phys(ranges, 0x9123) == [0x1123, 0xFFFF_8000_0000_1123]


def test_recursive_slot():
    pt = PageTables()
    pt.map(0x40_0000, 0x9000, user=True)
    pt.map(0xFFFF_8000_0000_0000, 0x20_0000, MIB2)
    root = pt.root
    pt.set_entry(canonical(510 << 39), "PML4", root | PTE_P | PTE_RW)  # PML4[510] -> PML4
    ctx = pt.ctx()
    # The classic self-map address: all four indices 510 lands on the PML4 itself.
    w = walk(pt.mem.read, ctx, 0xFFFF_FF7F_BFDF_E000)
    assert w.pa == root and [lv.index for lv in w.levels] == [510] * 4
    # PML4[510] then the indices of 0x400000 minus the last level: that PT.
    pt_table = pt.get_entry(0x40_0000, "PD") & 0x000F_FFFF_FFFF_F000
    w = walk(pt.mem.read, ctx, canonical((510 << 39) | (0 << 30) | (0 << 21) | (2 << 12)))
    assert w.pa == pt_table and not w.user  # PML4[510] has U/S=0
    pt.mem.reads.clear()
    ranges = dump(pt.mem.read, ctx)
    assert set(pt.mem.reads.values()) == {1}
    assert find_phys(ranges, root) == [0xFFFF_FF7F_BFDF_E000]
    assert find_phys(ranges, pt_table) == [canonical((510 << 39) | (2 << 12))]
    # The real mappings are still there, and nothing else maps user space.
    assert find_phys(ranges, 0x9000) == [0x40_0000]
    assert [r.va_start for r in ranges if r.user] == [0x40_0000]
    # Through the self map every table appears as a 4 KiB page, and so does the
    # frame of the 2 MiB page, whose PD entry is read as a PTE at the last level:
    # (510,0,0,2)->PT, (510,256,0,0)->0x200000, (510,510,0,0)->PD_A,
    # (510,510,256,0)->PD_B, (510,510,510,{0,256,510})->PDPT_A, PDPT_B, PML4.
    self_map = [r for r in ranges if r.va_start >> 39 & 0x1FF == 510]
    mapped = {r.pa_start + i * K4 for r in self_map for i in range(r.pages)}
    tables = {root, pt_table, 0x20_0000} | {
        pt.get_entry(va, level) & 0x000F_FFFF_FFFF_F000
        for va in (0x40_0000, 0xFFFF_8000_0000_0000) for level in ("PML4", "PDPT")}
    assert sum(r.pages for r in self_map) == 7 and mapped == tables


def test_wx_ranges_user_first():
    pt = PageTables()
    pt.map(0x1000, 0x1000)                       # kernel W+X
    pt.map(0x3000, 0x3000, user=True, nx=True)   # user W, NX
    pt.map(0x5000, 0x5000, user=True)            # user W+X
    pt.map(0x7000, 0x7000, user=True, writable=False)
    ranges = dump(pt.mem.read, pt.ctx())
    assert [r.va_start for r in wx_ranges(ranges)] == [0x5000, 0x1000]


def test_find_phys_over_large_pages():
    pt = PageTables()
    pt.map(0x4000_0000, 0, GIB)
    pt.map(0x1000, 0x1234_5000)
    ranges = dump(pt.mem.read, pt.ctx())
    assert find_phys(ranges, 0x1234_5678) == [0x1678, 0x5234_5678]
    assert find_phys(ranges, 0x4000_0000) == []


# -- a real page-table set: OVMF under QEMU 7.2 -cpu max ----------------------------

def _load_fixture(name: str):
    with open(os.path.join(FIXTURES, name + ".json")) as f:
        doc = json.load(f)
    mem = FakeMemory()
    for pa, hexdata in doc["tables"].items():
        mem.write(int(pa, 16), bytes.fromhex(hexdata))
    ctx = PagingContext(cr3=doc["cr3"], cr0=doc["cr0"], cr4=doc["cr4"], efer=doc["efer"])
    tlb = []
    with open(os.path.join(FIXTURES, name + ".tlb")) as f:
        for line in f:
            va, pa, bits = line.replace(":", "").split()
            tlb.append((int(va, 16), int(pa, 16), bits))
    return mem, ctx, tlb


def _tlb_letters(entry: int, large: bool) -> str:
    """QEMU's `info tlb` legend: X G P(S) D A C(PCD) T(PWT) U W."""
    bits = [(PTE_XD, "X"), (PTE_G, "G"), (PTE_PS if large else 0, "P"), (PTE_D, "D"),
            (PTE_A, "A"), (PTE_PCD, "C"), (PTE_PWT, "T"), (PTE_US, "U"), (PTE_RW, "W")]
    return "".join(c if b and entry & b else "-" for b, c in bits)


def test_ovmf_dump_agrees_with_info_tlb():
    mem, ctx, tlb = _load_fixture("ovmf_max")
    assert len(tlb) == 3068
    ranges = dump(mem.read, ctx)
    pages = [(r.va_start + i * r.page_size, r.pa_start + i * r.page_size, r.page_size)
             for r in ranges for i in range(r.pages)]
    assert [(va, pa) for va, pa, _ in pages] == [(va, pa) for va, pa, _ in tlb]
    sizes = {size for _, _, size in pages}
    assert sizes == {K4, MIB2, GIB}  # OVMF with -cpu max uses all three
    for (va, pa, size), (_, _, bits) in zip(pages, tlb):
        assert (size != K4) == ("P" in bits), hex(va)


def test_ovmf_walk_agrees_with_info_tlb_leaf_bits():
    mem, ctx, tlb = _load_fixture("ovmf_max")
    for va, pa, bits in tlb:
        w = walk(mem.read, ctx, va + 0x123)
        leaf = w.levels[-1]
        assert w.pa == pa + 0x123
        assert _tlb_letters(leaf.entry, w.page_size != K4) == bits, hex(va)
        # OVMF's table pointers are all RW with XD clear, so effective = leaf here.
        assert all(lv.entry & PTE_RW and not lv.entry & PTE_XD for lv in w.levels[:-1])
        assert w.writable == ("W" in bits) and w.executable == ("X" not in bits)
        assert not w.user


def test_ovmf_real_values():
    mem, ctx, _ = _load_fixture("ovmf_max")
    # First PML4 entry 0xfc02023 (P RW A), a 1 GiB entry 0x40000083 (P RW PS)
    # and a read-only code page in a PT.
    w = walk(mem.read, ctx, 0x4000_0000)
    assert [lv.entry for lv in w.levels] == [0xFC02023, 0x4000_0083]
    assert w.page_size == GIB and w.levels[-1].flags == ("P", "RW", "PS")
    ro = [r for r in dump(mem.read, ctx) if not r.writable]
    assert ro and all(r.executable for r in ro)  # OVMF's read-only code pages
    assert wx_ranges(dump(mem.read, ctx))[0].va_start == 0


# -- hypothesis ---------------------------------------------------------------------

TABLES = [0x1000 * (i + 1) for i in range(4)]
_flags = st.integers(0, 0xFFF)
_high = st.sampled_from([0, 1 << 63, 0xF << 59, 0x7F << 52, 1 << 51, 1 << 45])
_entry = st.one_of(
    st.integers(0, (1 << 64) - 1),
    st.builds(lambda t, f, h: t | f | h | 1, st.sampled_from(TABLES), _flags, _high),
)
_table = st.dictionaries(st.integers(0, 511), _entry, max_size=6)
_ctx = st.builds(
    lambda cr4, efer, maxphy, pkru: PagingContext(
        cr3=TABLES[0], cr0=CR0_LONG, cr4=CR4_LONG | cr4, efer=EFER_LONG & ~EFER_NXE | efer,
        pkru=pkru, maxphyaddr=maxphy),
    st.sampled_from([0, 1 << 12, CR4_PKE, CR4_SMEP | CR4_SMAP]),
    st.sampled_from([0, EFER_NXE]),
    st.sampled_from([36, 40, 46, 52]),
    st.one_of(st.none(), st.integers(0, 0xFFFF_FFFF)),
)


def _random_memory(tables: list) -> FakeMemory:
    mem = FakeMemory()
    for base, entries in zip(TABLES, tables):
        for i, e in entries.items():
            mem.write_u64(base + 8 * i, e)
    return mem


def _range_of(ranges: list[Range], va: int) -> Range | None:
    hits = [r for r in ranges if r.va_start <= va < r.va_end]
    assert len(hits) <= 1
    return hits[0] if hits else None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_table, min_size=4, max_size=4), _ctx, st.lists(st.integers(0, (1 << 64) - 1),
                                                                 max_size=8))
def test_random_tables_walk_agrees_with_dump(tables, ctx, vas):
    mem = _random_memory(tables)
    ranges = dump(mem.read, ctx)
    # Probe the pages dump found, plus random addresses.
    probes = list(vas) + [r.va_start for r in ranges[:20]] + [r.va_end - 1 for r in ranges[:20]]
    for va in probes:
        w = walk(mem.read, ctx, va)
        r = _range_of(ranges, va)
        if w.pa is None:
            assert r is None, (hex(va), w.problem)
            continue
        assert r is not None, hex(va)
        assert r.pa_start + (va - r.va_start) == w.pa
        assert (r.page_size, r.user, r.writable, r.executable, r.global_, r.pkey) == (
            w.page_size, w.user, w.writable, w.executable, w.global_, w.pkey)
        for access in ("read", "write", "exec"):
            for user in (False, True):
                a = check_access(w, ctx, access, user=user)
                assert a.faults == (a.error_code is not None) or not w.canonical


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=8, max_size=4096), st.integers(0, (1 << 64) - 1), _ctx)
def test_random_bytes_never_crash(data, va, ctx):
    page = (data * (8192 // len(data) + 1))[:8192]

    def read(pa, size):  # every table is the same random page (the bytes repeated)
        off = pa % 4096
        return page[off:off + size]
    try:
        w = walk(read, ctx, va)
        ranges = dump(read, ctx, va_start=va & ~0xFFFF, va_end=(va & ~0xFFFF) + 0x10000)
    except DecodeError:
        return
    assert w.pa is None or w.page_size
    assert all(r.pages >= 1 for r in ranges)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=8), _ctx)
def test_short_reads_raise_only_paging_error(data, ctx):
    for op in (lambda: walk(lambda pa, n: data, ctx, 0), lambda: dump(lambda pa, n: data, ctx)):
        try:
            op()
        except PagingError:
            pass


def _scanned_everywhere(read, ctx: PagingContext, problems: list) -> list[Range]:
    """dump() without replaying PTs seen before: every table scanned entry by entry."""
    d = paging._Dumper(read, ctx, 0, 1 << 64, problems)
    d.leaves = d._scan_leaves
    d.descend(ctx.root, 0, 0, paging.PTE_US | paging.PTE_RW, 0)
    return d.ranges()


# Entries that make runs: frames in sequence, a few flag sets, some tables
# pointing at the same PTs again (as Linux's ESPFIX area does).
_run_entry = st.builds(lambda frame, flags: (0x100000 + frame * 0x1000) | flags | 1,
                       st.integers(0, 40), st.sampled_from([0x2, 0x6, 0x4, 0x102, (1 << 63) | 0x6]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_table, min_size=4, max_size=4), _ctx,
       st.dictionaries(st.integers(0, 511), _run_entry, min_size=1, max_size=40))
def test_replayed_tables_give_exactly_the_ranges_of_a_full_scan(tables, ctx, leaf_entries):
    mem = _random_memory(tables)
    # The last table also holds runs of 4 KiB pages, reached by every path
    # that points at it.
    for i, e in leaf_entries.items():
        mem.write_u64(TABLES[3] + 8 * i, e)
    fast_problems: list = []
    slow_problems: list = []
    fast = dump(mem.read, ctx, problems=fast_problems)
    assert fast == _scanned_everywhere(mem.read, ctx, slow_problems)
    assert sorted(fast_problems) == sorted(slow_problems)


def test_runs_continue_across_replayed_tables():
    """PT A maps frames F..F+511 and PT B F+512..F+1023;
    PD slots 0, 1, 2 point at A, B, A.  0-4 MiB is one range (it continues
    from A into B), 4-6 MiB is A again, replayed, not merged (its frames
    restart)."""
    pt = PageTables()
    frame = 0x40_0000
    for i in range(1024):
        pt.map(i * 0x1000, frame + i * 0x1000)
    first_pt = pt.get_entry(0, "PD")
    pt.set_entry(0x40_0000, "PD", first_pt)         # PD[2] -> A again
    ranges = dump(pt.mem.read, pt.ctx())
    assert [(r.va_start, r.va_end, r.pa_start, r.pages) for r in ranges] == [
        (0, 0x40_0000, frame, 1024), (0x40_0000, 0x60_0000, frame, 512)]
    assert ranges == _scanned_everywhere(pt.mem.read, pt.ctx(), [])
