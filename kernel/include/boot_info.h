/*
 * What the UEFI loader hands the kernel.  Addresses are physical unless the
 * name says vaddr; the kernel copies the struct before it builds its own
 * page tables, so nothing here has to stay mapped afterwards.
 */
#ifndef BOOT_INFO_H
#define BOOT_INFO_H

#include <stdint.h>

#define BOOT_INFO_MAGIC UINT64_C(0x6f666e4974786562) /* "bextInfo" */
#define BOOT_MAX_SEGMENTS 8
#define BOOT_MAX_RANGES 64

/* ELF program-header flags (System V gABI), kept in boot_segment.flags. */
#define SEGMENT_X 0x1u
#define SEGMENT_W 0x2u
#define SEGMENT_R 0x4u

/* One PT_LOAD segment of kernel.elf, copied to `paddr` (page aligned). */
struct boot_segment {
	uint64_t vaddr;
	uint64_t paddr;
	uint64_t size; /* bytes in memory, rounded up to whole pages */
	uint32_t flags; /* SEGMENT_R | SEGMENT_W | SEGMENT_X */
	uint32_t reserved;
};

/* A run of physical pages. */
struct boot_range {
	uint64_t base;
	uint64_t pages;
};

struct boot_info {
	uint64_t magic;
	uint64_t kernel_entry;
	uint32_t segment_count;
	uint32_t free_range_count; /* ranges beyond BOOT_MAX_RANGES are dropped */
	struct boot_segment segments[BOOT_MAX_SEGMENTS];
	/* Conventional memory in the final UEFI memory map, after ExitBootServices. */
	struct boot_range free_ranges[BOOT_MAX_RANGES];
	uint64_t free_pages;
	uint32_t uefi_map_entries;
	uint32_t reserved;
	/* Zeroed pages the kernel may use for page tables and stacks. */
	struct boot_range page_pool;
	uint64_t bootstrap_cr3;
};

#endif
