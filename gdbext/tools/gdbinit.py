"""`gdbext-gdbinit`: the lines that load an installed gdbext into gdb.

pip may install gdbext for a Python other than the one gdb embeds; the first
line tells gdb's Python where this installation's dependencies are.

    gdbext-gdbinit >> ~/.gdbinit      # or: gdb -x <(gdbext-gdbinit)
"""
import os
import sysconfig


def gdbinit_lines() -> str:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the gdbext package
    site = sysconfig.get_paths()["purelib"]
    return (f"python import os; os.environ.setdefault('GDBEXT_SITE_PACKAGES', {site!r})\n"
            f"source {os.path.join(here, 'init.py')}\n")


def print_gdbinit() -> None:
    print(gdbinit_lines(), end="")
