/*
 * The kernel polls and has no interrupt handlers, yet ring 3 runs with
 * IF=1, so every external source must be masked: the two 8259 PICs (OCW1
 * with all mask bits, 8259A data sheet) and the local APIC's timer, LINT0
 * and error entries (mask bit 16, Intel SDM Vol. 3A, 11.5.1 "Local Vector
 * Table").  LINT1 (NMI) stays as the firmware left it.
 */
#include "interrupts.h"

#include "log.h"
#include "paging.h"
#include "x86.h"

#define PIC1_DATA 0x21
#define PIC2_DATA 0xa1
#define PIC_MASK_ALL 0xff

#define LAPIC_LVT_TIMER 0x320
#define LAPIC_LVT_LINT0 0x350
#define LAPIC_LVT_ERROR 0x370
#define LVT_MASKED (1u << 16)
#define X2APIC_MSR_BASE 0x800 /* MSR = 0x800 + MMIO offset / 16 (SDM Vol. 3A, 11.12.1.2) */

static const uint32_t masked_lvts[] = { LAPIC_LVT_TIMER, LAPIC_LVT_LINT0, LAPIC_LVT_ERROR };

static void mask_lvt(uint64_t apic_base, uint32_t reg)
{
	if (apic_base & APIC_BASE_EXTD) {
		uint32_t msr = X2APIC_MSR_BASE + reg / 16;
		wrmsr(msr, rdmsr(msr) | LVT_MASKED);
		return;
	}
	volatile uint32_t *lapic = phys_to_virt(apic_base & APIC_BASE_ADDR_MASK);
	lapic[reg / 4] |= LVT_MASKED;
}

void mask_external_interrupts(void)
{
	outb(PIC1_DATA, PIC_MASK_ALL);
	outb(PIC2_DATA, PIC_MASK_ALL);
	uint64_t apic_base = rdmsr(MSR_APIC_BASE);
	if (apic_base & APIC_BASE_EN)
		for (unsigned i = 0; i < sizeof(masked_lvts) / sizeof(masked_lvts[0]); i++)
			mask_lvt(apic_base, masked_lvts[i]);
	klog("external interrupts masked: pic=all lapic=%#lx (%s)", apic_base & APIC_BASE_ADDR_MASK,
	     !(apic_base & APIC_BASE_EN) ? "disabled" : (apic_base & APIC_BASE_EXTD) ? "x2apic" : "xapic");
}
