#include "log.h"

#include <stdarg.h>

#include "fmt.h"
#include "uart.h"

void log_init(void)
{
	uart_init();
}

static void emit_uart(char c, void *ctx)
{
	(void)ctx;
	uart_write(&c, 1);
}

void klog(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	uart_write("[kernel] ", 9);
	fmt_vformat(emit_uart, NULL, fmt, ap);
	uart_write("\n", 1);
	va_end(ap);
}

void log_user_text(const char *text, size_t len)
{
	while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
		len--;
	uart_write("[user] ", 7);
	for (size_t i = 0; i < len; i++) {
		char c = text[i];
		/* One event, one line: the user cannot forge a kernel line. */
		uart_putc(c >= 0x20 && c < 0x7f ? c : '.');
	}
	uart_write("\n", 1);
}
