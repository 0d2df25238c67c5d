#ifndef CPU_H
#define CPU_H

/* Log the CPU's vendor and the features this kernel and its scenarios care about. */
void log_cpu_identity(void);

#endif
