/*
 * A bump allocator: the kernel never frees a page.  It skips pool pages
 * the final identity map leaves out (the first 2 MiB and the 2 MiB slot
 * that holds the user program), because page tables must stay reachable.
 */
#include "page_alloc.h"

#include "log.h"
#include "paging.h"
#include "qemu_exit.h"
#include "string.h"
#include "x86.h"

static uint64_t next_page;
static uint64_t pool_end;
static uint64_t pages_used;

void page_alloc_init(const struct boot_range *pool)
{
	next_page = pool->base;
	pool_end = pool->base + pool->pages * PAGE_SIZE;
}

uint64_t page_alloc(void)
{
	while (next_page < pool_end && !identity_mapped(next_page))
		next_page += PAGE_SIZE;
	if (next_page >= pool_end) {
		klog("page pool exhausted after %lu pages", pages_used);
		klog("exit: fault");
		qemu_exit(EXIT_CODE_FAULT);
	}
	uint64_t pa = next_page;
	next_page += PAGE_SIZE;
	pages_used++;
	memset(phys_to_virt(pa), 0, PAGE_SIZE);
	return pa;
}

uint64_t page_alloc_used(void)
{
	return pages_used;
}
