#ifndef INTERRUPTS_H
#define INTERRUPTS_H

/* Mask the 8259 PICs and the local APIC's LVT entries the firmware may have left on. */
void mask_external_interrupts(void);

#endif
