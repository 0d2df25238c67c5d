#include "percpu.h"

#include "log.h"
#include "tss.h"
#include "x86.h"

static struct percpu percpu_cpu0;

void setup_percpu(void)
{
	percpu_cpu0.self = (uint64_t)(uintptr_t)&percpu_cpu0;
	percpu_cpu0.kernel_rsp = kernel_stack_top();
	percpu_cpu0.cpu = 0;
	/* In ring 0 GS_BASE points here; SWAPGS trades it with KERNEL_GS_BASE at each crossing. */
	wrmsr(MSR_GS_BASE, percpu_cpu0.self);
	wrmsr(MSR_KERNEL_GS_BASE, 0);
	klog("percpu: base=%#lx kernel_rsp=%#lx gs_base=%#lx kernel_gs_base=%#lx", percpu_cpu0.self,
	     percpu_cpu0.kernel_rsp, rdmsr(MSR_GS_BASE), rdmsr(MSR_KERNEL_GS_BASE));
}
