#include "paging.h"

#include "boot.h"
#include "log.h"
#include "page_alloc.h"
#include "qemu_exit.h"
#include "scenario.h"
#include "tss.h"
#include "x86.h"

/* Levels named by the table that holds the entry. */
enum level { LEVEL_PT = 1, LEVEL_PD = 2, LEVEL_PDPT = 3, LEVEL_PML4 = 4 };

static uint64_t pml4_pa;

static bool in_user_window(uint64_t addr)
{
	/* 2 MiB slots that hold a user segment get a 4 KiB page table instead of an identity page. */
	uint64_t slot = addr & ~(LARGE_PAGE_SIZE - 1);
	for (unsigned i = 0; i < boot_info.segment_count; i++) {
		const struct boot_segment *seg = &boot_info.segments[i];
		if (!is_user_address(seg->vaddr))
			continue;
		uint64_t first = seg->vaddr & ~(LARGE_PAGE_SIZE - 1);
		uint64_t last = (seg->vaddr + seg->size - 1) & ~(LARGE_PAGE_SIZE - 1);
		if (slot >= first && slot <= last)
			return true;
	}
	return false;
}

bool identity_mapped(uint64_t pa)
{
	return pa >= IDENTITY_MAP_START && pa < IDENTITY_MAP_END && !in_user_window(pa);
}

void *phys_to_virt(uint64_t pa)
{
	return (void *)(uintptr_t)pa;
}

static void __attribute__((noreturn)) paging_bug(const char *what, uint64_t va)
{
	klog("paging: %s at %#lx", what, va);
	klog("exit: fault");
	qemu_exit(EXIT_CODE_FAULT);
}

/*
 * Flags of an entry that points to a lower table.  Access rights combine
 * across levels (SDM Vol. 3A, 4.6.1 "Determination of Access Rights"):
 * U/S and R/W are ANDed and XD ORed, so upper entries stay permissive
 * (P, RW, and US for user addresses) and the leaf decides.
 */
static uint64_t table_entry_flags(uint64_t va, enum level level)
{
	uint64_t flags = PTE_P | PTE_RW;
	if (!is_user_address(va))
		return flags;
	if (level == LEVEL_PDPT && scenario_is(SCENARIO_USER_PAGE_SUPERVISOR)) {
		/*
		 * MISTAKE (user-page-supervisor): the PDPT entries over user
		 * memory are made with kernel flags, as when one helper
		 * creates intermediate tables without the caller's U/S.
		 * Every user page below becomes supervisor-only.
		 */
		return flags;
	}
	return flags | PTE_US;
}

static uint64_t *next_table(uint64_t *table, unsigned index, uint64_t va, enum level level)
{
	if (!(table[index] & PTE_P))
		table[index] = page_alloc() | table_entry_flags(va, level);
	else if (table[index] & PTE_PS)
		paging_bug("a large page is in the way of a page table", va);
	return phys_to_virt(table[index] & PTE_ADDR_MASK);
}

static uint64_t *page_directory(uint64_t va)
{
	uint64_t *pml4 = phys_to_virt(pml4_pa);
	uint64_t *pdpt = next_table(pml4, PML4_INDEX(va), va, LEVEL_PML4);
	return next_table(pdpt, PDPT_INDEX(va), va, LEVEL_PDPT);
}

static void map_page(uint64_t va, uint64_t pa, uint64_t flags)
{
	uint64_t *pt = next_table(page_directory(va), PD_INDEX(va), va, LEVEL_PD);
	if (pt[PT_INDEX(va)] & PTE_P)
		paging_bug("page mapped twice", va);
	pt[PT_INDEX(va)] = pa | flags;
}

static void map_range(uint64_t va, uint64_t pa, uint64_t size, uint64_t flags)
{
	for (uint64_t off = 0; off < size; off += PAGE_SIZE)
		map_page(va + off, pa + off, flags);
}

static void describe(char out[4], uint64_t flags)
{
	out[0] = 'r';
	out[1] = (flags & PTE_RW) ? 'w' : '-';
	out[2] = (flags & PTE_NX) ? '-' : 'x';
	out[3] = '\0';
}

static void log_mapping(const char *what, uint64_t va, uint64_t pa, uint64_t size, uint64_t flags)
{
	char rwx[4];
	describe(rwx, flags);
	klog("map %s: va=%#lx pa=%#lx pages=%lu %s %s", what, va, pa, size / PAGE_SIZE, rwx,
	     (flags & PTE_US) ? "user" : "supervisor");
}

/* Leaf flags from the ELF segment's permissions: W^X by construction. */
static uint64_t segment_leaf_flags(const struct boot_segment *seg)
{
	uint64_t flags = PTE_P;
	if (seg->flags & SEGMENT_W)
		flags |= PTE_RW;
	if (!(seg->flags & SEGMENT_X))
		flags |= PTE_NX;
	if (!is_user_address(seg->vaddr))
		return flags;
	if ((seg->flags & SEGMENT_X) && scenario_is(SCENARIO_IRET_SUPERVISOR_PAGE)) {
		/*
		 * MISTAKE (iret-supervisor-page): the user code's leaf entries
		 * are made without U/S, as for kernel text.  The iretq to it
		 * succeeds (it checks segments, not pages); the first fetch in
		 * ring 3 raises #PF.
		 */
		return flags;
	}
	flags |= PTE_US;
	if (scenario_is(SCENARIO_USER_PAGE_NX)) {
		/*
		 * MISTAKE (user-page-nx): "user memory is data" -- NX on
		 * every user page, the code segment included.
		 */
		flags |= PTE_NX;
	}
	return flags;
}

static void map_segments(void)
{
	for (unsigned i = 0; i < boot_info.segment_count; i++) {
		const struct boot_segment *seg = &boot_info.segments[i];
		uint64_t flags = segment_leaf_flags(seg);
		map_range(seg->vaddr, seg->paddr, seg->size, flags);
		log_mapping(is_user_address(seg->vaddr) ? "user segment" : "kernel segment", seg->vaddr, seg->paddr,
			    seg->size, flags);
	}
}

/* Take a page back out of the tables being built (CR3 is loaded afterwards: no TLB entry to flush). */
static void unmap_page(uint64_t va)
{
	uint64_t *pt = next_table(page_directory(va), PD_INDEX(va), va, LEVEL_PD);
	if (!(pt[PT_INDEX(va)] & PTE_P))
		paging_bug("unmapping a page that is not mapped", va);
	pt[PT_INDEX(va)] = 0;
}

/* The kernel stack's guard page is part of .bss: map the segment, then punch the hole. */
static void unmap_stack_guard(void)
{
	uint64_t va = kernel_stack_guard();
	unmap_page(va);
	klog("unmap kernel stack guard: va=%#lx pages=1 (below the kernel stack)", va);
}

static void map_user_stack(void)
{
	uint64_t flags = PTE_P | PTE_RW | PTE_US | PTE_NX;
	uint64_t bottom = USER_STACK_TOP - USER_STACK_PAGES * PAGE_SIZE;
	for (uint64_t va = bottom; va < USER_STACK_TOP; va += PAGE_SIZE)
		map_page(va, page_alloc(), flags);
	klog("map user stack: va=%#lx..%#lx pages=%d rw- user", bottom, USER_STACK_TOP, USER_STACK_PAGES);
}

/* 2 MiB pages (PDE with PS, SDM Vol. 3A, table 4-18) over low physical memory. */
static void map_identity(void)
{
	uint64_t flags = PTE_P | PTE_RW | PTE_NX | PTE_PS;
	unsigned large_pages = 0;
	for (uint64_t pa = IDENTITY_MAP_START; pa < IDENTITY_MAP_END; pa += LARGE_PAGE_SIZE) {
		if (in_user_window(pa))
			continue;
		uint64_t *pd = page_directory(pa);
		if (pd[PD_INDEX(pa)] & PTE_P)
			paging_bug("identity map overlaps a mapping", pa);
		pd[PD_INDEX(pa)] = pa | flags;
		large_pages++;
	}
	klog("map identity: pa=%#lx..%#lx 2MiB-pages=%u rw- supervisor (user window left out)",
	     IDENTITY_MAP_START, IDENTITY_MAP_END, large_pages);
}

/*
 * The PML4 and the page beside it (CR3 with bit 12 flipped, where Linux's
 * page-table isolation keeps its second top-level table) as an 8 KiB-aligned
 * pair, the second page left zero: this kernel does not isolate page tables,
 * and a debugger that looks there finds provably no table, wherever the
 * firmware put the pool.
 */
static uint64_t alloc_pml4(void)
{
	uint64_t first = page_alloc();
	for (;;) {
		uint64_t second = page_alloc();
		if (!(first & PAGE_SIZE) && second == first + PAGE_SIZE)
			return first;
		first = second;
	}
}

void setup_paging(void)
{
	page_alloc_init(&boot_info.page_pool);
	pml4_pa = alloc_pml4();
	map_segments();
	unmap_stack_guard();
	map_user_stack();
	map_identity();

	/* XD in an entry is a reserved bit until EFER.NXE is set (SDM Vol. 3A, 4.1.1). */
	wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_NXE);
	/* CR0.WP: read-only pages bind the kernel too (SDM Vol. 3A, 4.6.1). */
	write_cr0(read_cr0() | CR0_WP);
	write_cr3(pml4_pa);
	klog("paging on: cr3=%#lx pool-pages-used=%lu cr0=%#lx cr4=%#lx efer=%#lx", read_cr3(), page_alloc_used(),
	     read_cr0(), read_cr4(), rdmsr(MSR_EFER));
}
