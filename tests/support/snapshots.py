"""Hand-built Snapshots of a CPU stopped at a correct kernel's `sysretq`.

`baseline()` gives a Machine: fake physical memory with 4-level (or, with
la57=True, 5-level) page tables, a Linux-like GDT and a TSS in it, the
registers, segment caches and MSRs of a Linux-like kernel about to return
to user mode with `sysretq`.  Every SYSRET rule passes on it.  A test
changes one thing (a register, an MSR, a GDT entry, one bit of one paging
entry) and calls `machine.snapshot()` for a fresh Snapshot.

The values follow a real x86_64 Linux 6.x kernel:
  GDT (arch/x86/kernel/cpu/common.c gdt_page, with the accessed bits Linux
  presets): 0x08 KERNEL32_CS, 0x10 KERNEL_CS, 0x18 KERNEL_DS, 0x23 USER32_CS,
  0x2b USER_DS, 0x33 USER_CS, 0x40 TSS (16 bytes), limit 0x7f;
  STAR = __USER32_CS << 48 | __KERNEL_CS << 32 = 0x0023001000000000;
  SFMASK = 0x257fd5 (CF PF AF ZF SF TF IF DF OF IOPL NT RF AC ID);
  EFER = SCE LME LMA NXE; CR0 = 0x80050033; CS/SS caches as SYSCALL leaves
  them (QEMU's flag words 0x00a09b00 and 0x00c09300).
Addresses are in the regions Linux uses (cpu_entry_area, vmalloc'd stacks,
the direct map, kernel text), so the kernel half and user half are real.
The GDT entries, GDT limit, STAR, SFMASK, EFER, CR0, the CS/SS flag words and
the TSS address equal those of the captured Debian Linux 6.1 state below
(CAPTURED["linux"]); its TSS limit is 0x4087 (an I/O bitmap follows), ours 0x67.
"""
from __future__ import annotations

import base64
import json
import zlib
from dataclasses import dataclass, field

from gdbext.model.snapshot import (
    MSR_CSTAR,
    MSR_LSTAR,
    MSR_SFMASK,
    MSR_STAR,
    MSR_SYSENTER_CS,
    MSR_SYSENTER_EIP,
    MSR_SYSENTER_ESP,
    SegmentCache,
    Snapshot,
    SnapshotError,
    TableRegister,
)
from tests.support.fakemem import FakeMemory, PageTables

PAGE = 4096
MASK64 = (1 << 64) - 1

# Paging-structure entry bits (Intel SDM Vol. 3A 4.5, tables 4-15..4-20).
PTE_P = 1 << 0
PTE_RW = 1 << 1
PTE_US = 1 << 2
PTE_XD = 1 << 63

# --- registers of the baseline -------------------------------------------------
EFER = 0xD01              # SCE | LME | LMA | NXE
CR0 = 0x80050033          # PG AM WP NE ET MP PE
CR4 = 0x3506F0            # SMAP SMEP OSXSAVE FSGSBASE OSXMMEXCPT OSFXSR PGE MCE PAE PSE
CR4_LA57 = 1 << 12
R11 = 0x202               # IF and the fixed bit: what a user program usually has
STAR = 0x0023001000000000
SFMASK = 0x257FD5

# Linux GDT entries (each checked by hand against SDM Vol. 3A 3.4.5, figure 3-8).
KERNEL32_CS = 0x00CF9B000000FFFF   # code, exec/read, accessed, DPL 0, G, D=1
KERNEL_CS = 0x00AF9B000000FFFF     # code, DPL 0, G, L=1
KERNEL_DS = 0x00CF93000000FFFF     # data, read/write, accessed, DPL 0
USER32_CS = 0x00CFFB000000FFFF     # code, DPL 3, D=1
USER_DS = 0x00CFF3000000FFFF       # data, read/write, DPL 3
USER_CS = 0x00AFFB000000FFFF       # code, DPL 3, L=1
GDT_LIMIT = 0x7F                   # 16 entries
TSS_INDEX = 8
TSS_LIMIT = 0x67

# QEMU segment-cache flag words as SYSCALL loads them (seg_helper.c helper_syscall).
CS_ATTRS_SYSCALL = 0x00A09B00
SS_ATTRS_SYSCALL = 0x00C09300
TR_ATTRS_BUSY = 0x00008B00

# --- linear addresses ----------------------------------------------------------------
KERNEL_TEXT = 0xFFFFFFFF81000000
LSTAR = KERNEL_TEXT + 0x80              # entry_SYSCALL_64
SYSRET_SITE = KERNEL_TEXT + 0x1C5       # the sysretq in the return path
CSTAR = KERNEL_TEXT + 0x1000 + 0x40     # entry_SYSCALL_compat
SYSENTER_EIP = KERNEL_TEXT + 0x1000 + 0x200
IDT = 0xFFFFFE0000000000
GDT = 0xFFFFFE0000001000                # cpu_entry_area: the GDT is mapped read-only
TSS = 0xFFFFFE0000003000
KSTACK_BOTTOM = 0xFFFFC90000004000      # 16 KiB vmalloc'd task stack
RSP0 = 0xFFFFC90000008000               # top of it
KERNEL_RSP = RSP0 - 0x58                # a kernel stack pointer, for "RSP not switched back"
PERCPU = 0xFFFF88803EC00000             # KERNEL_GS_BASE: the per-CPU area in the direct map
USER_RIP = 0x401136                     # just after a `syscall` in user code
USER_RSP = 0x7FFD5A2C3E58
FS_BASE = 0x7F3A1C2E5740
UNMAPPED_KERNEL = 0xFFFFFFFF90000000

# --- physical layout ---------------------------------------------------------------
PA_KERNEL_TEXT = 0x01000000
PA_GDT = 0x02000000
PA_TSS = 0x02001000
PA_IDT = 0x02002000
PA_KSTACK = 0x02010000
PA_PERCPU = 0x02020000
PA_USER_CODE = 0x03000000
PA_USER_STACK = 0x03010000

LEVELS_4 = ("PML4", "PDPT", "PD", "PT")
LEVELS_5 = ("PML5", "PML4", "PDPT", "PD", "PT")


def code_descriptor(dpl: int, *, long: bool) -> int:
    """A flat code descriptor like Linux's (SDM Vol. 3A 3.4.5)."""
    flags = 0xA if long else 0xC               # G plus L, or G plus D
    access = 0x9B | (dpl << 5)                  # P, S, code exec/read accessed
    return (flags << 52) | (0xF << 48) | (access << 40) | 0xFFFF


def tss_descriptor(base: int, limit: int, busy: bool = True) -> bytes:
    """A 16-byte 64-bit TSS descriptor (SDM Vol. 3A 8.2.3, figure 8-4)."""
    type_ = 0xB if busy else 0x9
    low = (limit & 0xFFFF) | ((base & 0xFFFFFF) << 16) | ((0x80 | type_) << 40)
    low |= ((limit >> 16) & 0xF) << 48 | ((base >> 24) & 0xFF) << 56
    high = base >> 32
    return low.to_bytes(8, "little") + high.to_bytes(8, "little")


def tss64(rsp0: int, ist: tuple[int, ...] = ()) -> bytes:
    """The 0x68 bytes of a 64-bit TSS (SDM Vol. 3A 8.7, figure 8-11); no I/O bitmap."""
    data = bytearray(0x68)
    data[4:12] = rsp0.to_bytes(8, "little")
    for n, stack in enumerate(ist):
        data[0x24 + 8 * n:0x2C + 8 * n] = stack.to_bytes(8, "little")
    data[0x66:0x68] = (0x68).to_bytes(2, "little")
    return bytes(data)


@dataclass
class Machine:
    """A CPU at a sysretq, as mutable parts; snapshot() freezes them into a Snapshot."""

    mem: FakeMemory
    pt: PageTables
    regs: dict[str, int]
    segments: dict[str, SegmentCache]
    gdtr: TableRegister
    idtr: TableRegister
    tr: SegmentCache
    cpl: int = 0
    msrs: dict[int, int] = field(default_factory=dict)
    ldtr: SegmentCache = field(default_factory=lambda: SegmentCache(0, 0, 0, 0))

    @property
    def levels(self) -> tuple[str, ...]:
        return LEVELS_5 if len(self.pt.names) == 5 else LEVELS_4

    def snapshot(self) -> Snapshot:
        msrs = dict(self.msrs)

        def rdmsr(number: int) -> int:
            if number not in msrs:
                raise SnapshotError(f"MSR {number:#x} was not captured")
            return msrs[number]

        return Snapshot(regs=dict(self.regs), segments=dict(self.segments), gdtr=self.gdtr,
                        idtr=self.idtr, ldtr=self.ldtr, tr=self.tr, cpl=self.cpl,
                        phys_reader=self.mem.read, msr_reader=rdmsr)

    # --- the GDT, through its physical page ---------------------------------------
    def gdt_pa(self, index: int) -> int:
        return PA_GDT + 8 * index

    def gdt_entry(self, index: int) -> int:
        return self.mem.read_u64(self.gdt_pa(index))

    def set_gdt_entry(self, index: int, raw: int) -> None:
        self.mem.write_u64(self.gdt_pa(index), raw)

    def swap_gdt_entries(self, a: int, b: int) -> None:
        ea, eb = self.gdt_entry(a), self.gdt_entry(b)
        self.set_gdt_entry(a, eb)
        self.set_gdt_entry(b, ea)

    # --- the TSS -------------------------------------------------------------------
    def set_rsp0(self, rsp0: int) -> None:
        self.mem.write(PA_TSS + 4, rsp0.to_bytes(8, "little"))

    # --- paging entries ------------------------------------------------------------
    def entry(self, va: int, level: str) -> int:
        return self.pt.get_entry(va, level)

    def set_bits(self, va: int, level: str, bits: int) -> None:
        self.pt.set_entry(va, level, self.entry(va, level) | bits)

    def clear_bits(self, va: int, level: str, bits: int) -> None:
        self.pt.set_entry(va, level, self.entry(va, level) & ~bits & MASK64)


def _map(pt: PageTables, va: int, pa: int, pages: int = 1, **kw) -> None:
    pt.map_range(va, pa, pages * PAGE, **kw)


def baseline(*, la57: bool = False) -> Machine:
    """A correct kernel at its sysretq: every SYSRET rule passes."""
    mem = FakeMemory()
    # Linux's kernel-half upper levels are _KERNPG_TABLE (no U/S); user ones _PAGE_TABLE.
    pt = PageTables(mem, levels=5 if la57 else 4, pointer_flags=PTE_P | PTE_RW)
    _map(pt, KERNEL_TEXT, PA_KERNEL_TEXT, 2, writable=False, global_=True)
    _map(pt, IDT, PA_IDT, writable=False, nx=True, global_=True)
    _map(pt, GDT, PA_GDT, writable=False, nx=True, global_=True)
    _map(pt, TSS, PA_TSS, nx=True, global_=True)
    _map(pt, KSTACK_BOTTOM, PA_KSTACK, 4, nx=True)
    _map(pt, PERCPU, PA_PERCPU, nx=True, global_=True)
    pt.pointer_flags = PTE_P | PTE_RW | PTE_US
    _map(pt, USER_RIP & ~(PAGE - 1), PA_USER_CODE, user=True, writable=False)
    _map(pt, USER_RSP & ~(PAGE - 1), PA_USER_STACK, user=True, nx=True)

    gdt = [0, KERNEL32_CS, KERNEL_CS, KERNEL_DS, USER32_CS, USER_DS, USER_CS, 0]
    for index, raw in enumerate(gdt):
        mem.write_u64(PA_GDT + 8 * index, raw)
    mem.write(PA_GDT + 8 * TSS_INDEX, tss_descriptor(TSS, TSS_LIMIT))
    mem.write(PA_TSS, tss64(RSP0))

    regs = {name: 0 for name in (
        "rax", "rbx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10",
        "r12", "r13", "r14", "r15", "cr2", "cr8")}
    regs.update(
        rcx=USER_RIP, r11=R11, rsp=USER_RSP, rip=SYSRET_SITE, eflags=0x46,
        cs=0x10, ss=0x18, ds=0, es=0, fs=0, gs=0,
        cr0=CR0, cr3=pt.root, cr4=CR4 | (CR4_LA57 if la57 else 0), efer=EFER,
        fs_base=FS_BASE, gs_base=0, k_gs_base=PERCPU,
    )
    flat = 0xFFFFFFFF
    segments = {
        "cs": SegmentCache(0x10, 0, flat, CS_ATTRS_SYSCALL),
        "ss": SegmentCache(0x18, 0, flat, SS_ATTRS_SYSCALL),
        "ds": SegmentCache(0, 0, 0, 0),
        "es": SegmentCache(0, 0, 0, 0),
        "fs": SegmentCache(0, FS_BASE, 0, 0),
        "gs": SegmentCache(0, 0, 0, 0),
    }
    msrs = {
        MSR_STAR: STAR, MSR_LSTAR: LSTAR, MSR_CSTAR: CSTAR, MSR_SFMASK: SFMASK,
        MSR_SYSENTER_CS: 0x10, MSR_SYSENTER_ESP: TSS + 0x1000, MSR_SYSENTER_EIP: SYSENTER_EIP,
    }
    return Machine(
        mem=mem, pt=pt, regs=regs, segments=segments,
        gdtr=TableRegister(GDT, GDT_LIMIT), idtr=TableRegister(IDT, 0xFFF),
        tr=SegmentCache(TSS_INDEX * 8, TSS, TSS_LIMIT, TR_ATTRS_BUSY), msrs=msrs,
    )


# --- a 32-bit (compatibility-mode) caller, for sysretl ------------------------------
COMPAT_RIP = 0x0804A123                 # after a `syscall` in 32-bit code
COMPAT_ESP = 0xFFFFD5CC
PA_COMPAT_CODE = 0x03020000
PA_COMPAT_STACK = 0x03030000


def compat_caller(machine: Machine) -> Machine:
    """Make the returning caller 32-bit code: RCX and RSP below 4 GiB, pages mapped."""
    pt = machine.pt
    saved = pt.pointer_flags
    pt.pointer_flags = PTE_P | PTE_RW | PTE_US
    _map(pt, COMPAT_RIP & ~(PAGE - 1), PA_COMPAT_CODE, user=True, writable=False)
    _map(pt, COMPAT_ESP & ~(PAGE - 1), PA_COMPAT_STACK, user=True, nx=True)
    pt.pointer_flags = saved
    machine.regs.update(rcx=COMPAT_RIP, rsp=COMPAT_ESP)
    return machine


def map_user_page(machine: Machine, va: int, pa: int, **kw) -> None:
    """Map one more 4 KiB page in the user half (upper levels with U/S, as Linux's)."""
    pt = machine.pt
    saved = pt.pointer_flags
    pt.pointer_flags = PTE_P | PTE_RW | PTE_US
    _map(pt, va & ~(PAGE - 1), pa, **kw)
    pt.pointer_flags = saved


# --- the same CPU at an `iretq` instead ------------------------------------------------
# An interrupt from ring 3 pushed its frame at the top of the task stack (RSP0 aligned to
# 16, SDM Vol. 3A 6.14.2), the handler ran and did its swapgs back; RSP points at the
# frame's RIP slot.  Every IRET rule passes.
IRET_SITE = KERNEL_TEXT + 0x2A0
IRET_RSP = RSP0 - 40
USER_RFLAGS = 0x202
KERNEL_RIP = KERNEL_TEXT + 0x123        # an interrupted kernel instruction


def write_frame(machine: Machine, rip: int, cs: int, rflags: int, rsp: int, ss: int,
                at: int = IRET_RSP, slot: int = 8) -> None:
    """The five IRET slots at `at` on the task stack (SDM Vol. 3A 6.14.1, figure 6-9)."""
    data = b"".join((v & ((1 << (8 * slot)) - 1)).to_bytes(slot, "little")
                    for v in (rip, cs, rflags, rsp, ss))
    machine.mem.write(PA_KSTACK + (at - KSTACK_BOTTOM), data)


def iret_baseline(*, la57: bool = False) -> Machine:
    """A correct kernel at an iretq back to 64-bit user code: every IRET rule passes."""
    m = baseline(la57=la57)
    m.regs.update(rip=IRET_SITE, rsp=IRET_RSP, eflags=0x46)
    write_frame(m, USER_RIP, 0x33, USER_RFLAGS, USER_RSP, 0x2B)
    return m


def kernel_return(machine: Machine, **slots: int) -> Machine:
    """Make the frame an interrupt that came from ring 0 (IF clear in the kernel is fine)."""
    frame = {"rip": KERNEL_RIP, "cs": 0x10, "rflags": 0x46, "rsp": KERNEL_RSP - 0x100, "ss": 0x18}
    frame.update(slots)
    write_frame(machine, **frame)
    # The interrupt came from the kernel: no swapgs was done on entry, none on exit.
    machine.regs.update(gs_base=PERCPU, k_gs_base=0)
    return machine


# --- real states, captured from the bundled kernel under QEMU 7.2 (TCG, -cpu max) ----------
# gdb stopped at the named sysret label of each scenario; gdbext.target.snapshot() read
# the CPU and the rules ran on it, so each snapshot holds exactly the registers, MSRs and
# physical pages (page tables, GDT, TSS) that evaluate() needed: Snapshot.to_json(),
# zlib-compressed, base64.  Replaying them needs no QEMU.
#   ok:        syscall_return_sysret after the first system call (every rule passes)
#   gdt-order: enter_user_sysret with user code 64 and user data swapped in the GDT
#   no-swapgs: syscall_return_sysret_no_swapgs (GS_BASE still the per-CPU area)
#   sysret32:  syscall_return_sysretl back to 64-bit user code (CSTAR 0, no SYSENTER)
#   linux:     Debian's Linux 6.1 kernel (5-level paging, pti=on, nokaslr) at the
#              sysretq of entry_SYSCALL_64, busybox making system calls: CR3 is
#              already the KPTI user page table, which maps the entry text, GDT and
#              TSS but not the per-CPU area KERNEL_GS_BASE points to
CAPTURED: dict[str, tuple[str, int, tuple[str, ...]]] = {
    "ok": ("syscall_return_sysret", 64, (
        "eNrtnV1z2tYahf9KxrfuTIQQSHQmFxuJDwFCkMZJ8E0HC7xjGxsXkch1xv+9+nwXxMpJmjOd5sxZz0UjeLUlPWLWZu9t"
        "Cp9PovvNya8vjF9epFsfyy292u/Szc8nF8t4nW40HMtq25Zl2I1W2zSclt0w0902V7dX+7Tcbj6ljz4sN/v1Kn14udzE"
        "6/SJq28exW4fHMUyOq3sOJuq2XK/38XpVrNpOtlVlYcxDs/cajVb6eN4vVlH+23WzsiOcRvnLT+fGA+RkeE00od2q9Nx"
        "Wo7dNDpm28iPKXXz+QXaVrvZPNzHSvdJL6Vp5ue4X+p1dZK12e6ke6SPTkYddetpRQghhBBCyE/B6EHdcXxKCCGEEEJ+"
        "Qq637iIsNl+9OslXYtdme1kutPL+EEIIIYQQQgghhBBCSD2+XfdB1YOF1otyodV3+IlWQgghhBBCCCGEEEII+X4OFlqj"
        "aqF13W2WC60fnGFUfPTV7am1svJNP+paed1XXjzQeV0PZmqZ112lOt1tVbequpolUk+691W9N7gp64Fezov64hH1udSn"
        "86quzKrevY6kTgghhBBCCCGEEEIIIf8WBwutq+o7Wk/lE63DyC0XWtVajZJioXXU4ndkEUIIIYQQQgghhBBCCDhYaF0/"
        "+45W18s+QJqh3ctkpIuFVp10i2VWP637Zd0P1LZok9Y9JfUQdaV6ZV1pNS/rPdWt6guppyet6mPUE6l7aK+KK8zqfn4x"
        "Wb1bfMQ1qw9Q11J3tdQD1C2pp/8kZd1VXlWfq6A6vpa6j/pW6h7ah6gXUoV/V4l/D/5z8Zf6GPVE6h7aK9WH/5n4d+fi"
        "34f/mfhLPUDdkrpSXS3+A/gvxF/qPupbqXtoH6KuVAT/RPyH8I/gn4j/EP4R/BPx9+Gvxd9V4u/DX4u/1APULamn/52L"
        "/wj+N+IvdR/1rdQ9tA9RV3lCCn9Xi/8Y/lvxl/oY9UTqHtorNYF/DP9E/Cfwj+GfiP8E/rH4e0r8A/gn4u8h/wH8E/H3"
        "kP8A/ob4e8j/FP6G+HvI/xT+hvh7yH8If0v8PeQ/hL8l/h7yH8Lfgj/yP4O/A3/kfwZ/B/7Iv9SLUBf+PeR/Lv5Sd1UP"
        "+Zd6InUP7ZV6Lf7dnvj3kH+pa6m7uof8S92SetpTI/+/iX9X+lfdQ/6lvpW6h/Yh6qobwB/5fwP/AP7I/xv4B/BH/s/g"
        "Pxf/PvJ/Bn/pX3Uf+T+Dv/TPqo/8v4W/9K+6j/y/hf+Z+PeR/7fwX4h/H/l/B/+F+PeR/3fwl/4V7ZV6D/8I/sj/e/hH"
        "8Ef+38Nf+uei0y78F/CX/lUPkP8F/LX4D5D/BfxvxH+A/J/D/0b8B8j/Ofylf0V7pZbw34r/APlfwl/6Vz1A/pfw38If"
        "+b+Afwx/5P8C/jH8kf8L+CfiP0T+I/gn4j9E/iP4S/+K9kqt4G+I/xD5X8Ff+lc9RP5X8Jf+WQ2R/zX8pX/VQ+R/DX9L"
        "/IfI/xr+DvyR/0v4O/BH/i/h78Af+dfi7yrx95F/qWupu9pH/qVuST0tIf8fxN+V/lX7yL/Ut1L30D5EXbkyvtQ+8n8l"
        "/lJ3lY/8Sz2Ruof2Sl3DP4A/8n8N/wD+yP81/KV/LgYthf8N/KV/1SPk/wb+Mj5F+xB15cr4Uo+Q/w38ZXyqRsj/Bv7S"
        "v6K9Urfwl/GpGiH/t/CX/lWPkP9b+C/gj/zfwT+CP/J/B/8I/sj/HfxlfKnHyP8W/jI+VWPkfwt/6V/RXql7+Mv4VI2R"
        "/3v4S/+qx8j/Pfylf1Zj5P8P+Ev/qsfI/x/wl/Ep2oeoKzeGP/K/g38Mf+R/B/8Y/sh/DH8ZnxaD2sI/hr/0r3qC/Mfw"
        "l/5ZTZD/Pfylf9UT5H8Pfxmfon2IunJlfKknyP9H+Mv4VE2Q/4/wl/4V7ZX6BH8H/sj/J/g78Ef+P8Ff+udi0F74J+Lv"
        "Sf+qA+Rf6lsP8/8A+Ze68jD/D5D/B/H3MP8PkH+pJx7m/wHy/6f4e5j/B8i/1LWH+X+A/Evd8jD/D5D/R/hj/h8g/4/w"
        "x/w/QP4f4Y/5/xT5N+CP+f8U+Tfgj/n/FPlvwB/z/yny34A/5v9T5L8Bf8z/p8i/CX/M/6fIvwl/zP+nyL8Jf8z/p8h/"
        "E/6Y/0+R/yb8Mf+fIv8W/DH/D5F/C/6Y/4fIvwV/zP9D5L8Ff8z/Q+S/BX/M/0PkvwV/zP9D5L8Nf8z/Q+S/DX/M/0Pk"
        "34Y/5v8h8m/DH/P/EPm34Y/5/wz5d+CP+f8M+Xfgj/n/DPl34I/5/wz578Af8/8Z8t+BP+b/M+T/FP6Y/8+Q/1P4Y/4/"
        "Q/5P4Y/5/wz5fwl/zP9nyP9L+GP+P0P+i/rhQutl9YnWlXx1wGYr/+v/ei7/6z8hhBBCCCGEEEIIIYSQA7DQajeefaKV"
        "EEIIIYQQQgghhBBCyFe48+WrVw8WWk0utBJCCCGEEEIIIYQQQsj3chfULbQ2udBKCCGEEEL+BbpJ+WOrvhrOy4GqVqt5"
        "8WOsrjo3pU4IIYQQQshPiiy0tp2LcqF1cfvWWvU2H89viy93fZmR5L9pMaya6Vn2pKOsYbViW3zpdT5QnuPwgbT31Lr4"
        "3uHyR2FyegfD63Tg7OW7qkl3W35HbPFN0DkLdbRviYHzz+vO35MzuHr5H8+vtDQb4fy92vP/I8jp75JaVbn35a8+ZHjY"
        "0VP6WROV/VRW8XD47g8857Xy731X3tzX2NUqvrdYmQljQQj5X8cbNKpedRjh6ZG6rfp39JWukveHb5C976X7X+yS9P0q"
        "6ytHs5lK3w+z2qnjlHXv8bGqzz5+UoNIzYOFukqq98P8UDeDeXohviXvpxmT1zd+evxQ3g9zlcV52uu71/qo/cu69r91"
        "a9r3e1l7ddy+u6xrv3ioaT8xsvbdL9rf17VP6q4/OKs5vzeqa/9Y135ae/2f6tqvatvXnb9r5+2t4/a6rr0f1V3/ed35"
        "r+vaj4Ka9m5t+7u6+z+uu353V9c+rvU36q7/Q137fd35CSGEEPL/x8xZZOMH+3j8SQj5LrDQ2uEnWgkh5GfBs7rJVwY2"
        "3hePx85FtTDiXx8vnCh9vGvg9ZLgzcHfsL6HUA1l4QV/yLIe5uX1WVG7ql9db8vzn/45rK7/9E2vqo+7RnV9A5wgen7O"
        "+Rf/lrzzquM74x+5qx/m+vj+fHE/t8FZWe/MxS+pua5Dsl8PLf1eXt9Ux3/nVu1fXveruqtr2gfbs5qFrdd1138q1/ct"
        "f2/SrxkYh93tc/+/QQ/+c/whcyF//dur/leuv6sevneg3nMH1f2YDxfV66HO/9uB/kCzWyGEEEIIIYT8w7x6dfL0y4uT"
        "3VrHJ7+++HwS7bLFVrNh2S2rYzZbaS3amelTRr7VzIpN2zIcs9XOn7HSZxptqyg71Y7ZwZx0YxWXz6wv17t0s9k0O/mj"
        "zTI/oZ3Xqp0usfH7xTJel490LBuHT9/8jscNx7LatmUZdqPVNg2n0zGzXXYNo9x512ikW62Gk2+b8mxTtizZalVblc6u"
        "U20sH7KT2dnmxX22mT978VDVo2zLanQsO78ju9VV8dixGu38sex5df/8sm3LbubF+EpOE+f7pXukd91Jy+22k+0Sx/l9"
        "z167eK1v13f78vUr/lnu97t8D6Nltqz8Wg7u3Obq9mqfXZjZsTpt2+y08sNs1tF+m71KzlP10uFIXzmEcdzSeKpezx9q"
        "efnDLfUPt4y/uGNm+kKkt+zv3bH0lciOtd8dHavZMmwTBzp+tRsNxzYPj90wmscHtZynp78A/29O6g=="
    )),
    "gdt-order": ("enter_user_sysret", 64, (
        "eNrtnW1z2lYahv9Kxl/TmQghIdGZfDiSeBG2ELR1Evylg4V8YhsbF5HIm4z/++r1uXGjbrPZ7TQ7e18fWsGjR9IFcx90"
        "zhD8+SR52J78+ML44UWx9aHZ0pvDvtj8fHK5ztJio+da1sCxLMPp2QPTcG2nZxa7ba/vrg9FedB/Kh69X28P6aZ4eLXe"
        "ZmnxxPWfHsUZHB3FMoZ2eZxt27Y+HPZZsdXvm255Vc1hjOMz23bfLh5n6TZNDruyzyiPcZdVnZ9PjMfEKHF7xUPHHg5d"
        "23X6xtAcGNUxpW5+eYGONej3j/exin2KS+mb1Tke1jptT5Kag2GxR/HoZDZUd4FWhBBCCCGEfBd4j+qe96eEEEIIIeQ7"
        "5Gbnr+J68/Xrk2olNjUH62ahla8PIYQQQgghhBBCCCGEdBM6XV9UPVpovWwWWkOX32glhBBCCCGEEEIIIYSQr+dooTVp"
        "F1pTr98stL53p0n91Vd/pFJlVZth4llVPVRBNtFVXU8Wal3VfaWG3q6tW21dLXKp595DWx9Nbpt6pNfLpv4J9aXU50up"
        "m23du0mkTgghhBBCCCGEEEIIIX8XRwutm2ah1Xsp32idJn6z0KpSNcvrhdaZzd/IIoQQQgghhBBCCCGEEHC00Jp+8Rut"
        "flB+gbREq6t8puuFVp179TJrWNTDph5Galf3FPVAST1GXalRUy8Ot2zqI+W19ZXUi5O29VPUc6kH6Ff1FZb1sLqYsu7V"
        "X3Et6xPUtdR9LfUIdUvqxf/ypu6roK0vVdQeX0s9RH0n9QD9Meq1VO3vKfEfwX8p/lI/RT2XeoB+pcbwPxd/byn+Y/if"
        "i7/UI9QtqSvlafGfwH8l/lIPUd9JPUB/jLpSCfxz8Z/CP4F/Lv5T+Cfwz8U/hL8Wf1+Jfwh/Lf5Sj1C3pF78dyn+M/jf"
        "ir/UQ9R3Ug/QH6OuqoTU/r4W/1P478Rf6qeo51IP0K/UGfwz+Ofifwb/DP65+J/BPxP/QIl/BP9c/APkP4J/Lv4B8h/B"
        "3xD/APmfw98Q/wD5n8PfEP8A+Y/hb4l/gPzH8LfEP0D+Y/hb8Ef+F/B34Y/8L+Dvwh/5l3od6tp/hPwvxV/qvhoh/1LP"
        "pR6gX6mfxN8bif8I+Ze6lrqvR8i/1C2pFyM18v+z+HsyvuoR8i/1ndQD9MeoKy+CP/L/C/wj+CP/v8A/gj/yfw7/pfiP"
        "kf9z+Mv4qsfI/zn8ZXxWY+T/DfxlfNVj5P8N/M/Ff4z8v4H/SvzHyP9b+K/Ef4z8v4W/jK/oV+od/BP4I//v4J/AH/l/"
        "B38Zn+tBu/ZfwV/GVz1B/lfw1+I/Qf5X8L8V/wnyfwH/W/GfIP8X8JfxFf1KreG/E/8J8r+Gv4yveoL8r+G/gz/yfwn/"
        "DP7I/yX8M/gj/5fwz8V/ivwn8M/Ff4r8J/CX8RX9Sm3gb4j/FPnfwF/GVz1F/jfwl/FZTZH/FP4yvuop8p/C3xL/KfKf"
        "wt+FP/J/BX8X/sj/Ffxd+CP/Wvx9Jf4h8i91LXVfh8i/1C2pFyXk/734+zK+6hD5l/pO6gH6Y9SVL/eXOkT+r8Vf6r4K"
        "kX+p51IP0K/UDfwj+CP/N/CP4I/838Bfxuf6pqX2v4W/jK96hvzfwl/uT9Efo658ub/UM+R/C3+5P1Uz5H8Lfxlf0a/U"
        "Hfzl/lTNkP87+Mv4qmfI/x38V/BH/u/hn8Af+b+HfwJ/5P8e/nJ/qU+R/x385f5UnSL/O/jL+Ip+pR7gL/en6hT5f4C/"
        "jK/6FPl/gL+Mz+oU+f8N/jK+6lPk/zf4y/0p+mPUlZ/BH/nfwz+DP/K/h38Gf+Q/g7/cn9Y3tbV/Bn8ZX/UZ8p/BX8Zn"
        "dYb8H+Av46s+Q/4P8Jf7U/THqCtf7i/1GfL/Af5yf6rOkP8P8JfxFf1KfYS/C3/k/yP8Xfgj/x/hL+NzfdNe++fiH8j4"
        "qiPkX+q7APP/CPmXugow/4+Q/0fxDzD/j5B/qecB5v8R8v8P8Q8w/4+Qf6nrAPP/CPmXuhVg/h8h/5/gj/l/hPx/gj/m"
        "/xHy/wn+mP/PkX8D/pj/z5F/A/6Y/8+R/x78Mf+fI/89+GP+P0f+e/DH/H+O/Jvwx/x/jvyb8Mf8f478m/DH/H+O/Pfh"
        "j/n/HPnvwx/z/znyb8Ef8/8Y+bfgj/l/jPxb8Mf8P0b+bfhj/h8j/zb8Mf+PkX8b/pj/x8j/AP6Y/8fI/wD+mP/HyL8D"
        "f8z/Y+TfgT/m/zHy78Af8/8F8u/CH/P/BfLvwh/z/wXy78If8/8F8j+EP+b/C+R/CH/M/xfI/0v4Y/6/QP5fwh/z/wXy"
        "/xL+mP8vkP9X8Mf8f4H8v4I/5v8L5L+uHy+0XrXfaN3ITweMd/JP/9Ol/NN/QgghhBBCCCGEEEIIIUdgodXpffGNVkII"
        "IYQQQgghhBBCCCF/wDSUn149Wmg1udBKCCGEEEIIIYQQQgghX8s06lpo7XOhlRBCCCGE/A14efPHVkM1XTY3qlptlvUf"
        "Y/WVZ0qdEEIIIYSQ7xRZaB24l81C6+rujbUZbT9c3NU/7vqqJK/+psW0bdOL8klXWdN2xbb+0evqRnmJw0fSH6i0/t3h"
        "5o/CVIyObq+LG+eg2lWdebvmN2LrX4KuWKln+zYYOP+y6/wjOYOv1//y/EpL2wznH3We/y9BTn+fd6rKa9/81YeSADsG"
        "Sn/Roso/lVU/nL79Dc8FdvW77ypYhhq7WvXvFiszZywIIf/rBJNeO6pOEzw9U3ft+I6x0lfy+fAnlJ97xf6X+7z4vCrH"
        "ytlioYrPw7L20nWbeuBIfVHUJ4laRit1nbefh9WhbifL4kJCSz5PS85+ug2L48fyeViprC6KUd+/0c/6X3X1/+x19I9H"
        "Zb963u+tu/pXjx39Z0bZ7/2u/6GrP++6/ui84/zBrKv/U1f/vPP6P3b1bzr7u87vOVW/9bxfd/WHSdf1X3Sd/6arfxZ1"
        "9Pud/fddr/9p1/X7+67+rNPf6Lr+9139h67zE0IIIeT/j4W7Ku8fnOf3n4SQrwILrUN+o5UQQggh/3089fi1N+ojf9Iu"
        "9C2nq2YhcKgu/tMb/Ynm20AIIYQQQgj5i3n9+uTphxcn+1RnJz+++HyS7MvFVrNnObY1NPt2UUv2ZvGUUW31y2LfsQzX"
        "tAfVM1bxTG9g1WW33bE8mFtsbLLmmfQq3Reb/b45rB5t19UJnarW7nSFjV8v11naPNKZbBw/ffsrHvdcyxo4lmU4PXtg"
        "Gu5waJa77HtGs/O+1yu27J5VbZvybF+2LNmy261WZz9sN9aP7dblg2zJc0m5ZfWGVt+ozrO5bisb2ef64cvLdax+9QLu"
        "M2nIqt2KHYoX23X6xsCxzeL5LKte7vIty1J9l94fmret/t/6cNhXexi2aVvVMY9esO313fWhvEJzaA0Hjjm0q8Ns0+Sw"
        "K98c96l9x3CkPziE8bzTeGrfxm/qvPrmTv3NndnvXjGzeB+Kl+zfe8WKd6I81mH/7Fh923BMHOj5m93ruY55fOye0X9+"
        "UMt9evonOatKMw=="
    )),
    "no-swapgs": ("syscall_return_sysret_no_swapgs", 64, (
        "eNrtnV1z2tYWhv9KxrfujIUQSHQmFxuJD4GFII2T4JsOFnjHNjYuIpHrjP/70ed6IZabNGc6zZnzPhe1YGlJeuS+G22Z"
        "wJej6H599Osr45dX6dKnckkvd9t08cvRxSJepQsNx7LatmUZdqPVNg2nZTfMdLX11e3VLi23m0/po4+L9W61TB9eLtbx"
        "Kn3i6ptbsdt7W7GMTivbzrpqW+x22zhdajZNJzuqcjPG/p5brWYrfRyv1qtot8n6jGwbt3He+eXIeIiMDKeRPrRbnY7T"
        "cuym0THbRr5NqZvPD9C22s3m/jpWuk56KE0z38f9Qq+qnazMdiddI310NOqoW08rQgghhBBCfgpGD+qO16eEEEIIIeQn"
        "5HrjzsNi8fXro/xO7MpsL8obrTw/hBBCCCGEEEIIIYQQUo9v171Rde9G60V5o9V3+I5WQgghhBBCCCGEEEII+X72brRG"
        "1Y3WVbdZ3mj96Ayj4q2vbk+tlJUv+lHXyuu+8uKBzut6MFWLvO4q1eluqrpV1dU0kXrSva/qvcFNWQ/0YlbU54+oz6Q+"
        "mVV1ZVb17nUkdUIIIYQQQgghhBBCCPm32LvRuqw+o/VY3tE6jNzyRqtaqVFS3GgdtfgZWYQQQgghhBBCCCGEEAL2brSu"
        "nn1Gq+tlbyDN0O5lMtLFjVaddIvbrH5a98u6H6hN0ZPWPSX1EHWlemVdaTUr6z3Vrepzqac7repj1BOpe+hXxRFmdT8/"
        "mKzeLd7imtUHqGupu1rqAeqW1NMfSVl3lVfVZyqotq+l7qO+kbqH/hD1Qqrw7yrx78F/Jv5SH6OeSN1Dv1J9+J+Jf3cm"
        "/n34n4m/1APULakr1dXiP4D/XPyl7qO+kbqH/hB1pSL4J+I/hH8E/0T8h/CP4J+Ivw9/Lf6uEn8f/lr8pR6gbkk9/e9M"
        "/EfwvxF/qfuob6TuoT9EXeUJKfxdLf5j+G/EX+pj1BOpe+hX6hT+MfwT8T+Ffwz/RPxP4R+Lv6fEP4B/Iv4e8h/APxF/"
        "D/kP4G+Iv4f8T+BviL+H/E/gb4i/h/yH8LfE30P+Q/hb4u8h/yH8Lfgj/1P4O/BH/qfwd+CP/Eu9CHXh30P+Z+IvdVf1"
        "kH+pJ1L30K/UG/Hv9sS/h/xLXUvd1T3kX+qW1NORGvn/Tfy7Mr7qHvIv9Y3UPfSHqKtuAH/k/y38A/gj/2/hH8Af+T+D"
        "/0z8+8j/GfxlfNV95P8M/jI+qz7y/w7+Mr7qPvL/Dv5n4t9H/t/Bfy7+feT/Pfzn4t9H/t/DX8ZX9Cv1Af4R/JH/D/CP"
        "4I/8f4C/jM/FoF34z+Ev46seIP9z+GvxHyD/c/jfiP8A+T+H/434D5D/c/jL+Ip+pRbw34j/APlfwF/GVz1A/hfw38Af"
        "+b+Afwx/5P8C/jH8kf8L+CfiP0T+I/gn4j9E/iP4y/iKfqWW8DfEf4j8L+Ev46seIv9L+Mv4rIbI/wr+Mr7qIfK/gr8l"
        "/kPkfwV/B/7I/yX8Hfgj/5fwd+CP/Gvxd5X4+8i/1LXUXe0j/1K3pJ6WkP+P4u/K+Kp95F/qG6l76A9RV65cX2of+b8S"
        "f6m7ykf+pZ5I3UO/UtfwD+CP/F/DP4A/8n8Nfxmfi4uWwv8G/jK+6hHyfwN/uT5Ff4i6cuX6Uo+Q/zX85fpUjZD/Nfxl"
        "fEW/Urfwl+tTNUL+b+Ev46seIf+38J/DH/m/g38Ef+T/Dv4R/JH/O/jL9aUeI/8b+Mv1qRoj/xv4y/iKfqXu4S/Xp2qM"
        "/N/DX8ZXPUb+7+Ev47MaI/9/wF/GVz1G/v+Av1yfoj9EXbkx/JH/Lfxj+CP/W/jH8Ef+Y/jL9WlxUVv4x/CX8VWfIv8x"
        "/GV8VqfI/w7+Mr7qU+R/B3+5PkV/iLpy5fpSnyL/n+Av16fqFPn/BH8ZX9Gv1Gf4O/BH/j/D34E/8v8Z/jI+FxfthX8i"
        "/p6MrzpA/qW+8TD/D5B/qSsP8/8A+X8Qfw/z/wD5l3riYf4fIP9/ir+H+X+A/Etde5j/B8i/1C0P8/8A+X+EP+b/AfL/"
        "CH/M/wPk/xH+mP9PkH8D/pj/T5B/A/6Y/0+Q/wb8Mf+fIP8N+GP+P0H+G/DH/H+C/Jvwx/x/gvyb8Mf8f4L8m/DH/H+C"
        "/Dfhj/n/BPlvwh/z/wnyb8Ef8/8Q+bfgj/l/iPxb8Mf8P0T+W/DH/D9E/lvwx/w/RP5b8Mf8P0T+2/DH/D9E/tvwx/w/"
        "RP5t+GP+HyL/Nvwx/w+Rfxv+mP9PkX8H/pj/T5F/B/6Y/0+Rfwf+mP9Pkf8O/DH/nyL/Hfhj/j9F/o/hj/n/FPk/hj/m"
        "/1Pk/xj+mP9Pkf8T+GP+P0X+T+CP+f8U+S/q+zdaL6t3tC7lowPWG/mn/6uZ/NN/QgghhBBCCCGEEEIIIXvgRqvdePaO"
        "VkIIIYQQQgghhBBCCCEvcOfLR6/u3Wg1eaOVEEIIIYQQQgghhBBCvpe7oO5Ga5M3WgkhhBBCyL9ANym/bNVXw1l5oarV"
        "clZ8Gaurzk2pE0IIIYQQ8pMiN1rbzkV5o3V++85a9tafzm+LD3c9yUjy77QYVm16mj3pKGtY3bEtPvQ6v1CeYfOB9Htq"
        "VXzucPmlMDm9vcvr9MLZy1dVp91N+RmxxSdB58zVwbolBvY/q9t/T/bg6sVf7l9paRth/73a/f8jyO7vklpVOffltz5k"
        "eFjRU/pZi8q+Kqt4OHz/B57zWvnnvitv5musahWfW6zMhLEghPyv4w0a1ag6jPD0SN1W4zvGSlfJ68M3yF730vUvtkn6"
        "epWNlaPpVKWvh1nt2HHKuvf4WNWnnz6rQaRmwVxdJdXrYb6pm8EsPRDfktfTjNM3N366/VBeD3OV+Xk66rvX+qD/pK7/"
        "t25Nf7+X9avD/u6irn/+UNN/amT93a/67+v6k7rjD85q9u+N6vof6/ontcf/ua5/Wdtft/+unfdbh/26rt+P6o7/vG7/"
        "13X9o6Cm363tv6s7/+O643e3df1xrb9Rd/wf6/p3dfsnhBBCyP8fU2eeXT/Yh9efhJDvAjdaO3xHKyGE/Cx4Vjd54cLG"
        "++rx2Lmoboz414c3TpQ+XDXweknwdu9vWN9DqIZy4wV/yLIeZuXxWVG7ql9db8r9H/85rI7/+G2vqo+7RnV8A+wger7P"
        "2Vc/S9571fad8Y+c1Y8zfXh+vjqfm+CsrHdm4pfUHNc+2beHln4n1zfV9t+7Vf/Jdb+qu7qmP9ic1dzYelN3/MdyfN/y"
        "dxf9mgvjsLt57v836MF/hj9kzuWvfzvVf+H4u+rhey/Ue+6gOh+z4bz6fajz//ZCf6A5rBBCCCGEEEL+YV6/Pnr65dXR"
        "dqXjo19ffTmKttnNVrNh2S2rYzZbaS3amulTRr7UzIpN2zIcs9XOn7HSZxptqyg71YrZxpx0YRmXz6wuV9t0sdk0O/mj"
        "9SLfoZ3XqpUusfD7xSJelY90LAvV0w3Hstq2ZRl2o9U2DafTMbMVbn7XB53bhiFLjXSp1XDyZVOebcqSJUutaqnS2Xaq"
        "hcVDtnM7W7y4zxbzZy8eqnqULVmNjmXnZ2S7vCoeO1ajnT+WNa/un2vYlt1pZsX4SnYT5+ula6Rn3bGbRrvtZP1xnJ/3"
        "7HcXr/Tt6m5X/v6KH4vdbpuvYbTMlpUfy95pWV/dXu2yAzM7Vqdtm51Wvpn1Ktptst+S81T96rClFzZhHHYaT9Xv84c6"
        "L3+4U7/Y+cL/Kn+1sfirk2imfelZ/HsnMf3lZNvabQ+21WwZtvnSwTUajn1wcA2jebhRy3l6+g93/lLu"
    )),
    "sysret32": ("syscall_return_sysretl", 32, (
        "eNrtnd1z4sgVxf+VLb+SKoQQSKRqHxqEMcatFpv1znpeUhgzGn8NXuMZedia/z36QPdnzyjZzaZSSSr3PMwIjq6kA3Ua"
        "3e4D/vVo/XB39OfvvD99V2x9PGxlV0+PxeavR5er3abY6EVBMAyDwAt7g6HvRYOw5xe73V3fXz8V9LD/pXj0fnX3tLkq"
        "Hr5b3e02xRPXv3mUcPjiKIE3GpTHuWvKVk9Pj7tiq9/3o/KqDofxXp55MOgPise7zd1m/bQt67zyGPe7qvLXI++5Fw4P"
        "Rd7z2isR9YonwsFoFA2isO+N/KEXveL9by82DIb9/st9+l8fNCieKK6z71cX8LDKNs0VbPzhqNijeHR0OjL3cWYUCoVC"
        "oVAoFIr/Cpw+mw96f6pQKBQKhUKh+C/EzXZy4erN778/qmZiN/5wdZho1ddHoVAoFAqFQqFQKBQKhUKhUCjaMQ/bgqov"
        "JlovDxOt80gTrQqFQqFQKBQKhUKhUCgUCoVC8fvxYqJ13Uy0bsb9w0Tr++hkXUdfJ1OzMUG1OV+Pg4qfm3g3yyo+m6Vm"
        "VfETY0bjbcMHDW/SXPh8/NDw09ntgbfZalnzF3v4pfDJsuGN3/Djm7XwCoVCoVAoFAqFQqFQKBQKhULxn8KLidar5jda"
        "O5JoPVlPDhOtZmNO83qi9XSgv5GlUCgUCoVCoVAoFAqFQqFQKBTgxUTr5pvfaJ3EZYC0RDZ5l59m9URrlo/radZ5wc8P"
        "/NyabV1T8LER3sEbMz3wJjPLAz8144a/EL44acMv4HPhY+pNfYUlP68upuTHdcS15GfwmfCTTHgLHwhf/Jcf+ImJG35p"
        "bHP8TPg5/Fb4mHoHX4uq9Y+N6J+ifyn6hV/A58LH1BtzjP5z0T9eiv5j9J+LfuEtfCC8MeNM9M/QfyH6hZ/Db4WPqXfw"
        "xqzRn4v+E/Sv0Z+L/hP0r9Gfi/45+jPRPzGif47+TPQLb+ED4Yt/l6L/FP23ol/4OfxW+Jh6B28qh9T6J5noX6B/K/qF"
        "X8DnwsfUG3OG/h36c9F/hv4d+nPRf4b+neiPjei36M9Ff4z/Lfpz0R/jf4t+T/TH+D9Bvyf6Y/yfoN8T/TH+d+gPRH+M"
        "/x36A9Ef43+H/gD9+D9Ff4R+/J+iP0I//he+NnWtf4r/l6Jf+ImZ4n/hc+Fj6o35QfSPp6J/iv+Fz4SfZFP8L3wgfDFS"
        "4/+/iP6xjK/ZFP8LvxU+pt7Bm7FFP/7/Ef0W/fj/R/Rb9OP/c/QvRf8x/j9Hv4yv2TH+P0e/jM/mGP//hH4ZX7Nj/P8T"
        "+s9F/zH+/wn9F6L/GP+/Qf+F6D/G/2/QL+Mr9cb8jP41+vH/z+hfox///4x+GZ/rQbvWf4F+GV+zGf6/QH8m+mf4/wL9"
        "t6J/hv/fov9W9M/w/1v0y/hKvTEr9G9F/wz/r9Av42s2w/8r9G/Rj/8v0b9DP/6/RP8O/fj/Ev256D/B/2v056L/BP+v"
        "0S/jK/XGXKHfE/0n+P8K/TK+Zif4/wr9Mj6bE/y/Qb+Mr9kJ/t+gPxD9J/h/g/4I/fj/Hfoj9OP/d+iP0I//M9E/MaJ/"
        "jv+Fz4SfZHP8L3wgfEHh//eifyLjazbH/8JvhY+pd/BmIveX2Rz/X4t+4Sdmjv+Fz4WPqTfmBv0W/fj/Bv0W/fj/Bv0y"
        "Ptc3LbX+W/TL+Jqd4v9b9Mv9KfUO3kzk/jI7xf936Jf7U3OK/+/QL+Mr9cbco1/uT80p/r9Hv4yv2Sn+v0f/Bfrx/wf0"
        "r9GP/z+gf41+/P8B/XJ/mS3w/xb9cn9qFvh/i34ZX6k35gH9cn9qFvj/Af0yvmYL/P+AfhmfzQL//4J+GV+zBf7/Bf1y"
        "f0q9gzeTHfrx/yP6d+jH/4/o36Ef/+/QL/en9U1trX+HfhlfszP8v0O/jM/mDP8/oV/G1+wM/z+hX+5PqXfwZiL3l9kZ"
        "/v+Ifrk/NWf4/yP6ZXyl3phP6I/Qj/8/oT9CP/7/hH4Zn+ub9lp/LvpjGV8zi/+F38b0/xb/C29i+n+L/59Ff0z/b/G/"
        "8HlM/2/x/2fRH9P/W/wvfBbT/1v8L3wQ0/9b/L9HP/2/xf979NP/W/y/Rz/9f4L/PfTT/yf430M//X+C/3vop/9P8H8P"
        "/fT/Cf7voZ/+P8H/Pvrp/xP876Of/j/B/z766f8T/N9HP/1/gv/76Kf/T/B/gH76f4f/A/TT/zv8H6Cf/t/h/wH66f8d"
        "/h+gn/7f4f8B+un/Hf4fop/+3+H/Ifrp/x3+D9FP/+/wf4h++n+H/0P00/+n+D9CP/1/iv8j9NP/p/g/Qj/9f4r/R+in"
        "/0/x/wj99P8p/u+gn/4/xf8d9NP/p/i/g376/xT/d9FP/5/i/y766f9T/F/zLyda3zWJ1iv56YC7rXz1f7OUr/4rFAqF"
        "QqFQKBQKhUKhUCgUCoXiBZhoDUeHidZyRrdahqpmdOt0ajWjWy1T1TO6ws/ht8LH1Dt4Y1nRymVGOybRalnREn4Bn1tW"
        "tIQ3MYlWy4pWLjPa8JllRUt4Cx9YVrRymdGOSbRaVrSEn8NvLStawjv4epmu1v9sRD+JVsuKlvAL+NyyoiW8iUm0Wla0"
        "nmVFCz6zrGgJb+EDy4rWs6xoxSRaLStaws/ht5YVLeEdvLGsaD3LilZMotWyoiX8Aj63rGgJb2ISrZYVrc9G9JNotaxo"
        "CW/hA8uK1mdZ0YpJtFpWtISfw28tK1rCO3hjWdH6LCtaMYlWy4qW8Av43LKiJbyJSbRaVrQ+y4oWfGZZ0RLewgeWFa09"
        "/ifRalnR2uN/Eq2WFa09/ifRalnR2uN/Eq2WFa09/ifRalnR2uN/Eq2WFa09/ifRalnR2uN/Eq2WFa09/ifRalnR2uN/"
        "Eq2WFa09/ifRmhjR7+F/Eq3CT4yH/0m0Ch9Tb2ISrQmJVg//k2hNSLR6+J9Ea0Ki1cP/JFoTEq0e/ifRmpBo9fA/idaE"
        "RKuH/0m0JiRaPfxPojUh0erhfxKtCYnWHv4n0ZqQaO3hfxKtCYnWHv4n0ZqQaO3hfxKtCYnWHv4n0ZqQaO3hfxKtCYnW"
        "Hv4n0ZqQaO3hfxKtCYnWHv4n0ZqQaO3hfxKtCYlWH/+TaE1ItPr4n0RrQqLVx/8kWhMSrT7+J9GakGj18T+J1oREq4//"
        "V+gn0erj/xX6SbT6+H+FfhKtPv4n0ZqQaPXxP4nWhESrj/9JtCYkWvv4n0RrQqK1j/9JtCYkWvv4n0RrQqK1j/9JtCYk"
        "Wvv4n0RrQqK1j/9JtCYkWvv4n0RrQqK1j/9JtCYkWvv4n0RrQqK1j/9JtCYkWvv4n0Srk/vTOqZS6yfRKvwkC/A/iVbh"
        "jQnwP4lWR6I1wP8kWh2J1gD/k2h1JFoD/E+i1ZFoDfA/iVZHojXA/yRaHYnWAP+TaHUkWgP8T6LVkWgd4H8SrY5E6wD/"
        "k2h1JFoH+J9EqyPROsD/JFodidYB/ifR6ki0DvA/iVZHonWA/0m0OhKtA/xPotWRaB3gfxKtjkTrAP+TaHUkWgf4n0Sr"
        "I9E6xP8kWh2J1iH+J9HqSLQO8T+JVkeidYj/SbQ6Eq1D/E+i1ZFoHeJ/Eq2OROsQ/5NodSRah/ifRKsj0TrE/yRaHYnW"
        "If4n0epItA7xP4lWR6I1xP8kWh2J1hD/k2h1JFpD/E+i1ZFoDfE/iVZHojXE/yRaHYnWEP+TaHUkWkP8T6LVkWgN8T+J"
        "VkeiNcT/JFodidYQ/5NodSRaI/xPojWl/4/wP4nWlP4/wv8kWlP6/wj/k2hN6f8j/E+iNaX/j/A/idaU/j/C/yRaU/r/"
        "CP+TaE3p/yP8T6I1pf+P8D+J1pT+P8L/JFpT+v8R/ifRmtL/j/A/idaU/n+E/0m0pvT/I/xPojWl/x/hfxKtKf3/CP+T"
        "aE3p/0f4n0RrSv8/wv8kWlP6/xH+J9Ga0v+P8D+J1pT+f4T/SbSm9P8d/E+iNaX/7+B/Eq0p/X8H/5NoTen/O/ifRGtK"
        "/9/B/yRaU/r/Dv4n0ZrS/3fwP4nWlP6/g/9JtKb0/x38T6I1pf/v4H8SrSn9fxf/k2hN6f+7+J9Ea0r/38X/JFpT+v8u"
        "/ifRmtL/d/E/idaU/r+L/0m0pvT/XfxPojWl/+/i/5p3pX76/y7+J9Ga0v938T+J1pT+v4v/v060DqPLw0Trxf1PwdX0"
        "7uPb+7qwWyKv+qWTZn42S8snIxM0fyzrMDdbovoG5gFW6mP5Y1r1V2grTNmzeLK46BLm7PDHtEz9ZeMaF+bVvgd4nH/Z"
        "dv6pnGGSrf7h+U0mZaecf9p6/n8L5PQf8lap8tofviNXImbHWP4g2PjlUY8PD0/e/MJz8aD6loyJl/MXv7Ub1B+PdZOo"
        "UCgU/9OIZ71mVD1Z8/Sp/Ab5i7FyYuTz4TdQfu4V+18+5sXnVTlWnqapKT4PS64TRQc+3u8bPv34yczW1ULVdd58HlaH"
        "up0tiwuZB/J5WuLsh9vijn/i5POwknLxthj1JzfZq/puW/1fxi31x9Oy3ryuH6/a6i+eW+rPvLJ+/FX9Q1t93nb99rzl"
        "/PFpW/2+rT5pvf5PbfVXrfVt5x+HVX3wuj5rq5+v267/bdv5b9rqT21L/aS1/kPb679ou/7JY1v9rlW/13b979vqn9rO"
        "r1AoFAqF4v8PaXRR3j+Er+8/FQrF7wITraP+N7/RqlAoFIr/DOJgnP+dG5v4q8eL6LKZGJnfvJ44MV/94UIbT3P744s1"
        "rN8DZ05k4oWFrOB5ebi+YD1s+Oub7eH8nc8nzfV3fpw2/GLsNdc34wTrb8+5/Or/A97EzfGjxR95Vd8vs9evz1ev59ae"
        "H/jRUvTlLdf1EuVvLR30dW9um+O/mTT13Zvjhp+0/SFJuz1vmdj6oe36O3J9v6V/MjpuuTF24+23+v8JTNG/ZCHzQlb/"
        "nupfyG25/rF5/r036tPJrHk9licXzfth3v6rN/oz/SueCoVCoVAoFAqF4t+N778/+vKn744eN9nu6M/f/Xq0fiwnW/1e"
        "EA6Ckd8fFNz60S+e8qqtfkn2w8CL/MGweiYonukNg5qOmh3Lg0XFxtXu8Mzm3eax2Oz3/VH16G5VnTCsuGand2z89XK1"
        "2xweZTvZePn07V953IuCYBgGgRf2BkPfi0Yjv9zlsecddn7s9YqtQS+qtn15ti9bgWwNmq1GzuOo2Vg9lycLy83Lh3Kz"
        "evbyueHX5VbQGwVh9Yo8Xl3Xj6OgN6wey57XD99edhhEvaAkd9dyml21X7FH8apHYd8bDqOyfrerXvfyvdttsvvNh6fD"
        "+1f/t3p6eqz28Ab+IKiu5cUrd3d9f/1UXpg/CkbD0B8NqsPcbdZP2/Jdir40bx1H+juH8F5Xel+a9/MPVb77w5XZH67c"
        "ffWK+cUbUbxk/9wrVrwT5bGeHl8dqz/wQp8DvX63e70o9F8eu+f1Xx80iL58+Rvxhjz/"
    )),
    "linux": ("entry_SYSRETQ_unsafe_stack+0xc", 64, (
        "eNrtnW1vm8gahv9Kla9dyYAB45X2w/gljrOJNiTmzV9WNsbUtRNXxt1pt+p/X7DhuZ22m9Oz6lmlp/cVqYW5YIbh9nTo"
        "CDkfztI3m7OfXxg/vSi33tZb+WK/Kzc/nM1nRVZumJ5tux3b9Dq267ltwzDd6rDN6n61r7TV+Vjuvppt9tmi3F/ONkVW"
        "FqyerMbquoZrn1RjG12nqmfTnDbb73dFudVuW17VXl3NadPVdpFtsnS/rc4xqvPvi8NZH86Md6lR4ZnlbtdzTLdrdQ27"
        "bXfdrlseKN7CxdlGx3S6pm15lmWfHmOXx1i203GcQ2ffzPKsaaWdzQy3PKbcPVNHdPVH649WSwmDxPfuZ63YU4+4OriX"
        "rZan7GrzptNqaeWXP8fzh6rX+LTcqf1/ZDX8cnmLEEIIIYQQQgghhBBCnhP6l1/ODmux1Urr/PFKa7V6elwRvfzjRt0c"
        "V1zvXU9VK6ZK9Sd/6trfwHte4wed3elq6nhRFim10uqrV1qfZmD6ihBCCCGEEEIIIYQQQp4DstK6zBZZvdI6NQbvbzTv"
        "DSGEEEIIeR5MW4M9n08JIYQQQsjz5nSldfnZO62EEEIIIYQQQgghhBDyvdJ7GP5mt/6dtk5WWjOTK62EEEII+QGetNJ/"
        "7UmLEEIIIYQQ8uNwutLa4UorIYSQJ5i6q0zl5ca49xD1k0FVlo9i+0GPy60+bxAhhBBCCCGE/C/ph7nvj3kfni1YaV1a"
        "Vr3SepkprarvwRqrjTFQg2OSsboufyou57VXarMVH/niE/hUfJiLv+31esfmN+PhcHj0gfb94++4ugzgA/HVJ6n2MXwu"
        "PvLFz+AL8bESv4C34dG+P+jX3wO2GV6PW/X15fq1d/QTeF986IuP4FOcr/zcb/rfR//H6H8u/e+j/2P0P5f+99H/Mfqf"
        "S//76P8Y/c+l/330f4z+N97vDRo/HF4315f7uvYTeF986IuP4FPxkRI/hd/Ca/EpvCE+RvtL+PIj1dxfXw/q+383UM39"
        "vxYfKvEhfAKvxSfwa/FRLn4Or8XHaD+D93B9Sk9qfzvoNX58PWy8Fh/AB+LDXHwMn4uPfPEz+EJ8jPYX8DY82vd7Q+Tv"
        "S/63SvIfIn9f8hcfwafiIyV+Cr+F1+JTeEN8jPaX8GoYNNfn3zbj96533vhr8aESH8In8Fp8Ar8WH+Xi5/BafIz2M3gP"
        "16duMf5HGP+JjP9bjP8Rxn8i4/8W43+E8Z/I+L/F+B9h/Ccy/m8x/kcY/+LRvt+7QP4p8sf4v0D+KfLH+L9A/inyx/i/"
        "QP4p8sf4v0D+KfLH+L9A/rnkf6ck/zHyzyV/8SF8Aq/FJ/Br8VEufg6vxcdoP4P3cH3qzpf8L5H/WvK/w/x3ifzXkv8d"
        "5r9L5L+W/O8w/10i/7Xkf4f57xL5i0f7fu9X5L+V/O9yyf9X5L+V/MVH8Kn4SImfwm/htfgU3hAfo/0lvBoWyF9L/lfI"
        "v0D+WvK/Qv4F8teS/xXyL5C/lvyvkH+B/LXkf4X85frUREn+18hfS/7iA/hAfJiLj+Fz8ZEvfgZfiI/R/gLehpf2yY9N"
        "Of59Gf/nSsZ/gPlfvC8+9APM/+JT8ZEKMP+L38LrAPO/eEN8jPaX8Opc/v/gB5j/b2X8iw9VgPlffAKvA8z/4tfiozzA"
        "/C9ei4/RfgbvNf77yn+C/PH8H2D+nyB/PP8HmP8nyB/P/wHm/wnyx/N/gPl/gvzx/B9g/p8gf3k+9UPM/wHyl+dTFWL+"
        "D5C/eB1i/g+Qvzyf5iHm/wD5y/Mp2s/gPVyfCjH/h/Lv/7k8H+oQ87/4QHyYh5j/xefiIz/E/C++EB+j/QW8DY/2/V6E"
        "/OX5NA8x/0fIX55P/aPvV/kf/bjK/+jzMn/xU/gtvBafwhvi41z8El6dp7Uv89e1v+vFjb8WX+bf+BA+gdfiE/i1+DL/"
        "xs/htfgY7WfwHq5PRar2t72k8ePzvPFafAAfiA9z8TF8Lj7yxc/gC/Ex2l/A2/Bo3+9NGz88XzfXl0d+7SfwvvjQFx/B"
        "p+IjJX4Kv4XX4lN4Q3yM9pfw6nwr+Ue55D9D/lvJX3wIn8Br8Qn8WnyUi5/Da/Ex2s/gPVyfirTkP0f+BfLXkv8c+RfI"
        "X0v+c+RfIH8t+c9xfwvcXy33d477W+D+1n6arJb1mzSb95fe4dWZfLTYNm/STB14V3w4/to3bS798bvj+mLv4a2cv9w+"
        "5P/Pb+qcrrS2n3qndZTmXr2SSAghhBBCvi1Te/CWv/GJEEIIIYSQ75nTlVa7Xmmd/jl4zyd9QgghhBBCCCGEEEII+VpO"
        "VloXTr3SmkyGzdu9r4qZelkdl49+620ntqre7k2iUX5zfHv4VSp+1NsOaj+F3zb+pM3EE//a+JJ/Ce99yevRq8YPZ8PP"
        "/Xv46y94QgghhBBCCCGEEEII+bacrrS6zTut5qDLd1oJIYQQQgghhBBCCCHkazldafWalVaLK62EEEIIIYQQQgghhBDy"
        "9TQrrbZnd5/6hViEEEIIIYQQQgghhBDyQ9F7yG+M1qelU0Mdv3xV9V7bY394LD1ZaM240EoIIYQQQgghhBBCCCFPkrT6"
        "w95npScLrcvnvND627Cn1ZApEkIIIYQQQgghhBBCniFYaHXmzXe0vhzs+R2thBBCCCGEfBsS90tvPBBCCCGEkO+f3uv1"
        "6VcHfPzpxdkuy4uzn198OEt31WKrZdodzzTbnW7p0p1VFtmdruu0va57KGmXJR3H6xiW4R0K7KrA7Thu2zrse+W+WW1V"
        "1ZrVSYtqyyg3smW2Kzfbbat72NvMDm1Xx2TNMUts/D6fFVl9AW3Pdu2yNG90LrraW/+OfdMrr97umI7jtC233el0verM"
        "nWnUB+9Ms9xyzGOpJaXtprOGbXuHElucU1V8uAWHDh4Ku83G7F3d5938TVOHYx36vpsfnG10rI5lGO22YziH8vTd4UjD"
        "sQ/3cbdYPT7O9o7HLQ7HWV2763asrlMVrd4cemnbbscuTzCdrmlbnmt3Klmsmmsp3nxa46GlorqDll1lX2T5ffawr/M/"
        "/jXb73eH5AzHcsrqy8NO7vNmdb/af3pBRbbJ0v12d8j7YxM4qvqbOozHpxofm4/BPzpz+bdnnn58nqoh/8dtF5/cOsu1"
        "ylzt/+7WlZFUde13j+oqPy8dCxXVqZtex3Y9t214bcc6qdt0HbP7uFq3rPYvHS92WQ=="
    )),
}


def captured(scenario: str) -> tuple[Snapshot, int, str]:
    """(snapshot, opsize, sysret label) captured in `scenario` (see CAPTURED)."""
    label, opsize, chunks = CAPTURED[scenario]
    doc = json.loads(zlib.decompress(base64.b64decode("".join(chunks))))
    return Snapshot.from_json(doc), opsize, label
