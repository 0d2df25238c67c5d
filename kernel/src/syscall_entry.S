/*
 * SYSCALL's entry (LSTAR) and the ways back.
 *
 * SYSCALL (Intel SDM Vol. 2B, "SYSCALL"; AMD APM Vol. 2, 6.1.1) arrives in
 * ring 0 with RCX = user RIP, R11 = user RFLAGS, RSP still the user stack,
 * GS still the user's, and the RFLAGS bits in SFMASK cleared.  The entry
 * swaps GS to the per-CPU area, parks the user RSP there and takes the
 * kernel stack, saves the caller's registers as struct syscall_frame and
 * calls syscall_from_user(), which answers with the return path to take.
 *
 * Every sysret instruction has a global label so a debugger can stop
 * right before it: syscall_return_sysret is the correct one; the others
 * are scenario mistakes.
 */
#include "percpu.h"
#include "sysret_path.h"

	.text
	.globl syscall_entry
syscall_entry:
	swapgs
	movq %rsp, %gs:PERCPU_USER_RSP
	movq %gs:PERCPU_KERNEL_RSP, %rsp
	pushq %rax
	pushq %rcx
	pushq %r11
	pushq %rdi
	pushq %rsi
	pushq %rdx
	pushq %r8
	pushq %r9
	pushq %r10
	movq %rsp, %rdi
	subq $8, %rsp                   /* 9 pushes: realign for the call */
	cld
	call syscall_from_user
	movq %rax, %gs:PERCPU_SYSRET_PATH
	addq $8, %rsp
	popq %r10
	popq %r9
	popq %r8
	popq %rdx
	popq %rsi
	popq %rdi
	popq %r11
	popq %rcx
	popq %rax
	cmpq $SYSRET_PATH_NORMAL, %gs:PERCPU_SYSRET_PATH
	jne syscall_return_mistaken

	/* The correct way back: user stack, user GS, SYSRET with REX.W. */
	movq %gs:PERCPU_USER_RSP, %rsp
	swapgs
	.globl syscall_return_sysret
syscall_return_sysret:
	sysretq

syscall_return_mistaken:
	cmpq $SYSRET_PATH_NO_SWAPGS, %gs:PERCPU_SYSRET_PATH
	je syscall_return_no_swapgs
	cmpq $SYSRET_PATH_KERNEL_RSP, %gs:PERCPU_SYSRET_PATH
	je syscall_return_kernel_rsp
	cmpq $SYSRET_PATH_SYSRETL, %gs:PERCPU_SYSRET_PATH
	je syscall_return_compat

	/*
	 * MISTAKE (rcx-noncanonical): the same instructions as the correct
	 * path, reached after the C side let a non-canonical RCX through.
	 * Intel CPUs raise #GP here, in ring 0, with the user RSP already
	 * loaded (CVE-2012-0217); AMD CPUs return and fault in ring 3.
	 */
	movq %gs:PERCPU_USER_RSP, %rsp
	swapgs
	.globl syscall_return_sysret_unchecked
syscall_return_sysret_unchecked:
	sysretq

syscall_return_no_swapgs:
	/*
	 * MISTAKE (no-swapgs): the swapgs back is missing.  Ring 3 keeps the
	 * kernel's GS base; the next SYSCALL's swapgs then loads GS_BASE = 0
	 * and the entry's first per-CPU access faults in ring 0.
	 */
	movq %gs:PERCPU_USER_RSP, %rsp
	.globl syscall_return_sysret_no_swapgs
syscall_return_sysret_no_swapgs:
	sysretq

syscall_return_kernel_rsp:
	/*
	 * MISTAKE (kernel-rsp): the user RSP is never restored, so ring 3
	 * runs on the kernel stack; its first stack access is a #PF on a
	 * supervisor page.
	 */
	swapgs
	.globl syscall_return_sysret_kernel_rsp
syscall_return_sysret_kernel_rsp:
	sysretq

syscall_return_compat:
	/*
	 * MISTAKE (sysret32): SYSRET without REX.W returns to compatibility
	 * mode: CS = STAR[63:48] | 3 = 0x1b, RIP = ECX, and the 64-bit user
	 * code after the syscall is decoded as 32-bit code.
	 */
	movq %gs:PERCPU_USER_RSP, %rsp
	swapgs
	.globl syscall_return_sysretl
syscall_return_sysretl:
	sysretl

	.section .note.GNU-stack, "", @progbits
