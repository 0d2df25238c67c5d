#include "fmt.h"

#include <stdbool.h>
#include <stdint.h>

struct spec {
	bool zero_pad;
	bool left;
	bool alternate;
	int width;
	bool wide; /* l, ll or z: a 64-bit argument */
};

static void emit_padding(fmt_emit_fn emit, void *ctx, char c, int n)
{
	for (; n > 0; n--)
		emit(c, ctx);
}

static void emit_string(fmt_emit_fn emit, void *ctx, const char *s, const struct spec *sp)
{
	int len = 0;
	if (!s)
		s = "(null)";
	while (s[len])
		len++;
	if (!sp->left)
		emit_padding(emit, ctx, ' ', sp->width - len);
	for (int i = 0; i < len; i++)
		emit(s[i], ctx);
	if (sp->left)
		emit_padding(emit, ctx, ' ', sp->width - len);
}

static void emit_number(fmt_emit_fn emit, void *ctx, uint64_t value, bool negative, unsigned base,
			bool upper, const struct spec *sp)
{
	const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
	char tmp[24];
	int n = 0;
	do {
		tmp[n++] = digits[value % base];
		value /= base;
	} while (value);

	const char *prefix = negative ? "-" : (sp->alternate && base == 16) ? "0x" : "";
	int prefix_len = negative ? 1 : (sp->alternate && base == 16) ? 2 : 0;
	int pad = sp->width - n - prefix_len;

	if (!sp->left && !sp->zero_pad)
		emit_padding(emit, ctx, ' ', pad);
	for (int i = 0; i < prefix_len; i++)
		emit(prefix[i], ctx);
	if (!sp->left && sp->zero_pad)
		emit_padding(emit, ctx, '0', pad);
	while (n > 0)
		emit(tmp[--n], ctx);
	if (sp->left)
		emit_padding(emit, ctx, ' ', pad);
}

static const char *parse_spec(const char *p, struct spec *sp)
{
	*sp = (struct spec){ 0 };
	for (;; p++) {
		if (*p == '0')
			sp->zero_pad = true;
		else if (*p == '-')
			sp->left = true;
		else if (*p == '#')
			sp->alternate = true;
		else
			break;
	}
	while (*p >= '0' && *p <= '9')
		sp->width = sp->width * 10 + (*p++ - '0');
	while (*p == 'l' || *p == 'z') {
		sp->wide = true;
		p++;
	}
	return p;
}

void fmt_vformat(fmt_emit_fn emit, void *ctx, const char *fmt, va_list ap)
{
	for (const char *p = fmt; *p; p++) {
		if (*p != '%') {
			emit(*p, ctx);
			continue;
		}
		struct spec sp;
		p = parse_spec(p + 1, &sp);
		switch (*p) {
		case 'd':
		case 'i': {
			int64_t v = sp.wide ? va_arg(ap, int64_t) : va_arg(ap, int);
			uint64_t magnitude = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
			emit_number(emit, ctx, magnitude, v < 0, 10, false, &sp);
			break;
		}
		case 'u':
			emit_number(emit, ctx, sp.wide ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), false, 10,
				    false, &sp);
			break;
		case 'x':
		case 'X':
			emit_number(emit, ctx, sp.wide ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), false, 16,
				    *p == 'X', &sp);
			break;
		case 'p':
			sp.alternate = true;
			emit_number(emit, ctx, (uint64_t)(uintptr_t)va_arg(ap, void *), false, 16, false, &sp);
			break;
		case 'c':
			emit((char)va_arg(ap, int), ctx);
			break;
		case 's':
			emit_string(emit, ctx, va_arg(ap, const char *), &sp);
			break;
		case '%':
			emit('%', ctx);
			break;
		case '\0':
			return;
		default: /* unknown conversion: show it rather than guess */
			emit('%', ctx);
			emit(*p, ctx);
			break;
		}
	}
}

struct buffer {
	char *buf;
	size_t size;
	size_t len;
};

static void emit_to_buffer(char c, void *ctx)
{
	struct buffer *b = ctx;
	if (b->len + 1 < b->size)
		b->buf[b->len] = c;
	b->len++;
}

size_t fmt_snprintf(char *buf, size_t size, const char *fmt, ...)
{
	struct buffer b = { buf, size, 0 };
	va_list ap;
	va_start(ap, fmt);
	fmt_vformat(emit_to_buffer, &b, fmt, ap);
	va_end(ap);
	if (size)
		buf[b.len < size ? b.len : size - 1] = '\0';
	return b.len;
}
