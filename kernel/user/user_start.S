/*
 * The user program's entry and its system-call stubs, linked at 0x400000
 * in ring-3 pages.  Stubs are assembly so the instruction after each trap
 * is fixed: a `ret`, which is what a mistaken return lands on.
 */
	.section .text.entry, "ax"
	.globl user_start
user_start:
	/* From enter_user: RDI = mode, RSP = top of the user stack (16-byte aligned). */
	call user_main
1:	jmp 1b

	.text
	/* long user_syscall(long nr, long a1, long a2, long a3) */
	.globl user_syscall
user_syscall:
	movq %rdi, %rax
	movq %rsi, %rdi
	movq %rdx, %rsi
	movq %rcx, %rdx
	syscall                         /* clobbers RCX and R11 */
	.globl user_syscall_return
user_syscall_return:
	ret

	/* long user_int80(long nr, long a1, long a2, long a3): the iretq path */
	.globl user_int80
user_int80:
	movq %rdi, %rax
	movq %rsi, %rdi
	movq %rdx, %rsi
	movq %rcx, %rdx
	int $0x80
	.globl user_int80_return
user_int80_return:
	ret

	.section .note.GNU-stack, "", @progbits
