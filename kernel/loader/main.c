/*
 * The UEFI loader: BOOTX64.EFI.  It carries kernel.elf inside itself,
 * copies the kernel's segments into pages it allocates, leaves the firmware
 * and jumps to the kernel at its linked higher-half address, so a debugger
 * that loads kernel.elf sees every symbol where the CPU runs it.
 */
#include <efi.h>
#include <efilib.h>

#include "boot_info.h"
#include "fmt.h"
#include "loader.h"
#include "string.h"
#include "uart.h"
#include "x86.h"

#define PAGE_POOL_PAGES 1024 /* 4 MiB for the kernel's page tables and user stack */
#define ISA_DEBUG_EXIT_PORT 0xf4
#define EXIT_FAULT 0x11

static void emit_uart(char c, void *ctx)
{
	(void)ctx;
	uart_write(&c, 1);
}

static void vlog(const char *fmt, va_list ap)
{
	uart_write("[loader] ", 9);
	fmt_vformat(emit_uart, NULL, fmt, ap);
	uart_write("\n", 1);
}

void loader_log(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(fmt, ap);
	va_end(ap);
}

void loader_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	uart_write("[loader] error: ", 16);
	fmt_vformat(emit_uart, NULL, fmt, ap);
	uart_write("\n", 1);
	va_end(ap);
	loader_log("exit: fault");
	outl(ISA_DEBUG_EXIT_PORT, EXIT_FAULT);
	cpu_halt_forever();
	__builtin_unreachable();
}

void *loader_alloc_pages(UINTN pages, EFI_MEMORY_TYPE type)
{
	EFI_PHYSICAL_ADDRESS addr = UINT64_C(0xffffffff); /* highest address allowed */
	EFI_STATUS st = uefi_call_wrapper(BS->AllocatePages, 4, AllocateMaxAddress, type, pages, &addr);
	if (EFI_ERROR(st))
		loader_fail("AllocatePages(%lu pages) failed: status %#lx", (uint64_t)pages, (uint64_t)st);
	memset((void *)(uintptr_t)addr, 0, pages * PAGE_SIZE);
	return (void *)(uintptr_t)addr;
}

static void log_cpu_state(void)
{
	loader_log("firmware cpu state: cr0=%#lx cr3=%#lx cr4=%#lx efer=%#lx", read_cr0(), read_cr3(), read_cr4(),
		   rdmsr(MSR_EFER));
	/* Our tables are 4-level; leaving LA57 needs a trip out of long mode. */
	if (read_cr4() & CR4_LA57)
		loader_fail("firmware runs with 5-level paging (CR4.LA57); the bootstrap tables are 4-level");
}

static void __attribute__((noreturn)) jump_to_kernel(uint64_t cr3, uint64_t entry, struct boot_info *bi)
{
	/*
	 * The loader's code, stack and `bi` are below 4 GiB, which the new
	 * tables identity-map, so the instructions after the CR3 write still run.
	 */
	__asm__ volatile("cli\n\t"
			 "mov %0, %%cr3\n\t"
			 "mov %2, %%rdi\n\t"
			 "jmp *%1"
			 :
			 : "r"(cr3), "r"(entry), "r"(bi)
			 : "rdi", "memory");
	__builtin_unreachable();
}

/* gnu-efi's crt0 relocates the image and calls this with the System V ABI (no EFIAPI). */
EFI_STATUS efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *system_table);

EFI_STATUS efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *system_table)
{
	InitializeLib(image, system_table);
	uart_init();
	loader_log("start: UEFI revision %u.%u", system_table->Hdr.Revision >> 16,
		   system_table->Hdr.Revision & 0xffff);
	log_cpu_state();

	struct boot_info *bi = loader_alloc_pages(1, EfiLoaderData);
	_Static_assert(sizeof(struct boot_info) <= PAGE_SIZE, "boot info fits one page");
	bi->magic = BOOT_INFO_MAGIC;
	bi->kernel_entry = load_kernel_segments(bi);

	bi->page_pool.base = (uint64_t)(uintptr_t)loader_alloc_pages(PAGE_POOL_PAGES, EfiLoaderData);
	bi->page_pool.pages = PAGE_POOL_PAGES;
	loader_log("page pool: base=%#lx pages=%lu", bi->page_pool.base, bi->page_pool.pages);

	bi->bootstrap_cr3 = build_bootstrap_page_tables(bi);
	loader_log("bootstrap page tables: cr3=%#lx", bi->bootstrap_cr3);

	leave_boot_services(image, bi);
	loader_log("jumping to kernel entry %#lx with boot info at %p", bi->kernel_entry, (void *)bi);
	jump_to_kernel(bi->bootstrap_cr3, bi->kernel_entry, bi);
}
