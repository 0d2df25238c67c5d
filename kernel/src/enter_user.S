/*
 * void enter_user(uint64_t rip, uint64_t rsp, uint64_t rflags, uint64_t arg)
 *
 * The first entry to ring 3, by SYSRET (Intel SDM Vol. 2B, "SYSRET"; AMD
 * APM Vol. 2, 6.1.1): RCX = user RIP, R11 = user RFLAGS, RSP = user stack,
 * RDI = arg, every other register cleared so no kernel value leaks.  The
 * swapgs leaves GS_BASE = 0 for ring 3 and KERNEL_GS_BASE = the per-CPU
 * area for the next SYSCALL.
 */
	.text
	.globl enter_user
enter_user:
	movq %rcx, %rax
	movq %rdi, %rcx
	movq %rdx, %r11
	movq %rsi, %rsp
	movq %rax, %rdi
	xorl %eax, %eax
	xorl %ebx, %ebx
	xorl %edx, %edx
	xorl %esi, %esi
	xorl %ebp, %ebp
	xorl %r8d, %r8d
	xorl %r9d, %r9d
	xorl %r10d, %r10d
	xorl %r12d, %r12d
	xorl %r13d, %r13d
	xorl %r14d, %r14d
	xorl %r15d, %r15d
	swapgs
	.globl enter_user_sysret
enter_user_sysret:
	sysretq

	.section .note.GNU-stack, "", @progbits
