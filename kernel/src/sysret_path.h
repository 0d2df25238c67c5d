/*
 * Which instruction sequence takes a SYSCALL back to ring 3.  Only
 * SYSRET_PATH_NORMAL is right; each other value is one scenario's mistake
 * and has its own labelled sysret in syscall_entry.S.  Assembler-safe.
 */
#ifndef SYSRET_PATH_H
#define SYSRET_PATH_H

#define SYSRET_PATH_NORMAL 0     /* syscall_return_sysret */
#define SYSRET_PATH_NO_SWAPGS 1  /* syscall_return_sysret_no_swapgs */
#define SYSRET_PATH_KERNEL_RSP 2 /* syscall_return_sysret_kernel_rsp */
#define SYSRET_PATH_SYSRETL 3    /* syscall_return_sysretl */
#define SYSRET_PATH_UNCHECKED 4  /* syscall_return_sysret_unchecked */

#endif
