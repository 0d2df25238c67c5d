"""`rdmsr` executed in the guest on one vCPU, with every register and byte put back."""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Optional, Tuple

import gdb  # noqa: F401  (this module is the gdb boundary)

from gdbext.model.snapshot import (
    MSR_STAR,
    Snapshot,
)
from gdbext.target.memory import PHYS
from gdbext.target.remote import (
    TargetError,
    execute_text,
    hmp,
    require_qemu,
    send_packet,
    uninterrupted,
    uses_kvm,
)

RDMSR = b"\x0f\x32"


class _Remote:
    """The few remote-protocol packets the injection needs, sent directly.

    Not gdb's `stepi`: under MI, gdb.execute("stepi") inside a command does
    not wait for the step, so the injection could not complete there.  Raw
    packets are synchronous under every interpreter, and since everything is
    restored exactly, gdb's own register and memory caches stay true.
    """

    def __init__(self, tid: int):
        from gdbext.target.session import current

        session = current()
        if not session.register_layout:
            session.register_layout.update(_remote_register_layout())
        self._layout = session.register_layout
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
        PHYS.leave()   # a virtual address: never under a session's PhyMemMode
        reply = self._expect(send_packet(f"m{address:x},{size:x}"), f"reading {address:#x}")
        return bytes.fromhex(reply.decode("ascii"))

    def write_memory(self, address: int, data: bytes) -> None:
        PHYS.leave()
        if send_packet(f"M{address:x},{len(data):x}:{data.hex()}") != b"OK":
            raise TargetError(f"gdbext: QEMU's stub refused to write memory at {address:#x}")

    def step(self) -> None:
        """One instruction on this vCPU only; the others stay stopped."""
        reply = send_packet(f"vCont;s:{self.thread}")
        if not reply[:1] in (b"T", b"S"):
            raise TargetError(f"gdbext: single step on {self.thread} answered {reply[:40]!r}")


def _remote_register_layout() -> Dict[str, Tuple[int, int]]:
    """gdb's map of register names to the stub's numbers and sizes."""
    text = execute_text("maint print remote-registers")
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

    def __init__(self, snap: Snapshot, wake: bool = False):
        self.snap = snap
        self.wake = wake
        self.wake_ns: Optional[int] = None

    def check(self) -> None:
        from gdbext.target.remote import in_condition

        require_qemu()
        if in_condition():
            raise TargetError("gdbext: rdmsr is not run inside a breakpoint condition or stop callback "
                              "(it would step the guest); the values this session already knows are used")
        if "shutdown" in hmp("info status"):
            # -no-shutdown kept the VM after a triple fault: it runs nothing
            # more, so an injected rdmsr would never complete.
            raise TargetError("gdbext: the VM is paused after a shutdown (a triple fault under -no-shutdown): "
                              "it cannot run the rdmsr that reading this MSR needs")
        if uses_kvm():
            raise TargetError("gdbext: QEMU runs this guest under KVM; rdmsr cannot be injected safely there (TCG only)")
        if self.snap.halted:
            ns = _halted_wake_ns(self.snap)
            if not self.wake:
                raise TargetError(
                    f"gdbext: vCPU {self.snap.cpu} is halted in HLT; reading this MSR runs rdmsr, which needs it "
                    f"awake: `info msr --wake` fires its LAPIC timer early ({ns / 1e6:.1f} ms of guest time) and "
                    "leaves that interrupt pending")
            self.wake_ns = ns
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
        PHYS.leave()   # the steps below and gdb's reads after them are virtual
        # A Ctrl-C waits for the restore: the guest is never left with RDMSR
        # at RIP, patched GDT slots or a register changed.
        with uninterrupted():
            return self._read(numbers)

    def _read(self, numbers: List[int]) -> Dict[int, int]:
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
                    landed = remote.read("rip")
                    if landed != rip + len(RDMSR):
                        # QEMU's TCG answers 0 for MSRs it does not know instead of
                        # raising #GP, so this should not happen; if it does, the
                        # exception frame was pushed: say so, do not guess.
                        raise TargetError(
                            f"gdbext: rdmsr {number:#x} did not complete on vCPU {snap.cpu} (the step "
                            f"from {rip:#x} ended at {landed:#x}); registers restored, but anything the "
                            "CPU wrote below RSP was not")
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
    from gdbext.model.qemu_text import parse_info_lapic
    from gdbext.x86 import DecodeError

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
        from gdbext.model.linear import (
            translate,  # pure; imported late to keep load light
        )

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
