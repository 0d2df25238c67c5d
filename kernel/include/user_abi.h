/*
 * The contract between the kernel and its user program: system-call
 * numbers (RAX; arguments in RDI, RSI, RDX; result in RAX) and the mode
 * the kernel passes in RDI at the first entry.  Assembler-safe.
 */
#ifndef USER_ABI_H
#define USER_ABI_H

#define SYS_WRITE 0      /* write(buf, len): a line to the log */
#define SYS_GETCOUNTER 1 /* getcounter(): a kernel counter, +1 per call */
#define SYS_EXIT 2       /* exit(code) */
#define SYS_REPORT 3     /* report(cs, ss, rflags): what ring 3 sees */

#define USER_MODE_RUN 0  /* the normal program: a few calls, then exit */
#define USER_MODE_SPIN 1 /* call getcounter forever */

#define USER_GETCOUNTER_CALLS 10
#define USER_SPIN_LINE_EVERY 65536 /* spin: one line per 2^16 calls */

#endif
