# Load gdbext into gdb:   (gdb) source path/to/gdbext/init.py
#
# Works from any working directory and from another script.  gdb embeds the
# system Python, not the interpreter pip may have used, so the two third-party
# packages gdbext needs (tabulate, pyelftools) are looked for in gdb's own
# Python first, then in the project's virtual environment (.venv, made by
# scripts/setup), then in GDBEXT_SITE_PACKAGES; if none has them, loading stops
# with one line that says what to run.
import os
import sys


def _gdbext_load():
    # Not __file__: gdb runs sourced files in __main__, where __file__ still
    # names the outer script when this one is sourced from another Python
    # script.  The code object always knows its own file.
    here = os.path.dirname(os.path.realpath(sys._getframe().f_code.co_filename))
    root = os.path.dirname(here)
    if root not in sys.path:
        sys.path.insert(0, root)

    version = "python%d.%d" % sys.version_info[:2]
    candidates = [os.environ.get("GDBEXT_SITE_PACKAGES", "")]
    for venv in (os.environ.get("GDBEXT_VENV", ""), os.path.join(root, ".venv"), os.environ.get("VIRTUAL_ENV", "")):
        if venv:
            candidates.append(os.path.join(venv, "lib", version, "site-packages"))

    missing = _missing()
    for path in candidates:
        if not missing:
            break
        if path and os.path.isdir(path) and path not in sys.path:
            sys.path.append(path)
            missing = _missing()
    if missing:
        # One line, no traceback (an exception from a sourced file prints one).
        sys.stderr.write(
            "gdbext: not loaded: gdb's Python (%s) lacks %s; run scripts/setup in the gdbext checkout, "
            "or: %s -m pip install --user --break-system-packages %s\n"
            % (version, ", ".join(missing), _python(), " ".join(missing)))
        return

    from gdbext import commands

    commands.register()


def _python():
    """The interpreter gdb embeds, as a command (sys.executable is gdb itself)."""
    return "/usr/bin/python%d.%d" % sys.version_info[:2]


def _missing():
    import importlib.util

    wanted = {"tabulate": "tabulate", "elftools": "pyelftools"}
    return [pkg for mod, pkg in wanted.items() if importlib.util.find_spec(mod) is None]


_gdbext_load()
del _gdbext_load, _missing, _python
