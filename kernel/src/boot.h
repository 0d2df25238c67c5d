/* The loader's boot info, copied into the kernel before the page tables change. */
#ifndef BOOT_H
#define BOOT_H

#include "boot_info.h"

extern struct boot_info boot_info;

void boot_info_take(const struct boot_info *from_loader);

#endif
