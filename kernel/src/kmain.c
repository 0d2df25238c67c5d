/*
 * The kernel, top to bottom: each step on the way to ring 3 is one call.
 * The loader has left us on its bootstrap page tables with interrupts off.
 */
#include "boot.h"
#include "cpu.h"
#include "gdt.h"
#include "idt.h"
#include "interrupts.h"
#include "log.h"
#include "paging.h"
#include "percpu.h"
#include "scenario.h"
#include "syscall.h"
#include "tss.h"
#include "user_mode.h"

void __attribute__((noreturn)) kmain(const struct boot_info *from_loader);

void kmain(const struct boot_info *from_loader)
{
	log_init();
	scenario_init();            /* first line: "scenario: NAME" */
	log_cpu_identity();
	boot_info_take(from_loader);
	setup_gdt();
	setup_tss();
	setup_idt();
	setup_paging();
	mask_external_interrupts();
	setup_percpu();
	setup_syscall();
	start_user_program();
}
