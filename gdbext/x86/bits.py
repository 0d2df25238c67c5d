"""Names for the bits of control registers, EFER, RFLAGS and the SYSCALL MSRs.

Sources:
  CR0, CR4      Intel SDM Vol. 3A, 2.5 "Control Registers"
  EFER          Intel SDM Vol. 3A, 2.2.1 "Extended Feature Enable Register";
                AMD APM Vol. 2, 3.1.7 "Extended Feature Enable Register (EFER)"
  RFLAGS        Intel SDM Vol. 1, 3.4.3 "EFLAGS Register"
  STAR, SFMASK  Intel SDM Vol. 3A, 5.8.8 "Fast System Calls in 64-Bit Mode";
                Intel SDM Vol. 2B SYSCALL/SYSRET pseudo-code; AMD APM Vol. 3 SYSRET
  modes         Intel SDM Vol. 3A, 2.2 "Modes of Operation" and 9.8.5 (IA-32e mode)
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from . import DecodeError

FlagTable = Sequence[tuple[int, str]]

# --- EFER (MSR 0xC0000080) ---------------------------------------------------
EFER_SCE = 1 << 0     # SYSCALL/SYSRET enable
EFER_LME = 1 << 8     # long mode enable (software sets it)
EFER_LMA = 1 << 10    # long mode active (the CPU sets it when CR0.PG=1 with LME=1)
EFER_NXE = 1 << 11    # execute-disable bit in page tables honoured
EFER_SVME = 1 << 12   # AMD: secure virtual machine enable
EFER_LMSLE = 1 << 13  # AMD: long mode segment limit enable
EFER_FFXSR = 1 << 14  # AMD: fast FXSAVE/FXRSTOR
EFER_TCE = 1 << 15    # AMD: translation cache extension

EFER_FLAGS: FlagTable = (
    (EFER_SCE, "SCE"), (EFER_LME, "LME"), (EFER_LMA, "LMA"), (EFER_NXE, "NXE"),
    (EFER_SVME, "SVME"), (EFER_LMSLE, "LMSLE"), (EFER_FFXSR, "FFXSR"), (EFER_TCE, "TCE"),
)

# --- CR0 -------------------------------------------------------------------------
CR0_PE = 1 << 0   # protection enable
CR0_MP = 1 << 1   # monitor coprocessor
CR0_EM = 1 << 2   # x87 emulation
CR0_TS = 1 << 3   # task switched
CR0_ET = 1 << 4   # extension type (hard-wired 1)
CR0_NE = 1 << 5   # numeric error
CR0_WP = 1 << 16  # write protect: supervisor writes honour R/W=0 pages
CR0_AM = 1 << 18  # alignment mask
CR0_NW = 1 << 29  # not write-through
CR0_CD = 1 << 30  # cache disable
CR0_PG = 1 << 31  # paging

CR0_FLAGS: FlagTable = (
    (CR0_PE, "PE"), (CR0_MP, "MP"), (CR0_EM, "EM"), (CR0_TS, "TS"), (CR0_ET, "ET"),
    (CR0_NE, "NE"), (CR0_WP, "WP"), (CR0_AM, "AM"), (CR0_NW, "NW"), (CR0_CD, "CD"),
    (CR0_PG, "PG"),
)

# --- CR4 -------------------------------------------------------------------------
CR4_VME = 1 << 0
CR4_PVI = 1 << 1
CR4_TSD = 1 << 2
CR4_DE = 1 << 3
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_MCE = 1 << 6
CR4_PGE = 1 << 7
CR4_PCE = 1 << 8
CR4_OSFXSR = 1 << 9
CR4_OSXMMEXCPT = 1 << 10
CR4_UMIP = 1 << 11
CR4_LA57 = 1 << 12        # 5-level paging
CR4_VMXE = 1 << 13
CR4_SMXE = 1 << 14
CR4_FSGSBASE = 1 << 16    # RDFSBASE & co. usable
CR4_PCIDE = 1 << 17
CR4_OSXSAVE = 1 << 18
CR4_KL = 1 << 19
CR4_SMEP = 1 << 20
CR4_SMAP = 1 << 21
CR4_PKE = 1 << 22         # protection keys for user pages
CR4_CET = 1 << 23
CR4_PKS = 1 << 24         # protection keys for supervisor pages

CR4_FLAGS: FlagTable = (
    (CR4_VME, "VME"), (CR4_PVI, "PVI"), (CR4_TSD, "TSD"), (CR4_DE, "DE"), (CR4_PSE, "PSE"),
    (CR4_PAE, "PAE"), (CR4_MCE, "MCE"), (CR4_PGE, "PGE"), (CR4_PCE, "PCE"),
    (CR4_OSFXSR, "OSFXSR"), (CR4_OSXMMEXCPT, "OSXMMEXCPT"), (CR4_UMIP, "UMIP"),
    (CR4_LA57, "LA57"), (CR4_VMXE, "VMXE"), (CR4_SMXE, "SMXE"), (CR4_FSGSBASE, "FSGSBASE"),
    (CR4_PCIDE, "PCIDE"), (CR4_OSXSAVE, "OSXSAVE"), (CR4_KL, "KL"), (CR4_SMEP, "SMEP"),
    (CR4_SMAP, "SMAP"), (CR4_PKE, "PKE"), (CR4_CET, "CET"), (CR4_PKS, "PKS"),
)

# --- RFLAGS ----------------------------------------------------------------------
RFLAGS_CF = 1 << 0
RFLAGS_FIXED1 = 1 << 1    # reserved, always reads 1: never named
RFLAGS_PF = 1 << 2
RFLAGS_AF = 1 << 4
RFLAGS_ZF = 1 << 6
RFLAGS_SF = 1 << 7
RFLAGS_TF = 1 << 8
RFLAGS_IF = 1 << 9
RFLAGS_DF = 1 << 10
RFLAGS_OF = 1 << 11
RFLAGS_IOPL = 3 << 12     # a two-bit field, not a flag: see rflags_iopl()
RFLAGS_NT = 1 << 14
RFLAGS_RF = 1 << 16
RFLAGS_VM = 1 << 17
RFLAGS_AC = 1 << 18
RFLAGS_VIF = 1 << 19
RFLAGS_VIP = 1 << 20
RFLAGS_ID = 1 << 21

RFLAGS_FLAGS: FlagTable = (
    (RFLAGS_CF, "CF"), (RFLAGS_PF, "PF"), (RFLAGS_AF, "AF"), (RFLAGS_ZF, "ZF"),
    (RFLAGS_SF, "SF"), (RFLAGS_TF, "TF"), (RFLAGS_IF, "IF"), (RFLAGS_DF, "DF"),
    (RFLAGS_OF, "OF"), (RFLAGS_NT, "NT"), (RFLAGS_RF, "RF"), (RFLAGS_VM, "VM"),
    (RFLAGS_AC, "AC"), (RFLAGS_VIF, "VIF"), (RFLAGS_VIP, "VIP"), (RFLAGS_ID, "ID"),
)


def flag_names(value: int, table: Iterable[tuple[int, str]]) -> list[str]:
    """Names of the bits of `table` set in `value`, in table order (low bit first).

    Bits the table does not name are left out; unknown_bits() returns them.
    """
    return [name for mask, name in table if value & mask == mask]


def unknown_bits(value: int, table: Iterable[tuple[int, str]]) -> int:
    """The bits set in `value` that `table` has no name for."""
    known = 0
    for mask, _ in table:
        known |= mask
    return value & ~known


def efer_names(v: int) -> list[str]:
    return flag_names(v, EFER_FLAGS)


def cr0_names(v: int) -> list[str]:
    return flag_names(v, CR0_FLAGS)


def cr4_names(v: int) -> list[str]:
    return flag_names(v, CR4_FLAGS)


def rflags_names(v: int) -> list[str]:
    """Single-bit RFLAGS flags set in `v` (IOPL is a field: see rflags_iopl)."""
    return flag_names(v, RFLAGS_FLAGS)


def rflags_iopl(v: int) -> int:
    """The I/O privilege level, RFLAGS bits 13:12."""
    return (v >> 12) & 3


def sfmask_names(v: int) -> list[str]:
    """The RFLAGS flags SYSCALL clears: each bit set in SFMASK clears that RFLAGS bit.

    SDM Vol. 3A 5.8.8: RFLAGS <- RFLAGS AND NOT(IA32_FMASK[31:0]); the upper half is reserved.
    IOPL is reported as "IOPL" if either of its bits is set in the mask.
    """
    names = rflags_names(v & 0xFFFFFFFF)
    if v & RFLAGS_IOPL:
        names.append("IOPL")
    return names


# --- STAR (MSR 0xC0000081) --------------------------------------------------------
@dataclass(frozen=True)
class Star:
    """IA32_STAR split into the selectors SYSCALL and SYSRET load.

    SDM Vol. 3A 5.8.8 and the SYSCALL/SYSRET pseudo-code (SDM Vol. 2B):
      SYSCALL: CS = STAR[47:32] AND 0xFFFC (RPL forced to 0); SS = STAR[47:32] + 8.
      SYSRET to 64-bit: CS = (STAR[63:48] + 16) OR 3; SS = (STAR[63:48] + 8) OR 3.
      SYSRET to compatibility mode: CS = STAR[63:48] OR 3.
    So the GDT must hold, from STAR[63:48]: a 32-bit user code, user data, then 64-bit user code.
    syscall_ss follows the SDM (STAR[47:32] + 8, RPL bits kept); QEMU's TCG masks that
    selector's RPL to 0, so the two differ only when STAR[33:32] is non-zero.
    AMD's SYSRET pseudo-code (APM Vol. 3) loads SS.sel = STAR[63:48] + 8 without forcing
    the RPL, so `sysret_ss_amd` keeps the raw sum and `sysret_rpl` the RPL bits as written.
    """

    raw: int
    eip32: int          # STAR[31:0]: legacy-mode SYSCALL target EIP
    syscall_cs: int
    syscall_ss: int
    sysret_base: int    # STAR[63:48] as written
    sysret_cs64: int
    sysret_ss: int
    sysret_cs32: int
    syscall_base: int   # STAR[47:32] as written
    sysret_ss_amd: int  # STAR[63:48] + 8, RPL not forced (AMD)

    @property
    def syscall_rpl(self) -> int:
        return self.syscall_base & 3

    @property
    def sysret_rpl(self) -> int:
        return self.sysret_base & 3


def decode_star(v: int) -> Star:
    if not 0 <= v < 1 << 64:
        raise DecodeError(f"STAR value {v:#x} is not a 64-bit unsigned integer")
    call = (v >> 32) & 0xFFFF
    ret = (v >> 48) & 0xFFFF
    return Star(
        raw=v,
        eip32=v & 0xFFFFFFFF,
        syscall_base=call,
        syscall_cs=call & 0xFFFC,
        syscall_ss=(call + 8) & 0xFFFF,
        sysret_base=ret,
        sysret_cs64=((ret + 16) | 3) & 0xFFFF,
        sysret_ss=((ret + 8) | 3) & 0xFFFF,
        sysret_cs32=ret | 3,
        sysret_ss_amd=(ret + 8) & 0xFFFF,
    )


# --- addresses and modes ------------------------------------------------------------
MASK64 = (1 << 64) - 1


def va_bits(cr4: int) -> int:
    """The linear-address width: 57 with 5-level paging (CR4.LA57), else 48 (SDM Vol. 3A 4.1.1)."""
    return 57 if cr4 & CR4_LA57 else 48


def is_canonical(va: int, bits: int = 48) -> bool:
    """True if bits 63..bits-1 of the 64-bit address `va` are all equal.

    SDM Vol. 1 3.3.7.1 "Canonical Addressing": 48 with 4-level paging, 57 with LA57.
    Values outside 0..2**64-1 are not addresses at all and give False.
    """
    if not 1 <= bits <= 64:
        raise DecodeError(f"canonical width {bits} is not between 1 and 64")
    if not 0 <= va < 1 << 64:
        return False
    top = va >> (bits - 1)
    return top == 0 or top == (1 << (65 - bits)) - 1


SEG_ATTR_L = 1 << 21    # CS.L in QEMU's flag word (descriptor bit 53)


def cpu_mode(cr0: int, efer: int, cs_attrs: int, rflags: int = 0) -> str:
    """The operating mode, from the registers that select it.

    SDM Vol. 3A 2.2: PE=0 is real mode; with EFER.LMA=1 (IA-32e) CS.L picks 64-bit
    or compatibility mode and RFLAGS.VM is ignored; otherwise VM=1 is virtual-8086.
    `cs_attrs` is QEMU's segment flag word (SegmentCache.attrs / Descriptor.attrs).
    """
    if not cr0 & CR0_PE:
        return "real"
    if efer & EFER_LMA:
        return "64-bit" if cs_attrs & SEG_ATTR_L else "compatibility"
    if rflags & RFLAGS_VM:
        return "virtual-8086"
    return "protected"
