/*
 * Every exception ends here: one line a test can parse,
 *   FAULT vector=13 (#GP) error=0x0028 cr2=0x0 rip=... cs=0x08 rflags=... rsp=... ss=0x10 cpl=0
 * where cpl is the privilege level the CPU was at when it faulted (the
 * RPL of the saved CS), then the site if it is a labelled instruction,
 * the registers, and the exit.  It touches no per-CPU data: GS may be wrong.
 */
#include "fault.h"

#include "log.h"
#include "qemu_exit.h"
#include "x86.h"

/* Mnemonics: Intel SDM Vol. 3A, table 6-1 "Protected-Mode Exceptions and Interrupts"; AMD APM Vol. 2, table 8-1. */
static const char *const exception_names[32] = {
	"#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO", "#TS", "#NP", "#SS", "#GP", "#PF", "reserved",
	"#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "reserved", "reserved", "reserved", "reserved", "reserved", "reserved",
	"#HV", "#VC", "#SX", "reserved",
};

/* Labelled instructions where a mistake is expected to surface. */
extern const char enter_user_sysret[], enter_user_iretq[], syscall_return_sysret[], syscall_return_sysret_no_swapgs[],
	syscall_return_sysret_kernel_rsp[], syscall_return_sysretl[], syscall_return_sysret_unchecked[],
	int80_return_iretq[], syscall_entry[];

static const struct {
	const char *address;
	const char *name;
} known_sites[] = {
	{ enter_user_sysret, "enter_user_sysret" },
	{ enter_user_iretq, "enter_user_iretq" },
	{ syscall_return_sysret, "syscall_return_sysret" },
	{ syscall_return_sysret_no_swapgs, "syscall_return_sysret_no_swapgs" },
	{ syscall_return_sysret_kernel_rsp, "syscall_return_sysret_kernel_rsp" },
	{ syscall_return_sysretl, "syscall_return_sysretl" },
	{ syscall_return_sysret_unchecked, "syscall_return_sysret_unchecked" },
	{ int80_return_iretq, "int80_return_iretq" },
};

static const char *site_name(const struct interrupt_frame *f)
{
	for (unsigned i = 0; i < sizeof(known_sites) / sizeof(known_sites[0]); i++)
		if (f->rip == (uint64_t)(uintptr_t)known_sites[i].address)
			return known_sites[i].name;
	if ((f->cs & 3) == 3)
		return "user program";
	if (f->rip >= (uint64_t)(uintptr_t)syscall_entry && f->rip < (uint64_t)(uintptr_t)syscall_entry + 16)
		return "syscall_entry";
	return "kernel";
}

void fault_report(const struct interrupt_frame *f)
{
	static int depth;
	if (depth++ > 0) {
		klog("FAULT while reporting a fault: vector=%lu", f->vector);
		klog("exit: fault");
		qemu_exit(EXIT_CODE_FAULT);
	}
	const char *name = f->vector < 32 ? exception_names[f->vector] : "interrupt";
	uint64_t cr2 = read_cr2();
	klog("FAULT vector=%lu (%s) error=%#06lx cr2=%#lx rip=%#lx cs=%#04lx rflags=%#lx rsp=%#lx ss=%#04lx cpl=%lu",
	     f->vector, name, f->error, cr2, f->rip, f->cs, f->rflags, f->rsp, f->ss, f->cs & 3);
	klog("fault site: %s", site_name(f));
	klog("fault regs: rax=%#lx rbx=%#lx rcx=%#lx rdx=%#lx rsi=%#lx rdi=%#lx rbp=%#lx r8=%#lx r9=%#lx r10=%#lx "
	     "r11=%#lx r12=%#lx r13=%#lx r14=%#lx r15=%#lx",
	     f->rax, f->rbx, f->rcx, f->rdx, f->rsi, f->rdi, f->rbp, f->r8, f->r9, f->r10, f->r11, f->r12, f->r13,
	     f->r14, f->r15);
	klog("exit: fault");
	qemu_exit(EXIT_CODE_FAULT);
}
