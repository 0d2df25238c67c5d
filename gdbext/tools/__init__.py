"""gdbext outside gdb: triage, the gdb/MI driver, the QEMU launcher, the
gdbinit line for an installed copy."""
