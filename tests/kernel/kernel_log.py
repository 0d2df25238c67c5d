"""Reading the bundled kernel's serial log: its line formats are an interface
(kernel/README.md), parsed here once for every test."""
from __future__ import annotations

import re
from dataclasses import dataclass

FAULT_LINE = re.compile(
    r"^\[kernel\] FAULT vector=(?P<vector>\d+) \((?P<name>[^)]*)\) error=(?P<error>0x[0-9a-f]+) "
    r"cr2=(?P<cr2>0x[0-9a-f]+) rip=(?P<rip>0x[0-9a-f]+) cs=(?P<cs>0x[0-9a-f]+) rflags=(?P<rflags>0x[0-9a-f]+) "
    r"rsp=(?P<rsp>0x[0-9a-f]+) ss=(?P<ss>0x[0-9a-f]+) cpl=(?P<cpl>\d)$",
    re.MULTILINE,
)
EXIT_LINE = re.compile(r"^\[kernel\] exit: (?P<how>\S+)(?P<rest>.*)$", re.MULTILINE)
SYSCALL_LINE = re.compile(r"^\[kernel\] syscall #(?P<n>\d+) nr=(?P<nr>\d+) \((?P<name>\w+)\) via=(?P<via>\w+)", re.MULTILINE)
REPORT_LINE = re.compile(
    r"^\[kernel\] user report: cs=(?P<cs>0x[0-9a-f]+) ss=(?P<ss>0x[0-9a-f]+) rflags=(?P<rflags>0x[0-9a-f]+) "
    r"iopl=(?P<iopl>\d) if=(?P<if_>\d)$",
    re.MULTILINE,
)
SITE_LINE = re.compile(r"^\[kernel\] fault site: (?P<site>.+)$", re.MULTILINE)


@dataclass(frozen=True)
class Fault:
    vector: int
    name: str
    error: int
    cr2: int
    rip: int
    cs: int
    rflags: int
    rsp: int
    ss: int
    cpl: int
    site: str | None


def fault(log: str) -> Fault | None:
    m = FAULT_LINE.search(log)
    if m is None:
        return None
    site = SITE_LINE.search(log)
    ints = {k: int(v, 0) for k, v in m.groupdict().items() if k != "name"}
    return Fault(name=m["name"], site=site["site"] if site else None, **ints)


def syscalls(log: str) -> list[dict[str, str]]:
    return [m.groupdict() for m in SYSCALL_LINE.finditer(log)]


def report(log: str) -> dict[str, int] | None:
    m = REPORT_LINE.search(log)
    return {k.rstrip("_"): int(v, 0) for k, v in m.groupdict().items()} if m else None


def exit_line(log: str) -> re.Match | None:
    return EXIT_LINE.search(log)
