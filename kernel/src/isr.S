/*
 * One stub per exception vector.  Each pushes the same frame whether or
 * not the CPU pushed an error code (SDM Vol. 3A, 6.13 "Error Code": 8, 10-14,
 * 17, 21, 29, 30 push one), then the vector, then every general register,
 * and calls fault_report(struct interrupt_frame *), which does not return.
 */
	.macro isr_no_error vector
isr_\vector:
	pushq $0
	pushq $\vector
	jmp isr_common
	.endm

	.macro isr_with_error vector
isr_\vector:
	pushq $\vector
	jmp isr_common
	.endm

	.text
	.irp v, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
	isr_no_error \v
	.endr
	.irp v, 8,10,11,12,13,14,17,21,29,30
	isr_with_error \v
	.endr

isr_common:
	pushq %rax
	pushq %rbx
	pushq %rcx
	pushq %rdx
	pushq %rsi
	pushq %rdi
	pushq %rbp
	pushq %r8
	pushq %r9
	pushq %r10
	pushq %r11
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
	movq %rsp, %rdi
	cld
	call fault_report
1:	cli
	hlt
	jmp 1b

	.section .rodata
	.balign 8
	.globl isr_stub_table
isr_stub_table:
	.irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	.quad isr_\v
	.endr

	.section .note.GNU-stack, "", @progbits
