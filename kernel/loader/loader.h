/* The UEFI loader's parts, in the order efi_main calls them. */
#ifndef LOADER_H
#define LOADER_H

#include <efi.h>

#include "boot_info.h"

void loader_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void __attribute__((noreturn)) loader_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Zeroed pages below 4 GiB (the bootstrap identity map covers them). */
void *loader_alloc_pages(UINTN pages, EFI_MEMORY_TYPE type);

/* Copy every PT_LOAD segment of the embedded kernel.elf; returns its entry. */
uint64_t load_kernel_segments(struct boot_info *bi);

/* Identity map of the first 4 GiB plus the kernel's higher-half segments. */
uint64_t build_bootstrap_page_tables(const struct boot_info *bi);

/* ExitBootServices (retried once) and a summary of the final memory map. */
void leave_boot_services(EFI_HANDLE image, struct boot_info *bi);

#endif
