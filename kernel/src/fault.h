#ifndef FAULT_H
#define FAULT_H

#include <stdint.h>

/* What isr.S leaves on the stack: its pushes, then the CPU's (SDM Vol. 3A, figure 6-9). */
struct interrupt_frame {
	uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
	uint64_t rbp, rdi, rsi, rdx, rcx, rbx, rax;
	uint64_t vector;
	uint64_t error; /* 0 when the CPU pushes none */
	uint64_t rip, cs, rflags, rsp, ss;
};
_Static_assert(sizeof(struct interrupt_frame) == 22 * 8, "frame layout matches isr.S");

/* Log one FAULT line and exit QEMU with the fault status. */
void __attribute__((noreturn)) fault_report(const struct interrupt_frame *frame);

#endif
