"""What every gdbext command shares: one-line errors, numbers read as gdb reads them, symbols."""
from __future__ import annotations

import argparse
import contextlib
import json
import re
import shlex
from pathlib import Path
from typing import List, Optional

import gdb

from gdbext.model.snapshot import SnapshotError
from gdbext.model.symbols import SymbolError, SymbolTable
from gdbext.target.remote import TargetError, execute_text
from gdbext.views.common import ReportError, to_json
from gdbext.views.text import fit_lines
from gdbext.x86 import DecodeError
from gdbext.x86.bits import MASK64

_symbols: List[Optional[SymbolTable]] = [None]


def symbolize(address: int) -> Optional[str]:
    """gdb's own symbols first, then an ELF loaded with gdbext-symbols."""
    if not gdb.objfiles():     # nothing to ask gdb (Linux with no vmlinux): skip its 40 us a call
        table = _symbols[0]
        return table.lookup(address) if table else None
    try:
        text = execute_text(f"info symbol {address:#x}").strip()
    except gdb.error:
        text = ""
    if text and not text.startswith("No symbol"):
        name = text.split(" in section ")[0]
        return name.replace(" + ", "+")
    table = _symbols[0]
    return table.lookup(address) if table else None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump, no SystemExit
        raise gdb.GdbError(f"{self.prog}: {message} (see `help {getattr(self, 'help_name', self.prog)}`)")

    def exit(self, status: int = 0, message: Optional[str] = None):
        if message:
            raise gdb.GdbError(message.strip())
        raise _HelpShown()


class _ShowDoc(argparse.Action):
    """-h/--help: print the command's docstring, as `help CMD` does."""

    def __init__(self, option_strings, dest, doc: str = "", **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.doc = doc

    def __call__(self, parser, namespace, values, option_string=None):
        gdb.write(self.doc.rstrip() + "\n")
        raise _HelpShown()


class _HelpShown(Exception):
    pass


_INTEGER_TYPES = (gdb.TYPE_CODE_INT, gdb.TYPE_CODE_PTR, gdb.TYPE_CODE_ENUM, gdb.TYPE_CODE_BOOL, gdb.TYPE_CODE_CHAR,
                  gdb.TYPE_CODE_FLAGS)  # $cr3, $efer, $eflags: flag types over an integer


def integer_of(value: gdb.Value) -> int | None:
    """A gdb value as the 64-bit integer it holds, or None if it is not one
    (a float, a string, a struct).  A negative value of a type of at most 8
    bytes is its bit pattern: `$rax` holding 0xffffffff80000000 is that
    address, as gdb's own `x $rax` reads it."""
    t = value.type.strip_typedefs()
    if t.code not in _INTEGER_TYPES:
        return None
    n = int(value)
    if n < 0 and t.sizeof <= 8:
        n &= MASK64
    return n if 0 <= n <= MASK64 else None


_REGISTER_TOKEN = re.compile(r"\$([a-z][a-z0-9_]*)\b")


def _saved_registers(text: str) -> str:
    """With a saved machine state open there are no registers in gdb: `$rsp`
    and the like in an expression are the saved vCPU's values."""
    from gdbext.target.session import offline

    if "$" not in text or offline() is None:
        return text
    from gdbext.target.snapshots import snapshot

    try:
        regs = snapshot().regs
    except (SnapshotError, gdb.GdbError):
        return text   # the command says why when it asks for the snapshot itself
    return _REGISTER_TOKEN.sub(lambda m: f"{regs[m.group(1)]:#x}" if m.group(1) in regs else m.group(0), text)


def _unsigned_value(text: str) -> int | None:
    """The value of an expression written with a leading minus when gdb reads it
    as a non-negative integer (`-1UL`), else None (`-1`, `-0x10`, not a number)."""
    try:
        value = gdb.parse_and_eval(_saved_registers(text))
        if value.type.strip_typedefs().code not in _INTEGER_TYPES:
            return None
        n = int(value)
    except (gdb.error, ValueError, TypeError, OverflowError):
        return None
    return n if 0 <= n <= MASK64 else None


def number(text: str, what: str = "a number", lo: int = 0, hi: int = MASK64) -> int:
    """`text` read as gdb reads a number or expression ($rsp-8, &symbol,
    0x10+8), which must be an integer in [lo, hi]: a value that does not fit
    is refused, never wrapped or truncated."""
    text = text.strip()
    if text.startswith("-"):
        raise argparse.ArgumentTypeError(f"{text} is negative; {what} is {_span(lo, hi)}")
    try:
        value = gdb.parse_and_eval(_saved_registers(text))
    except gdb.error as exc:
        raise argparse.ArgumentTypeError(f"not a number or expression: {text!r} ({exc})") from None
    n = integer_of(value)
    if n is None:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r} ({value.type})")
    if not lo <= n <= hi:
        raise argparse.ArgumentTypeError(f"{text} = {n:#x} is outside {_span(lo, hi)} ({what})")
    return n


def _span(lo: int, hi: int) -> str:
    return f"{lo}..{hi}" if hi < 0x1000 else f"{lo:#x}..{hi:#x}"


def number_type(what: str, lo: int = 0, hi: int = MASK64):
    """An argparse type for `number` with its own range."""
    def parse(text: str) -> int:
        return number(text, what, lo, hi)
    parse.__name__ = what  # argparse names the type in its messages
    return parse


# The common kinds of number.
parse_int = number_type("a 64-bit value")
address_arg = number_type("a linear address")
count_arg = number_type("a count")


def int_argument(where: str, value: gdb.Value, lo: int = 0, hi: int = MASK64) -> int:
    """A convenience function's integer argument, or a one-line GdbError."""
    n = integer_of(value)
    if n is None:
        raise gdb.GdbError(f"{where}: expected an integer, got {value.type}")
    if not lo <= n <= hi:
        raise gdb.GdbError(f"{where}: {n:#x} is outside {_span(lo, hi)}")
    return n


PREFIX = "gdbext"


def write_fitted(text: str) -> None:
    """Write lines of text (a stop's report) wrapped to gdb's width."""
    gdb.write("\n".join(fit_lines(text.splitlines(), output_width())) + "\n")


def output_width() -> Optional[int]:
    """gdb's `width` (the terminal's, at a terminal); None when unlimited."""
    try:
        width = gdb.parameter("width")
    except (gdb.error, RuntimeError):
        return None
    return width if isinstance(width, int) and 0 < width < 1_000_000 else None


def full_name(short: str) -> str:
    """Every command also lives under the `gdbext` prefix (`gdbext pagewalk`,
    `gdbext info gdt`, `gdbext symbols`), which another extension's names
    cannot shadow."""
    return f"{PREFIX} {short.removeprefix(PREFIX + '-')}"


# Every command class made, in order: its short name is registered last,
# when free (gdbext.commands.register).
COMMANDS: List[type] = []


class GdbextCommand(gdb.Command):
    """Base: subclasses set NAME, build their parser in `arguments`, and `run`.

    Made with no name, a command registers as full_name(NAME); the short
    NAME is a second instance, made by register_short_names()."""

    NAME = ""
    COMMAND_CLASS = gdb.COMMAND_STATUS
    # Needs a live guest (breakpoints, the monitor): refused while a saved
    # machine state is open in place of a target (gdbext-open).
    LIVE_ONLY = False
    # Text made of lines (not tables): wrapped at spaces to gdb's width.
    WRAP_TEXT = False
    # Its stub reads share one PhyMemMode switch (read-only commands whose
    # virtual reads, if any, go through PHYS.leave() first).
    PHYS_SESSION = False
    # invoke()'s from_tty for the run in progress.
    from_tty = False

    def __init__(self, name: Optional[str] = None) -> None:
        self.registered_name = name or full_name(self.NAME)
        super().__init__(self.registered_name, self.COMMAND_CLASS)
        if name is None and type(self) not in COMMANDS:
            COMMANDS.append(type(self))
        # The docstring is the help, the one text: `help CMD` shows it, and so
        # does `CMD --help`; the parser only parses.
        self.parser = _Parser(prog=self.NAME, add_help=False)
        self.parser.help_name = self.registered_name
        self.parser.add_argument("-h", "--help", action=_ShowDoc, nargs=0, doc=self.__doc__ or "")
        self.parser.add_argument("--json", action="store_true")
        self.arguments(self.parser)

    def arguments(self, parser: argparse.ArgumentParser) -> None:
        pass

    # What a positional argument completes to when it has no choices: gdb's
    # expression completer (addresses, selectors), or a list from `names()`.
    POSITIONAL_COMPLETION = gdb.COMPLETE_EXPRESSION

    def names(self) -> list[str]:
        """Words a positional argument may be (e.g. MSR names); [] for none."""
        return []

    def complete(self, text: str, word: str):
        """Options, their choices and the positional arguments, from the parser.

        gdb breaks words at '-' too, so the token being typed is taken from
        `text`, and each completion is returned from where `word` starts."""
        word = word or ""
        token = "" if not text or text[-1].isspace() else text.split()[-1]
        before = text[: len(text) - len(token)].split()
        cut = len(token) - len(word)

        def matching(candidates, fold: bool = False) -> list[str]:
            key = token.upper() if fold else token
            return [c[cut:] for c in candidates if (c.upper() if fold else c).startswith(key)]

        options = {o: a for a in self.parser._actions for o in a.option_strings}
        previous = options.get(before[-1]) if before else None
        if previous is not None and previous.nargs != 0:
            if previous.choices:
                return matching(str(c) for c in previous.choices)
            return gdb.COMPLETE_EXPRESSION
        if token.startswith("-"):
            return sorted(matching(o for o in options if o.startswith("--")))
        given = sum(1 for w in before if not w.startswith("-"))
        positionals = [a for a in self.parser._actions if not a.option_strings]
        if given < len(positionals) and positionals[given].choices:
            return matching(str(c) for c in positionals[given].choices)
        names = matching(self.names(), fold=True)
        if names:
            return names
        return self.POSITIONAL_COMPLETION if given < len(positionals) else gdb.COMPLETE_NONE

    def invoke(self, argument: str, from_tty: bool) -> None:
        self.dont_repeat()
        try:
            words = shlex.split(argument)
        except ValueError as exc:  # shlex: unbalanced quotes
            raise gdb.GdbError(f"{self.NAME}: {exc}") from None
        for i, word in enumerate(words):
            # argparse would take "-0x10" or "-(8)" for an unknown option.
            if len(word) > 1 and word[0] == "-" and not (word[1] == "-" or word[1].isalpha()):
                if _unsigned_value(word) is None:
                    raise gdb.GdbError(f"{self.NAME}: {word} is negative; addresses, selectors and counts "
                                       f"are not (see `help {self.registered_name}`)")
                # "-1UL" is an unsigned value gdb reads as 2**64-1: pass argparse the value.
                words[i] = str(_unsigned_value(word))
        try:
            # Options may stand anywhere, between positional arguments too.
            args = self.parser.parse_intermixed_args(words)
        except _HelpShown:
            return
        # Whether a person typed the command (a progress line may be shown).
        self.from_tty = from_tty
        try:
            if self.LIVE_ONLY:
                from gdbext.target.session import offline

                saved = offline()
                if saved is not None:
                    raise saved.refuse(self.NAME)  # type: ignore[attr-defined]
            with _memory_session(self.PHYS_SESSION):
                report, text = self.run(args)
        except gdb.GdbError:
            raise
        except ReportError as exc:
            raise gdb.GdbError(str(exc)) from None
        except (DecodeError, SnapshotError, SymbolError) as exc:
            raise gdb.GdbError(f"{self.NAME}: {exc}") from None
        except gdb.error as exc:
            raise gdb.GdbError(f"{self.NAME}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - a bug of ours: one line, never a traceback
            raise gdb.GdbError(f"{self.NAME}: internal error (a gdbext bug, please report it): "
                               f"{type(exc).__name__}: {exc}") from None
        if report is None and text is None:
            return  # the command wrote its output itself
        if args.json:
            gdb.write(to_json(report) + "\n")
            return
        if callable(text):   # text made only when it is shown: --json never pays for it
            text = _rendered(self.NAME, text)
        if self.WRAP_TEXT:
            text = "\n".join(fit_lines(text.splitlines(), output_width()))
        gdb.write(text + "\n")

    def run(self, args):
        """-> (report, text): the report is a dataclass of gdbext.views,
        serialized by to_json; text is a string or a function making it;
        (None, None) when run() wrote its output itself."""
        raise NotImplementedError


@contextlib.contextmanager
def _memory_session(wanted: bool):
    """The command's stub reads under one PhyMemMode switch (see
    gdbext.target.memory.PhysicalMemory.session), when it has a target."""
    if not wanted:
        yield
        return
    from gdbext import target

    try:
        phys = target.current().phys
    except TargetError:
        phys = None     # no target: the command says so itself
    if phys is None:
        yield
        return
    with phys.session():
        yield


def _rendered(name: str, make) -> str:
    try:
        return make()
    except ReportError as exc:
        raise gdb.GdbError(str(exc)) from None
    except (DecodeError, SnapshotError, SymbolError, gdb.error) as exc:
        raise gdb.GdbError(f"{name}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a bug of ours: one line, never a traceback
        raise gdb.GdbError(f"{name}: internal error (a gdbext bug, please report it): "
                           f"{type(exc).__name__}: {exc}") from None


def _defined(name: str) -> Optional[str]:
    """The first line of `help NAME` if NAME is exactly a command, else None."""
    try:
        completions = execute_text(f"complete {name}").splitlines()
    except gdb.error:
        return None
    if name not in (c.strip() for c in completions):
        return None
    try:
        return (execute_text(f"help {name}").strip().splitlines() or [""])[0]
    except gdb.error:
        return None


def _first_line(doc: Optional[str]) -> str:
    return ((doc or "").strip().splitlines() or [""])[0]


def register_short_names() -> List[str]:
    """Register each command's short name (`pagewalk`, `info gdt`) unless
    another extension owns it; returns the names left alone.  A name that is
    gdbext's own (an earlier load of another copy) is taken over."""
    left = []
    for cls in COMMANDS:
        owner = _defined(cls.NAME)
        if owner is not None and owner != _first_line(cls.__doc__):
            left.append(cls.NAME)
            continue
        cls(cls.NAME)
    return left


def capture_to_file(command: str, path: str) -> None:
    """Inside gdb: run `command` and write {"output"} or {"error"} to `path` as JSON.

    Large command output read back over MI can arrive after the command's
    result record and be credited to the next command; a file cannot.
    """
    try:
        doc = {"output": execute_text(command)}
    except Exception as exc:  # noqa: BLE001 - the caller records the error
        doc = {"error": str(exc)}
    Path(path).write_text(json.dumps(doc))
