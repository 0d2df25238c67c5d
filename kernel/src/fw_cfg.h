/* QEMU's firmware configuration device, read through its I/O ports. */
#ifndef FW_CFG_H
#define FW_CFG_H

#include <stddef.h>

/*
 * Copy the named fw_cfg file (e.g. "opt/org.gdbext/scenario") into buf,
 * NUL-terminated and truncated to cap - 1 bytes.  Returns the file's size,
 * or -1 when there is no fw_cfg device or no such file.
 */
long fw_cfg_read_file(const char *name, char *buf, size_t cap);

#endif
