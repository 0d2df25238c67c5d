/*
 * void enter_user_iret(uint64_t rip, uint64_t cs, uint64_t rflags,
 *                      uint64_t rsp, uint64_t ss, uint64_t arg)
 *
 * The other first entry to ring 3: IRETQ from a frame built by hand, the
 * way guides that never set up SYSCALL do it.  IRETQ pops RIP, CS, RFLAGS,
 * RSP and SS (Intel SDM Vol. 3A, 6.14.2 "64-Bit Mode Stack Frame", figure
 * 6-9), and unlike SYSRET it loads CS and SS from the GDT and checks them
 * (SDM Vol. 2A, "IRET/IRETD/IRETQ" Operation, RETURN-TO-OUTER-PRIVILEGE-
 * LEVEL; AMD APM Vol. 3, "IRET"): the selectors in the frame must be right.
 * As in enter_user: RDI = arg, every other register cleared, swapgs so
 * ring 3 has GS_BASE = 0 and the next SYSCALL finds the per-CPU area.
 */
	.text
	.globl enter_user_iret
enter_user_iret:
	pushq %r8                       /* SS */
	pushq %rcx                      /* RSP */
	pushq %rdx                      /* RFLAGS */
	pushq %rsi                      /* CS */
	pushq %rdi                      /* RIP */
	movq %r9, %rdi
	xorl %eax, %eax
	xorl %ebx, %ebx
	xorl %ecx, %ecx
	xorl %edx, %edx
	xorl %esi, %esi
	xorl %ebp, %ebp
	xorl %r8d, %r8d
	xorl %r9d, %r9d
	xorl %r10d, %r10d
	xorl %r11d, %r11d
	xorl %r12d, %r12d
	xorl %r13d, %r13d
	xorl %r14d, %r14d
	xorl %r15d, %r15d
	swapgs
	.globl enter_user_iretq
enter_user_iretq:
	iretq

	.section .note.GNU-stack, "", @progbits
