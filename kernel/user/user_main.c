/*
 * The ring-3 program.  It says hello, calls getcounter ten times through
 * SYSCALL (checking each value), once through int $0x80 (the iretq path),
 * reports the CS, SS and RFLAGS it runs with, and exits.  In mode spin it
 * calls getcounter forever and writes a line every 2^16 calls.
 */
#include "user_abi.h"

typedef unsigned long u64;

long user_syscall(long nr, long a1, long a2, long a3);
long user_int80(long nr, long a1, long a2, long a3);
void __attribute__((noreturn)) user_main(long mode);

static const char hello[] = "hello from ring 3";
static char line[64];

static void sys_write(const char *text, u64 len)
{
	user_syscall(SYS_WRITE, (long)text, (long)len, 0);
}

static u64 sys_getcounter(void)
{
	return (u64)user_syscall(SYS_GETCOUNTER, 0, 0, 0);
}

static void __attribute__((noreturn)) sys_exit(long code)
{
	user_syscall(SYS_EXIT, code, 0, 0);
	for (;;)
		;
}

static u64 read_cs(void)
{
	u64 v;
	__asm__ volatile("mov %%cs, %0" : "=r"(v));
	return v & 0xffff;
}

static u64 read_ss(void)
{
	u64 v;
	__asm__ volatile("mov %%ss, %0" : "=r"(v));
	return v & 0xffff;
}

static u64 read_rflags(void)
{
	u64 v;
	__asm__ volatile("pushfq; popq %0" : "=r"(v));
	return v;
}

static u64 append(char *out, u64 pos, const char *s)
{
	while (*s && pos < sizeof(line) - 1)
		out[pos++] = *s++;
	return pos;
}

static u64 append_decimal(char *out, u64 pos, u64 value)
{
	char digits[20];
	int n = 0;
	do {
		digits[n++] = (char)('0' + value % 10);
		value /= 10;
	} while (value);
	while (n > 0 && pos < sizeof(line) - 1)
		out[pos++] = digits[--n];
	return pos;
}

static void __attribute__((noreturn)) spin(void)
{
	for (;;) {
		u64 counter = sys_getcounter();
		if (counter % USER_SPIN_LINE_EVERY != 0)
			continue;
		u64 len = append(line, 0, "spin: counter=");
		len = append_decimal(line, len, counter);
		sys_write(line, len);
	}
}

void user_main(long mode)
{
	sys_write(hello, sizeof(hello) - 1);
	if (mode == USER_MODE_SPIN)
		spin();

	u64 last = 0;
	for (int i = 0; i < USER_GETCOUNTER_CALLS; i++) {
		u64 counter = sys_getcounter();
		if (counter != last + 1)
			sys_exit(1);
		last = counter;
	}
	if ((u64)user_int80(SYS_GETCOUNTER, 0, 0, 0) != last + 1)
		sys_exit(2);

	user_syscall(SYS_REPORT, (long)read_cs(), (long)read_ss(), (long)read_rflags());
	sys_exit(0);
}
