/* Physical pages for page tables and the user stack, from the loader's pool. */
#ifndef PAGE_ALLOC_H
#define PAGE_ALLOC_H

#include <stdint.h>

#include "boot_info.h"

void page_alloc_init(const struct boot_range *pool);
/* A zeroed page's physical address; it is reachable through the identity map. */
uint64_t page_alloc(void);
uint64_t page_alloc_used(void);

#endif
