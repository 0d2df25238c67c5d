/*
 * fw_cfg over x86 I/O ports, as QEMU's docs/specs/fw_cfg.rst describes it:
 * write a 16-bit selector to port 0x510, then read bytes from port 0x511.
 * Selector 0x0000 returns the signature "QEMU"; selector 0x0019 returns
 * the file directory: a big-endian u32 count, then per file
 * { u32 size (BE), u16 select (BE), u16 reserved, char name[56] }.
 */
#include "fw_cfg.h"

#include <stdint.h>

#include "string.h"
#include "x86.h"

#define FW_CFG_PORT_SEL 0x510
#define FW_CFG_PORT_DATA 0x511
#define FW_CFG_SIGNATURE 0x0000
#define FW_CFG_FILE_DIR 0x0019
#define FW_CFG_MAX_FILE_PATH 56

static void select_item(uint16_t key)
{
	outw(FW_CFG_PORT_SEL, key);
}

static void read_bytes(void *buf, size_t len)
{
	uint8_t *p = buf;
	while (len--)
		*p++ = inb(FW_CFG_PORT_DATA);
}

static uint32_t read_be32(void)
{
	uint8_t b[4];
	read_bytes(b, sizeof(b));
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static uint16_t read_be16(void)
{
	uint8_t b[2];
	read_bytes(b, sizeof(b));
	return (uint16_t)(b[0] << 8 | b[1]);
}

static int device_present(void)
{
	char signature[4];
	select_item(FW_CFG_SIGNATURE);
	read_bytes(signature, sizeof(signature));
	return memcmp(signature, "QEMU", 4) == 0;
}

long fw_cfg_read_file(const char *name, char *buf, size_t cap)
{
	if (cap == 0 || !device_present())
		return -1;
	select_item(FW_CFG_FILE_DIR);
	uint32_t count = read_be32();
	for (uint32_t i = 0; i < count; i++) {
		uint32_t size = read_be32();
		uint16_t select = read_be16();
		(void)read_be16(); /* reserved */
		char path[FW_CFG_MAX_FILE_PATH];
		read_bytes(path, sizeof(path));
		path[FW_CFG_MAX_FILE_PATH - 1] = '\0';
		if (strcmp(path, name) != 0)
			continue;
		size_t n = size < cap - 1 ? size : cap - 1;
		select_item(select);
		read_bytes(buf, n);
		buf[n] = '\0';
		return (long)size;
	}
	return -1;
}
