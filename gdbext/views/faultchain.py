"""`fault-chain`: the exceptions QEMU's log saw, and why each delivery failed."""
from __future__ import annotations

import textwrap
from dataclasses import dataclass

from gdbext.model.qemu_log import Chain, Record
from gdbext.model.snapshot import Snapshot
from gdbext.rules.delivery import DeliveryReport, explain
from gdbext.views.common import hx
from gdbext.views.text import simple_table
from gdbext.x86.idt import ERROR_CODE_VECTORS

# What a second `continue` does after a triple fault (measured, QEMU 7.2 and
# gdb 13): the VM stays paused in the shutdown state and gdb waits.
AFTER_TRIPLE_FAULT = ("QEMU keeps the VM paused after the triple fault (`monitor info status`: paused "
                      "(shutdown)); continuing runs nothing: `monitor quit` ends it (since QEMU 9 `kill` only pauses it again)")
WIDTH = 80


@dataclass(frozen=True)
class Escalation:
    old: int | None
    new: int


@dataclass(frozen=True)
class ChainEntry:
    """One event of the chain.  error_code: None for a vector that pushes none;
    cr2: for a #PF only; escalation: QEMU's check_exception line before it."""

    vector: int
    name: str
    error_code: int | None
    rip: int
    cpl: int
    cr2: int | None
    rsp: int
    software: bool
    explanation: str
    hardware: bool
    cs: int
    ss: int
    outcome: str
    matches_log: bool | None
    escalation: Escalation | None
    qemu_index: int


@dataclass(frozen=True)
class FaultChainReport:
    log: str
    chain: tuple[ChainEntry, ...]
    triple_fault: bool
    vcpus: int | None
    summary: str
    notes: tuple[str, ...]


def _error_code(record: Record) -> int | None:
    pushes = record.vector in ERROR_CODE_VECTORS and not record.software and not record.hardware
    return record.error_code if pushes else None


def fault_chain_report(log: str, chain: Chain, snap: Snapshot, *, live_vcpus: int | None = None,
                       extra_notes: tuple[str, ...] = ()) -> FaultChainReport:
    delivery: DeliveryReport = explain(chain, snap)
    entries = []
    for record, e in zip(chain.records, delivery.explanations):
        esc = record.escalation
        entries.append(ChainEntry(
            vector=record.vector, name=e.name, error_code=_error_code(record), rip=record.rip,
            cpl=record.cpl, cr2=record.cr2 if record.vector == 14 else None, rsp=record.rsp,
            software=record.software, explanation=e.text, hardware=record.hardware, cs=record.cs,
            ss=record.ss, outcome=e.outcome, matches_log=e.matches_log,
            escalation=Escalation(esc.old, esc.new) if esc is not None else None, qemu_index=record.index))
    notes = list(chain.notes)
    vcpus = chain.vcpus if chain.vcpus is not None else live_vcpus
    if live_vcpus is not None and vcpus is not None and live_vcpus > vcpus:
        vcpus = live_vcpus
    if vcpus is not None and vcpus > 1 and not any("mix vCPUs" in n for n in notes):
        notes.append(f"{vcpus} vCPUs: QEMU's log does not say which vCPU took each event, "
                     "so the chain may mix vCPUs")
    for e in delivery.explanations:
        notes.extend(f"{e.name}: {n}" for n in e.notes)
    notes.extend(delivery.notes)
    if chain.triple_fault:
        notes.append(AFTER_TRIPLE_FAULT)
    notes.extend(extra_notes)
    return FaultChainReport(log=log, chain=tuple(entries), triple_fault=chain.triple_fault, vcpus=vcpus,
                            summary=delivery.summary, notes=tuple(notes))


def _wrap(text: str, indent: str = "  ") -> str:
    return "\n".join(textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  "))


def fault_chain_text(r: FaultChainReport) -> str:
    vcpus = f", {r.vcpus} vCPU{'s' if r.vcpus != 1 else ''}" if r.vcpus else ""
    what = "triple fault" if r.triple_fault else "no triple fault; the last exceptions"
    lines = [f"QEMU log {r.log}: {what}{vcpus}"]
    if not r.chain:
        lines.append("  no exception logged" + (" before it" if r.triple_fault else ""))
    else:
        # Three 64-bit addresses fill 80 columns: CS and SS are in the JSON,
        # what followed is in the explanations below.
        rows = [(e.name, hx(e.error_code), hx(e.rip), e.cpl, hx(e.rsp), hx(e.cr2)) for e in r.chain]
        table = simple_table(rows, ("event", "error", "RIP", "CPL", "RSP", "CR2"))
        lines += ["  " + line for line in table.splitlines()]
        lines.append("")
        lines.append(_wrap(r.summary, ""))
        lines.append("")
        for e in r.chain:
            lines.append(_wrap(f"{e.name}: {e.explanation}"))
    for note in r.notes:
        lines.append(_wrap(f"note: {note}", ""))
    return "\n".join(lines)
