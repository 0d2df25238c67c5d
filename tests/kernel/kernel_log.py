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


# QEMU's `-d int` log (TCG), the independent witness of deliveries that
# never reach a handler.  Per event QEMU 7.2 and 10.0 print, from
# target/i386/tcg/seg_helper.c and excp_helper.c:
#      62: v=0e e=0002 i=0 cpl=3 IP=002b:00000000004001c1 pc=... SP=... CR2=ffffffff84009638
#   check_exception old: 0xe new 0xe          (a fault while delivering one)
#   Triple fault
# `v=` lines are deliveries (i=1: a software interrupt, e.g. int $0x80;
# CR2= only for #PF), `check_exception` lines are exceptions raised while
# the one named `old` (0xffffffff: none) was being delivered.
QEMU_INT_EVENT = re.compile(
    r"^\s*\d+: v=(?P<vector>[0-9a-f]+) e=(?P<error>[0-9a-f]+) i=(?P<soft>\d) cpl=(?P<cpl>\d) "
    r"IP=(?P<cs>[0-9a-f]+):(?P<rip>[0-9a-f]+) .*?(?:CR2=(?P<cr2>[0-9a-f]+))?$"
    r"|^check_exception old: 0x(?P<old>[0-9a-f]+) new 0x(?P<new>[0-9a-f]+)$"
    r"|^(?P<triple>Triple fault)$",
    re.MULTILINE,
)
NO_EXCEPTION = 0xFFFFFFFF


@dataclass(frozen=True)
class Delivery:
    vector: int
    error: int
    software: bool
    cpl: int
    cs: int
    rip: int
    cr2: int | None


@dataclass(frozen=True)
class Raised:
    """An exception raised while `old` was being delivered (None: while none was)."""

    old: int | None
    new: int


@dataclass(frozen=True)
class TripleFault:
    pass


def qemu_int_events(text: str) -> list[Delivery | Raised | TripleFault]:
    events: list[Delivery | Raised | TripleFault] = []
    for m in QEMU_INT_EVENT.finditer(text):
        if m["triple"]:
            events.append(TripleFault())
        elif m["new"] is not None:
            old = int(m["old"], 16)
            events.append(Raised(None if old == NO_EXCEPTION else old, int(m["new"], 16)))
        else:
            events.append(Delivery(
                vector=int(m["vector"], 16), error=int(m["error"], 16), software=m["soft"] == "1",
                cpl=int(m["cpl"]), cs=int(m["cs"], 16), rip=int(m["rip"], 16),
                cr2=int(m["cr2"], 16) if m["cr2"] else None,
            ))
    return events
