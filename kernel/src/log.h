/*
 * The kernel log on COM1: one line per event, each starting with a fixed
 * prefix ("[kernel] ", "[user] ") so tests and people can grep it.
 */
#ifndef LOG_H
#define LOG_H

#include <stddef.h>

void log_init(void);
void klog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Bytes written by the user program, as one "[user] ..." line. */
void log_user_text(const char *text, size_t len);

#endif
