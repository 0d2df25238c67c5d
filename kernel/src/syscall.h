#ifndef SYSCALL_H
#define SYSCALL_H

#include <stdint.h>

/* The registers syscall_entry.S and int80_entry.S save, lowest address first. */
struct syscall_frame {
	uint64_t r10, r9, r8;
	uint64_t rdx, rsi, rdi; /* arguments 3, 2, 1 */
	uint64_t r11;           /* SYSCALL: user RFLAGS */
	uint64_t rcx;           /* SYSCALL: user RIP */
	uint64_t rax;           /* number in, result out */
};
_Static_assert(sizeof(struct syscall_frame) == 9 * 8, "frame layout matches the entry assembly");

/* EFER.SCE, STAR, LSTAR, SFMASK. */
void setup_syscall(void);

/* Called by the entry assembly; the result is a SYSRET_PATH_* (sysret_path.h). */
uint64_t syscall_from_user(struct syscall_frame *frame);
void int80_from_user(struct syscall_frame *frame);

void syscall_entry(void); /* syscall_entry.S */

#endif
