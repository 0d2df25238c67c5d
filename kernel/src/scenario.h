/*
 * Which mistake this boot makes.  The name comes from QEMU's fw_cfg file
 * opt/org.gdbext/scenario; each mistake is made where a real kernel would
 * make it (GDT setup, the TSS, the STAR write, paging, the first entry to
 * ring 3, the syscall return path), and those places ask scenario_is().
 */
#ifndef SCENARIO_H
#define SCENARIO_H

#include <stdbool.h>

enum scenario {
	SCENARIO_OK,
	SCENARIO_SPIN,
	SCENARIO_STAR_RPL0,
	SCENARIO_GDT_ORDER,
	SCENARIO_SCE_OFF,
	SCENARIO_RCX_NONCANONICAL,
	SCENARIO_USER_PAGE_SUPERVISOR,
	SCENARIO_USER_PAGE_NX,
	SCENARIO_IOPL3,
	SCENARIO_IF_OFF,
	SCENARIO_NO_SWAPGS,
	SCENARIO_KERNEL_RSP,
	SCENARIO_SYSRET32,
	SCENARIO_TSS_RSP0_UNMAPPED,
	SCENARIO_DOUBLE_FAULT,
	SCENARIO_IRET_OK,
	SCENARIO_IRET_CS_RPL0,
	SCENARIO_IRET_SS_DPL0,
	SCENARIO_IRET_SUPERVISOR_PAGE,
	SCENARIO_COUNT
};

/* Read the scenario from fw_cfg (default "ok") and log it; exits on an unknown name. */
void scenario_init(void);
bool scenario_is(enum scenario s);
/* Every scenario except ok, spin and iret-ok sets up something wrong. */
bool scenario_is_mistake(void);
const char *scenario_name(void);

#endif
