/*
 * The 64-bit TSS: Intel SDM Vol. 3A, 8.7 "Task Management in 64-bit Mode"
 * (figure 8-11); AMD APM Vol. 2, 12.2.5 "64-Bit Task State Segment".
 * In long mode it holds only stack pointers: RSP0 for entries from ring 3,
 * IST1-7 for gates that name one, and the I/O map base.
 */
#include "tss.h"

#include <stddef.h>

#include "log.h"
#include "scenario.h"
#include "segments.h"
#include "string.h"
#include "x86.h"

struct tss64 {
	uint32_t reserved0;
	uint64_t rsp[3];
	uint64_t reserved1;
	uint64_t ist[7]; /* ist[0] is IST1 */
	uint64_t reserved2;
	uint16_t reserved3;
	uint16_t iomap_base;
} __attribute__((packed));
_Static_assert(sizeof(struct tss64) == 0x68, "64-bit TSS is 0x68 bytes");
_Static_assert(offsetof(struct tss64, rsp) == 0x04, "RSP0 at offset 4");
_Static_assert(offsetof(struct tss64, ist) == 0x24, "IST1 at offset 0x24");
_Static_assert(offsetof(struct tss64, iomap_base) == 0x66, "I/O map base at offset 0x66");

#define KERNEL_STACK_SIZE 16384
#define IST_STACK_SIZE 4096

static struct tss64 tss __attribute__((aligned(16)));
/*
 * The kernel stack sits on a page of its own above a guard page that
 * paging leaves unmapped: an overflow faults (#PF, then #DF on IST1)
 * instead of overwriting whatever .bss holds below it.
 */
static struct {
	uint8_t guard[PAGE_SIZE];
	uint8_t stack[KERNEL_STACK_SIZE];
} kernel_stack_area __attribute__((aligned(PAGE_SIZE)));
static uint8_t double_fault_stack[IST_STACK_SIZE] __attribute__((aligned(16)));
static uint8_t nmi_stack[IST_STACK_SIZE] __attribute__((aligned(16)));
static uint8_t machine_check_stack[IST_STACK_SIZE] __attribute__((aligned(16)));

#define STACK_TOP(stack) ((uint64_t)(uintptr_t)((stack) + sizeof(stack)))

uint64_t tss_base(void)
{
	return (uint64_t)(uintptr_t)&tss;
}

uint32_t tss_limit(void)
{
	return sizeof(tss) - 1;
}

uint64_t kernel_stack_top(void)
{
	return STACK_TOP(kernel_stack_area.stack);
}

uint64_t kernel_stack_guard(void)
{
	return (uint64_t)(uintptr_t)kernel_stack_area.guard;
}

/* What the TSS holds for a stack: its top, since pushes go down from there. */
static uint64_t tss_stack_pointer(const uint8_t *stack, uint64_t size)
{
	if (scenario_is(SCENARIO_TSS_RSP0_UNMAPPED)) {
		/*
		 * MISTAKE (tss-rsp0-unmapped): the size, already in bytes, is
		 * multiplied by PAGE_SIZE as if it counted pages.  RSP0 lands
		 * 64 MiB past the kernel stack and IST1-3 16 MiB past theirs,
		 * where nothing is mapped: the first interrupt from ring 3
		 * faults pushing its frame, so does the #PF, and so does the
		 * #DF on IST1: a triple fault.
		 */
		return (uint64_t)(uintptr_t)stack + size * PAGE_SIZE;
	}
	return (uint64_t)(uintptr_t)stack + size;
}

void setup_tss(void)
{
	memset(&tss, 0, sizeof(tss));
	tss.rsp[0] = tss_stack_pointer(kernel_stack_area.stack, sizeof(kernel_stack_area.stack));
	tss.ist[IST_DOUBLE_FAULT - 1] = tss_stack_pointer(double_fault_stack, sizeof(double_fault_stack));
	tss.ist[IST_NMI - 1] = tss_stack_pointer(nmi_stack, sizeof(nmi_stack));
	tss.ist[IST_MACHINE_CHECK - 1] = tss_stack_pointer(machine_check_stack, sizeof(machine_check_stack));
	/* A base at or past the limit means "no I/O permission bitmap" (SDM Vol. 1, 19.5.2). */
	tss.iomap_base = sizeof(tss);
	__asm__ volatile("ltr %w0" : : "r"((uint16_t)GDT_TSS));
	klog("tss loaded: selector=%#x base=%p limit=%#lx rsp0=%#lx ist1=%#lx ist2=%#lx ist3=%#lx iomap_base=%#x",
	     GDT_TSS, (void *)&tss, sizeof(tss) - 1, tss.rsp[0], tss.ist[0], tss.ist[1], tss.ist[2], tss.iomap_base);
}
