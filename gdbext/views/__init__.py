"""One module per feature a user names (cpl, msr, gdt, tss, idt, pagewalk,
ptdump, sysret): the report built from a Snapshot, and its text.  No gdb."""
