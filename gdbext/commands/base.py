"""What every gdbext command shares: one-line errors, numbers read as gdb reads them, symbols."""
from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import List, Optional

import gdb

from gdbext.model.snapshot import SnapshotError
from gdbext.model.symbols import SymbolError, SymbolTable
from gdbext.views.common import ReportError, to_json
from gdbext.x86 import DecodeError

_symbols: List[Optional[SymbolTable]] = [None]


def symbolize(address: int) -> Optional[str]:
    """gdb's own symbols first, then an ELF loaded with gdbext-symbols."""
    try:
        text = gdb.execute(f"info symbol {address:#x}", to_string=True).strip()
    except gdb.error:
        text = ""
    if text and not text.startswith("No symbol"):
        name = text.split(" in section ")[0]
        return name.replace(" + ", "+")
    table = _symbols[0]
    return table.lookup(address) if table else None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump, no SystemExit
        raise gdb.GdbError(f"{self.prog}: {message} (see `help {self.prog}`)")

    def exit(self, status: int = 0, message: Optional[str] = None):
        if message:
            raise gdb.GdbError(message.strip())
        raise _HelpShown()


class _HelpShown(Exception):
    pass


def parse_int(text: str) -> int:
    """An integer or a gdb expression ($rsp, &symbol, 0x10+8)."""
    try:
        return int(text, 0)
    except ValueError:
        pass
    try:
        return int(gdb.parse_and_eval(text)) & 0xFFFFFFFFFFFFFFFF
    except gdb.error as exc:
        raise argparse.ArgumentTypeError(f"not a number or expression: {text!r} ({exc})") from None


class GdbextCommand(gdb.Command):
    """Base: subclasses set NAME, build their parser in `arguments`, and `run`."""

    NAME = ""
    COMMAND_CLASS = gdb.COMMAND_STATUS

    def __init__(self) -> None:
        super().__init__(self.NAME, self.COMMAND_CLASS)
        self.parser = _Parser(prog=self.NAME, description=(self.__doc__ or "").split("\n\n")[0], add_help=True)
        self.parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
        self.arguments(self.parser)

    def arguments(self, parser: argparse.ArgumentParser) -> None:
        pass

    def invoke(self, argument: str, from_tty: bool) -> None:
        self.dont_repeat()
        try:
            args = self.parser.parse_args(shlex.split(argument))
        except _HelpShown:
            return
        except ValueError as exc:  # shlex: unbalanced quotes
            raise gdb.GdbError(f"{self.NAME}: {exc}") from None
        try:
            report, text = self.run(args)
        except ReportError as exc:
            raise gdb.GdbError(str(exc)) from None
        except (DecodeError, SnapshotError, SymbolError) as exc:
            raise gdb.GdbError(f"{self.NAME}: {exc}") from None
        gdb.write((to_json(report) if args.json else text) + "\n")

    def run(self, args):  # -> (report dict, text)
        raise NotImplementedError


def capture_to_file(command: str, path: str) -> None:
    """Inside gdb: run `command` and write {"output"} or {"error"} to `path` as JSON.

    Large command output read back over MI can arrive after the command's
    result record and be credited to the next command; a file cannot.
    """
    try:
        doc = {"output": gdb.execute(command, to_string=True)}
    except Exception as exc:  # noqa: BLE001 - the caller records the error
        doc = {"error": str(exc)}
    Path(path).write_text(json.dumps(doc))
