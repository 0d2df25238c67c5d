"""A saved machine state: every vCPU of a stopped guest and some of its memory.

The file is gzip-compressed JSON (docs/machine-state.md has the format):

    {"format": "gdbext-machine-state", "version": 1,
     "producer": "gdbext", "origin": "gdbext-save" | "qemu-core" | ...,
     "cpus": [{"cpu", "cpl", "halted", "regs", "segments", "gdtr", "idtr",
               "ldtr", "tr", "msrs"}, ...],
     "memory": {"page_size": 4096, "encoding": "zlib+base64",
                "runs": [{"start": PA, "pages": N, "data": "..."}]},
     "ram": [[START, END], ...] or null, "unknown": [...], "notes": [...],
     "report": {...} or null, "extra": {"fault": {...}}}

Memory is a set of whole 4 KiB guest-physical pages, stored as runs of
consecutive pages, each run zlib-compressed then base64-encoded.  Reading a
page that was not saved raises SnapshotError: never zeros.  The file names
no path of the machine that wrote it.

Pure code: no gdb import (the target layer saves and opens files with it).
"""
from __future__ import annotations

import base64
import binascii
import gzip
import json
import zlib
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from gdbext.model.snapshot import (
    PAGE,
    SegmentCache,
    Snapshot,
    SnapshotError,
    TableRegister,
)

FORMAT = "gdbext-machine-state"
VERSION = 1
ENCODING = "zlib+base64"
# Bytes a gzip stream starts with (RFC 1952, 2.3.1: ID1 ID2).
_GZIP_MAGIC = b"\x1f\x8b"


class MachineStateError(Exception):
    """A machine-state file that cannot be read: one line saying why."""


@dataclass
class CpuState:
    """One vCPU as saved: what a Snapshot holds, without its memory."""

    cpu: int
    cpl: int
    halted: bool
    regs: Dict[str, int]
    segments: Dict[str, SegmentCache]
    gdtr: TableRegister
    idtr: TableRegister
    ldtr: SegmentCache
    tr: SegmentCache
    msrs: Dict[int, int] = field(default_factory=dict)

    @classmethod
    def of(cls, snap: Snapshot) -> "CpuState":
        return cls(cpu=snap.cpu, cpl=snap.cpl, halted=snap.halted, regs=dict(snap.regs),
                   segments=dict(snap.segments), gdtr=snap.gdtr, idtr=snap.idtr,
                   ldtr=snap.ldtr, tr=snap.tr, msrs=dict(snap.msrs))

    def to_json(self) -> dict:
        return {
            "cpu": self.cpu,
            "cpl": self.cpl,
            "halted": self.halted,
            "regs": dict(sorted(self.regs.items())),
            "segments": {k: _seg_json(v) for k, v in self.segments.items()},
            "gdtr": {"base": self.gdtr.base, "limit": self.gdtr.limit},
            "idtr": {"base": self.idtr.base, "limit": self.idtr.limit},
            "ldtr": _seg_json(self.ldtr),
            "tr": _seg_json(self.tr),
            "msrs": {f"{k:#x}": v for k, v in sorted(self.msrs.items())},
        }

    @classmethod
    def from_json(cls, doc: dict) -> "CpuState":
        return cls(
            cpu=_int(doc["cpu"], "cpu"),
            cpl=_int(doc["cpl"], "cpl", 3),
            halted=bool(doc.get("halted", False)),
            regs={str(k): _int(v, f"register {k}") for k, v in doc["regs"].items()},
            segments={str(k): _seg_from_json(v) for k, v in doc["segments"].items()},
            gdtr=_table_from_json(doc["gdtr"]),
            idtr=_table_from_json(doc["idtr"]),
            ldtr=_seg_from_json(doc["ldtr"]),
            tr=_seg_from_json(doc["tr"]),
            msrs={_int(int(k, 16), "MSR number", 0xFFFFFFFF): _int(v, f"MSR {k}")
                  for k, v in doc.get("msrs", {}).items()},
        )


@dataclass
class MachineState:
    """Every saved vCPU and the saved guest-physical pages (number -> 4 KiB).

    origin:  what wrote it ("gdbext-save", "qemu-core").
    ram:     the guest-physical RAM ranges [start, end) when all RAM was saved.
    unknown: what the source could not hold, said as it is shown
             (e.g. "EFER: unknown (not in a QEMU core)").
    report:  a document saved with the state (triage's report), or None.
    uncertain: vCPUs whose operating mode the source leaves open (a QEMU
             core without EFER, outside certain long mode): nothing is
             decoded for them.  Not saved: a file gdbext writes knows EFER.
    """

    cpus: List[CpuState]
    pages: Dict[int, bytes] = field(default_factory=dict)
    origin: str = "gdbext-save"
    ram: Optional[List[Tuple[int, int]]] = None
    unknown: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    report: Optional[dict] = None
    uncertain: List[int] = field(default_factory=list)
    # What commands kept about this stop, by name, as they would show it
    # (e.g. "fault": info fault's JSON and text): shown again as saved.
    extra: Dict[str, object] = field(default_factory=dict)

    # -- use -------------------------------------------------------------
    def cpu(self, index: int) -> CpuState:
        for c in self.cpus:
            if c.cpu == index:
                return c
        raise MachineStateError(f"no vCPU {index} in this machine state (saved: "
                                + ", ".join(str(c.cpu) for c in self.cpus) + ")")

    def read_phys(self, pa: int, size: int) -> bytes:
        """Saved bytes at guest-physical `pa`; SnapshotError naming the first
        page that was not saved."""
        out = bytearray()
        while size > 0:
            pfn, off = divmod(pa, PAGE)
            page = self.pages.get(pfn)
            if page is None:
                raise SnapshotError(f"physical page {pfn * PAGE:#x} was not saved")
            n = min(size, PAGE - off)
            out += page[off:off + n]
            pa += n
            size -= n
        return bytes(out)

    def snapshot(self, index: int, msr_missing=None) -> Snapshot:
        """A Snapshot of saved vCPU `index`: memory from the saved pages, MSRs
        from the saved values (`msr_missing(number)` for the others; by
        default SnapshotError)."""
        c = self.cpu(index)
        if index in self.uncertain:
            reason = next((u for u in self.unknown if f"vCPU {index}'s mode is not certain" in u), "")
            raise SnapshotError(reason or f"vCPU {index}'s operating mode is not known")

        def no_msr(number: int) -> int:
            if msr_missing is not None:
                return msr_missing(number)
            raise SnapshotError(f"MSR {number:#x} was not saved")

        return Snapshot(regs=dict(c.regs), segments=dict(c.segments), gdtr=c.gdtr, idtr=c.idtr,
                        ldtr=c.ldtr, tr=c.tr, cpl=c.cpl, halted=c.halted, cpu=c.cpu,
                        phys_reader=self.read_phys, msr_reader=no_msr, msrs=dict(c.msrs))

    # -- files -----------------------------------------------------------
    def to_json(self, level: int = 6) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "producer": "gdbext",
            "origin": self.origin,
            "cpus": [c.to_json() for c in self.cpus],
            "memory": {"page_size": PAGE, "encoding": ENCODING,
                       "runs": [_run_json(start, data, level) for start, data in page_runs(self.pages)]},
            "ram": [[a, b] for a, b in self.ram] if self.ram is not None else None,
            "unknown": list(self.unknown),
            "notes": list(self.notes),
            "report": self.report,
            "extra": self.extra,
        }

    def encode(self, level: int = 6) -> bytes:
        """The file's bytes: the JSON, gzip-compressed (runs inside at zlib `level`)."""
        text = json.dumps(self.to_json(level), separators=(",", ":"))
        # mtime=0: the same state gives the same bytes.
        return gzip.compress(text.encode("utf-8"), compresslevel=1, mtime=0)

    @classmethod
    def from_json(cls, doc: object) -> "MachineState":
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise MachineStateError("not a gdbext machine-state file (no \"format\": "
                                    f"\"{FORMAT}\")")
        version = doc.get("version")
        if version != VERSION:
            raise MachineStateError(f"machine-state version {version!r} is not one this gdbext reads "
                                    f"({VERSION})")
        try:
            cpus = [CpuState.from_json(c) for c in doc["cpus"]]
            memory = doc["memory"]
            if memory.get("page_size") != PAGE or memory.get("encoding") != ENCODING:
                raise MachineStateError(f"memory is not {ENCODING} runs of {PAGE}-byte pages")
            pages: Dict[int, bytes] = {}
            for run in memory["runs"]:
                pages.update(_run_from_json(run))
            ram = doc.get("ram")
            state = cls(cpus=cpus, pages=pages, origin=str(doc.get("origin", "")),
                        ram=[(_int(a, "RAM start"), _int(b, "RAM end", 1 << 64)) for a, b in ram]
                        if ram is not None else None,
                        unknown=[str(u) for u in doc.get("unknown", [])],
                        notes=[str(n) for n in doc.get("notes", [])],
                        report=doc.get("report"),
                        extra=dict(doc.get("extra") or {}))
        except MachineStateError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise MachineStateError(f"a damaged machine-state file ({type(exc).__name__}: {exc})") from None
        if not cpus:
            raise MachineStateError("the machine-state file has no vCPU")
        if len({c.cpu for c in cpus}) != len(cpus):
            raise MachineStateError("the machine-state file lists a vCPU twice")
        return state

    @classmethod
    def decode(cls, data: bytes) -> "MachineState":
        if not data.startswith(_GZIP_MAGIC):
            raise MachineStateError("not a gdbext machine-state file (not gzip-compressed)")
        try:
            text = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise MachineStateError(f"the file is damaged or truncated ({exc})") from None
        try:
            doc = json.loads(text)
        except (UnicodeDecodeError, ValueError) as exc:
            raise MachineStateError(f"not a gdbext machine-state file (not JSON: {exc})") from None
        return cls.from_json(doc)


def page_runs(pages: Dict[int, bytes]) -> Iterable[Tuple[int, bytes]]:
    """(first physical address, bytes) of each run of consecutive saved pages."""
    start = None
    chunk: List[bytes] = []
    last = None
    for pfn in sorted(pages):
        if last is not None and pfn == last + 1:
            chunk.append(pages[pfn])
        else:
            if chunk:
                yield start * PAGE, b"".join(chunk)
            start, chunk = pfn, [pages[pfn]]
        last = pfn
    if chunk:
        yield start * PAGE, b"".join(chunk)


def _run_json(start: int, data: bytes, level: int) -> dict:
    return {"start": start, "pages": len(data) // PAGE,
            "data": base64.b64encode(zlib.compress(data, level)).decode("ascii")}


def _run_from_json(run: dict) -> Dict[int, bytes]:
    start, count = _int(run["start"], "run start"), _int(run["pages"], "run length")
    if start % PAGE:
        raise MachineStateError(f"a memory run starts at {start:#x}, not on a page boundary")
    try:
        data = zlib.decompress(base64.b64decode(run["data"], validate=True))
    except (binascii.Error, zlib.error, ValueError) as exc:
        raise MachineStateError(f"the memory run at {start:#x} is damaged ({exc})") from None
    if len(data) != count * PAGE:
        raise MachineStateError(f"the memory run at {start:#x} holds {len(data)} bytes, not {count} pages")
    base = start // PAGE
    return {base + i: data[i * PAGE:(i + 1) * PAGE] for i in range(count)}


def _int(value: object, what: str, hi: int = (1 << 64) - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= hi:
        raise MachineStateError(f"{what} is {value!r}, not an integer in 0..{hi:#x}")
    return value


def _seg_json(s: SegmentCache) -> dict:
    return {"selector": s.selector, "base": s.base, "limit": s.limit, "attrs": s.attrs}


def _seg_from_json(d: dict) -> SegmentCache:
    return SegmentCache(_int(d["selector"], "selector", 0xFFFF), _int(d["base"], "segment base"),
                        _int(d["limit"], "segment limit", 0xFFFFFFFF), _int(d["attrs"], "segment attributes",
                                                                            0xFFFFFFFF))


def _table_from_json(d: dict) -> TableRegister:
    return TableRegister(_int(d["base"], "table base"), _int(d["limit"], "table limit", 0xFFFF))
