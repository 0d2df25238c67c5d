/*
 * Leaving the firmware: GetMemoryMap, then ExitBootServices with its map
 * key.  The key goes stale if anything allocates in between, so on failure
 * the map is read again and the exit retried once (UEFI spec 2.10, 7.4
 * "EFI_BOOT_SERVICES.ExitBootServices()").
 */
#include <efi.h>
#include <efilib.h>

#include "loader.h"
#include "x86.h"

#define SPARE_DESCRIPTORS 16

struct memory_map {
	unsigned char *buffer;
	UINTN capacity;
	UINTN size;
	UINTN key;
	UINTN descriptor_size;
	UINT32 descriptor_version;
};

static EFI_STATUS read_memory_map(struct memory_map *map)
{
	map->size = map->capacity;
	return uefi_call_wrapper(BS->GetMemoryMap, 5, &map->size, (EFI_MEMORY_DESCRIPTOR *)map->buffer, &map->key,
				 &map->descriptor_size, &map->descriptor_version);
}

static void allocate_map_buffer(struct memory_map *map)
{
	map->capacity = 0;
	map->buffer = NULL;
	EFI_STATUS st = read_memory_map(map);
	if (st != EFI_BUFFER_TOO_SMALL)
		loader_fail("GetMemoryMap(size query) returned %#lx", (uint64_t)st);
	/* Allocating the buffer itself can split a region: leave room. */
	map->capacity = map->size + SPARE_DESCRIPTORS * map->descriptor_size;
	st = uefi_call_wrapper(BS->AllocatePool, 3, EfiLoaderData, map->capacity, (void **)&map->buffer);
	if (EFI_ERROR(st))
		loader_fail("AllocatePool for the memory map failed: %#lx", (uint64_t)st);
}

static void summarize(const struct memory_map *map, struct boot_info *bi)
{
	UINTN count = map->size / map->descriptor_size;
	bi->uefi_map_entries = (uint32_t)count;
	for (UINTN i = 0; i < count; i++) {
		const EFI_MEMORY_DESCRIPTOR *d = (const void *)(map->buffer + i * map->descriptor_size);
		if (d->Type != EfiConventionalMemory)
			continue;
		bi->free_pages += d->NumberOfPages;
		if (bi->free_range_count < BOOT_MAX_RANGES) {
			bi->free_ranges[bi->free_range_count].base = d->PhysicalStart;
			bi->free_ranges[bi->free_range_count].pages = d->NumberOfPages;
			bi->free_range_count++;
		}
	}
}

void leave_boot_services(EFI_HANDLE image, struct boot_info *bi)
{
	struct memory_map map;
	allocate_map_buffer(&map);

	EFI_STATUS st = EFI_SUCCESS;
	for (int attempt = 1; attempt <= 2; attempt++) {
		st = read_memory_map(&map);
		if (EFI_ERROR(st))
			loader_fail("GetMemoryMap failed: %#lx", (uint64_t)st);
		/* No boot services (not even Print) between here and the exit. */
		st = uefi_call_wrapper(BS->ExitBootServices, 2, image, map.key);
		if (!EFI_ERROR(st))
			break;
		loader_log("ExitBootServices attempt %d failed (%#lx): map key went stale, retrying", attempt,
			   (uint64_t)st);
	}
	if (EFI_ERROR(st))
		loader_fail("ExitBootServices failed twice: %#lx", (uint64_t)st);

	summarize(&map, bi);
	loader_log("exited boot services: %u map entries, %lu MiB conventional memory in %u ranges",
		   bi->uefi_map_entries, bi->free_pages / 256, bi->free_range_count);
}
