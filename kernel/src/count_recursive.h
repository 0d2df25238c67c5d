#ifndef COUNT_RECURSIVE_H
#define COUNT_RECURSIVE_H

#include <stdint.h>

/* Deep enough to need 2^20 stack frames: far past any kernel stack here. */
#define COUNT_RECURSIVE_DEPTH (UINT64_C(1) << 20)

/* Returns n, by n nested calls (scenario double-fault only). */
uint64_t count_recursive(uint64_t n);

#endif
