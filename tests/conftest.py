"""Fixtures for every test directory: the built kernel, and QEMU processes
that never outlive the test that started them."""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `pytest` run without installing gdbext
    sys.path.insert(0, str(ROOT))

from gdbext.tools import launch


@pytest.fixture(scope="session")
def kernel_paths() -> launch.KernelPaths:
    """The bundled kernel, built once per test process (make decides what is stale)."""
    return launch.build_kernel()


@pytest.fixture
def qemu_factory(kernel_paths: launch.KernelPaths) -> Iterator[Callable[..., launch.Qemu]]:
    """start(**QemuOptions fields) -> a started Qemu, stopped and reaped when the test ends, pass or fail."""
    started: list[launch.Qemu] = []

    def start(**options: object) -> launch.Qemu:
        qemu = launch.Qemu(launch.QemuOptions(**options))  # type: ignore[arg-type]
        started.append(qemu)
        return qemu.start()

    try:
        yield start
    finally:
        for qemu in started:
            qemu.stop()
        assert not any(q.running for q in started), "a QEMU outlived its test"
