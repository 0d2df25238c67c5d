# Load gdbext into gdb:   (gdb) source path/to/gdbext/init.py
#
# Works from any working directory and from another script.  gdb embeds the
# system Python, not the interpreter pip may have used, so the two third-party
# packages gdbext needs (tabulate, pyelftools) are looked for in gdb's own
# Python first, then in GDBEXT_SITE_PACKAGES (directories separated by ':'),
# then in the virtual environments GDBEXT_VENV, this checkout's .venv (made by
# scripts/setup) and VIRTUAL_ENV; if none has them, loading stops with one
# line that says what to run.
import os
import sys


def _gdbext_load():
    # Not __file__: gdb runs sourced files in __main__, where __file__ still
    # names the outer script when this one is sourced from another Python
    # script.  The code object always knows its own file.
    here = os.path.dirname(os.path.realpath(sys._getframe().f_code.co_filename))
    root = os.path.dirname(here)
    # This tree's package, whatever is installed or was loaded before: first
    # on the path, and a copy already imported from elsewhere is unloaded.
    while root in sys.path:
        sys.path.remove(root)
    sys.path.insert(0, root)
    replaced = _unload_other(here)

    version = "python%d.%d" % sys.version_info[:2]
    candidates = os.environ.get("GDBEXT_SITE_PACKAGES", "").split(os.pathsep)
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
    if replaced:
        sys.stdout.write("gdbext: loaded from %s, in place of the copy from %s\n" % (here, replaced))


def _unload_other(here):
    """Forget a gdbext imported from another directory; returns that directory."""
    loaded = sys.modules.get("gdbext")
    where = getattr(loaded, "__file__", None)
    if loaded is None or not where or os.path.dirname(os.path.realpath(where)) == here:
        return None
    commands = sys.modules.get("gdbext.commands")
    unload = getattr(commands, "unload", None)
    if unload is not None:
        try:
            unload()
        except Exception:  # noqa: BLE001 - an older copy's failure must not stop this one
            pass
    for name in [m for m in sys.modules if m == "gdbext" or m.startswith("gdbext.")]:
        del sys.modules[name]
    return os.path.dirname(os.path.realpath(where))


def _python():
    """The interpreter gdb embeds, as a command (sys.executable is gdb itself)."""
    return "/usr/bin/python%d.%d" % sys.version_info[:2]


def _missing():
    import importlib.util

    wanted = {"tabulate": "tabulate", "elftools": "pyelftools"}
    return [pkg for mod, pkg in wanted.items() if importlib.util.find_spec(mod) is None]


_gdbext_load()
del _gdbext_load, _missing, _python, _unload_other
