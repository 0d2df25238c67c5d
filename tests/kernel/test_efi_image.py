"""The kernel build cannot produce a broken EFI image quietly, and a guest
that dies before its kernel runs is reported as that, everywhere.

The broken image is the one a toolchain change makes: BOOTX64.EFI whose
embedded kernel is unreadable, so the loader gives up (it writes 0x11 to the
exit port: QEMU exits 35) before the kernel prints its first line.
"""
from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gdbext.tools import launch
from gdbext.tools.driver import GdbDriver, GdbError

ROOT = Path(__file__).resolve().parents[2]
EFI_IMAGE = ROOT / "kernel" / "efi-image"
BUILD = ROOT / "kernel" / "build"


def efi_image(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EFI_IMAGE), *args], capture_output=True, text=True, check=False)


def test_the_built_image_holds_the_embedded_kernel_byte_for_byte(kernel_paths):
    stripped = (BUILD / "kernel-stripped.elf").read_bytes()
    assert stripped[:4] == b"\x7fELF"
    assert kernel_paths.efi.read_bytes().find(stripped) > 0


def test_the_image_is_rebuilt_identically_from_what_the_loader_links(kernel_paths, tmp_path):
    out = tmp_path / "BOOTX64.EFI"
    proc = efi_image(str(BUILD / "loader.so"), str(BUILD / "kernel-stripped.elf"), str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == kernel_paths.efi.read_bytes()


def _objcopy_dropping(tmp_path: Path, section: str) -> Path:
    """An objcopy whose -j list lacks `section`, as a fixed list did for .rodata."""
    wrapper = tmp_path / "objcopy"
    wrapper.write_text(f"""#!{sys.executable}
import os, sys
args, kept = sys.argv[1:], []
while args:
    if args[:2] == ["-j", {section!r}]:
        args = args[2:]
        continue
    kept.append(args.pop(0))
os.execvp("objcopy", ["objcopy", *kept])
""")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


@pytest.mark.parametrize("section", [".data", ".text", ".dynamic"])
def test_an_image_that_lost_a_section_fails_the_build_in_one_line(kernel_paths, tmp_path, section):
    out = tmp_path / "BOOTX64.EFI"
    proc = efi_image(str(BUILD / "loader.so"), str(BUILD / "kernel-stripped.elf"), str(out),
                     str(_objcopy_dropping(tmp_path, section)))
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"efi-image: {out} lacks the loader's {section} " \
        f"({int(_section_size(BUILD / 'loader.so', section), 16)} bytes)"


def _section_size(path: Path, name: str) -> str:
    out = subprocess.run(["objdump", "-h", "-w", str(path)], capture_output=True, text=True, check=True).stdout
    return next(line.split()[2] for line in out.splitlines() if len(line.split()) > 2 and line.split()[1] == name)


def test_an_image_without_its_kernel_fails_the_build(kernel_paths, tmp_path):
    # kernel.elf (with debug info) is not what embed.S includes.
    out = tmp_path / "BOOTX64.EFI"
    proc = efi_image(str(BUILD / "loader.so"), str(kernel_paths.elf), str(out))
    assert proc.returncode == 1
    assert "the embedded kernel was dropped" in proc.stderr and proc.stderr.count("\n") == 1
    not_elf = tmp_path / "not.elf"
    not_elf.write_bytes(b"\0" * 128)
    proc = efi_image(str(BUILD / "loader.so"), str(not_elf), str(out))
    assert proc.returncode == 1 and "no ELF magic" in proc.stderr


def test_make_deletes_a_failed_image_and_says_why(tmp_path):
    build = tmp_path / "build"
    shutil.copytree(BUILD, build, symlinks=True)
    (build / "BOOTX64.EFI").unlink()
    proc = subprocess.run(["make", "-s", "-C", str(ROOT / "kernel"), f"BUILD={build}",
                           f"OBJCOPY={_objcopy_dropping(tmp_path, '.data')}"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert f"efi-image: {build}/BOOTX64.EFI lacks the loader's .data" in proc.stderr
    assert not (build / "BOOTX64.EFI").exists()


@pytest.fixture
def broken_efi(kernel_paths, tmp_path) -> Path:
    """BOOTX64.EFI whose embedded kernel has lost its ELF magic."""
    image = bytearray(kernel_paths.efi.read_bytes())
    at = image.find((BUILD / "kernel-stripped.elf").read_bytes())
    assert at > 0
    image[at:at + 4] = b"\0\0\0\0"
    path = tmp_path / "broken.efi"
    path.write_bytes(bytes(image))
    return path


@pytest.mark.qemu
def test_a_guest_that_dies_in_the_loader_is_reported_before_the_kernels_first_line(qemu_factory, broken_efi):
    qemu = qemu_factory(efi_image=broken_efi, first_line=launch.BUNDLED_KERNEL_FIRST_LINE)
    with pytest.raises(launch.QemuExited) as err:
        qemu.wait_serial(r"^\[kernel\] ", 90)
    message = str(err.value)
    assert err.value.before_kernel and err.value.status == launch.EXIT_FAULT
    assert message.startswith("QEMU exited with status 35 (guest reported a fault) before the kernel's first line; "
                              "last serial lines:\n")
    assert "[loader]" in err.value.serial_tail and "\x1b" not in message and "\0" not in message
    assert qemu.kernel_started() is False
    assert qemu.exit_summary() == message


@pytest.mark.qemu
def test_a_kernel_that_ran_is_not_said_to_have_died_before_it(qemu_factory):
    qemu = qemu_factory(scenario="sce-off")
    with pytest.raises(launch.QemuExited) as err:
        qemu.wait_serial(r"^\[user\] hello from ring 3$", 90)
    assert not err.value.before_kernel and "first line" not in str(err.value)
    assert qemu.kernel_started() is True


@pytest.mark.qemu
def test_gdb_commands_after_a_boot_death_say_so_not_no_target(qemu_factory, broken_efi, kernel_paths):
    qemu = qemu_factory(efi_image=broken_efi, first_line=launch.BUNDLED_KERNEL_FIRST_LINE, gdb_port=0, wait=True)
    with GdbDriver(kernel_paths.elf, target_exit=qemu.exit_summary) as gdb:
        gdb.load_gdbext()
        gdb.connect(qemu.gdb_port)
        gdb.command("break kmain")
        stop = gdb.resume_until_stop(90)
        assert stop is not None and stop.reason == "exited"
        qemu.wait(10)
        for command in ("info gdt", "info registers rip", "continue"):
            with pytest.raises(GdbError) as err:
                gdb.command(command)
            assert str(err.value).startswith("QEMU exited with status 35 (guest reported a fault) "
                                             "before the kernel's first line"), str(err.value)

