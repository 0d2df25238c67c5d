#ifndef IDT_H
#define IDT_H

#define IDT_VECTORS 256
#define EXCEPTION_VECTORS 32
#define SYSCALL_INT_VECTOR 0x80

/* Gates for the 32 exception vectors and the DPL-3 int $0x80 gate; LIDT. */
void setup_idt(void);

#endif
