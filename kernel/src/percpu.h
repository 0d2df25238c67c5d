/*
 * Per-CPU data, reached through GS in the kernel: the syscall entry has no
 * free register, so it needs GS to find the kernel stack.  Offsets are
 * shared with the assembly.  Assembler-safe.
 */
#ifndef PERCPU_H
#define PERCPU_H

#define PERCPU_SELF 0
#define PERCPU_KERNEL_RSP 8
#define PERCPU_USER_RSP 16
#define PERCPU_SYSRET_PATH 24

#ifndef __ASSEMBLER__
#include <stddef.h>
#include <stdint.h>

struct percpu {
	uint64_t self;
	uint64_t kernel_rsp; /* loaded by syscall_entry */
	uint64_t user_rsp;   /* saved by syscall_entry */
	uint64_t sysret_path; /* SYSRET_PATH_*, chosen by syscall_from_user */
	uint64_t cpu;
};
_Static_assert(offsetof(struct percpu, self) == PERCPU_SELF, "percpu layout");
_Static_assert(offsetof(struct percpu, kernel_rsp) == PERCPU_KERNEL_RSP, "percpu layout");
_Static_assert(offsetof(struct percpu, user_rsp) == PERCPU_USER_RSP, "percpu layout");
_Static_assert(offsetof(struct percpu, sysret_path) == PERCPU_SYSRET_PATH, "percpu layout");

/* GS_BASE = the per-CPU area, KERNEL_GS_BASE = 0 (enter_user's swapgs exchanges them). */
void setup_percpu(void);
#endif

#endif
