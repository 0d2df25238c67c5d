"""Guest-physical memory: a shared RAM file by mmap, or the stub under PhyMemMode."""
from __future__ import annotations

import contextlib
import mmap
import os
import re
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import gdb  # noqa: F401  (this module is the gdb boundary)

from gdbext.model.snapshot import (
    SnapshotError,
)
from gdbext.target.remote import TargetError, hmp, send_packet

_MAX_M = 2048  # QEMU advertises PacketSize=0x1000: a hex reply carries 2048 bytes


@contextlib.contextmanager
def phys_mode() -> Iterator[None]:
    """QEMU's stub reads physical memory while inside; the mode is global in
    QEMU and survives a detach, so it is always put back as it was."""
    before = send_packet("qqemu.PhyMemMode")
    if send_packet("Qqemu.PhyMemMode:1") != b"OK":
        raise TargetError("gdbext: QEMU refused physical-memory mode (Qqemu.PhyMemMode)")
    try:
        yield
    finally:
        send_packet("Qqemu.PhyMemMode:" + ("1" if before.strip() == b"1" else "0"))
        gdb.execute("maint flush dcache", to_string=True)


def reset_phys_mode() -> None:
    """Put QEMU back in virtual mode (after an interrupted earlier session)."""
    with contextlib.suppress(gdb.error, TargetError):
        if send_packet("qqemu.PhyMemMode").strip() == b"1":
            send_packet("Qqemu.PhyMemMode:0")


def _stub_read(addr: int, size: int) -> bytes:
    out = bytearray()
    while size:
        n = min(size, _MAX_M)
        reply = send_packet(f"m{addr:x},{n:x}")
        if reply.startswith(b"E") and len(reply) == 3:
            raise SnapshotError(f"QEMU could not read physical {addr:#x}")
        out += bytes.fromhex(reply.decode("ascii"))
        addr += n
        size -= n
    return bytes(out)


@dataclass(frozen=True)
class _RamWindow:
    start: int        # guest-physical
    end: int          # exclusive
    offset: int       # into the backing file


class SharedRam:
    """Guest RAM backed by a shared file (`memory-backend-file,share=on`):
    read by mmap, with no packet at all.  The layout (which guest-physical
    ranges are which file offsets) comes from `info mtree -f` once."""

    def __init__(self, path: str, windows: List[_RamWindow]):
        fd = os.open(path, os.O_RDONLY)
        try:
            self._map = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        self.path = path
        self.windows = windows

    def read(self, pa: int, size: int) -> Optional[bytes]:
        for w in self.windows:
            if w.start <= pa and pa + size <= w.end:
                off = w.offset + pa - w.start
                return self._map[off:off + size]
        return None


_MTREE_RE = re.compile(
    r"^\s*([0-9a-f]+)-([0-9a-f]+) \(prio [-\d]+, ram\): (\S+)(?: @([0-9a-f]+))?", re.M)


def _find_shared_ram() -> Optional[SharedRam]:
    objects = hmp("qom-list /objects")
    for line in objects.splitlines():
        name, _, kind = line.strip().partition(" (")
        if not kind.startswith("child<memory-backend-file>"):
            continue
        share = hmp(f"qom-get /objects/{name} share").strip()
        path = hmp(f"qom-get /objects/{name} mem-path").strip().strip('"')
        if share != "true" or not os.path.exists(path):
            continue
        flat = hmp("info mtree -f")
        # Only the system address space: the FlatView block that lists
        # AS "memory".  QEMU prints the blocks in hash order, not always first.
        system = next((b for b in re.split(r"^FlatView #\d+", flat, flags=re.M) if ' AS "memory"' in b), "")
        windows = []
        for m in _MTREE_RE.finditer(system):
            start, end, region, offset = m.groups()
            if region == name:
                windows.append(_RamWindow(int(start, 16), int(end, 16) + 1, int(offset or "0", 16)))
        if windows:
            try:
                return SharedRam(path, windows)
            except OSError:
                return None
    return None


def _differs_from_stub(shared: SharedRam) -> Optional[str]:
    """Why the RAM file is not this guest's memory, or None when it is.

    The path came from this QEMU's own object tree, but a file is only
    trusted once it holds what the stub reads at the same addresses: the
    page of the live page-table root (CR3) and the first and last pages of
    each RAM window."""
    pages = []
    with contextlib.suppress(gdb.error, ValueError):
        pages.append(int(gdb.parse_and_eval("$cr3")) & 0x000FFFFFFFFFF000)
    for w in shared.windows:
        pages += [w.start, max(w.start, w.end - 0x1000)]
    with phys_mode():
        for pa in pages:
            mine = shared.read(pa, 256)
            if mine is None:
                continue
            if _stub_read(pa, 256) != mine:
                return f"the RAM file {shared.path} does not hold what the stub reads at {pa:#x}"
    return None


class PhysicalMemory:
    """Reads guest-physical memory the fastest way available."""

    def __init__(self) -> None:
        self._shared: Optional[SharedRam] = None
        self._probed = False
        self.stub_reads = 0
        self._session: Optional[contextlib.ExitStack] = None
        self._in_phys_mode = False

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Stub reads inside share one phys_mode(): entered at the first of
        them, if any, and left (mode restored, dcache flushed) at the end."""
        if self._session is not None:   # nested: the outer session does it
            yield
            return
        with contextlib.ExitStack() as stack:
            self._session = stack
            try:
                yield
            finally:
                self._session = None
                self._in_phys_mode = False

    def _stub(self, pa: int, size: int) -> bytes:
        self.stub_reads += 1
        if self._session is None:
            with phys_mode():
                return _stub_read(pa, size)
        if not self._in_phys_mode:
            self._session.enter_context(phys_mode())
            self._in_phys_mode = True
        return _stub_read(pa, size)

    def _probe(self) -> None:
        if not self._probed:
            self._probed = True
            self.rejected: Optional[str] = None
            if os.environ.get("GDBEXT_NO_SHARED_RAM") != "1":
                with contextlib.suppress(TargetError, OSError, ValueError):
                    shared = _find_shared_ram()
                    if shared is not None:
                        self.rejected = _differs_from_stub(shared)
                        self._shared = None if self.rejected else shared

    @property
    def shared(self) -> bool:
        self._probe()
        return self._shared is not None

    @property
    def source(self) -> str:
        self._probe()
        if self._shared:
            return f"shared RAM file {self._shared.path}"
        return "gdb stub (PhyMemMode)" + (f"; {self.rejected}" if self.rejected else "")

    def read(self, pa: int, size: int) -> bytes:
        self._probe()
        if self._shared is not None:
            data = self._shared.read(pa, size)
            if data is not None:
                return data
        return self._stub(pa, size)

    def read_many(self, requests: List[Tuple[int, int]]) -> List[bytes]:
        """Several reads under one mode switch."""
        self._probe()
        out: List[Optional[bytes]] = [None] * len(requests)
        todo = []
        for i, (pa, size) in enumerate(requests):
            if self._shared is not None:
                out[i] = self._shared.read(pa, size)
            if out[i] is None:
                todo.append(i)
        if todo:
            with self.session():
                for i in todo:
                    out[i] = self._stub(*requests[i])
        return [b for b in out]  # type: ignore[misc]


class _SessionMemory:
    """`PHYS`: the physical memory of the current session (gdbext.target.session)."""

    def __getattr__(self, name: str):
        from gdbext.target.session import current

        return getattr(current().phys, name)


PHYS = _SessionMemory()
