/*
 * Leaving QEMU through its isa-debug-exit device (iobase 0xf4): QEMU exits
 * with status (value << 1) | 1.
 */
#ifndef QEMU_EXIT_H
#define QEMU_EXIT_H

#define EXIT_CODE_OK 0x10         /* status 33 */
#define EXIT_CODE_FAULT 0x11      /* status 35 */
#define EXIT_CODE_RAN_ON 0x12     /* status 37: a mistake went unnoticed */

void __attribute__((noreturn)) qemu_exit(unsigned code);

#endif
