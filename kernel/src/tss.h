#ifndef TSS_H
#define TSS_H

#include <stdint.h>

/* IST slots (1-based, as the IDT gate's IST field counts them). */
#define IST_DOUBLE_FAULT 1
#define IST_NMI 2
#define IST_MACHINE_CHECK 3

/* Fill the TSS (RSP0, IST1-3, no I/O bitmap) and load TR; the GDT must hold its descriptor. */
void setup_tss(void);
uint64_t tss_base(void);
uint32_t tss_limit(void);
/* The ring-0 stack every entry from ring 3 lands on. */
uint64_t kernel_stack_top(void);
/* The page below the kernel stack, which must stay unmapped. */
uint64_t kernel_stack_guard(void);

#endif
