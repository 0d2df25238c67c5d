"""The QEMU process behind a gdb connection, when it runs on this machine.

gdb talks to QEMU's stub over a socket.  When the other end of that socket is
a process here, its guest RAM can be read straight from `/proc/PID/mem` (the
same rights as ptrace), a thousand times cheaper than `m` packets.  This
module finds that process from gdb's own sockets, through /proc alone:

- TCP: gdb's connected socket to the stub's port (`/proc/self/fd` gives the
  socket inodes, `/proc/net/tcp{,6}` their endpoints); the peer is the
  socket whose endpoints are the same two, reversed; its owner is the
  process holding that inode.
- a unix socket: /proc does not name a unix socket's peer, so the process
  is the one (other than gdb) holding a socket bound to the path gdb
  connected to.

Nothing here talks to gdb: the caller passes the connection's `details`
("localhost:1234", "127.0.0.1:1234", "/path/to/socket") and verifies
whatever is found against the stub's own bytes before trusting it.
"""
from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

_SOCKET = re.compile(r"socket:\[(\d+)\]")


@dataclass(frozen=True)
class TcpSocket:
    local: tuple[str, int]
    remote: tuple[str, int]
    state: int
    inode: int


def _address(text: str) -> tuple[str, int]:
    """'0100007F:04D2' -> ('127.0.0.1', 1234): /proc/net/tcp prints the
    address as the kernel's 32-bit words in host (little-endian) order."""
    addr, port = text.split(":")
    raw = bytes.fromhex(addr)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words)), int(port, 16)


def parse_proc_net_tcp(text: str) -> list[TcpSocket]:
    """The sockets of /proc/net/tcp or /proc/net/tcp6 (header line skipped)."""
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        try:
            out.append(TcpSocket(_address(fields[1]), _address(fields[2]), int(fields[3], 16), int(fields[9])))
        except ValueError:
            continue
    return out


def parse_proc_net_unix(text: str) -> dict[int, str]:
    """inode -> bound path, for the unix sockets of /proc/net/unix that have one."""
    out = {}
    for line in text.splitlines()[1:]:
        fields = line.split(None, 7)
        if len(fields) >= 8 and fields[6].isdigit():
            out[int(fields[6])] = fields[7]
    return out


def socket_inodes(pid: int | str) -> set[int]:
    """The socket inodes a process holds (empty when its fds are not readable)."""
    inodes = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for name in names:
        try:
            m = _SOCKET.fullmatch(os.readlink(f"/proc/{pid}/fd/{name}"))
        except OSError:
            continue
        if m:
            inodes.add(int(m.group(1)))
    return inodes


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _processes() -> Iterable[int]:
    """PIDs, QEMUs first (a peer is almost always one): fewer fd tables read."""
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    def qemu_first(pid: int) -> int:
        return 0 if _read(f"/proc/{pid}/comm").startswith("qemu") else 1
    return sorted(pids, key=qemu_first)


def _owner(inodes: set[int], exclude: int) -> int | None:
    for pid in _processes():
        if pid != exclude and socket_inodes(pid) & inodes:
            return pid
    return None


def parse_details(details: str) -> tuple[str, object] | None:
    """A connection's details -> ("tcp", port) or ("unix", path); None for
    anything else (a pipe, a serial line)."""
    text = details.strip()
    for prefix in ("tcp:", "tcp4:", "tcp6:"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    if text.startswith("/"):
        return "unix", text
    m = re.fullmatch(r"(?:\[?[^\]\s]*\]?)?:(\d{1,5})", text)
    if m:
        return "tcp", int(m.group(1))
    return None


def find_stub_process(details: str, me: int | None = None) -> tuple[int | None, str]:
    """The PID of the process at the other end of gdb's connection, and,
    when there is none, why (a line for the user)."""
    me = os.getpid() if me is None else me
    kind = parse_details(details)
    if kind is None:
        return None, f"the connection ({details}) is not a TCP or unix socket"
    mine = socket_inodes(me)
    if kind[0] == "unix":
        bound = parse_proc_net_unix(_read("/proc/net/unix"))
        inodes = {i for i, path in bound.items() if path == kind[1] and i not in mine}
        if not inodes:
            return None, f"no process here has the unix socket {kind[1]} bound"
        pid = _owner(inodes, me)
        return (pid, "") if pid else (None, f"the process behind {kind[1]} is not visible here")
    port = kind[1]
    sockets = parse_proc_net_tcp(_read("/proc/net/tcp")) + parse_proc_net_tcp(_read("/proc/net/tcp6"))
    ours = [s for s in sockets if s.inode in mine and s.remote[1] == port and s.state == 1]  # 1: ESTABLISHED
    if not ours:
        return None, f"gdb has no established socket to port {port}"
    for s in ours:
        peers = {p.inode for p in sockets if p.local == s.remote and p.remote == s.local and p.inode}
        if not peers:
            continue   # the peer is on another host
        pid = _owner(peers, me)
        if pid is not None:
            return pid, ""
        return None, ("the stub's process is not visible here (another user's, or in another namespace); "
                      "run gdb as QEMU's user to read its memory directly")
    return None, f"the stub at port {port} is on another host"
