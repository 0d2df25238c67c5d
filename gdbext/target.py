"""The one layer that talks to gdb and QEMU.

Everything else receives a `Snapshot` (gdbext.snapshot) of the vCPU behind
gdb's selected thread.  Snapshots are built once per stop and thrown away
when the target runs again, when the user writes a register or memory, or
when another thread is selected.

Sources, as measured on QEMU 7.2 + gdb 13 (see the project README):
- general, segment-selector and control registers, EFER, FS/GS/KERNEL_GS
  bases: gdb's register set;
- GDTR, IDTR, LDTR, TR, hidden segment caches, CPL, HLT: the monitor's
  `info registers N` for vCPU N (plain `info registers` is always CPU 0);
- physical memory: raw `m` packets with QEMU's PhyMemMode, or a
  memory-mapped shared RAM file when the guest RAM is backed by one;
- other MSRs: `rdmsr` executed in the guest (see `_Rdmsr`).
"""
from __future__ import annotations

import contextlib
import mmap
import os
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import gdb  # noqa: F401  (this module is the gdb boundary)

from gdbext.checks.memo import LazyRegisters
from gdbext.snapshot import (
    CONTROL_REGS,
    GENERAL_REGS,
    MSR_STAR,
    MSR_FROM_REGISTER,
    SEGMENT_NAMES,
    Snapshot,
    SnapshotError,
)


class TargetError(gdb.GdbError):
    """A one-line reason why the target cannot answer; shown without a traceback."""


# ---------------------------------------------------------------------------
# The remote connection
# ---------------------------------------------------------------------------

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


def _connection():
    thread = gdb.selected_thread()
    if thread is None:
        raise TargetError("gdbext: no target; connect first with `target remote HOST:PORT` to QEMU's gdb stub")
    if thread.is_running() and not _in_stop_callback[0]:
        raise TargetError("gdbext: the target is running; interrupt it first (Ctrl-C or `interrupt`)")
    conn = gdb.selected_inferior().connection
    if conn is None or not hasattr(conn, "send_packet"):
        raise TargetError("gdbext: the target is not a remote gdb stub; gdbext needs QEMU's (`qemu -s` or `-gdb tcp::PORT`)")
    return conn


def send_packet(packet: str) -> bytes:
    reply = _connection().send_packet(packet)
    if isinstance(reply, str):  # gdb < 13 returned str
        reply = reply.encode("latin-1")
    return reply


_is_qemu: Optional[bool] = None


def require_qemu() -> None:
    """QEMU answers `qqemu.sstepbits`; other stubs answer with an empty packet."""
    global _is_qemu
    if _is_qemu is None:
        _is_qemu = send_packet("qqemu.sstepbits").startswith(b"ENABLE=")
    if not _is_qemu:
        raise TargetError("gdbext: this gdb stub is not QEMU's; gdbext needs QEMU (TCG) to read descriptor tables and MSRs")


def hmp(command: str) -> str:
    """A QEMU monitor command through the stub (`monitor ...`)."""
    require_qemu()
    try:
        return gdb.execute(f"monitor {command}", to_string=True)
    except gdb.error as exc:
        raise TargetError(f"gdbext: QEMU monitor command `{command}` failed: {exc}") from None


def selected_cpu() -> int:
    """QEMU's vCPU index for gdb's selected thread (QEMU numbers threads cpu_index + 1)."""
    thread = gdb.selected_thread()
    if thread is None:
        raise TargetError("gdbext: no thread selected")
    return thread.ptid[1] - 1


# ---------------------------------------------------------------------------
# Registers
# ---------------------------------------------------------------------------

_REGISTER_NAMES = frozenset(GENERAL_REGS + SEGMENT_NAMES + CONTROL_REGS)


def _gdb_register(name: str) -> Optional[int]:
    try:
        # `$name`, not newest_frame().read_register(): a frame object needs
        # the frame's id, and computing it unwinds the stack, which costs
        # four memory packets at every breakpoint stop.
        return int(gdb.parse_and_eval("$" + name)) & 0xFFFFFFFFFFFFFFFF
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
        regs[name] = int(value) & 0xFFFFFFFFFFFFFFFF
    return regs


# ---------------------------------------------------------------------------
# Physical memory
# ---------------------------------------------------------------------------

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
            if os.environ.get("GDBEXT_NO_SHARED_RAM") != "1":
                with contextlib.suppress(TargetError, OSError, ValueError):
                    self._shared = _find_shared_ram()

    @property
    def shared(self) -> bool:
        self._probe()
        return self._shared is not None

    @property
    def source(self) -> str:
        self._probe()
        return f"shared RAM file {self._shared.path}" if self._shared else "gdb stub (PhyMemMode)"

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


PHYS = PhysicalMemory()


# ---------------------------------------------------------------------------
# rdmsr in the guest
# ---------------------------------------------------------------------------

RDMSR = b"\x0f\x32"


class _Remote:
    """The few remote-protocol packets the injection needs, sent directly.

    Not gdb's `stepi`: under MI, gdb.execute("stepi") inside a command does
    not wait for the step, so the injection could not complete there.  Raw
    packets are synchronous under every interpreter, and since everything is
    restored exactly, gdb's own register and memory caches stay true.
    """

    _layout: Dict[str, Tuple[int, int]] = {}

    def __init__(self, tid: int):
        if not _Remote._layout:
            _Remote._layout = _remote_register_layout()
        self.thread = f"p1.{tid:x}"
        # Make gdb's idea of the stub's current thread (Hg) ours, so that our
        # own Hg below changes nothing gdb relies on.
        gdb.execute("maint flush register-cache", to_string=True)
        gdb.newest_frame().read_register("rip")
        self._expect(send_packet(f"Hg{self.thread}"), "Hg")

    @staticmethod
    def _expect(reply: bytes, what: str) -> bytes:
        if reply.startswith(b"E") or reply == b"":
            raise TargetError(f"gdbext: QEMU's stub refused {what} ({reply.decode('latin-1') or 'unsupported'})")
        return reply

    def read(self, name: str) -> int:
        num, size = self._layout[name]
        reply = self._expect(send_packet(f"p{num:x}"), f"reading {name}")
        return int.from_bytes(bytes.fromhex(reply.decode("ascii")), "little")

    def write(self, name: str, value: int) -> None:
        num, size = self._layout[name]
        data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little").hex()
        if send_packet(f"P{num:x}={data}") != b"OK":
            raise TargetError(f"gdbext: QEMU's stub refused to write {name}")

    def read_memory(self, address: int, size: int) -> bytes:
        reply = self._expect(send_packet(f"m{address:x},{size:x}"), f"reading {address:#x}")
        return bytes.fromhex(reply.decode("ascii"))

    def write_memory(self, address: int, data: bytes) -> None:
        if send_packet(f"M{address:x},{len(data):x}:{data.hex()}") != b"OK":
            raise TargetError(f"gdbext: QEMU's stub refused to write memory at {address:#x}")

    def step(self) -> None:
        """One instruction on this vCPU only; the others stay stopped."""
        reply = send_packet(f"vCont;s:{self.thread}")
        if not reply[:1] in (b"T", b"S"):
            raise TargetError(f"gdbext: single step on {self.thread} answered {reply[:40]!r}")


def _remote_register_layout() -> Dict[str, Tuple[int, int]]:
    """gdb's map of register names to the stub's numbers and sizes."""
    text = gdb.execute("maint print remote-registers", to_string=True)
    layout = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 8 and parts[1].isdigit():
            layout[parts[0]] = (int(parts[6]), int(parts[4]))
    return layout


class _Rdmsr:
    """Execute `rdmsr` on the selected vCPU and put everything back.

    How: write 0f 32 at RIP, set ECX, step one instruction with only this
    vCPU resumed (vCont;s for its thread alone) and QEMU's single-step flags
    masking interrupts and timers (NOIRQ|NOTIMER), read EDX:EAX, then restore
    RIP, RAX, RCX, RDX, R11, RFLAGS and the code bytes.

    At CPL 3 rdmsr would raise #GP, so for those steps the vCPU is made CPL 0
    and afterwards put back in ring 3 with exactly the CS/SS caches it had
    (see `_RingZero`).

    A vCPU halted in HLT runs only once an interrupt is pending: the first
    step waits for its LAPIC timer (see `_step_halted`), and is refused when
    nothing known will wake it within MAX_WAKE_SECONDS.  Also refused:
    compatibility mode (gdb sees only 32-bit registers) and any stub that is
    not QEMU's TCG.
    """

    def __init__(self, snap: Snapshot):
        self.snap = snap
        self.wake_ns: Optional[int] = None

    def check(self) -> None:
        require_qemu()
        if "disabled" not in hmp("info kvm"):
            raise TargetError("gdbext: QEMU runs this guest under KVM; rdmsr cannot be injected safely there (TCG only)")
        if self.snap.halted:
            self.wake_ns = _halted_wake_ns(self.snap)
        cs = self.snap.segments.get("cs")
        if not self.snap.cr0 & 1 or cs is None or cs.base != 0:
            # Real mode (or a CS with a base): RIP is not the linear address of
            # the code, so the bytes written would not be the bytes executed.
            raise TargetError(
                f"gdbext: vCPU {self.snap.cpu} is in real mode or runs with a CS base; rdmsr is injected only "
                "where code addresses are linear (protected or 64-bit mode, flat CS)")
        if self.snap.efer & (1 << 10) and not cs.long:
            raise TargetError(
                f"gdbext: vCPU {self.snap.cpu} is in compatibility mode; gdb sees only 32-bit registers there, "
                "so rdmsr is not injected")

    def read(self, numbers: List[int]) -> Dict[int, int]:
        self.check()
        snap = self.snap
        remote = _Remote(snap.cpu + 1)
        saved = {name: remote.read(name) for name in ("rax", "rcx", "rdx", "r11", "rip", "eflags")}
        rip = saved["rip"]
        saved_code = remote.read_memory(rip, len(SYSRETQ))   # covers RDMSR too
        ring0 = _RingZero(snap, remote) if snap.cpl != 0 else None
        todo = list(numbers)
        if ring0 is not None and ring0.sysret_made and MSR_STAR not in todo:
            todo.append(MSR_STAR)   # the SYSRET back to ring 3 takes its selectors from STAR
        results: Dict[int, int] = {}
        with _sstep_flags():
            try:
                if ring0 is not None:
                    ring0.enter()
                remote.write_memory(rip, RDMSR)
                for number in todo:
                    remote.write("rip", rip)
                    remote.write("rcx", number)
                    if self.wake_ns is not None:
                        _step_halted(remote, self.wake_ns)
                        snap.woke_ns = self.wake_ns
                        self.wake_ns = None
                        snap.halted = False
                    else:
                        remote.step()
                    if remote.read("rip") != rip + len(RDMSR):
                        # QEMU's TCG answers 0 for MSRs it does not know instead of
                        # raising #GP, so this should not happen; if it does, the
                        # exception frame was pushed: say so, do not guess.
                        raise TargetError(
                            f"gdbext: rdmsr {number:#x} faulted on vCPU {snap.cpu}; registers restored, "
                            "but the exception frame written below RSP was not")
                    results[number] = ((remote.read("rdx") & 0xFFFFFFFF) << 32) | (remote.read("rax") & 0xFFFFFFFF)
            finally:
                if ring0 is not None:
                    ring0.leave(rip, saved["eflags"], results.get(MSR_STAR))
                remote.write_memory(rip, saved_code)
                for name, value in saved.items():
                    remote.write(name, value)
                gdb.execute("maint flush dcache", to_string=True)
        return results


# QEMU's flag words for the caches SYSRET builds in 64-bit mode (helper_sysret):
# CS G|L|P|DPL3|S|code|R|A and SS G|B|P|DPL3|S|W|A, base 0, limit 4 GiB, and
# no copy of limit[19:16] at bits 16..19 (a descriptor load keeps one).
SYSRET_CS_FLAGS = 0x00A0FB00
SYSRET_SS_FLAGS = 0x00C0F300
SYSRETQ = b"\x48\x0f\x07"


# How long gdbext lets guest time run to wake a halted vCPU (see _step_halted).
MAX_WAKE_SECONDS = 5.0


def _halted_wake_ns(snap: Snapshot) -> int:
    """Guest nanoseconds until the local APIC timer wakes this halted vCPU,
    or TargetError saying why nothing will."""
    from gdbext.hmp import parse_info_lapic
    from gdbext.decode import DecodeError

    cpu = snap.cpu
    if not snap.rflags & (1 << 9):
        raise TargetError(
            f"gdbext: vCPU {cpu} is halted with interrupts disabled (IF=0): only an NMI would wake it, "
            "so it cannot run rdmsr")
    try:
        timer = parse_info_lapic(hmp(f"info lapic {cpu}"))
    except DecodeError as exc:
        raise TargetError(f"gdbext: vCPU {cpu} is halted and its local APIC cannot be read: {exc}") from None
    ns = timer.next_interrupt_ns()
    if ns is None:
        why = ("its APIC is disabled" if not timer.enabled else "its LAPIC timer is masked" if timer.masked
               else "its LAPIC timer is in TSC-deadline mode, whose deadline QEMU does not show"
               if timer.mode == "tsc-deadline" else "its LAPIC timer is not running"
               if timer.current_count == 0 else f"the timer's vector {timer.vector:#x} is below PPR {timer.ppr:#x}")
        raise TargetError(f"gdbext: vCPU {cpu} is halted in HLT and nothing known will wake it ({why}); "
                          "rdmsr needs it awake")
    if ns > MAX_WAKE_SECONDS * 1e9:
        raise TargetError(f"gdbext: vCPU {cpu} is halted in HLT until its timer fires in {ns / 1e9:.1f} s; "
                          f"rdmsr waits at most {MAX_WAKE_SECONDS:.0f} s")
    return ns


def _step_halted(remote: "_Remote", wake_ns: int) -> None:
    """The first rdmsr step on a halted vCPU.

    QEMU runs a halted vCPU only once an interrupt is pending, so this step
    lets guest time run (NOIRQ without NOTIMER) until the LAPIC timer fires,
    `wake_ns` from now.  With NOIRQ the interrupt is not delivered: the vCPU
    leaves HLT and executes the rdmsr at RIP (the instruction after HLT).
    The interrupt stays pending; on resume the guest takes it at that RIP,
    exactly as it would have on waking.  gdb's remote timeout is raised for
    this one packet so that it waits for the stop reply.
    """
    before = gdb.parameter("remotetimeout")
    wait = int(2 + 2 * wake_ns / 1e9)
    send_packet("Qqemu.sstep=0x3")
    try:
        if before is not None and before < wait:
            gdb.execute(f"set remotetimeout {wait}", to_string=True)
        remote.step()
    finally:
        if before is not None and before < wait:
            gdb.execute(f"set remotetimeout {before}", to_string=True)
        send_packet("Qqemu.sstep=0x7")


class _RingZero:
    """Make the vCPU CPL 0 for the rdmsr steps, then put CS/SS back exactly.

    In: the GDT slots of CS and SS are patched with ring-0 descriptors, CS/SS
    reloaded with RPL 0 through the stub, CR4.SMEP cleared (the code runs on
    a user page).  Out, two ways:
    - caches SYSRET made (the usual case: stopped in user mode after a
      system call returned): execute a `sysretq` at RIP with RCX = RIP, which
      rebuilds QEMU's caches bit for bit, flag word included;
    - otherwise, patch the slots to encode the caches CS/SS had and reload
      the selectors (exact for caches a descriptor load made).
    Then the slots and CR4 are restored.
    """

    def __init__(self, snap: Snapshot, remote: _Remote):
        from gdbext.memory import translate  # pure; imported late to keep load light

        self.snap = snap
        self.remote = remote
        self.cs = snap.segments["cs"]
        self.ss = snap.segments["ss"]
        self.slots = {}
        for seg in (self.cs, self.ss):
            index = seg.selector >> 3
            if seg.selector & 4 or index == 0 or index * 8 + 7 > snap.gdtr.limit:
                raise TargetError(
                    f"gdbext: cannot switch to CPL 0 for rdmsr: selector {seg.selector:#x} is not a usable GDT slot")
            walk = translate(snap, snap.gdtr.base + index * 8)
            if walk.pa is None:
                raise TargetError("gdbext: cannot switch to CPL 0 for rdmsr: the GDT is not mapped")
            self.slots[index] = snap.gdtr.base + index * 8
        raw = getattr(snap.monitor, "raw_flags", {})
        self.sysret_made = (
            raw.get("cs") == SYSRET_CS_FLAGS and raw.get("ss") == SYSRET_SS_FLAGS
            and self.cs.base == 0 and self.ss.base == 0
            and self.cs.limit == 0xFFFFFFFF and self.ss.limit == 0xFFFFFFFF
            and bool(snap.efer & 1)                                   # EFER.SCE, else SYSRET is #UD
            and (self.ss.selector & 3) == 3 and self.cs.selector == ((self.ss.selector & ~3) + 8) | 3)
        if not self.sysret_made:
            for seg in (self.cs, self.ss):
                if _encode_cache(seg) is None:
                    raise TargetError(
                        f"gdbext: cannot switch to CPL 0 for rdmsr: the {seg.selector:#x} cache cannot be re-encoded exactly")
        self.saved: Dict[int, bytes] = {}
        self.cr4 = snap.cr4

    def enter(self) -> None:
        r = self.remote
        for index, va in self.slots.items():
            self.saved[index] = r.read_memory(va, 8)
        code0 = 0x00AF9B000000FFFF   # 64-bit ring-0 code (SDM Vol. 3A 3.4.5)
        data0 = 0x00CF93000000FFFF   # ring-0 writable data
        r.write_memory(self.slots[self.cs.selector >> 3], code0.to_bytes(8, "little"))
        r.write_memory(self.slots[self.ss.selector >> 3], data0.to_bytes(8, "little"))
        if self.cr4 & (1 << 20):  # CR4.SMEP
            r.write("cr4", self.cr4 & ~(1 << 20))
        r.write("cs", self.cs.selector & ~3)
        r.write("ss", self.ss.selector & ~3)

    def leave(self, rip: int, rflags: int, star: Optional[int]) -> None:
        r = self.remote
        if not (self.sysret_made and star is not None and self._sysret_back(rip, rflags, star)):
            r.write_memory(self.slots[self.cs.selector >> 3], _encode_cache(self.cs))
            r.write_memory(self.slots[self.ss.selector >> 3], _encode_cache(self.ss))
            r.write("cs", self.cs.selector)
            r.write("ss", self.ss.selector)
        for index, va in self.slots.items():
            if index in self.saved:
                r.write_memory(va, self.saved[index])
        if self.cr4 & (1 << 20):
            r.write("cr4", self.cr4)

    def _sysret_back(self, rip: int, rflags: int, star: int) -> bool:
        """SYSRET to ring 3 (SDM Vol. 2B "SYSRET"): CS = STAR[63:48]+16 | 3,
        SS = STAR[63:48]+8 | 3, RIP = RCX.  Only when those are the selectors
        CS/SS had.  True when the vCPU is back with them."""
        base = (star >> 48) & 0xFFFF
        if ((base + 16) | 3) != self.cs.selector or ((base + 8) | 3) != self.ss.selector:
            return False
        r = self.remote
        r.write_memory(rip, SYSRETQ)
        r.write("rip", rip)
        r.write("rcx", rip)
        r.write("r11", rflags)
        r.step()
        return (r.read("rip") == rip and r.read("cs") & 0xFFFF == self.cs.selector
                and r.read("ss") & 0xFFFF == self.ss.selector)


def _encode_cache(seg) -> Optional[bytes]:
    """An 8-byte descriptor that QEMU would load into exactly this cache."""
    if seg.base > 0xFFFFFFFF:
        return None
    limit = seg.limit
    if seg.attrs & (1 << 23):  # G: limit is in 4 KiB units, low 12 bits all ones
        if limit & 0xFFF != 0xFFF:
            return None
        raw_limit = limit >> 12
    else:
        raw_limit = limit
    if raw_limit > 0xFFFFF:
        return None
    raw = (raw_limit & 0xFFFF) | ((seg.base & 0xFFFFFF) << 16)
    raw |= (seg.attrs & 0x00F0FF00) << 32
    raw |= ((raw_limit >> 16) & 0xF) << 48
    raw |= ((seg.base >> 24) & 0xFF) << 56
    return raw.to_bytes(8, "little")


@contextlib.contextmanager
def _sstep_flags() -> Iterator[None]:
    """Single steps with NOIRQ|NOTIMER so nothing but our instruction runs."""
    before = send_packet("qqemu.sstep").strip()
    if before != b"0x7":
        send_packet("Qqemu.sstep=0x7")
    try:
        yield
    finally:
        if before != b"0x7":
            send_packet("Qqemu.sstep=" + before.decode("ascii"))


# ---------------------------------------------------------------------------
# Snapshots, cached per stop
# ---------------------------------------------------------------------------

class _Injector:
    """The Snapshot's MSR reader: one rdmsr session for all MSRs asked at once."""

    def __init__(self) -> None:
        self.snap: Optional[Snapshot] = None
        self.injections = 0

    def __call__(self, number: int) -> int:
        return self.read_many([number])[number]

    def read_many(self, numbers: List[int]) -> Dict[int, int]:
        assert self.snap is not None
        todo = [n for n in numbers if n not in self.snap.msrs and n not in MSR_FROM_REGISTER]
        if todo:
            _suspend_invalidation[0] += 1
            try:
                self.injections += 1
                values = _Rdmsr(self.snap).read(todo)
            finally:
                _suspend_invalidation[0] -= 1
                forget_monitor(self.snap.cpu)   # HLT may have changed; the rest is as it was
            self.snap.msrs.update(values)
        return {n: self.snap.msr(n) for n in numbers}


_cache: Dict[Tuple[int, int], Snapshot] = {}
_suspend_invalidation = [0]


def invalidate(*_args) -> None:
    if not _suspend_invalidation[0]:
        _cache.clear()


# The last `info registers N` per vCPU, kept across stops for the watch
# (`stop_snapshot`): segment caches and table registers change only when a
# segment or table register is loaded.
_monitor: Dict[Tuple[int, int], object] = {}


def forget_monitor(cpu: Optional[int] = None) -> None:
    """Drop the kept monitor state of one vCPU (or all): the next snapshot reads it again."""
    if cpu is None:
        _monitor.clear()
    else:
        for key in [k for k in _monitor if k[1] == cpu]:
            del _monitor[key]


def _forget_all_monitor(*_args) -> None:
    forget_monitor()


def monitor_state(cpu: int, regs: Optional[Dict[str, int]] = None):
    """QEMU's `info registers N`, parsed; the kept one when `regs` is given and
    its CS and SS selectors still equal the live ones."""
    from gdbext.hmp import parse_info_registers
    from gdbext.decode import DecodeError

    key = (gdb.selected_inferior().num, cpu)
    h = _monitor.get(key) if regs is not None else None
    if h is not None and (h.segments["cs"].selector == regs["cs"] and  # type: ignore[attr-defined,index]
                          h.segments["ss"].selector == regs["ss"]):    # type: ignore[attr-defined,index]
        return h
    try:
        h = parse_info_registers(hmp(f"info registers {cpu}"))
    except DecodeError as exc:
        raise TargetError(f"gdbext: cannot read QEMU's `info registers {cpu}`: {exc}") from None
    _monitor[key] = h
    return h


def snapshot() -> Snapshot:
    """The selected vCPU, read once per stop."""
    _connection()
    require_qemu()
    thread = gdb.selected_thread()
    key = (gdb.selected_inferior().num, thread.ptid[1])
    snap = _cache.get(key)
    if snap is not None:
        return snap
    cpu = selected_cpu()
    h = monitor_state(cpu)
    snap = _snapshot_from(h, read_gdb_registers(), cpu)
    injector = _Injector()
    injector.snap = snap
    snap.msr_reader = injector
    _cache[key] = snap
    return snap


def stop_snapshot(regs: Optional[LiveRegisters] = None) -> Snapshot:
    """The selected vCPU at a breakpoint, for a check made inside stop().

    Built for speed and for gdbext.checks.memo: registers read lazily
    (LiveRegisters), exact-size memory reads with a log, and the monitor
    state kept from an earlier stop while the CS and SS selectors are
    unchanged (see `forget_monitor`).  The vCPU is executing, so not halted.
    No MSR reader: the caller supplies the MSRs it knows.  Not cached.
    `regs`: registers this stop already read, so none is read twice.
    """
    _connection()
    require_qemu()
    cpu = selected_cpu()
    regs = LiveRegisters() if regs is None else regs
    h = monitor_state(cpu, regs)
    snap = _snapshot_from(h, regs, cpu)
    snap.halted = False
    snap.exact_reads = True
    snap.read_log = []
    return snap


def _snapshot_from(h, regs: Dict[str, int], cpu: int) -> Snapshot:
    snap = Snapshot(
        regs=regs,
        segments=dict(h.segments),
        gdtr=h.gdt,
        idtr=h.idt,
        ldtr=h.ldt,
        tr=h.tr,
        cpl=h.cpl,
        halted=h.halted,
        cpu=cpu,
        phys_reader=PHYS.read,
    )
    snap.monitor = h
    if getattr(h, "bases_truncated", False):
        _fix_truncated_bases(snap)
    return snap


def _fix_truncated_bases(snap: Snapshot) -> None:
    """In compatibility mode `info registers` prints 8-digit bases, cutting
    TR's base above 4 GiB; the 16-byte TSS descriptor in the GDT has it whole."""
    from gdbext.decode.descriptors import descriptor_at
    from gdbext.memory import read_linear

    with contextlib.suppress(SnapshotError, ValueError):
        table = read_linear(snap, snap.gdtr.base, snap.gdtr.limit + 1)
        entry = descriptor_at(table, snap.gdtr.limit, snap.tr.selector, long_mode=True)
        if entry is not None and entry.kind.startswith("tss") and entry.base & 0xFFFFFFFF == snap.tr.base:
            tr = snap.tr
            snap.tr = type(tr)(tr.selector, entry.base, tr.limit, tr.attrs)


def read_msrs(snap: Snapshot, numbers: List[int]) -> Dict[int, int]:
    """Several MSRs with one injection session (one CPL switch, one set of restores)."""
    reader = snap.msr_reader
    if isinstance(reader, _Injector):
        return reader.read_many(numbers)
    return {n: snap.msr(n) for n in numbers}


def connect_events() -> None:
    for event in (gdb.events.cont, gdb.events.stop, gdb.events.exited,
                  gdb.events.memory_changed, gdb.events.register_changed,
                  gdb.events.inferior_call, gdb.events.new_objfile):
        event.connect(invalidate)
    # A register written by the user may be a segment selector (QEMU reloads
    # the cache from the GDT); a new inferior or exit makes all of it stale.
    for event in (gdb.events.register_changed, gdb.events.exited, gdb.events.inferior_call):
        event.connect(_forget_all_monitor)
