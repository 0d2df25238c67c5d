#ifndef USER_MODE_H
#define USER_MODE_H

#include <stdint.h>

/* Enter the user program at user_start (0x400000) with SYSRET; never returns. */
void __attribute__((noreturn)) start_user_program(void);

/* enter_user.S */
void __attribute__((noreturn)) enter_user(uint64_t rip, uint64_t rsp, uint64_t rflags, uint64_t arg);

#endif
