/*
 * void load_gdt(const struct descriptor_table_register *gdtr,
 *               uint16_t code_selector, uint16_t data_selector)
 * LGDT, then reload CS with a far return (there is no far jmp to an
 * immediate in 64-bit mode) and the data registers.  DS, ES, FS and GS get
 * the null selector, allowed in 64-bit mode (Intel SDM Vol. 3A, 5.4.1.1);
 * GS's base is written through the MSR afterwards.
 */
	.text
	.globl load_gdt
load_gdt:
	lgdt (%rdi)
	movw %dx, %ss
	xorl %eax, %eax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %fs
	movw %ax, %gs
	popq %rax               /* return address */
	movzwq %si, %rsi
	pushq %rsi              /* new CS */
	pushq %rax
	lretq

	.section .note.GNU-stack, "", @progbits
