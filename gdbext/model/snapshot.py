"""One stopped vCPU, as plain data.

The target layer (gdbext.target) fills a Snapshot from gdb and QEMU; a saved
triage report fills one from JSON; unit tests build one by hand.  Decoders,
checks and commands only ever see this class, so none of them import gdb.

Memory and MSRs are read on demand through two callables and memoised, so a
command that needs only the GDT never pays for an rdmsr, and a saved snapshot
replays exactly the bytes and MSRs the original run read.
"""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

PAGE = 4096
SMALL_READ = 64

# Architectural MSR numbers (Intel SDM Vol. 4, "Model-Specific Registers";
# AMD APM Vol. 2, appendix A).
MSR_EFER = 0xC0000080
MSR_STAR = 0xC0000081
MSR_LSTAR = 0xC0000082
MSR_CSTAR = 0xC0000083
MSR_SFMASK = 0xC0000084
MSR_FS_BASE = 0xC0000100
MSR_GS_BASE = 0xC0000101
MSR_KERNEL_GS_BASE = 0xC0000102
MSR_TSC_AUX = 0xC0000103
MSR_PAT = 0x277
MSR_SYSENTER_CS = 0x174
MSR_SYSENTER_ESP = 0x175
MSR_SYSENTER_EIP = 0x176
MSR_APIC_BASE = 0x1B

MSR_NAMES: Dict[str, int] = {
    "EFER": MSR_EFER,
    "STAR": MSR_STAR,
    "LSTAR": MSR_LSTAR,
    "CSTAR": MSR_CSTAR,
    "SFMASK": MSR_SFMASK,
    "FS_BASE": MSR_FS_BASE,
    "GS_BASE": MSR_GS_BASE,
    "KERNEL_GS_BASE": MSR_KERNEL_GS_BASE,
    "TSC_AUX": MSR_TSC_AUX,
    "PAT": MSR_PAT,
    "SYSENTER_CS": MSR_SYSENTER_CS,
    "SYSENTER_ESP": MSR_SYSENTER_ESP,
    "SYSENTER_EIP": MSR_SYSENTER_EIP,
    "APIC_BASE": MSR_APIC_BASE,
}

# MSRs that gdb's register set already carries: never inject rdmsr for them.
MSR_FROM_REGISTER = {
    MSR_EFER: "efer",
    MSR_FS_BASE: "fs_base",
    MSR_GS_BASE: "gs_base",
    MSR_KERNEL_GS_BASE: "k_gs_base",
}

GENERAL_REGS = (
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
    "rip", "eflags",
)
SEGMENT_NAMES = ("es", "cs", "ss", "ds", "fs", "gs")
CONTROL_REGS = ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "fs_base", "gs_base", "k_gs_base")


class SnapshotError(Exception):
    """A read the snapshot cannot satisfy (unmapped memory, MSR not read...)."""


@dataclass(frozen=True)
class TableRegister:
    """GDTR or IDTR: a linear base and a limit (Intel SDM Vol. 3A, 2.4)."""

    base: int
    limit: int


@dataclass(frozen=True)
class SegmentCache:
    """A segment register with its hidden part, as QEMU holds it.

    `attrs` is the descriptor's attribute bits in place in its high dword
    (type at 8..11, S at 12, DPL at 13..14, P at 15, AVL at 20, L at 21,
    D/B at 22, G at 23), i.e. QEMU's flag word masked with 0x00f0ff00: the
    word `info registers` prints also carries limit[19:16] at bits 16..19,
    which the parser drops so that attrs compares equal to a decoded
    Descriptor.attrs.  `limit` is the byte-granular limit QEMU keeps
    (already scaled by G).
    """

    selector: int
    base: int
    limit: int
    attrs: int

    @property
    def dpl(self) -> int:
        return (self.attrs >> 13) & 3

    @property
    def present(self) -> bool:
        return bool(self.attrs & (1 << 15))

    @property
    def long(self) -> bool:
        return bool(self.attrs & (1 << 21))

    @property
    def default_big(self) -> bool:
        return bool(self.attrs & (1 << 22))


PhysReader = Callable[[int, int], bytes]
MsrReader = Callable[[int], int]


def _no_phys(pa: int, size: int) -> bytes:
    raise SnapshotError(f"physical memory at {pa:#x} was not captured")


def _no_msr(number: int) -> int:
    raise SnapshotError(f"MSR {number:#x} was not captured")


@dataclass
class Snapshot:
    """Everything known about one stopped vCPU.

    regs:     gdb's registers by gdb name (GENERAL_REGS, segment selectors,
              CONTROL_REGS); all integers.
    segments: hidden segment caches by lower-case name (cs, ss, ds, es, fs, gs).
    gdtr, idtr, ldtr, tr: from QEMU's `info registers`.
    cpl:      the CPL QEMU reports.
    halted:   the vCPU was in HLT when it stopped.
    cpu:      vCPU index (gdb thread number - 1).
    """

    regs: Dict[str, int]
    segments: Dict[str, SegmentCache]
    gdtr: TableRegister
    idtr: TableRegister
    ldtr: SegmentCache
    tr: SegmentCache
    cpl: int
    halted: bool = False
    cpu: int = 0
    phys_reader: PhysReader = field(default=_no_phys, repr=False)
    msr_reader: MsrReader = field(default=_no_msr, repr=False)
    # Memo of what was read: physical page number -> 4 KiB, MSR number -> value.
    pages: Dict[int, bytes] = field(default_factory=dict, repr=False)
    msrs: Dict[int, int] = field(default_factory=dict, repr=False)
    # exact_reads: read exactly the bytes asked (memoised per range) instead
    # of whole pages: a page walk then costs 8 bytes a level, not 4 KiB.
    # read_log: when a list, every read_phys appends (pa, size, bytes), so a
    # caller can tell later whether the memory an answer rested on changed.
    exact_reads: bool = field(default=False, repr=False)
    # small_reads_exact: a read of at most SMALL_READ bytes from a page not
    # read yet is read exactly (one short packet through the stub for a
    # paging entry, instead of a 4 KiB page in two).
    small_reads_exact: bool = field(default=False, repr=False)
    read_log: Optional[List[Tuple[int, int, bytes]]] = field(default=None, repr=False)
    ranges: Dict[Tuple[int, int], bytes] = field(default_factory=dict, repr=False)
    # From the live target only: the parsed monitor answer the segment and
    # table registers came from (its raw flag words too), and, if rdmsr had
    # to wait for a halted vCPU's timer to wake it, how long (guest ns).
    monitor: Optional[object] = field(default=None, repr=False)
    woke_ns: Optional[int] = field(default=None, repr=False)

    # -- registers -------------------------------------------------------
    def reg(self, name: str) -> int:
        return self.regs[name]

    @property
    def rip(self) -> int:
        return self.regs["rip"]

    @property
    def rflags(self) -> int:
        return self.regs["eflags"]

    @property
    def cr0(self) -> int:
        return self.regs["cr0"]

    @property
    def cr3(self) -> int:
        return self.regs["cr3"]

    @property
    def cr4(self) -> int:
        return self.regs["cr4"]

    @property
    def efer(self) -> int:
        return self.regs["efer"]

    # -- MSRs -------------------------------------------------------------
    def msr(self, number: int) -> int:
        """The MSR's value; from a register where gdb has it, else rdmsr (memoised)."""
        if number in MSR_FROM_REGISTER and MSR_FROM_REGISTER[number] in self.regs:
            return self.regs[MSR_FROM_REGISTER[number]]
        if number not in self.msrs:
            self.msrs[number] = self.msr_reader(number)
        return self.msrs[number]

    # -- physical memory -------------------------------------------------
    def read_phys(self, pa: int, size: int) -> bytes:
        """`size` bytes of guest-physical memory at `pa`, read a page at a time
        (or exactly, with exact_reads, or small_reads_exact for a small read
        from a page not read yet)."""
        if self.exact_reads or (self.small_reads_exact and size <= SMALL_READ and pa // PAGE not in self.pages
                                and pa % PAGE + size <= PAGE):
            data = self.ranges.get((pa, size))
            if data is None:
                data = bytes(self.phys_reader(pa, size))
                if len(data) != size:
                    raise SnapshotError(f"short read at physical {pa:#x}")
                self.ranges[(pa, size)] = data
        else:
            data = self._read_pages(pa, size)
        if self.read_log is not None:
            self.read_log.append((pa, size, data))
        return data

    def _read_pages(self, pa: int, size: int) -> bytes:
        out = bytearray()
        while size > 0:
            pfn, off = divmod(pa, PAGE)
            page = self.pages.get(pfn)
            if page is None:
                page = self.phys_reader(pfn * PAGE, PAGE)
                if len(page) != PAGE:
                    raise SnapshotError(f"short read at physical {pfn * PAGE:#x}")
                self.pages[pfn] = page
            n = min(size, PAGE - off)
            out += page[off:off + n]
            pa += n
            size -= n
        return bytes(out)

    def read_phys_u64(self, pa: int) -> int:
        return int.from_bytes(self.read_phys(pa, 8), "little")

    # -- saving and loading (triage reports) ------------------------------
    def to_json(self) -> dict:
        return {
            "cpu": self.cpu,
            "cpl": self.cpl,
            "halted": self.halted,
            "regs": dict(self.regs),
            "segments": {k: _seg_json(v) for k, v in self.segments.items()},
            "gdtr": {"base": self.gdtr.base, "limit": self.gdtr.limit},
            "idtr": {"base": self.idtr.base, "limit": self.idtr.limit},
            "ldtr": _seg_json(self.ldtr),
            "tr": _seg_json(self.tr),
            "msrs": {f"{k:#x}": v for k, v in sorted(self.msrs.items())},
            "pages": {
                f"{pfn * PAGE:#x}": base64.b64encode(data).decode("ascii")
                for pfn, data in sorted(self.pages.items())
            },
        }

    @classmethod
    def from_json(cls, doc: dict) -> "Snapshot":
        """A snapshot that replays only what the saved run read."""
        return cls(
            regs={k: int(v) for k, v in doc["regs"].items()},
            segments={k: _seg_from_json(v) for k, v in doc["segments"].items()},
            gdtr=TableRegister(doc["gdtr"]["base"], doc["gdtr"]["limit"]),
            idtr=TableRegister(doc["idtr"]["base"], doc["idtr"]["limit"]),
            ldtr=_seg_from_json(doc["ldtr"]),
            tr=_seg_from_json(doc["tr"]),
            cpl=doc["cpl"],
            halted=doc.get("halted", False),
            cpu=doc.get("cpu", 0),
            pages={int(k, 16) // PAGE: base64.b64decode(v) for k, v in doc.get("pages", {}).items()},
            msrs={int(k, 16): v for k, v in doc.get("msrs", {}).items()},
        )


def _seg_json(s: SegmentCache) -> dict:
    return {"selector": s.selector, "base": s.base, "limit": s.limit, "attrs": s.attrs}


def _seg_from_json(d: dict) -> SegmentCache:
    return SegmentCache(d["selector"], d["base"], d["limit"], d["attrs"])


def msr_number(name_or_number: str) -> Optional[int]:
    """'STAR', 'ia32_star', '0xc0000081' or '3221225601' -> the MSR number, or None."""
    text = name_or_number.strip()
    key = text.upper()
    if key.startswith("IA32_"):
        key = key[5:]
    if key.startswith("MSR_"):
        key = key[4:]
    if key in MSR_NAMES:
        return MSR_NAMES[key]
    # Only what gdb reads too: decimal or 0x hex, ASCII digits (Python's
    # 0o17, 1_000 and other scripts' digits are not numbers there).
    if re.fullmatch(r"0[xX][0-9a-fA-F]+|[1-9][0-9]*|0", text) is None:
        return None
    value = int(text, 0)
    return value if 0 <= value <= 0xFFFFFFFF else None
