#include "boot.h"

#include "log.h"
#include "qemu_exit.h"
#include "string.h"

struct boot_info boot_info;

void boot_info_take(const struct boot_info *from_loader)
{
	/* The loader's copy sits in identity-mapped memory the final tables may not cover. */
	if (from_loader->magic != BOOT_INFO_MAGIC) {
		klog("boot info at %p has a bad magic %#lx", (const void *)from_loader, from_loader->magic);
		klog("exit: fault");
		qemu_exit(EXIT_CODE_FAULT);
	}
	memcpy(&boot_info, from_loader, sizeof(boot_info));
	klog("boot info: at %p, %u segments, %lu MiB free in %u ranges, page pool %#lx (%lu pages)",
	     (const void *)from_loader, boot_info.segment_count, boot_info.free_pages / 256,
	     boot_info.free_range_count, boot_info.page_pool.base, boot_info.page_pool.pages);
}
