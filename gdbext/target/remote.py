"""The gdb connection: remote packets, QEMU's monitor, the selected vCPU, registers."""
from __future__ import annotations

import contextlib
import signal
from typing import Dict, Iterator, Optional

import gdb  # noqa: F401  (this module is the gdb boundary)

from gdbext.model.qemu_text import captured_text
from gdbext.model.snapshot import (
    CONTROL_REGS,
    GENERAL_REGS,
    SEGMENT_NAMES,
)
from gdbext.rules.memo import LazyRegisters
from gdbext.x86.bits import MASK64


class TargetError(gdb.GdbError):
    """A one-line reason why the target cannot answer; shown without a traceback."""


# Inside a gdb.Breakpoint.stop() callback the guest is stopped, but gdb still
# reports the thread as running; callbacks say so with `in_stop_callback()`.
_in_stop_callback = [0]


@contextlib.contextmanager
def in_stop_callback() -> Iterator[None]:
    _in_stop_callback[0] += 1
    try:
        yield
    finally:
        _in_stop_callback[0] -= 1


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold Ctrl-C back until the block is done: a change to the guest that
    must be undone (rdmsr injection) is never left half-way.

    gdb turns SIGINT into a KeyboardInterrupt raised once the packet in
    flight is done, or at Python's next instruction.  Inside, SIGINT is
    blocked for this thread, so it waits in the kernel; one already taken
    is raised here first, before anything is changed; one that came during
    the block is delivered, and raised, when it is unblocked."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        (lambda: None)()   # an interrupt taken before the block is raised here
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def in_condition() -> bool:
    """Inside a breakpoint condition (or a stop() callback): the guest is
    stopped, but gdb marks the thread running, and it resumes the guest
    itself afterwards; nothing may step the guest here."""
    thread = gdb.selected_thread()
    return bool(_in_stop_callback[0]) or (thread is not None and thread.is_running())


def _refuse_offline(what: str = "this") -> None:
    """A saved machine state is open in place of a target: nothing live to ask."""
    from gdbext.target.session import offline

    saved = offline()
    if saved is not None:
        raise saved.refuse(what)  # type: ignore[attr-defined]


def _connection():
    from gdbext.target.session import current

    _refuse_offline()
    thread = gdb.selected_thread()
    if thread is None:
        raise TargetError("gdbext: no target; connect first with `target remote HOST:PORT` to QEMU's gdb stub")
    if thread.is_running() and not _in_stop_callback[0]:
        # Either really running, or gdb is evaluating a breakpoint condition
        # (the thread is marked running while it does): only then are the
        # registers readable.
        try:
            gdb.parse_and_eval("$pc")
        except gdb.error:
            raise TargetError("gdbext: the target is running; interrupt it first (Ctrl-C or `interrupt`)") from None
    session = current()
    conn = session.connection
    if not hasattr(conn, "send_packet"):
        raise TargetError("gdbext: the target is not a remote gdb stub; gdbext needs QEMU's (`qemu -s` or `-gdb tcp::PORT`)")
    return conn


def send_packet(packet: str) -> bytes:
    from gdbext.target.session import connection_lost, lost

    conn = _connection()
    try:
        reply = conn.send_packet(packet)
    except gdb.error as exc:
        if lost(exc) or not conn.is_valid():
            raise connection_lost(exc) from None
        raise TargetError(f"gdbext: the stub did not take `{packet[:24]}`: {exc}") from None
    if reply is None:  # an empty reply: the stub does not know the packet
        return b""
    if isinstance(reply, str):  # gdb < 13 returned str
        reply = reply.encode("latin-1")
    return reply


def ping() -> None:
    """One harmless packet every stub answers (qAttached), so that a command
    never shows a cached answer for a stub that went away."""
    send_packet("qAttached")


def require_qemu() -> None:
    """QEMU answers `qqemu.sstepbits`; other stubs answer with an empty packet."""
    from gdbext.target.session import current

    _refuse_offline()
    session = current()
    if session.is_qemu is None:
        session.is_qemu = send_packet("qqemu.sstepbits").startswith(b"ENABLE=")
    if not session.is_qemu:
        raise TargetError("gdbext: this gdb stub is not QEMU's; gdbext needs QEMU (TCG) to read descriptor "
                          "tables, hidden segment state and MSRs")


def uses_kvm() -> bool:
    """Whether QEMU runs this guest under KVM (asked once per session).  Under
    KVM a software breakpoint is an int3 written into guest memory."""
    from gdbext.target.session import current

    require_qemu()
    session = current()
    kvm = session.features.get("kvm")
    if kvm is None:
        kvm = session.features["kvm"] = "disabled" not in hmp("info kvm")
    return kvm


def execute_text(command: str) -> str:
    """What a gdb command prints, as text, under the CLI and MI alike."""
    return captured_text(gdb.execute(command, to_string=True))


def hmp(command: str) -> str:
    """A QEMU monitor command through the stub (`monitor ...`)."""
    from gdbext.target.session import connection_lost, lost

    require_qemu()
    try:
        return execute_text(f"monitor {command}")
    except gdb.error as exc:
        if lost(exc):
            raise connection_lost(exc) from None
        raise TargetError(f"gdbext: QEMU monitor command `{command}` failed: {exc}") from None


def selected_cpu() -> int:
    """QEMU's vCPU index for gdb's selected thread (QEMU numbers threads cpu_index + 1);
    the selected saved vCPU when a saved machine state is open."""
    from gdbext.target.session import offline

    saved = offline()
    if saved is not None:
        return saved.selected  # type: ignore[attr-defined]
    thread = gdb.selected_thread()
    if thread is None:
        raise TargetError("gdbext: no thread selected")
    return thread.ptid[1] - 1


_REGISTER_NAMES = frozenset(GENERAL_REGS + SEGMENT_NAMES + CONTROL_REGS)


def _gdb_register(name: str) -> Optional[int]:
    try:
        # `$name`, not newest_frame().read_register(): a frame object needs
        # the frame's id, and computing it unwinds the stack, which costs
        # four memory packets at every breakpoint stop.
        return int(gdb.parse_and_eval("$" + name)) & MASK64
    except (ValueError, gdb.error):
        return None


class LiveRegisters(LazyRegisters):
    """gdb's registers of the innermost frame, each read on first use: a check
    that needs a dozen registers pays for a dozen reads."""

    def __init__(self) -> None:
        super().__init__(_gdb_register, _REGISTER_NAMES)


def read_gdb_registers() -> Dict[str, int]:
    frame = gdb.newest_frame()  # registers of the innermost frame: what the CPU holds
    regs: Dict[str, int] = {}
    for name in GENERAL_REGS + SEGMENT_NAMES + CONTROL_REGS:
        try:
            value = frame.read_register(name)
        except (ValueError, gdb.error):
            continue
        regs[name] = int(value) & MASK64
    return regs
