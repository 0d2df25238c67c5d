/*
 * The page tables the kernel starts on: the first 4 GiB identity-mapped
 * with 2 MiB pages (the loader, the boot info and the page pool live
 * there), and each higher-half kernel segment at its linked address with
 * 4 KiB pages.  Everything is supervisor read/write and executable; the
 * kernel replaces these tables with strict ones at once.
 * Entry formats: Intel SDM Vol. 3A, 4.5, tables 4-15 (PML4E), 4-17 (PDPTE),
 * 4-18 (2 MiB PDE), 4-19 (PDE), 4-20 (PTE).
 */
#include <efi.h>

#include "loader.h"
#include "x86.h"

#define IDENTITY_GIB 4
#define HIGHER_HALF UINT64_C(0xffff800000000000)

static uint64_t *new_table(void)
{
	return loader_alloc_pages(1, EfiLoaderData);
}

/* The table an entry points to, created on first use. */
static uint64_t *next_table(uint64_t *table, unsigned index)
{
	if (!(table[index] & PTE_P))
		table[index] = (uint64_t)(uintptr_t)new_table() | PTE_P | PTE_RW;
	return (uint64_t *)(uintptr_t)(table[index] & PTE_ADDR_MASK);
}

static void map_4k(uint64_t *pml4, uint64_t va, uint64_t pa)
{
	uint64_t *pdpt = next_table(pml4, PML4_INDEX(va));
	uint64_t *pd = next_table(pdpt, PDPT_INDEX(va));
	uint64_t *pt = next_table(pd, PD_INDEX(va));
	pt[PT_INDEX(va)] = pa | PTE_P | PTE_RW;
}

static void identity_map_low_memory(uint64_t *pml4)
{
	uint64_t *pdpt = next_table(pml4, 0);
	for (unsigned gib = 0; gib < IDENTITY_GIB; gib++) {
		uint64_t *pd = next_table(pdpt, gib);
		for (unsigned i = 0; i < PT_ENTRIES; i++)
			pd[i] = ((uint64_t)gib << 30 | (uint64_t)i << 21) | PTE_P | PTE_RW | PTE_PS;
	}
}

uint64_t build_bootstrap_page_tables(const struct boot_info *bi)
{
	uint64_t *pml4 = new_table();
	identity_map_low_memory(pml4);
	for (unsigned i = 0; i < bi->segment_count; i++) {
		const struct boot_segment *seg = &bi->segments[i];
		if (seg->vaddr < HIGHER_HALF)
			continue; /* user segments: only the kernel's own tables map them */
		for (uint64_t off = 0; off < seg->size; off += PAGE_SIZE)
			map_4k(pml4, seg->vaddr + off, seg->paddr + off);
	}
	return (uint64_t)(uintptr_t)pml4;
}
