"""gdbext-status: what gdbext is connected to and where it reads memory from."""
from __future__ import annotations

from dataclasses import dataclass

import gdb

from gdbext import target
from gdbext.commands.base import GdbextCommand


@dataclass(frozen=True)
class StatusReport:
    """`gdbext-status --json`.  memory_source: "ram-file" | "qemu-process" |
    "stub" | "saved" (a saved machine state open, gdbext-open) | None (no
    target); not_used: why each faster source was not."""

    connected: bool
    connection: str | None
    qemu: bool | None
    accelerator: str | None
    vcpus: int
    memory_source: str | None
    memory: str | None
    not_used: tuple[str, ...]


class Status(GdbextCommand):
    """Say what gdbext is attached to and where it reads guest memory from.

Usage: gdbext-status [--json]

Guest-physical memory comes from the fastest source that read the same bytes
as the stub at this session's start: a shared RAM file (QEMU's
memory-backend-file,share=on), else the QEMU process itself through
/proc/PID/mem (QEMU on this machine, and ptrace rights on it), else the gdb
stub under QEMU's physical-memory mode.  The environment variable
GDBEXT_MEMORY=stub|qemu-process|ram-file, set before a connection, forces one.
With a saved machine state open (gdbext-open): that file, and no target.
JSON: {"connected", "connection", "qemu", "accelerator": "tcg"|"kvm",
"vcpus", "memory_source": "ram-file"|"qemu-process"|"stub"|"saved", "memory",
"not_used": [...]}."""

    NAME = "gdbext-status"
    COMMAND_CLASS = gdb.COMMAND_STATUS

    def run(self, args):
        saved = target.offline()
        if saved is not None:
            cpus = len(saved.machine.cpus)  # type: ignore[attr-defined]
            r = StatusReport(False, None, None, None, cpus, "saved", saved.phys.source, ())
            return r, (f"gdbext: no target; {saved.describe()} is open in its place "  # type: ignore[attr-defined]
                       f"({cpus} vCPU{'s' if cpus != 1 else ''}; `gdbext-open --close` ends it)")
        inferior = gdb.selected_inferior()
        conn = inferior.connection
        if conn is None or gdb.selected_thread() is None:
            r = StatusReport(False, None, None, None, 0, None, None, ())
            return r, "gdbext: no target; connect with `target remote HOST:PORT` to QEMU's gdb stub"
        details = getattr(conn, "details", None) or conn.type
        try:
            target.require_qemu()
        except target.TargetError:
            r = StatusReport(True, details, False, None, len(inferior.threads()), None, None, ())
            return r, f"gdbext: connected to {details}, a gdb stub that is not QEMU's: gdbext needs QEMU"
        phys = target.current().phys
        kind = phys.kind
        r = StatusReport(True, details, True, "kvm" if target.uses_kvm() else "tcg", len(inferior.threads()),
                         kind, phys.source if kind != "stub" else "gdb stub (PhyMemMode)", tuple(phys.rejected))
        lines = [f"gdbext: QEMU ({r.accelerator.upper()}, {r.vcpus} vCPU{'s' if r.vcpus != 1 else ''}) at {details}",
                 f"guest memory: {r.memory}"]
        lines += [f"  not used: {why}" for why in r.not_used]
        return r, "\n".join(lines)


def register() -> None:
    Status()
