"""The 64-bit task-state segment.

Intel SDM Vol. 3A 8.7 "Task Management in 64-bit Mode", figure 8-11 "64-Bit TSS Format":
  0x00 reserved (4)   0x04 RSP0   0x0C RSP1   0x14 RSP2   0x1C reserved (8)
  0x24 IST1 .. 0x54 IST7 (8 each)  0x5C reserved (8)  0x64 reserved (2)
  0x66 I/O map base address (2)    size 0x68
The fields are only 4-byte aligned: read them as unaligned little-endian quadwords.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import DecodeError

TSS64_SIZE = 0x68
_RSP0 = 0x04
_IST1 = 0x24
_IOMAP_BASE = 0x66


def _u64(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset:offset + 8], "little")


@dataclass(frozen=True)
class Tss64:
    """RSP0-2 (stacks loaded on a privilege change to rings 0-2), IST1-7, I/O map base.

    ist[0] is IST1: a gate with ist=n switches to ist[n - 1].
    raw: the TSS64_SIZE bytes decoded (anything past them, such as an I/O bitmap, is not kept).
    """

    rsp: tuple[int, int, int]
    ist: tuple[int, ...]
    iomap_base: int
    raw: bytes

    @property
    def rsp0(self) -> int:
        return self.rsp[0]


def decode_tss64(data: bytes) -> Tss64:
    """Decode the first 0x68 bytes of `data`; DecodeError if there are fewer."""
    if len(data) < TSS64_SIZE:
        raise DecodeError(f"a 64-bit TSS is {TSS64_SIZE:#x} bytes, got {len(data):#x}")
    raw = bytes(data[:TSS64_SIZE])
    return Tss64(
        rsp=(_u64(raw, _RSP0), _u64(raw, _RSP0 + 8), _u64(raw, _RSP0 + 16)),
        ist=tuple(_u64(raw, _IST1 + 8 * n) for n in range(7)),
        iomap_base=int.from_bytes(raw[_IOMAP_BASE:_IOMAP_BASE + 2], "little"),
        raw=raw,
    )
