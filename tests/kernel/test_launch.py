"""The launcher: its QEMU command line and its setup errors without QEMU,
then the gdb stub, -S and shared guest RAM with a real QEMU."""
from __future__ import annotations

import re
import shutil
import socket
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdbext.tools import launch
from tests.support import asmkernel


def argv_for(**options) -> list:
    opts = launch.QemuOptions(**options)
    opts.validate()
    return launch.qemu_argv(
        opts, qemu="qemu-system-x86_64", serial_path=Path("/s.log"),
        gdb_port=1234 if opts.wants_gdb else None,
        firmware=Path("/fw.fd"), esp_image=Path("/esp.img"),
        ram_path=Path("/dev/shm/ram") if opts.ram_file else None,
    )


def option(argv: list, flag: str) -> list:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_argv_boots_the_read_only_esp_under_ovmf_with_the_scenario():
    argv = argv_for(scenario="gdt-order")
    assert option(argv, "-bios") == ["/fw.fd"]
    assert option(argv, "-drive") == ["if=none,id=esp,format=raw,file=/esp.img,readonly=on"]
    assert option(argv, "-fw_cfg") == ["name=opt/org.gdbext/scenario,string=gdt-order"]
    assert option(argv, "-device") == ["virtio-blk-pci,drive=esp", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
    assert option(argv, "-serial") == ["file:/s.log"]
    assert option(argv, "-monitor") == ["none"] and option(argv, "-nic") == ["none"]
    assert "-no-reboot" in argv and "-S" not in argv and "-gdb" not in argv


def test_argv_gdb_stub_is_tcp_on_localhost_and_wait_adds_minus_s():
    argv = argv_for(gdb_port=0, wait=True)
    assert option(argv, "-gdb") == ["tcp:127.0.0.1:1234"]
    assert argv[-1] == "-S"
    # wait alone still asks for a stub: a stopped CPU nobody can continue is useless
    assert option(argv_for(wait=True), "-gdb") == ["tcp:127.0.0.1:1234"]


def test_argv_ram_file_backs_the_machine_memory():
    argv = argv_for(ram_file=True, memory_mib=128, smp=2)
    assert option(argv, "-machine") == ["q35,memory-backend=ram"]
    assert option(argv, "-object") == ["memory-backend-file,id=ram,size=128M,mem-path=/dev/shm/ram,share=on"]
    assert option(argv, "-m") == ["128"] and option(argv, "-smp") == ["2"]


def test_argv_direct_linux_boot_has_no_firmware_and_extra_args_come_last():
    opts = launch.QemuOptions(kernel=Path("/bzImage"), initrd=Path("/initrd"), append="console=ttyS0",
                              extra_args=["-d", "int"])
    opts.validate()
    argv = launch.qemu_argv(opts, qemu="q", serial_path=Path("/s"), gdb_port=None)
    assert option(argv, "-kernel") == ["/bzImage"] and option(argv, "-initrd") == ["/initrd"]
    assert option(argv, "-append") == ["console=ttyS0"]
    assert "-bios" not in argv and "-fw_cfg" not in argv
    assert argv[-2:] == ["-d", "int"]


def test_argv_int_log_asks_for_the_log_and_keep_after_shutdown_for_a_pause():
    opts = launch.QemuOptions(int_log=True)
    opts.validate()
    argv = launch.qemu_argv(opts, qemu="q", serial_path=Path("/s"), gdb_port=None, firmware=Path("/f"),
                            esp_image=Path("/e"), int_log_path=Path("/t/qemu-int.log"))
    assert option(argv, "-d") == ["int,cpu_reset"] and option(argv, "-D") == ["/t/qemu-int.log"]
    assert "-no-shutdown" not in argv and "-no-reboot" in argv
    kept = launch.QemuOptions(int_log=True, keep_after_shutdown=True, gdb_port=0)
    kept.validate()
    assert "-no-shutdown" in launch.qemu_argv(kept, qemu="q", serial_path=Path("/s"), gdb_port=1234,
                                              firmware=Path("/f"), esp_image=Path("/e"),
                                              int_log_path=Path("/t/qemu-int.log"))
    # Since QEMU 9 the guest's own exit pauses a -no-shutdown VM: only with a debugger to end it.
    with pytest.raises(launch.LaunchError, match="needs a gdb stub"):
        launch.QemuOptions(keep_after_shutdown=True).validate()
    plain = argv_for()
    assert "-d" not in plain and "-no-shutdown" not in plain


@pytest.mark.parametrize("extra", [["-enable-kvm"], ["-accel", "kvm"], ["-d", "int"], ["-D", "/x"]])
def test_int_log_refuses_kvm_and_a_log_of_ones_own(extra):
    with pytest.raises(launch.LaunchError) as err:
        launch.QemuOptions(int_log=True, extra_args=extra).validate()
    assert "TCG" in str(err.value)


def test_unknown_scenario_is_a_launch_error_listing_the_valid_ones():
    with pytest.raises(launch.LaunchError) as err:
        launch.Qemu(launch.QemuOptions(scenario="gdt-orderr"))
    message = str(err.value)
    assert "gdt-orderr" in message and "\n" not in message
    assert all(name in message for name in launch.SCENARIOS)


def test_missing_ovmf_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("GDBEXT_OVMF", str(tmp_path / "none.fd"))
    with pytest.raises(launch.LaunchError, match="Debian package ovmf$"):
        launch.ovmf_path()


@pytest.mark.parametrize("tool,package", [("gcc", "gcc"), ("mcopy", "mtools"), ("objcopy", "binutils")])
def test_missing_build_tool_names_the_package(monkeypatch, tool, package):
    real_which = shutil.which
    monkeypatch.setattr(launch.shutil, "which", lambda name: None if name == tool else real_which(name))
    with pytest.raises(launch.LaunchError, match=f"Debian package {package}$"):
        launch.build_kernel()


def test_missing_gnu_efi_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(launch, "GNU_EFI_FILES", (tmp_path / "efi.h",))
    with pytest.raises(launch.LaunchError, match="Debian package gnu-efi$"):
        launch.build_kernel()


def test_missing_qemu_names_the_package(monkeypatch):
    monkeypatch.setattr(launch, "QEMU_BINARY", "qemu-system-x86_64-that-is-not-there")
    with pytest.raises(launch.LaunchError, match="Debian package qemu-system-x86$"):
        launch.qemu_binary()


def test_describe_status_says_a_reset_is_not_success():
    assert launch.describe_status(0) == "guest reset (e.g. a triple fault), or QEMU told to quit (gdb's `kill`)"
    assert launch.describe_status(launch.EXIT_SUCCESS) == "guest reported success"
    assert launch.describe_status(-9) == "killed by a signal"


def test_build_kernel_returns_the_outputs_and_is_a_no_op_when_fresh(kernel_paths):
    before = kernel_paths.esp_image.stat().st_mtime_ns
    again = launch.build_kernel()
    assert again == kernel_paths
    assert again.esp_image.stat().st_mtime_ns == before
    assert kernel_paths.efi.read_bytes()[:2] == b"MZ"  # a PE image
    assert kernel_paths.elf.read_bytes()[:4] == b"\x7fELF"


def rsp_packet(body: bytes) -> bytes:
    return b"$" + body + b"#" + b"%02x" % (sum(body) % 256)


@pytest.mark.qemu
def test_wait_holds_the_cpu_until_the_gdb_stub_says_continue(qemu_factory):
    qemu = qemu_factory(scenario="ok", wait=True)
    assert qemu.gdb_port is not None and f"tcp:127.0.0.1:{qemu.gdb_port}" in qemu.argv
    time.sleep(1.0)
    assert qemu.serial_text() == ""  # -S: not even the firmware has run
    with socket.create_connection(("127.0.0.1", qemu.gdb_port), timeout=10) as stub:
        stub.sendall(rsp_packet(b"c"))  # the remote protocol's "continue"
        assert stub.recv(1) == b"+"
        qemu.wait_serial(r"^\[kernel\] exit: ok$", 90)
    assert qemu.wait(10) == launch.EXIT_SUCCESS


@pytest.mark.qemu
def test_a_taken_gdb_port_is_replaced_by_a_free_one(qemu_factory):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        qemu = qemu_factory(scenario="spin", gdb_port=taken)
        assert qemu.gdb_port not in (None, taken) and qemu.running
        assert f"tcp:127.0.0.1:{qemu.gdb_port}" in qemu.argv


@pytest.mark.qemu
def test_ram_file_shares_guest_memory_and_is_removed_on_stop(qemu_factory):
    qemu = qemu_factory(scenario="ok", ram_file=True, memory_mib=256)
    qemu.wait_serial(r"^\[kernel\] exit: ok$", 90)
    ram = qemu.ram_path
    assert ram is not None and ram.stat().st_size == 256 << 20
    # The loader logged where it put the user program's read-only data: the
    # guest-physical address is the offset in the file (q35 low RAM).
    paddr = int(re.search(r"segment: vaddr=0x401000 paddr=(0x[0-9a-f]+)", qemu.serial_text()).group(1), 16)
    with open(ram, "rb") as f:
        f.seek(paddr)
        assert b"hello from ring 3" in f.read(4096)
    qemu.stop()
    assert not ram.exists()


@pytest.mark.qemu
def test_wait_serial_raises_qemu_exited_when_the_pattern_never_comes(qemu_factory):
    qemu = qemu_factory(scenario="sce-off")
    with pytest.raises(launch.QemuExited) as err:
        qemu.wait_serial(r"^\[user\] hello from ring 3$", 90)
    assert err.value.status == launch.EXIT_FAULT
    assert "exit: fault" in err.value.serial_tail


@pytest.mark.qemu
def test_stop_is_idempotent_and_keeps_the_transcript(qemu_factory):
    qemu = qemu_factory(scenario="spin")
    qemu.wait_serial(r"^\[kernel\] scenario: spin$", 90)
    pid = qemu.pid
    qemu.stop()
    qemu.stop()
    assert not Path(f"/proc/{pid}").exists()
    assert "[kernel] scenario: spin" in qemu.serial_text()


@pytest.mark.qemu
def test_wait_times_out_on_a_guest_that_never_exits(qemu_factory):
    qemu = qemu_factory(scenario="spin")
    with pytest.raises(TimeoutError):
        qemu.wait(0.5)
    assert qemu.running


@pytest.mark.qemu
def test_an_efi_image_of_ones_own_is_wrapped_in_a_fat_image_and_booted(qemu_factory, kernel_paths, tmp_path):
    own = tmp_path / "mine.efi"
    own.write_bytes(kernel_paths.efi.read_bytes())
    qemu = qemu_factory(scenario="ok", efi_image=own)
    assert str(kernel_paths.esp_image) not in " ".join(qemu.argv)
    qemu.wait_serial(r"^\[kernel\] exit: ok$", 90)
    assert qemu.wait(10) == launch.EXIT_SUCCESS


@pytest.mark.qemu
def test_triple_fault_under_int_log_is_named_by_wait(qemu_factory, tmp_path):
    kernel = asmkernel.build("empty_idt", tmp_path)
    qemu = qemu_factory(kernel=kernel, int_log=True, ram_file=False, first_line="")
    assert qemu.wait(60) == launch.EXIT_TRIPLE_FAULT      # QEMU exited 0 (-no-reboot); its log says why
    assert launch.describe_status(launch.EXIT_TRIPLE_FAULT) == "triple fault (QEMU's interrupt log says so)"
    assert qemu.triple_faulted()
    log = qemu.int_log_path.read_text()
    assert "Triple fault" in log and "v=06 e=0000" in log
    with pytest.raises(launch.QemuTripleFault) as err:
        qemu.wait_serial(r"never printed", 5)
    assert str(err.value).startswith("triple fault")
    assert isinstance(err.value, launch.QemuExited) and err.value.status == launch.EXIT_TRIPLE_FAULT
    assert list(qemu.follow_serial()) == []              # ends instead of waiting for an exit
    pid = qemu.pid
    qemu.stop()
    assert not Path(f"/proc/{pid}").exists() and not qemu.int_log_path.exists()


@pytest.mark.qemu
def test_triple_fault_without_int_log_ends_qemu_with_status_0(qemu_factory, tmp_path):
    kernel = asmkernel.build("empty_idt", tmp_path)
    qemu = qemu_factory(kernel=kernel, ram_file=False, first_line="")
    assert qemu.wait(60) == launch.EXIT_RESET
    assert not qemu.triple_faulted() and qemu.int_log_path is None


@settings(max_examples=200, deadline=None)
@given(
    scenario=st.text(max_size=30),
    gdb_port=st.one_of(st.none(), st.integers(-5, 70000)),
    memory_mib=st.integers(-4, 4096),
    smp=st.integers(-2, 64),
)
def test_options_are_accepted_or_refused_with_a_launch_error(scenario, gdb_port, memory_mib, smp):
    opts = launch.QemuOptions(scenario=scenario, gdb_port=gdb_port, memory_mib=memory_mib, smp=smp)
    try:
        opts.validate()
    except launch.LaunchError as e:
        assert "\n" not in str(e)
        return
    assert scenario in launch.SCENARIOS and memory_mib > 0 and smp > 0
    argv = launch.qemu_argv(opts, qemu="q", serial_path=Path("/s"), gdb_port=gdb_port,
                            firmware=Path("/f"), esp_image=Path("/e"))
    assert f"name=opt/org.gdbext/scenario,string={scenario}" in argv
    assert ("-gdb" in argv) == (gdb_port is not None)
