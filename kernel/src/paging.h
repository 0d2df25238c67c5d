/*
 * The kernel's final 4-level page tables (Intel SDM Vol. 3A, 4.5):
 *   - kernel segments at their higher-half addresses, supervisor, W^X;
 *   - a supervisor RW NX identity map of physical [2 MiB, 4 GiB) with
 *     2 MiB pages, except the 2 MiB slot(s) holding the user program;
 *   - the user program at 0x400000 (code RX, data RW NX), user pages;
 *   - a user stack on its own user RW NX pages below USER_STACK_TOP.
 * The first 2 MiB stay unmapped so NULL and small addresses fault.
 */
#ifndef PAGING_H
#define PAGING_H

#include <stdbool.h>
#include <stdint.h>

#define IDENTITY_MAP_START UINT64_C(0x200000)
#define IDENTITY_MAP_END UINT64_C(0x100000000)
#define USER_SPACE_END UINT64_C(0x800000000000) /* first non-canonical address */
#define USER_STACK_TOP UINT64_C(0x7ffffff00000)
#define USER_STACK_PAGES 4

void setup_paging(void);
/* Whether the final tables map physical `pa` at the same virtual address. */
bool identity_mapped(uint64_t pa);
void *phys_to_virt(uint64_t pa);

static inline bool is_user_address(uint64_t va)
{
	return va < USER_SPACE_END;
}

#endif
