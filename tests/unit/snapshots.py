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
"""
from __future__ import annotations

from dataclasses import dataclass, field

from fakemem import FakeMemory, PageTables

from gdbext.snapshot import (
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
