#ifndef GDT_H
#define GDT_H

#include <stdint.h>

#include "segments.h"

/* Operand of LGDT/LIDT: Intel SDM Vol. 3A, 2.4.1 "GDTR" and 2.4.3 "IDTR", 64-bit mode. */
struct descriptor_table_register {
	uint16_t limit;
	uint64_t base;
} __attribute__((packed));
_Static_assert(sizeof(struct descriptor_table_register) == 10, "pseudo-descriptor is 10 bytes");

/* Build the GDT (with the descriptor of the TSS), load it and reload every segment register. */
void setup_gdt(void);

/* gdt_load.S */
void load_gdt(const struct descriptor_table_register *gdtr, uint16_t code_selector, uint16_t data_selector);

#endif
