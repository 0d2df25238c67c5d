/*
 * A small printf: %s %c %d %i %u %x %X %p %%, flags '0' '-' '#', a width,
 * and the length modifiers l, ll, z (all 64-bit).  Enough for log lines.
 */
#ifndef FMT_H
#define FMT_H

#include <stdarg.h>
#include <stddef.h>

typedef void (*fmt_emit_fn)(char c, void *ctx);

void fmt_vformat(fmt_emit_fn emit, void *ctx, const char *fmt, va_list ap);
size_t fmt_snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
