/*
 * Programming SYSCALL/SYSRET: Intel SDM Vol. 3A, 5.8.8 "Fast System Calls
 * in 64-Bit Mode" (figure 5-14 shows STAR, LSTAR, FMASK); AMD APM Vol. 2,
 * 6.1.1 "SYSCALL and SYSRET".
 */
#include "syscall.h"

#include "log.h"
#include "scenario.h"
#include "segments.h"
#include "x86.h"

#define STAR_SYSCALL_CS_SHIFT 32 /* STAR[47:32]: SYSCALL CS; SS = +8 */
#define STAR_SYSRET_CS_SHIFT 48  /* STAR[63:48]: SYSRET CS (32-bit); SS = +8; 64-bit CS = +16 */

/* Cleared on every SYSCALL: no interrupts, no single-step, DF=0 as the ABI wants, no AC, no NT. */
#define SFMASK_VALUE (RFLAGS_IF | RFLAGS_TF | RFLAGS_DF | RFLAGS_AC | RFLAGS_NT)

static uint64_t star_value(void)
{
	/* 0x1b: SYSRET gives SS = 0x23 (user data) and CS = 0x2b (user code 64). */
	uint64_t sysret_base = USER32_CS;
	if (scenario_is(SCENARIO_STAR_RPL0)) {
		/*
		 * MISTAKE (star-rpl0): the GDT offset without RPL 3.  CS gets
		 * RPL 3 anyway; SS gets it on Intel (the SDM forces it) but the
		 * AMD APM's pseudo-code takes SS.sel from STAR as is, and then
		 * the first iretq from a ring-3 frame holding SS=0x20 faults.
		 */
		sysret_base = GDT_USER32_CS;
	}
	return sysret_base << STAR_SYSRET_CS_SHIFT | (uint64_t)GDT_KERNEL_CS << STAR_SYSCALL_CS_SHIFT;
}

static uint64_t efer_value(void)
{
	uint64_t efer = rdmsr(MSR_EFER);
	if (scenario_is(SCENARIO_SCE_OFF)) {
		/*
		 * MISTAKE (sce-off): EFER.SCE is never set.  SYSRET (and
		 * SYSCALL) raise #UD: the first sysretq, in ring 0.
		 */
		return efer & ~EFER_SCE;
	}
	return efer | EFER_SCE;
}

void setup_syscall(void)
{
	wrmsr(MSR_EFER, efer_value());
	wrmsr(MSR_STAR, star_value());
	wrmsr(MSR_LSTAR, (uint64_t)(uintptr_t)syscall_entry);
	wrmsr(MSR_SFMASK, SFMASK_VALUE);
	uint64_t star = rdmsr(MSR_STAR);
	klog("syscall msrs: efer=%#lx star=%#lx lstar=%#lx sfmask=%#lx", rdmsr(MSR_EFER), star, rdmsr(MSR_LSTAR),
	     rdmsr(MSR_SFMASK));
	klog("sysret selectors from star: cs=%#lx ss=%#lx (32-bit cs=%#lx); syscall cs=%#lx ss=%#lx",
	     ((star >> STAR_SYSRET_CS_SHIFT) + 16) & 0xffff, ((star >> STAR_SYSRET_CS_SHIFT) + 8) & 0xffff,
	     (star >> STAR_SYSRET_CS_SHIFT) & 0xffff, (star >> STAR_SYSCALL_CS_SHIFT) & 0xffff,
	     ((star >> STAR_SYSCALL_CS_SHIFT) + 8) & 0xffff);
}
