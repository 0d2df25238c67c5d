/*
 * GDT layout (selectors are byte offsets into the GDT).  The order is the
 * one SYSCALL/SYSRET require (Intel SDM Vol. 3A, 5.8.8 "Fast System Calls
 * in 64-Bit Mode"; AMD APM Vol. 2, 6.1.1 "SYSCALL and SYSRET"):
 *   SYSCALL: CS = STAR[47:32], SS = STAR[47:32] + 8
 *   SYSRET:  CS = STAR[63:48] + 16 (64-bit) or STAR[63:48] (32-bit),
 *            SS = STAR[63:48] + 8, RPL forced to 3 on CS (and on SS, Intel).
 * Assembler-safe.
 */
#ifndef SEGMENTS_H
#define SEGMENTS_H

#define GDT_NULL 0x00
#define GDT_KERNEL_CS 0x08 /* 64-bit code, DPL 0 */
#define GDT_KERNEL_DS 0x10 /* data, DPL 0 */
#define GDT_USER32_CS 0x18 /* 32-bit (compatibility mode) code, DPL 3 */
#define GDT_USER_DS 0x20   /* data, DPL 3 */
#define GDT_USER_CS 0x28   /* 64-bit code, DPL 3 */
#define GDT_TSS 0x30       /* 16-byte 64-bit TSS descriptor (two slots) */
#define GDT_ENTRIES 8      /* limit = 8 * 8 - 1 = 0x3f */

#define RPL_USER 3
#define USER_CS (GDT_USER_CS | RPL_USER)     /* 0x2b */
#define USER_DS (GDT_USER_DS | RPL_USER)     /* 0x23 */
#define USER32_CS (GDT_USER32_CS | RPL_USER) /* 0x1b */

#endif
