/*
 * Counting by recursion: one stack frame per step, none freed until the
 * end.  The compiler may not fold it into a loop (the volatile slot lives
 * across the call), so n steps need n frames of stack: the way a
 * recursive walk of a long list or a deep tree overflows a kernel stack.
 */
#include "count_recursive.h"

uint64_t __attribute__((noinline)) count_recursive(uint64_t n)
{
	volatile uint64_t step = n;
	if (n == 0)
		return 0;
	return count_recursive(n - 1) + (step - n + 1);
}
