/*
 * The IDT.  64-bit gate format: Intel SDM Vol. 3A, 6.14.1 "64-Bit Mode
 * IDT" (figure 6-8); AMD APM Vol. 2, 8.9.1 (figure 4-24).  All gates are
 * interrupt gates (IF cleared on entry).  #DF, NMI and #MC run on their
 * own IST stacks so a broken RSP cannot take them down with it.
 */
#include "idt.h"

#include <stdint.h>

#include "gdt.h"
#include "log.h"
#include "segments.h"
#include "tss.h"

struct idt_gate {
	uint16_t offset_low;
	uint16_t selector;
	uint8_t ist; /* bits 2:0 */
	uint8_t type_attr; /* P | DPL | 0 | type */
	uint16_t offset_mid;
	uint32_t offset_high;
	uint32_t reserved;
} __attribute__((packed));
_Static_assert(sizeof(struct idt_gate) == 16, "64-bit IDT gate is 16 bytes");

#define GATE_P 0x80
#define GATE_DPL(n) ((n) << 5)
#define GATE_TYPE_INTERRUPT 0xe /* SDM Vol. 3A, table 3-2 */

#define VECTOR_NMI 2
#define VECTOR_DOUBLE_FAULT 8
#define VECTOR_MACHINE_CHECK 18

extern const uint64_t isr_stub_table[EXCEPTION_VECTORS]; /* isr.S */
void int80_entry(void);                                 /* int80_entry.S */

static struct idt_gate idt[IDT_VECTORS] __attribute__((aligned(16)));

static struct idt_gate interrupt_gate(uint64_t handler, int dpl, int ist)
{
	return (struct idt_gate){
		.offset_low = (uint16_t)handler,
		.selector = GDT_KERNEL_CS,
		.ist = (uint8_t)ist,
		.type_attr = GATE_P | GATE_DPL(dpl) | GATE_TYPE_INTERRUPT,
		.offset_mid = (uint16_t)(handler >> 16),
		.offset_high = (uint32_t)(handler >> 32),
	};
}

static int ist_for(int vector)
{
	switch (vector) {
	case VECTOR_DOUBLE_FAULT:
		return IST_DOUBLE_FAULT;
	case VECTOR_NMI:
		return IST_NMI;
	case VECTOR_MACHINE_CHECK:
		return IST_MACHINE_CHECK;
	default:
		return 0; /* RSP0 from ring 3, the current stack in ring 0 */
	}
}

void setup_idt(void)
{
	for (int v = 0; v < EXCEPTION_VECTORS; v++)
		idt[v] = interrupt_gate(isr_stub_table[v], 0, ist_for(v));
	/* DPL 3: ring 3 may use `int $0x80` (SDM Vol. 3A, 6.12.1.1). */
	idt[SYSCALL_INT_VECTOR] = interrupt_gate((uint64_t)(uintptr_t)int80_entry, 3, 0);

	struct descriptor_table_register idtr = { .limit = sizeof(idt) - 1, .base = (uint64_t)(uintptr_t)idt };
	__asm__ volatile("lidt %0" : : "m"(idtr));
	klog("idt loaded: base=%#lx limit=%#x vectors=0-31,0x80 int80_dpl=3 ist: df=%d nmi=%d mc=%d", idtr.base,
	     idtr.limit, IST_DOUBLE_FAULT, IST_NMI, IST_MACHINE_CHECK);
}
