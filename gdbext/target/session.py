"""One debugging session: everything gdbext knows about one gdb connection.

Whether the stub is QEMU, where guest-physical memory is read from (a RAM
file verified against this stub's own bytes, or the stub), the monitor state
kept per vCPU, the snapshots of this stop, the MSR values learnt, the
remote register layout, and the state of commands that live as long as the
connection (sysret-watch): all of it is in the Session, and nothing outside
it keeps state across stops.

A Session is made on the first command after a connection and dropped on
gdb's `connection_removed` and `exited` events, when gdb's selected inferior
is on another connection (a new `target remote`), and when the stub stops
answering; a command then says the connection was lost, never a cached
answer.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gdb

from gdbext.target.remote import TargetError

# gdb's messages when a remote stub went away (remote.c, ser-*.c).
_LOST = ("Remote connection closed", "Remote communication error", "Connection reset", "Broken pipe",
         "The program is not being run", "not connected", "Target disconnected")


class Session:
    """The state of one gdb connection to a stub."""

    # A saved machine state opened with gdbext-open (gdbext.target.saved)
    # is a Session with no connection: offline.
    offline = False

    def __init__(self, connection: Any):
        from gdbext.target.memory import (
            PhysicalMemory,  # memory builds on remote, as this module does
        )

        self.connection = connection
        self.number = getattr(connection, "num", None)
        self.is_qemu: bool | None = None
        self.phys = PhysicalMemory()
        self.snapshots: dict[tuple[int, int], Any] = {}      # (inferior, thread) -> Snapshot of this stop
        self.monitor: dict[tuple[int, int], Any] = {}        # (inferior, vCPU) -> kept `info registers`
        self.msrs: dict[int, dict[int, int]] = {}            # vCPU -> MSR -> last value read or written
        self.register_layout: dict[str, tuple[int, int]] = {}  # name -> (stub number, size)
        self.features: dict[str, Any] = {}                   # what this stub answered (e.g. KVM or TCG)
        self.state: dict[str, Any] = {}                      # per-connection state of commands (the watch)

    def valid(self) -> bool:
        conn = self.connection
        try:
            return conn is not None and conn.is_valid()
        except (AttributeError, RuntimeError):
            return False

    def learn_msrs(self, cpu: int, values: dict[int, int]) -> None:
        self.msrs.setdefault(cpu, {}).update(values)

    def of(self, key: str, make: Callable[[], Any]) -> Any:
        """Per-connection state of a command, made on first use."""
        value = self.state.get(key)
        if value is None:
            value = self.state[key] = make()
        return value


_current: list[Session | None] = [None]
# Called with the Session being dropped (e.g. the watch deletes its
# breakpoints): code, registered once at load, not connection state.
_drop_hooks: list[Callable[[Session], None]] = []


def on_drop(hook: Callable[[Session], None]) -> None:
    if hook not in _drop_hooks:
        _drop_hooks.append(hook)


def current() -> Session:
    """The Session of gdb's selected inferior's connection; a new one when
    that connection is not the one the last Session belonged to."""
    conn = gdb.selected_inferior().connection
    session = _current[0]
    if conn is None:
        if session is not None and session.offline:
            return session
        drop()
        raise TargetError("gdbext: no target; connect first with `target remote HOST:PORT` to QEMU's gdb "
                          "stub, or open a saved machine state with `gdbext-open FILE`")
    # A connection made while a saved state was open ends the saved state:
    # it is not this connection's.
    if session is not None and (session.connection is not conn or not session.valid()):
        drop()
        session = None
    if session is None:
        session = _current[0] = Session(conn)
    return session


def offline() -> Session | None:
    """The saved machine state open in place of a target (gdbext-open), if
    one is and gdb has no connection; else None."""
    session = _current[0]
    if session is None or not session.offline:
        return None
    if gdb.selected_inferior().connection is not None:
        drop()   # connecting to a target ends the saved state
        return None
    return session


def open_offline(session: Session) -> None:
    """Make `session` (offline) the current one, ending any other."""
    drop()
    _current[0] = session


def peek() -> Session | None:
    """The current Session, if there is one, without making one."""
    return _current[0]


def drop(*_event: object) -> None:
    """Forget everything about the connection (a gdb event handler too)."""
    session = _current[0]
    _current[0] = None
    if session is not None:
        for hook in _drop_hooks:
            try:
                hook(session)
            except Exception:  # noqa: BLE001 - one hook's failure must not keep stale state
                pass
        try:
            session.phys.close()
        except Exception:  # noqa: BLE001 - a gdb event handler: never a traceback
            pass


def lost(exc: BaseException) -> bool:
    """Whether a gdb error says the stub went away."""
    text = str(exc)
    return any(marker in text for marker in _LOST)


def connection_lost(exc: BaseException) -> TargetError:
    """Drop the Session and say so in one line."""
    drop()
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return TargetError(f"gdbext: the connection to the target was lost ({first}); "
                       "connect again with `target remote HOST:PORT`")


def connect_events(connect: bool = True) -> None:
    """Hook (or, with connect=False, unhook) the events that end a session."""
    for name in ("connection_removed", "exited"):
        event = getattr(gdb.events, name, None)
        if event is not None:
            (event.connect if connect else event.disconnect)(drop)
