/* Copy the embedded kernel.elf's PT_LOAD segments into freshly allocated pages. */
#include <efi.h>
#include <efilib.h>

#include "elf64.h"
#include "loader.h"
#include "string.h"
#include "x86.h"

extern const unsigned char kernel_image_start[];
extern const unsigned char kernel_image_end[];

static const struct elf64_ehdr *checked_header(void)
{
	const struct elf64_ehdr *eh = (const void *)kernel_image_start;
	uint64_t image_size = (uint64_t)(kernel_image_end - kernel_image_start);

	if (image_size < sizeof(*eh) || memcmp(eh->e_ident, ELFMAG, 4) != 0)
		loader_fail("embedded kernel is not an ELF file");
	if (eh->e_ident[4] != ELFCLASS64 || eh->e_ident[5] != ELFDATA2LSB || eh->e_type != ET_EXEC ||
	    eh->e_machine != EM_X86_64)
		loader_fail("embedded kernel is not an x86-64 ELF executable");
	if (eh->e_phentsize != sizeof(struct elf64_phdr) ||
	    eh->e_phoff + (uint64_t)eh->e_phnum * sizeof(struct elf64_phdr) > image_size)
		loader_fail("embedded kernel has a malformed program header table");
	return eh;
}

static void load_segment(const struct elf64_phdr *ph, struct boot_segment *seg)
{
	uint64_t image_size = (uint64_t)(kernel_image_end - kernel_image_start);

	/* The kernel maps segments page by page with their own permissions (W^X). */
	if (ph->p_vaddr % PAGE_SIZE != 0)
		loader_fail("segment at %#lx is not page aligned", ph->p_vaddr);
	if (ph->p_filesz > ph->p_memsz || ph->p_offset + ph->p_filesz > image_size)
		loader_fail("segment at %#lx lies outside the image", ph->p_vaddr);

	uint64_t pages = (ph->p_memsz + PAGE_SIZE - 1) / PAGE_SIZE;
	EFI_MEMORY_TYPE type = (ph->p_flags & SEGMENT_X) ? EfiLoaderCode : EfiLoaderData;
	unsigned char *dst = loader_alloc_pages(pages, type); /* zeroed: that is .bss */
	memcpy(dst, kernel_image_start + ph->p_offset, ph->p_filesz);

	seg->vaddr = ph->p_vaddr;
	seg->paddr = (uint64_t)(uintptr_t)dst;
	seg->size = pages * PAGE_SIZE;
	seg->flags = ph->p_flags & (SEGMENT_R | SEGMENT_W | SEGMENT_X);
	loader_log("segment: vaddr=%#lx paddr=%#lx size=%#lx flags=%c%c%c", seg->vaddr, seg->paddr, seg->size,
		   (seg->flags & SEGMENT_R) ? 'r' : '-', (seg->flags & SEGMENT_W) ? 'w' : '-',
		   (seg->flags & SEGMENT_X) ? 'x' : '-');
}

uint64_t load_kernel_segments(struct boot_info *bi)
{
	const struct elf64_ehdr *eh = checked_header();
	const struct elf64_phdr *ph = (const void *)(kernel_image_start + eh->e_phoff);

	loader_log("kernel image: %lu bytes, %u program headers, entry %#lx",
		   (uint64_t)(kernel_image_end - kernel_image_start), eh->e_phnum, eh->e_entry);
	for (unsigned i = 0; i < eh->e_phnum; i++) {
		if (ph[i].p_type != PT_LOAD || ph[i].p_memsz == 0)
			continue;
		if (bi->segment_count == BOOT_MAX_SEGMENTS)
			loader_fail("kernel has more than %d loadable segments", BOOT_MAX_SEGMENTS);
		load_segment(&ph[i], &bi->segments[bi->segment_count++]);
	}
	return eh->e_entry;
}
