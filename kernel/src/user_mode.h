#ifndef USER_MODE_H
#define USER_MODE_H

#include <stdint.h>

/* Enter the user program at user_start (0x400000) with SYSRET (or IRETQ in the iret-* scenarios); never returns. */
void __attribute__((noreturn)) start_user_program(void);

/* enter_user.S */
void __attribute__((noreturn)) enter_user(uint64_t rip, uint64_t rsp, uint64_t rflags, uint64_t arg);

/* enter_user_iret.S: push SS, RSP, RFLAGS, CS, RIP and iretq (at enter_user_iretq) */
void __attribute__((noreturn)) enter_user_iret(uint64_t rip, uint64_t cs, uint64_t rflags, uint64_t rsp, uint64_t ss,
					       uint64_t arg);

#endif
