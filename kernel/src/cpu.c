/*
 * CPUID (Intel SDM Vol. 2A, "CPUID"; AMD APM Vol. 3, appendix E): the
 * vendor matters because SYSRET differs between Intel and AMD (see
 * kernel/README.md), and the features say which protections exist.
 */
#include "cpu.h"

#include <stdint.h>

#include "log.h"
#include "string.h"

struct cpuid_regs {
	uint32_t eax, ebx, ecx, edx;
};

static struct cpuid_regs cpuid(uint32_t leaf, uint32_t subleaf)
{
	struct cpuid_regs r;
	__asm__ volatile("cpuid" : "=a"(r.eax), "=b"(r.ebx), "=c"(r.ecx), "=d"(r.edx) : "a"(leaf), "c"(subleaf));
	return r;
}

#define BIT(reg, n) (((reg) >> (n)) & 1u)

void log_cpu_identity(void)
{
	struct cpuid_regs leaf0 = cpuid(0, 0);
	char vendor[13];
	memcpy(vendor, &leaf0.ebx, 4);
	memcpy(vendor + 4, &leaf0.edx, 4);
	memcpy(vendor + 8, &leaf0.ecx, 4);
	vendor[12] = '\0';

	struct cpuid_regs leaf1 = cpuid(1, 0);
	struct cpuid_regs leaf7 = leaf0.eax >= 7 ? cpuid(7, 0) : (struct cpuid_regs){ 0 };
	struct cpuid_regs ext1 = cpuid(0x80000001u, 0);
	unsigned family = ((leaf1.eax >> 8) & 0xf) + ((leaf1.eax >> 20) & 0xff);
	unsigned model = ((leaf1.eax >> 4) & 0xf) | ((leaf1.eax >> 12) & 0xf0);

	klog("cpu: vendor=%s family=%#x model=%#x syscall=%u nx=%u pdpe1gb=%u smep=%u smap=%u pku=%u la57=%u", vendor,
	     family, model, BIT(ext1.edx, 11), BIT(ext1.edx, 20), BIT(ext1.edx, 26), BIT(leaf7.ebx, 7),
	     BIT(leaf7.ebx, 20), BIT(leaf7.ecx, 3), BIT(leaf7.ecx, 16));
}
