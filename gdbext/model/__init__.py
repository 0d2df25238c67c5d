"""The stopped machine as data: the Snapshot, linear reads through its page
tables, QEMU's monitor text parsed, ELF symbol tables.  No gdb."""
