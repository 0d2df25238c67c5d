#include "scenario.h"

#include "fw_cfg.h"
#include "log.h"
#include "qemu_exit.h"
#include "string.h"

#define SCENARIO_FW_CFG_FILE "opt/org.gdbext/scenario"
#define SCENARIO_NAME_MAX 64

/* Names are an interface: the launcher and the tests use them. */
static const char *const scenario_names[SCENARIO_COUNT] = {
	[SCENARIO_OK] = "ok",
	[SCENARIO_SPIN] = "spin",
	[SCENARIO_STAR_RPL0] = "star-rpl0",
	[SCENARIO_GDT_ORDER] = "gdt-order",
	[SCENARIO_SCE_OFF] = "sce-off",
	[SCENARIO_RCX_NONCANONICAL] = "rcx-noncanonical",
	[SCENARIO_USER_PAGE_SUPERVISOR] = "user-page-supervisor",
	[SCENARIO_USER_PAGE_NX] = "user-page-nx",
	[SCENARIO_IOPL3] = "iopl3",
	[SCENARIO_IF_OFF] = "if-off",
	[SCENARIO_NO_SWAPGS] = "no-swapgs",
	[SCENARIO_KERNEL_RSP] = "kernel-rsp",
	[SCENARIO_SYSRET32] = "sysret32",
	[SCENARIO_TSS_RSP0_UNMAPPED] = "tss-rsp0-unmapped",
	[SCENARIO_DOUBLE_FAULT] = "double-fault",
	[SCENARIO_IRET_OK] = "iret-ok",
	[SCENARIO_IRET_CS_RPL0] = "iret-cs-rpl0",
	[SCENARIO_IRET_SS_DPL0] = "iret-ss-dpl0",
	[SCENARIO_IRET_SUPERVISOR_PAGE] = "iret-supervisor-page",
};

static enum scenario current = SCENARIO_OK;

static void strip_trailing_space(char *s)
{
	size_t n = strlen(s);
	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' '))
		s[--n] = '\0';
}

void scenario_init(void)
{
	char name[SCENARIO_NAME_MAX] = "ok";
	if (fw_cfg_read_file(SCENARIO_FW_CFG_FILE, name, sizeof(name)) < 0)
		memcpy(name, "ok", 3);
	strip_trailing_space(name);
	klog("scenario: %s", name);

	for (int i = 0; i < SCENARIO_COUNT; i++) {
		if (strcmp(name, scenario_names[i]) == 0) {
			current = (enum scenario)i;
			return;
		}
	}
	klog("unknown scenario \"%s\"", name);
	klog("exit: fault");
	qemu_exit(EXIT_CODE_FAULT);
}

bool scenario_is(enum scenario s)
{
	return current == s;
}

bool scenario_is_mistake(void)
{
	return current != SCENARIO_OK && current != SCENARIO_SPIN && current != SCENARIO_IRET_OK;
}

const char *scenario_name(void)
{
	return scenario_names[current];
}
