"""Fixtures for tests that drive a real gdb, with gdbext loaded, against the
bundled kernel under QEMU.

    with kernel_session("spin") as (qemu, gdb):
        gdb.command("tbreak user_main")
        gdb.resume_until_stop(60)
        report = gdb.json("info cpl")

Leaving the context always ends gdb first and then QEMU, and reaps both,
whatever the test did.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest

from gdbext.tools import launch
from gdbext.tools.driver import GdbDriver

Session = tuple[launch.Qemu, GdbDriver]


@contextmanager
def _session(paths: launch.KernelPaths, scenario: str = "spin", wait: bool = True,
             smp: int = 1, connect: bool = True, timeout: float = 30.0, ram_file: bool = True) -> Iterator[Session]:
    qemu = launch.Qemu(launch.QemuOptions(scenario=scenario, wait=wait, gdb_port=0, smp=smp, ram_file=ram_file))
    gdb = None
    try:
        qemu.start()
        gdb = GdbDriver(elf=paths.elf, timeout=timeout, target_exit=qemu.exit_summary)
        gdb.load_gdbext()
        if connect:
            gdb.connect(qemu.gdb_port)
        yield qemu, gdb
    finally:
        if gdb is not None:
            gdb.close()
        qemu.stop()
        assert not qemu.running, "a QEMU outlived its session"


@pytest.fixture
def kernel_session(kernel_paths: launch.KernelPaths) -> Callable[..., AbstractContextManager[Session]]:
    """kernel_session(scenario="spin", wait=True, smp=1, connect=True, ram_file=True) -> a context
    manager yielding (qemu, gdb driver): the bundled kernel booted with a gdb stub on
    a free port, gdb with the kernel's symbols and gdbext loaded, connected unless
    connect=False (then `gdb.connect(qemu.gdb_port)` is the test's to do).  With
    wait=True the vCPUs sit at the reset vector until gdb continues them."""

    def open_session(scenario: str = "spin", wait: bool = True, smp: int = 1,
                     connect: bool = True, ram_file: bool = True) -> AbstractContextManager[Session]:
        return _session(kernel_paths, scenario, wait, smp, connect, ram_file=ram_file)

    return open_session

