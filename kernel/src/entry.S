/*
 * The first kernel instruction.  The loader jumps here on its bootstrap
 * page tables with RDI = the boot info (physical, identity-mapped) and
 * interrupts off; we move to the kernel's own boot stack and call kmain.
 */
	.section .text.entry, "ax"
	.globl _start
_start:
	cli
	leaq boot_stack_top(%rip), %rsp
	xorl %ebp, %ebp
	call kmain
1:	hlt
	jmp 1b

	.bss
	.balign 16
boot_stack:
	.skip 16384
boot_stack_top:

	.section .note.GNU-stack, "", @progbits
