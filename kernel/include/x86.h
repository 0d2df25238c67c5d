/*
 * Architectural constants and the few instructions C cannot express.
 * Names follow the manuals (Intel SDM, AMD APM) so a reader can look them up.
 * Shared by the loader and the kernel; C only (assembly uses segments.h,
 * percpu.h and sysret_path.h, which are assembler-safe).
 */
#ifndef X86_H
#define X86_H

#include <stdint.h>

/* Control registers: Intel SDM Vol. 3A, 2.5 "Control Registers". */
#define CR0_PE (UINT64_C(1) << 0)
#define CR0_WP (UINT64_C(1) << 16)
#define CR0_PG (UINT64_C(1) << 31)
#define CR4_PAE (UINT64_C(1) << 5)
#define CR4_PGE (UINT64_C(1) << 7)
#define CR4_PCIDE (UINT64_C(1) << 17)
#define CR4_LA57 (UINT64_C(1) << 12)
#define CR4_SMEP (UINT64_C(1) << 20)
#define CR4_SMAP (UINT64_C(1) << 21)
#define CR4_PKE (UINT64_C(1) << 22)

/* MSR numbers: Intel SDM Vol. 4, "Model-Specific Registers"; AMD APM Vol. 2, appendix A. */
#define MSR_APIC_BASE 0x0000001bu
#define MSR_EFER 0xc0000080u
#define MSR_STAR 0xc0000081u
#define MSR_LSTAR 0xc0000082u
#define MSR_CSTAR 0xc0000083u
#define MSR_SFMASK 0xc0000084u /* Intel: IA32_FMASK */
#define MSR_FS_BASE 0xc0000100u
#define MSR_GS_BASE 0xc0000101u
#define MSR_KERNEL_GS_BASE 0xc0000102u

/* IA32_EFER: Intel SDM Vol. 3A, 2.2.1 "Extended Feature Enable Register"; AMD APM Vol. 2, 3.1.7. */
#define EFER_SCE (UINT64_C(1) << 0)
#define EFER_LME (UINT64_C(1) << 8)
#define EFER_LMA (UINT64_C(1) << 10)
#define EFER_NXE (UINT64_C(1) << 11)

/* IA32_APIC_BASE: Intel SDM Vol. 3A, 11.4.4 "Local APIC Status and Location". */
#define APIC_BASE_EXTD (UINT64_C(1) << 10) /* x2APIC mode */
#define APIC_BASE_EN (UINT64_C(1) << 11)
#define APIC_BASE_ADDR_MASK UINT64_C(0x000ffffffffff000)

/* RFLAGS: Intel SDM Vol. 1, 3.4.3 "EFLAGS Register"; Vol. 3A, 2.3 "System Flags". */
#define RFLAGS_FIXED (UINT64_C(1) << 1) /* reserved, always 1 */
#define RFLAGS_TF (UINT64_C(1) << 8)
#define RFLAGS_IF (UINT64_C(1) << 9)
#define RFLAGS_DF (UINT64_C(1) << 10)
#define RFLAGS_IOPL_SHIFT 12
#define RFLAGS_IOPL_MASK (UINT64_C(3) << RFLAGS_IOPL_SHIFT)
#define RFLAGS_NT (UINT64_C(1) << 14)
#define RFLAGS_AC (UINT64_C(1) << 18)

/*
 * Paging-structure entries, 4-level paging: Intel SDM Vol. 3A, 4.5
 * "4-Level Paging and 5-Level Paging", tables 4-15 to 4-20; AMD APM Vol. 2,
 * 5.4 "Long-Mode Page Translation".
 */
#define PTE_P (UINT64_C(1) << 0)
#define PTE_RW (UINT64_C(1) << 1)
#define PTE_US (UINT64_C(1) << 2)
#define PTE_PWT (UINT64_C(1) << 3)
#define PTE_PCD (UINT64_C(1) << 4)
#define PTE_A (UINT64_C(1) << 5)
#define PTE_D (UINT64_C(1) << 6)
#define PTE_PS (UINT64_C(1) << 7) /* in a PDE/PDPTE: maps a 2 MiB/1 GiB page */
#define PTE_G (UINT64_C(1) << 8)
#define PTE_NX (UINT64_C(1) << 63) /* XD; needs EFER.NXE */
#define PTE_ADDR_MASK UINT64_C(0x000ffffffffff000)

#define PAGE_SIZE UINT64_C(4096)
#define LARGE_PAGE_SIZE (UINT64_C(2) << 20)
#define PT_ENTRIES 512

/* Bits 47:39, 38:30, 29:21, 20:12 of a linear address index the four levels. */
#define PML4_INDEX(va) (((va) >> 39) & 0x1ff)
#define PDPT_INDEX(va) (((va) >> 30) & 0x1ff)
#define PD_INDEX(va) (((va) >> 21) & 0x1ff)
#define PT_INDEX(va) (((va) >> 12) & 0x1ff)

/* Canonical with 48-bit linear addresses: bits 63:47 all equal (SDM Vol. 1, 3.3.7.1). */
static inline int is_canonical(uint64_t va)
{
	uint64_t top = va >> 47;
	return top == 0 || top == 0x1ffff;
}

static inline void outb(uint16_t port, uint8_t value)
{
	__asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

static inline void outw(uint16_t port, uint16_t value)
{
	__asm__ volatile("outw %0, %1" : : "a"(value), "Nd"(port));
}

static inline void outl(uint16_t port, uint32_t value)
{
	__asm__ volatile("outl %0, %1" : : "a"(value), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t value;
	__asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
	return value;
}

static inline uint64_t rdmsr(uint32_t msr)
{
	uint32_t lo, hi;
	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return ((uint64_t)hi << 32) | lo;
}

static inline void wrmsr(uint32_t msr, uint64_t value)
{
	__asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)value), "d"((uint32_t)(value >> 32)) : "memory");
}

#define DEFINE_CR_ACCESSORS(n)                                                   \
	static inline uint64_t read_cr##n(void)                                  \
	{                                                                        \
		uint64_t value;                                                  \
		__asm__ volatile("mov %%cr" #n ", %0" : "=r"(value));            \
		return value;                                                    \
	}                                                                        \
	static inline void write_cr##n(uint64_t value)                           \
	{                                                                        \
		__asm__ volatile("mov %0, %%cr" #n : : "r"(value) : "memory");   \
	}
DEFINE_CR_ACCESSORS(0)
DEFINE_CR_ACCESSORS(3)
DEFINE_CR_ACCESSORS(4)
#undef DEFINE_CR_ACCESSORS

static inline uint64_t read_cr2(void)
{
	uint64_t value;
	__asm__ volatile("mov %%cr2, %0" : "=r"(value));
	return value;
}

static inline void cpu_halt_forever(void)
{
	for (;;)
		__asm__ volatile("cli; hlt");
}

#endif
