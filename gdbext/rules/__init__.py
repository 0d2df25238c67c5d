"""The sysret rules as data, each with its check, and the verdict memo that
lets the watch reuse a verdict while its inputs are unchanged.  No gdb."""
