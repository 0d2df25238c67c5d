#include "user_mode.h"

#include "log.h"
#include "paging.h"
#include "scenario.h"
#include "user_abi.h"
#include "x86.h"

extern char user_start[]; /* user/user_start.S, linked at 0x400000 */

/* RFLAGS for ring 3, handed to SYSRET in R11. */
static uint64_t first_user_rflags(void)
{
	uint64_t rflags = RFLAGS_FIXED | RFLAGS_IF; /* 0x202 */
	if (scenario_is(SCENARIO_IOPL3)) {
		/*
		 * MISTAKE (iopl3): R11 carries IOPL=3 (0x3202), as when it is
		 * built from a kernel RFLAGS value instead of a clean constant.
		 * Ring 3 may then use in/out and cli/sti.
		 */
		rflags |= UINT64_C(3) << RFLAGS_IOPL_SHIFT;
	}
	if (scenario_is(SCENARIO_IF_OFF)) {
		/* MISTAKE (if-off): R11 = 0x2, ring 3 runs with interrupts disabled. */
		rflags &= ~RFLAGS_IF;
	}
	return rflags;
}

void start_user_program(void)
{
	uint64_t rip = (uint64_t)(uintptr_t)user_start;
	uint64_t rflags = first_user_rflags();
	uint64_t mode = scenario_is(SCENARIO_SPIN) ? USER_MODE_SPIN : USER_MODE_RUN;
	klog("entering ring 3: rip=%#lx rsp=%#lx rflags=%#lx mode=%lu", rip, USER_STACK_TOP, rflags, mode);
	enter_user(rip, USER_STACK_TOP, rflags, mode);
}
