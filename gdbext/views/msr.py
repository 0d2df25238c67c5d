"""`info msr`: the syscall MSRs decoded, as data and as text."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

from gdbext.model.qemu import tcg_implements_rdmsr
from gdbext.model.snapshot import (
    MSR_CSTAR,
    MSR_EFER,
    MSR_FROM_REGISTER,
    MSR_FS_BASE,
    MSR_GS_BASE,
    MSR_KERNEL_GS_BASE,
    MSR_LSTAR,
    MSR_SFMASK,
    MSR_STAR,
    Snapshot,
    SnapshotError,
)
from gdbext.views.common import (
    ABSENT,
    Symbolizer,
    _Absent,
    _no_symbols,
    hx,
    long_mode,
    va_bits,
)
from gdbext.views.gdt import _descriptor_summary, _gdt_bytes
from gdbext.views.text import fit_lines, fit_table
from gdbext.x86.bits import (
    decode_star,
    efer_names,
    is_canonical,
    sfmask_names,
)
from gdbext.x86.descriptors import descriptor_at

MSR_SET = (
    ("EFER", MSR_EFER), ("STAR", MSR_STAR), ("LSTAR", MSR_LSTAR), ("CSTAR", MSR_CSTAR),
    ("SFMASK", MSR_SFMASK), ("FS_BASE", MSR_FS_BASE), ("GS_BASE", MSR_GS_BASE),
    ("KERNEL_GS_BASE", MSR_KERNEL_GS_BASE),
)


# What each MSR's value means, one class per kind of MSR (its JSON is the
# "decoded" entry for that MSR's name).

@dataclass(frozen=True)
class EferDecoding:
    flags: tuple[str, ...]


@dataclass(frozen=True)
class StarDecoding:
    """STAR's selectors; with the GDT readable, the descriptor each selects
    (the *_descriptor keys are in the JSON only then)."""

    syscall_cs: int
    syscall_ss: int
    sysret_base: int
    sysret_rpl: int
    sysret_cs64: int
    sysret_ss: int
    sysret_cs32: int
    eip32: int
    syscall_cs_descriptor: str | _Absent = ABSENT
    syscall_ss_descriptor: str | _Absent = ABSENT
    sysret_cs64_descriptor: str | _Absent = ABSENT
    sysret_ss_descriptor: str | _Absent = ABSENT
    sysret_cs32_descriptor: str | _Absent = ABSENT


@dataclass(frozen=True)
class EntryDecoding:
    """LSTAR and CSTAR: where SYSCALL jumps."""

    symbol: str | None
    canonical: bool


@dataclass(frozen=True)
class SfmaskDecoding:
    clears: tuple[str, ...]


@dataclass(frozen=True)
class BaseDecoding:
    """FS_BASE, GS_BASE, KERNEL_GS_BASE."""

    canonical: bool
    half: str


@dataclass(frozen=True)
class NoDecoding:
    """An MSR gdbext has no decoding for: {} in the JSON."""


MsrDecoding = EferDecoding | StarDecoding | EntryDecoding | SfmaskDecoding | BaseDecoding | NoDecoding

_STAR_ROLES = ("syscall_cs", "syscall_ss", "sysret_cs64", "sysret_ss", "sysret_cs32")


@dataclass(frozen=True)
class MsrReport:
    """`info msr`.  Every dict is keyed by MSR name, in the order asked for;
    "decoded" and "errors" hold only the MSRs read and not read."""

    cpu: int
    msrs: dict[str, int | None]
    numbers: dict[str, int]
    decoded: dict[str, MsrDecoding]
    errors: dict[str, str]
    notes: tuple[str, ...]


def msr_report(snap: Snapshot, only: Optional[Dict[str, int]] = None,
               symbolize: Symbolizer = _no_symbols) -> MsrReport:
    """Values and their meaning.  MSRs that cannot be read come back as null
    with the reason in "errors" (a halted vCPU cannot run rdmsr, for one)."""
    wanted = list(only.items()) if only else list(MSR_SET)
    msrs: Dict[str, Optional[int]] = {}
    errors: Dict[str, str] = {}
    decoded: Dict[str, MsrDecoding] = {}
    for name, number in wanted:
        try:
            msrs[name] = snap.msr(number)
        except (SnapshotError, Exception) as exc:  # noqa: BLE001 - target errors are gdb.GdbError
            msrs[name] = None
            errors[name] = str(exc)
            continue
        decoded[name] = _decode_msr(snap, name, number, msrs[name], symbolize)
    notes = []
    for name, number in wanted:
        if msrs.get(name) is not None and number not in MSR_FROM_REGISTER and not tcg_implements_rdmsr(number):
            notes.append(f"{name}: QEMU's TCG does not implement MSR {number:#x} and reads it as 0 where a CPU "
                         "raises #GP(0); the value may mean 'no such MSR'")
    if snap.woke_ns is not None:
        notes.append(f"vCPU {snap.cpu} was halted in HLT: guest time ran {snap.woke_ns / 1e6:.1f} ms to its LAPIC timer "
                     "interrupt, which woke it to run rdmsr; that interrupt is pending and is taken when the "
                     "guest resumes, as on any wake-up")
    return MsrReport(cpu=snap.cpu, msrs=msrs, numbers={n: num for n, num in wanted},
                     decoded=decoded, errors=errors, notes=tuple(notes))


def _decode_msr(snap: Snapshot, name: str, number: int, value: int, symbolize: Symbolizer) -> MsrDecoding:
    if number == MSR_EFER:
        return EferDecoding(flags=tuple(efer_names(value)))
    if number == MSR_STAR:
        star = decode_star(value)
        selectors = {role: getattr(star, role) for role in _STAR_ROLES}
        descriptors = {}
        table = _gdt_bytes(snap)
        if table is not None:
            for role in _STAR_ROLES:
                d = descriptor_at(table, snap.gdtr.limit, selectors[role], long_mode=long_mode(snap))
                descriptors[role + "_descriptor"] = _descriptor_summary(d) if d else "past the GDT limit"
        return StarDecoding(syscall_cs=star.syscall_cs, syscall_ss=star.syscall_ss,
                            sysret_base=star.sysret_base, sysret_rpl=star.sysret_rpl,
                            sysret_cs64=star.sysret_cs64, sysret_ss=star.sysret_ss,
                            sysret_cs32=star.sysret_cs32, eip32=star.eip32, **descriptors)
    if number in (MSR_LSTAR, MSR_CSTAR):
        return EntryDecoding(symbol=symbolize(value), canonical=is_canonical(value, va_bits(snap)))
    if number == MSR_SFMASK:
        return SfmaskDecoding(clears=tuple(sfmask_names(value)))
    if number in (MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE):
        return BaseDecoding(canonical=is_canonical(value, va_bits(snap)), half="kernel" if value >> 63 else "user")
    return NoDecoding()


def msr_text(r: MsrReport, width: Optional[int] = None) -> str:
    rows = []
    for name, value in r.msrs.items():
        number = r.numbers[name]
        if value is None:
            rows.append((name, hx(number), "unavailable", r.errors.get(name, "")))
            continue
        rows.append((name, hx(number), hx(value, 16), _msr_meaning(r.decoded.get(name, NoDecoding()))))
    text = fit_table(("MSR", "number", "value", "meaning"), rows, width, wrap=(3,), below=(3,))
    return "\n".join([text] + fit_lines([f"note: {n}" for n in r.notes], width))


def _msr_meaning(d: MsrDecoding) -> str:
    if isinstance(d, EferDecoding):
        return " ".join(d.flags) or "(none)"
    if isinstance(d, StarDecoding):
        parts = [f"syscall CS={hx(d.syscall_cs, 4)} SS={hx(d.syscall_ss, 4)}",
                 f"sysret CS={hx(d.sysret_cs64, 4)} SS={hx(d.sysret_ss, 4)} CS32={hx(d.sysret_cs32, 4)}",
                 f"STAR[63:48]={hx(d.sysret_base, 4)} (RPL {d.sysret_rpl})"]
        for role in _STAR_ROLES:
            summary = getattr(d, role + "_descriptor")
            if summary is not ABSENT:
                parts.append(f"{role}: {summary}")
        return "\n".join(parts)
    if isinstance(d, SfmaskDecoding):
        return "clears " + (" ".join(d.clears) or "nothing")
    if isinstance(d, EntryDecoding):
        sym = d.symbol or "no symbol"
        return sym if d.canonical else f"{sym} (NON-CANONICAL)"
    if isinstance(d, BaseDecoding):
        return f"{d.half} half" + ("" if d.canonical else " (NON-CANONICAL)")
    return ""
