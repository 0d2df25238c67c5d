/*
 * int $0x80: the second system-call path.  The gate has DPL 3; from ring 3
 * the CPU loads RSP0 from the TSS and pushes SS, RSP, RFLAGS, CS, RIP
 * (Intel SDM Vol. 3A, 6.14.2 "64-Bit Mode Stack Frame").  The handler uses
 * no per-CPU data, so it does no swapgs.
 *
 * It returns with iretq, which -- unlike sysret -- reloads CS and SS from
 * the GDT and checks them (SDM Vol. 2A, "IRET/IRETD/IRETQ"): the path that
 * exposes a wrong GDT.  int80_return_iretq labels that instruction.
 */
	.text
	.globl int80_entry
int80_entry:
	pushq %rax
	pushq %rcx
	pushq %r11
	pushq %rdi
	pushq %rsi
	pushq %rdx
	pushq %r8
	pushq %r9
	pushq %r10
	movq %rsp, %rdi                 /* 5 + 9 quadwords: already 16-byte aligned */
	cld
	call int80_from_user
	popq %r10
	popq %r9
	popq %r8
	popq %rdx
	popq %rsi
	popq %rdi
	popq %r11
	popq %rcx
	popq %rax
	.globl int80_return_iretq
int80_return_iretq:
	iretq

	.section .note.GNU-stack, "", @progbits
