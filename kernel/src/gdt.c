/*
 * The GDT, in the order SYSCALL/SYSRET need (see segments.h).
 * Descriptor format: Intel SDM Vol. 3A, 3.4.5 "Segment Descriptors"
 * (figure 3-8); in 64-bit mode a code segment sets L and clears D (5.2.1
 * "Code-Segment Descriptors in 64-bit Mode"); the TSS descriptor grows to
 * 16 bytes (8.2.3 "TSS Descriptor in 64-bit mode", figure 8-4).
 */
#include "gdt.h"

#include <stddef.h>

#include "log.h"
#include "scenario.h"
#include "tss.h"

struct segment_descriptor {
	uint16_t limit_low;
	uint16_t base_low;
	uint8_t base_mid;
	uint8_t access; /* P | DPL | S | type */
	uint8_t limit_high_flags; /* G | D/B | L | AVL | limit 19:16 */
	uint8_t base_high;
} __attribute__((packed));
_Static_assert(sizeof(struct segment_descriptor) == 8, "segment descriptor is 8 bytes");

struct system_descriptor_64 {
	struct segment_descriptor low;
	uint32_t base_upper;
	uint32_t reserved;
} __attribute__((packed));
_Static_assert(sizeof(struct system_descriptor_64) == 16, "64-bit TSS descriptor is 16 bytes");

/* Access byte (descriptor bits 47:40). */
#define DESC_P 0x80
#define DESC_DPL(n) ((n) << 5)
#define DESC_S 0x10 /* code or data (not system) */
#define DESC_TYPE_CODE_EXEC_READ_ACCESSED 0xb
#define DESC_TYPE_DATA_READ_WRITE_ACCESSED 0x3
#define DESC_TYPE_TSS64_AVAILABLE 0x9 /* SDM Vol. 3A, table 3-2 */
/* Flags nibble (descriptor bits 55:52). */
#define DESC_G 0x8
#define DESC_DB 0x4
#define DESC_L 0x2

/*
 * The accessed bit is preset: the CPU would otherwise write it on the first
 * load, and a read-only GDT would fault.
 */
static struct segment_descriptor flat(uint8_t access, uint8_t flags)
{
	return (struct segment_descriptor){
		.limit_low = 0xffff,
		.access = access,
		.limit_high_flags = (uint8_t)(flags << 4 | 0xf),
	};
}

static struct segment_descriptor code64(int dpl)
{
	return flat(DESC_P | DESC_DPL(dpl) | DESC_S | DESC_TYPE_CODE_EXEC_READ_ACCESSED, DESC_G | DESC_L);
}

static struct segment_descriptor code32(int dpl)
{
	return flat(DESC_P | DESC_DPL(dpl) | DESC_S | DESC_TYPE_CODE_EXEC_READ_ACCESSED, DESC_G | DESC_DB);
}

static struct segment_descriptor data(int dpl)
{
	return flat(DESC_P | DESC_DPL(dpl) | DESC_S | DESC_TYPE_DATA_READ_WRITE_ACCESSED, DESC_G | DESC_DB);
}

static struct system_descriptor_64 tss_descriptor(uint64_t base, uint32_t limit)
{
	return (struct system_descriptor_64){
		.low = {
			.limit_low = (uint16_t)limit,
			.base_low = (uint16_t)base,
			.base_mid = (uint8_t)(base >> 16),
			.access = DESC_P | DESC_DPL(0) | DESC_TYPE_TSS64_AVAILABLE,
			.limit_high_flags = (uint8_t)((limit >> 16) & 0xf),
			.base_high = (uint8_t)(base >> 24),
		},
		.base_upper = (uint32_t)(base >> 32),
	};
}

/* Slots by selector / 8; the TSS descriptor takes two. */
static struct segment_descriptor gdt[GDT_ENTRIES] __attribute__((aligned(16)));
_Static_assert(sizeof(gdt) == 0x40, "GDT limit is 0x3f");
_Static_assert(GDT_TSS + 16 == sizeof(gdt), "TSS descriptor is the last, 16-byte entry");

static void fill_user_descriptors(void)
{
	if (scenario_is(SCENARIO_GDT_ORDER)) {
		/*
		 * MISTAKE (gdt-order): user code before user data, the order
		 * that works for a kernel that only ever uses iretq.  SYSRET
		 * still works (it loads fixed descriptor caches), but selector
		 * 0x2b now names a data segment: the first iretq to user mode
		 * raises #GP(0x28).
		 */
		gdt[GDT_USER_DS / 8] = code64(3);
		gdt[GDT_USER_CS / 8] = data(3);
		return;
	}
	gdt[GDT_USER_DS / 8] = data(3);
	gdt[GDT_USER_CS / 8] = code64(3);
}

void setup_gdt(void)
{
	gdt[GDT_NULL / 8] = (struct segment_descriptor){ 0 };
	gdt[GDT_KERNEL_CS / 8] = code64(0);
	gdt[GDT_KERNEL_DS / 8] = data(0);
	gdt[GDT_USER32_CS / 8] = code32(3);
	fill_user_descriptors();
	struct system_descriptor_64 tss_desc = tss_descriptor(tss_base(), tss_limit());
	__builtin_memcpy(&gdt[GDT_TSS / 8], &tss_desc, sizeof(tss_desc));

	struct descriptor_table_register gdtr = { .limit = sizeof(gdt) - 1, .base = (uint64_t)(uintptr_t)gdt };
	load_gdt(&gdtr, GDT_KERNEL_CS, GDT_KERNEL_DS);
	klog("gdt loaded: base=%#lx limit=%#x kernel_cs=%#x kernel_ss=%#x user_cs=%#x user_ss=%#x user32_cs=%#x tss=%#x",
	     gdtr.base, gdtr.limit, GDT_KERNEL_CS, GDT_KERNEL_DS, USER_CS, USER_DS, USER32_CS, GDT_TSS);
}
