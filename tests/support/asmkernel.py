"""Build the hand-written kernels of tests/kernels with nasm, into a test's tmp_path."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

KERNELS = Path(__file__).resolve().parents[1] / "kernels"


def build(name: str, out_dir: Path) -> Path:
    """tests/kernels/NAME.asm as a flat binary (a Multiboot image QEMU's -kernel loads)."""
    nasm = shutil.which("nasm")
    if nasm is None:
        pytest.fail("nasm not found: install the Debian package nasm (scripts/setup does)")
    out = out_dir / f"{name}.bin"
    proc = subprocess.run([nasm, "-f", "bin", "-o", str(out), str(KERNELS / f"{name}.asm")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return out
