"""Facts about QEMU's TCG x86 CPU that a debugger must know better than to
trust blindly."""
from __future__ import annotations

# The MSRs QEMU's TCG rdmsr implements (target/i386/tcg/sysemu/misc_helper.c,
# helper_rdmsr, QEMU 7.2 and 10.0).  Any other number reads as 0 where a real
# CPU raises #GP(0): 0 from another MSR may mean "no such MSR".
_TCG_RDMSR_RANGES = (
    (0x1B, 0x1B),               # IA32_APIC_BASE
    (0x34, 0x34),               # MSR_SMI_COUNT
    (0x8B, 0x8B),               # IA32_BIOS_SIGN_ID (microcode revision)
    (0xFE, 0xFE),               # IA32_MTRRCAP
    (0x174, 0x176),             # IA32_SYSENTER_CS/ESP/EIP
    (0x179, 0x17B),             # IA32_MCG_CAP/STATUS/CTL
    (0x198, 0x198),             # IA32_PERF_STATUS (a fixed value)
    (0x1A0, 0x1A0),             # IA32_MISC_ENABLE
    (0x200, 0x20F),             # IA32_MTRR_PHYSBASE0..PHYSMASK7
    (0x250, 0x250), (0x258, 0x259), (0x268, 0x26F),  # fixed-range MTRRs
    (0x277, 0x277),             # IA32_PAT
    (0x2FF, 0x2FF),             # IA32_MTRR_DEF_TYPE
    (0x400, 0x47F),             # machine-check banks (as many as MCG_CAP says)
    (0x6E1, 0x6E1),             # IA32_PKRS
    (0xD90, 0xD90),             # IA32_BNDCFGS
    (0xC0000080, 0xC0000084),   # EFER, STAR, LSTAR, CSTAR, SFMASK
    (0xC0000100, 0xC0000103),   # FS_BASE, GS_BASE, KERNEL_GS_BASE, TSC_AUX
    (0xC0010117, 0xC0010117),   # VM_HSAVE_PA (AMD SVM)
)


def tcg_implements_rdmsr(number: int) -> bool:
    return any(lo <= number <= hi for lo, hi in _TCG_RDMSR_RANGES)
