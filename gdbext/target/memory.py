"""Guest-physical memory: a shared RAM file by mmap, the QEMU process's own
memory (/proc/PID/mem), or the stub under PhyMemMode."""
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
    try:
        # Inside the try: gdb raises a Ctrl-C that lands in a packet once the
        # packet is done, so one landing in this switch must still find the
        # restore armed.
        if send_packet("Qqemu.PhyMemMode:1") != b"OK":
            raise TargetError("gdbext: QEMU refused physical-memory mode (Qqemu.PhyMemMode)")
        yield
    finally:
        _restore_mode("1" if before.strip() == b"1" else "0")


def _restore_mode(mode: str) -> None:
    """Send `Qqemu.PhyMemMode:mode` and flush gdb's dcache, even when a
    Ctrl-C arrives meanwhile: the interrupt is raised again afterwards."""
    interrupted = None
    for _ in range(3):
        try:
            send_packet("Qqemu.PhyMemMode:" + mode)
            gdb.execute("maint flush dcache", to_string=True)
            break
        except KeyboardInterrupt as exc:
            interrupted = exc
    if interrupted is not None:
        raise interrupted


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

    def close(self) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self._map.close()


class ProcessRam:
    """Guest RAM read from the QEMU process itself (`/proc/PID/mem`): the
    stub's process when it runs on this machine and this user may read its
    memory (ptrace rights).  Windows map guest-physical ranges of RAM to
    QEMU's host virtual addresses (`offset` is the address of `start`)."""

    def __init__(self, pid: int, windows: List[_RamWindow]):
        self.pid = pid
        self.windows = windows
        self._fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)

    @property
    def path(self) -> str:
        return f"/proc/{self.pid}/mem"

    def read(self, pa: int, size: int) -> Optional[bytes]:
        for w in self.windows:
            if w.start <= pa and pa + size <= w.end:
                try:
                    data = os.pread(self._fd, size, w.offset + pa - w.start)
                except OSError:
                    return None
                return data if len(data) == size else None
        return None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


_MTREE_RE = re.compile(
    r"^\s*([0-9a-f]+)-([0-9a-f]+) \(prio [-\d]+, ram\): (\S+)(?: @([0-9a-f]+))?", re.M)
_GPA2HVA_RE = re.compile(r"Host virtual address for (0x[0-9a-f]+) \((\S+)\) is (0x[0-9a-f]+)")


def _system_ram() -> List[Tuple[int, int, str, int]]:
    """The RAM ranges of the system address space as (start, end exclusive,
    region, offset into the region), from `info mtree -f`: only the FlatView
    block that lists AS "memory" (QEMU prints the blocks in hash order, not
    always first), only `ram` regions (never ROM or MMIO)."""
    flat = hmp("info mtree -f")
    system = next((b for b in re.split(r"^FlatView #\d+", flat, flags=re.M) if ' AS "memory"' in b), "")
    return [(int(a, 16), int(b, 16) + 1, region, int(off or "0", 16))
            for a, b, region, off in _MTREE_RE.findall(system)]


def _find_shared_ram(ram: List[Tuple[int, int, str, int]]) -> Optional[SharedRam]:
    objects = hmp("qom-list /objects")
    for line in objects.splitlines():
        name, _, kind = line.strip().partition(" (")
        if not kind.startswith("child<memory-backend-file>"):
            continue
        share = hmp(f"qom-get /objects/{name} share").strip()
        path = hmp(f"qom-get /objects/{name} mem-path").strip().strip('"')
        if share != "true" or not os.path.exists(path):
            continue
        windows = [_RamWindow(start, end, offset) for start, end, region, offset in ram if region == name]
        if windows:
            try:
                return SharedRam(path, windows)
            except OSError:
                return None
    return None


def _find_process_ram(ram: List[Tuple[int, int, str, int]]) -> Tuple[Optional[ProcessRam], str]:
    """The stub's own process, when it is on this machine: its guest RAM by
    /proc/PID/mem, with each RAM range's host address from `gpa2hva`.  Else
    None and why."""
    from gdbext.model.localqemu import find_stub_process

    details = getattr(gdb.selected_inferior().connection, "details", None) or ""
    pid, why = find_stub_process(details)
    if pid is None:
        return None, why
    windows = []
    for start, end, region, _offset in ram:
        m = _GPA2HVA_RE.search(hmp(f"gpa2hva {start:#x}"))
        if m is None or m.group(2) != region:
            return None, f"QEMU's gpa2hva does not map {start:#x} ({region})"
        windows.append(_RamWindow(start, end, int(m.group(3), 16)))
    if not windows:
        return None, "QEMU lists no RAM in the system address space"
    try:
        return ProcessRam(pid, windows), ""
    except OSError as exc:
        return None, f"cannot read /proc/{pid}/mem ({exc.strerror}; it needs ptrace rights on QEMU)"


def _differs_from_stub(local) -> Optional[str]:
    """Why a local source is not this guest's memory, or None when it is.

    The source came from this QEMU's own answers, but it is only trusted
    once it holds what the stub reads at the same addresses: the page of
    the live page-table root (CR3) and the first and last pages of each RAM
    window."""
    pages = []
    with contextlib.suppress(gdb.error, ValueError):
        pages.append(int(gdb.parse_and_eval("$cr3")) & 0x000FFFFFFFFFF000)
    for w in local.windows:
        pages += [w.start, max(w.start, w.end - 0x1000)]
    with phys_mode():
        for pa in pages:
            mine = local.read(pa, 256)
            if mine is None:
                return f"{local.path} cannot be read at {pa:#x}"
            if _stub_read(pa, 256) != mine:
                return f"{local.path} does not hold what the stub reads at {pa:#x}"
    return None


class PhysicalMemory:
    """Reads guest-physical memory the fastest way available."""

    def __init__(self) -> None:
        self._local = None   # a SharedRam or a ProcessRam, when one is verified
        self.rejected: List[str] = []   # why each local source was not used
        self._probed = False
        self.stub_reads = 0
        self._depth = 0                    # nesting of session()
        self._restore: Optional[str] = None   # the mode to put back, while a session holds PhyMemMode

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Stub reads inside share one PhyMemMode switch: made at the first
        of them, if any, and undone (mode restored, dcache flushed) at the
        end, or earlier by leave()."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth:
                with contextlib.suppress(TargetError, gdb.error):
                    self.leave()

    def leave(self) -> None:
        """Put the stub back in its own mode now, if a session switched it:
        before anything reads or writes virtual memory through the stub
        (rdmsr injection, gdb's own reads).  The next stub read switches again."""
        if self._restore is not None:
            _restore_mode(self._restore)    # first, then forget it: a Ctrl-C between cannot lose it
            self._restore = None

    def _stub(self, pa: int, size: int) -> bytes:
        self.stub_reads += 1
        if not self._depth:
            with phys_mode():
                return _stub_read(pa, size)
        if self._restore is None:
            before = send_packet("qqemu.PhyMemMode")
            # Armed before the switch, so that leave() undoes it even if a
            # Ctrl-C is raised as the switch's packet completes.
            self._restore = "1" if before.strip() == b"1" else "0"
            if send_packet("Qqemu.PhyMemMode:1") != b"OK":
                raise TargetError("gdbext: QEMU refused physical-memory mode (Qqemu.PhyMemMode)")
        return _stub_read(pa, size)

    def _probe(self) -> None:
        """Choose the source once per session: a shared RAM file, else the
        QEMU process's memory, else the stub; each local one only after it
        matched the stub's bytes.  GDBEXT_MEMORY=stub|qemu-process|ram-file
        forces one (benchmarks measure the stub path that way)."""
        if self._probed:
            return
        self._probed = True
        forced = os.environ.get("GDBEXT_MEMORY", "auto")
        if os.environ.get("GDBEXT_NO_SHARED_RAM") == "1" and forced == "auto":
            forced = "qemu-process-or-stub"
        if forced == "stub":
            self.rejected.append("GDBEXT_MEMORY=stub")
            return
        try:
            ram = _system_ram()
        except (TargetError, ValueError) as exc:
            self.rejected.append(f"no RAM layout from QEMU ({exc})")
            return
        finders = []
        if forced in ("auto", "ram-file"):
            finders.append(lambda: (_find_shared_ram(ram), ""))
        if forced in ("auto", "qemu-process", "qemu-process-or-stub"):
            finders.append(lambda: _find_process_ram(ram))
        for find in finders:
            try:
                local, why = find()
                if local is not None:
                    why = _differs_from_stub(local) or ""
            except (TargetError, OSError, ValueError) as exc:
                local, why = None, str(exc)
            if local is not None and not why:
                self._local = local
                return
            if local is not None:
                local.close()
            if why:
                self.rejected.append(why)

    @property
    def kind(self) -> str:
        """"ram-file", "qemu-process" or "stub"."""
        self._probe()
        if isinstance(self._local, SharedRam):
            return "ram-file"
        return "qemu-process" if self._local is not None else "stub"

    @property
    def shared(self) -> bool:
        """Whether memory is read without a packet (a RAM file or QEMU's process)."""
        return self.kind != "stub"

    @property
    def source(self) -> str:
        kind = self.kind
        if kind == "ram-file":
            return f"shared RAM file {self._local.path}"      # type: ignore[union-attr]
        if kind == "qemu-process":
            return f"QEMU process memory {self._local.path}"  # type: ignore[union-attr]
        return "gdb stub (PhyMemMode)" + "".join(f"; {r}" for r in self.rejected)

    def close(self) -> None:
        if self._local is not None:
            self._local.close()
            self._local = None

    def read(self, pa: int, size: int) -> bytes:
        self._probe()
        if self._local is not None:
            data = self._local.read(pa, size)
            if data is not None:
                return data
        return self._stub(pa, size)

    def read_many(self, requests: List[Tuple[int, int]]) -> List[bytes]:
        """Several reads under one mode switch."""
        self._probe()
        out: List[Optional[bytes]] = [None] * len(requests)
        todo = []
        for i, (pa, size) in enumerate(requests):
            if self._local is not None:
                out[i] = self._local.read(pa, size)
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
