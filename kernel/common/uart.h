/* COM1, a 16550 UART: the log every part of the project reads. */
#ifndef UART_H
#define UART_H

#include <stddef.h>

void uart_init(void);
void uart_putc(char c);
void uart_write(const char *s, size_t len);

#endif
