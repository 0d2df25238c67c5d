/*
 * The four system calls, the choice of the way back to ring 3, and the end
 * of the run: the exit status says whether the program finished cleanly,
 * faulted, or ran on although this boot made a mistake.
 */
#include <stdbool.h>

#include "count_recursive.h"
#include "log.h"
#include "paging.h"
#include "qemu_exit.h"
#include "scenario.h"
#include "segments.h"
#include "syscall.h"
#include "sysret_path.h"
#include "user_abi.h"
#include "x86.h"

#define SYSCALL_LOG_LIMIT 32 /* then quiet, so `spin` does not flood the log */
#define WRITE_MAX 256

enum via { VIA_SYSCALL, VIA_INT80 };

static uint64_t calls;
static uint64_t counter;
static bool returned_once;

static struct {
	bool seen;
	uint64_t cs, ss, rflags;
} report;

static const char *syscall_name(uint64_t nr)
{
	switch (nr) {
	case SYS_WRITE:
		return "write";
	case SYS_GETCOUNTER:
		return "getcounter";
	case SYS_EXIT:
		return "exit";
	case SYS_REPORT:
		return "report";
	default:
		return "unknown";
	}
}

static void log_call(const struct syscall_frame *f, enum via via)
{
	calls++;
	if (calls <= SYSCALL_LOG_LIMIT)
		klog("syscall #%lu nr=%lu (%s) via=%s args=%#lx,%#lx,%#lx", calls, f->rax, syscall_name(f->rax),
		     via == VIA_SYSCALL ? "syscall" : "int80", f->rdi, f->rsi, f->rdx);
	else if (calls == SYSCALL_LOG_LIMIT + 1)
		klog("syscall log quiet after %d calls", SYSCALL_LOG_LIMIT);
}

static uint64_t sys_write(uint64_t buf, uint64_t len)
{
	/* The pointer comes from ring 3: only user memory, one bounded line. */
	if (len > WRITE_MAX || !is_user_address(buf) || !is_user_address(buf + len))
		return (uint64_t)-1;
	log_user_text((const char *)(uintptr_t)buf, len);
	return len;
}

static uint64_t sys_report(uint64_t cs, uint64_t ss, uint64_t rflags)
{
	report.seen = true;
	report.cs = cs;
	report.ss = ss;
	report.rflags = rflags;
	klog("user report: cs=%#lx ss=%#lx rflags=%#lx iopl=%lu if=%lu", cs, ss, rflags,
	     (rflags & RFLAGS_IOPL_MASK) >> RFLAGS_IOPL_SHIFT, (rflags & RFLAGS_IF) ? 1ul : 0ul);
	return 0;
}

/* What ring 3 should have seen; NULL when it saw exactly that. */
static const char *report_anomaly(void)
{
	if (!report.seen)
		return "no-report";
	if (report.cs != USER_CS)
		return "cs";
	if (report.ss != USER_DS)
		return "ss";
	if (report.rflags & RFLAGS_IOPL_MASK)
		return "iopl";
	if (!(report.rflags & RFLAGS_IF))
		return "if-clear";
	return NULL;
}

static void __attribute__((noreturn)) sys_exit(uint64_t code)
{
	klog("user program exited with code=%lu after %lu system calls, counter=%lu", code, calls, counter);
	if (code != 0) {
		klog("exit: fault (the user program failed with code %lu)", code);
		qemu_exit(EXIT_CODE_FAULT);
	}
	const char *anomaly = report_anomaly();
	if (scenario_is_mistake() || anomaly) {
		klog("exit: ran-on-wrongly scenario=%s cs=%#lx ss=%#lx rflags=%#lx iopl=%lu if=%lu anomaly=%s",
		     scenario_name(), report.cs, report.ss, report.rflags,
		     (report.rflags & RFLAGS_IOPL_MASK) >> RFLAGS_IOPL_SHIFT, (report.rflags & RFLAGS_IF) ? 1ul : 0ul,
		     anomaly ? anomaly : "none");
		qemu_exit(EXIT_CODE_RAN_ON);
	}
	klog("exit: ok");
	qemu_exit(EXIT_CODE_OK);
}

static uint64_t next_counter(void)
{
	if (scenario_is(SCENARIO_DOUBLE_FAULT)) {
		/*
		 * MISTAKE (double-fault): the counter is recounted by a
		 * recursion one frame per step, started 2^20 deep, on the
		 * 16 KiB kernel stack.  It runs into the guard page: #PF in
		 * ring 0, whose delivery on the same stack faults again, so
		 * the CPU raises #DF, delivered on IST1.
		 */
		counter += count_recursive(COUNT_RECURSIVE_DEPTH) / COUNT_RECURSIVE_DEPTH; /* + 1, 2^20 frames deep */
		return counter;
	}
	return ++counter;
}

static uint64_t dispatch(const struct syscall_frame *f, enum via via)
{
	log_call(f, via);
	switch (f->rax) {
	case SYS_WRITE:
		return sys_write(f->rdi, f->rsi);
	case SYS_GETCOUNTER:
		return next_counter();
	case SYS_EXIT:
		sys_exit(f->rdi);
	case SYS_REPORT:
		return sys_report(f->rdi, f->rsi, f->rdx);
	default:
		return (uint64_t)-1;
	}
}

static uint64_t choose_sysret_path(struct syscall_frame *f)
{
	bool first = !returned_once;
	returned_once = true;
	/* Each mistaken path is taken once, on the first return, where a test can see it. */
	if (first && scenario_is(SCENARIO_NO_SWAPGS))
		return SYSRET_PATH_NO_SWAPGS;
	if (first && scenario_is(SCENARIO_KERNEL_RSP))
		return SYSRET_PATH_KERNEL_RSP;
	if (first && scenario_is(SCENARIO_SYSRET32))
		return SYSRET_PATH_SYSRETL;
	if (first && scenario_is(SCENARIO_RCX_NONCANONICAL)) {
		/*
		 * MISTAKE (rcx-noncanonical): the saved user RIP is replaced,
		 * as a sigreturn or ptrace would, by a non-canonical address,
		 * and the check below is skipped.
		 */
		f->rcx += USER_SPACE_END;
		klog("sysret to rcx=%#lx without a canonical check", f->rcx);
		return SYSRET_PATH_UNCHECKED;
	}
	if (!is_canonical(f->rcx)) {
		/* SYSRET would raise #GP in ring 0 on the user stack on Intel CPUs (CVE-2012-0217). */
		klog("refusing to sysret to non-canonical rcx=%#lx", f->rcx);
		klog("exit: fault");
		qemu_exit(EXIT_CODE_FAULT);
	}
	return SYSRET_PATH_NORMAL;
}

uint64_t syscall_from_user(struct syscall_frame *f)
{
	f->rax = dispatch(f, VIA_SYSCALL);
	return choose_sysret_path(f);
}

void int80_from_user(struct syscall_frame *f)
{
	f->rax = dispatch(f, VIA_INT80);
}
