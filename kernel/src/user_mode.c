#include "user_mode.h"

#include "log.h"
#include "paging.h"
#include "scenario.h"
#include "segments.h"
#include "user_abi.h"
#include "x86.h"

extern char user_start[]; /* user/user_start.S, linked at 0x400000 */

/* RFLAGS for ring 3, handed to SYSRET in R11 (or put in the IRETQ frame). */
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

/* The scenarios whose first entry to ring 3 is an IRETQ from a hand-built frame. */
static bool enters_by_iretq(void)
{
	return scenario_is(SCENARIO_IRET_OK) || scenario_is(SCENARIO_IRET_CS_RPL0) || scenario_is(SCENARIO_IRET_SS_DPL0) ||
	       scenario_is(SCENARIO_IRET_SUPERVISOR_PAGE);
}

/* CS in the IRETQ frame: the 64-bit user code segment with RPL 3. */
static uint64_t iret_frame_cs(void)
{
	if (scenario_is(SCENARIO_IRET_CS_RPL0)) {
		/*
		 * MISTAKE (iret-cs-rpl0): the descriptor's GDT offset pushed
		 * as the selector, 0x28, without RPL 3.  IRETQ from CPL 0
		 * then sees a return to CPL 0 through a DPL-3 non-conforming
		 * code segment and raises #GP(0x28) at the iretq.
		 */
		return GDT_USER_CS;
	}
	return USER_CS;
}

/* SS in the IRETQ frame: the user data segment with RPL 3. */
static uint64_t iret_frame_ss(void)
{
	if (scenario_is(SCENARIO_IRET_SS_DPL0)) {
		/*
		 * MISTAKE (iret-ss-dpl0): the kernel data selector with RPL 3,
		 * 0x13, as when the kernel's SS is reused with the RPL fixed
		 * up.  RPL 3 matches CS, but the descriptor's DPL is 0: IRETQ
		 * raises #GP(0x10) at the iretq, in ring 0.
		 */
		return GDT_KERNEL_DS | RPL_USER;
	}
	return USER_DS;
}

void start_user_program(void)
{
	uint64_t rip = (uint64_t)(uintptr_t)user_start;
	uint64_t rflags = first_user_rflags();
	uint64_t mode = scenario_is(SCENARIO_SPIN) ? USER_MODE_SPIN : USER_MODE_RUN;
	klog("entering ring 3: rip=%#lx rsp=%#lx rflags=%#lx mode=%lu", rip, USER_STACK_TOP, rflags, mode);
	if (enters_by_iretq()) {
		uint64_t cs = iret_frame_cs(), ss = iret_frame_ss();
		klog("entering ring 3 by iretq: cs=%#lx ss=%#lx", cs, ss);
		enter_user_iret(rip, cs, rflags, USER_STACK_TOP, ss, mode);
	}
	enter_user(rip, USER_STACK_TOP, rflags, mode);
}
