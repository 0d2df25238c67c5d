"""Build the bundled kernel and boot it (or another image) under QEMU.

Tests, triage and scripts/run-kernel share this module.  Standard library
only, and no gdb import: it runs in pytest, in a plain script, or inside gdb.

    paths = build_kernel()
    with Qemu(QemuOptions(scenario="ok", gdb_port=0)) as qemu:
        qemu.wait_serial(r"exit: ok", timeout=30)
        status = qemu.wait(timeout=5)          # EXIT_SUCCESS

The guest leaves QEMU through its isa-debug-exit device: writing v to port
0xf4 makes QEMU exit with status (v << 1) | 1, so the kernel's 0x10, 0x11
and 0x12 become EXIT_SUCCESS, EXIT_FAULT and EXIT_RAN_ON.  A triple fault
resets the machine, and with -no-reboot QEMU then exits with status 0:
that is not success.
"""
from __future__ import annotations

import atexit
import ctypes
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gdbext.model.qemu_log import TripleFaultWatch

ROOT = Path(__file__).resolve().parents[2]
KERNEL_DIR = ROOT / "kernel"
BUILD_DIR = KERNEL_DIR / "build"
# An installed gdbext (a wheel) has no kernel sources: it carries the built
# kernel here instead, as package data (setup.py puts it there).
PACKAGED_KERNEL_DIR = Path(__file__).resolve().parents[1] / "kernel_image"

# In the order of kernel/README.md's table; the names are an interface.
SCENARIOS: tuple[str, ...] = (
    "ok",
    "spin",
    "star-rpl0",
    "gdt-order",
    "sce-off",
    "rcx-noncanonical",
    "user-page-supervisor",
    "user-page-nx",
    "iopl3",
    "if-off",
    "no-swapgs",
    "kernel-rsp",
    "sysret32",
    "tss-rsp0-unmapped",
    "double-fault",
    "iret-ok",
    "iret-cs-rpl0",
    "iret-ss-dpl0",
    "iret-supervisor-page",
)

EXIT_SUCCESS, EXIT_FAULT, EXIT_RAN_ON = 33, 35, 37
EXIT_RESET = 0  # QEMU's status after a triple fault (or a reset) with -no-reboot
# Qemu.wait()'s answer when the interrupt log says "Triple fault": with
# -no-shutdown QEMU does not exit but pauses the VM (no process status is 256).
EXIT_TRIPLE_FAULT = 256
INT_LOG_NAME = "qemu-int.log"

# The first serial line of a guest whose kernel runs: the bundled kernel's
# log prefix, and Linux's banner (printed with console=ttyS0).
BUNDLED_KERNEL_FIRST_LINE = r"^\[kernel\] "
LINUX_FIRST_LINE = r"Linux version \d"
# OVMF's screen control sequences, and NULs (a loader printing strings its
# image lost), which mean nothing in a log.
_SERIAL_NOISE = re.compile(r"\x1b\[[0-9;=?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x00")


def serial_clean(text: str) -> str:
    """A serial log without screen control sequences and NULs (for reports)."""
    return _SERIAL_NOISE.sub("", text)

FIRMWARES = ("bios", "uefi")  # SeaBIOS (QEMU's default) or OVMF, for drive/cdrom boots

# How QEMU's -kernel tells the images it loads apart (and so do we): a Linux
# bzImage has "HdrS" at 0x202 (Documentation/x86/boot.rst, the real-mode
# header); a Multiboot v1 image has the magic 0x1BADB002, 32-bit aligned,
# in its first 8 KiB (Multiboot Specification 0.6.96, 3.1.1).
BZIMAGE_SIGNATURE_OFFSET, BZIMAGE_SIGNATURE = 0x202, b"HdrS"
MULTIBOOT_MAGIC, MULTIBOOT_SEARCH = 0x1BADB002, 8192


def kernel_image_kind(path: Path) -> str:
    """"linux" (a bzImage), "multiboot" (v1) or "unknown", from the image's header."""
    with open(path, "rb") as f:
        head = f.read(MULTIBOOT_SEARCH)
    if head[BZIMAGE_SIGNATURE_OFFSET:BZIMAGE_SIGNATURE_OFFSET + 4] == BZIMAGE_SIGNATURE:
        return "linux"
    magic = MULTIBOOT_MAGIC.to_bytes(4, "little")
    if any(head[i:i + 4] == magic for i in range(0, len(head) - 3, 4)):
        return "multiboot"
    return "unknown"


SCENARIO_FW_CFG_NAME = "opt/org.gdbext/scenario"
QEMU_BINARY = "qemu-system-x86_64"
DEFAULT_OVMF = Path("/usr/share/ovmf/OVMF.fd")
ISA_DEBUG_EXIT = "isa-debug-exit,iobase=0xf4,iosize=0x04"

# Tools `make -C kernel` runs, and the Debian package that has each.
BUILD_TOOLS: tuple[tuple[str, str], ...] = (
    ("make", "make"),
    ("gcc", "gcc"),
    ("ld", "binutils"),
    ("objcopy", "binutils"),
    ("mformat", "mtools"),
    ("mmd", "mtools"),
    ("mcopy", "mtools"),
)
GNU_EFI_FILES = (
    Path("/usr/include/efi/efi.h"),
    Path("/usr/lib/crt0-efi-x86_64.o"),
    Path("/usr/lib/elf_x86_64_efi.lds"),
    Path("/usr/lib/libefi.a"),
    Path("/usr/lib/libgnuefi.a"),
)

GDB_PORT_ATTEMPTS = 3
STOP_GRACE_SECONDS = 3.0
POLL_SECONDS = 0.02


class LaunchError(Exception):
    """A setup problem (missing package, failed build, bad option).

    The message is one line and, where a package is missing, names the
    Debian package to install.
    """


class QemuExited(RuntimeError):
    """QEMU exited while we were waiting for the guest (its serial log, a stop).

    before_kernel: the guest's kernel never printed its first line (it died
    in the firmware or the loader), which every report says first.
    """

    def __init__(self, status: int | None, serial_tail: str, stderr: str = "", before_kernel: bool = False):
        self.status = status
        self.serial_tail = serial_tail
        self.stderr = stderr
        self.before_kernel = before_kernel
        message = f"QEMU exited with status {status} ({describe_status(status)})"
        if before_kernel:
            message += " before the kernel's first line"
        if stderr.strip():
            message += f"; QEMU said: {_first_error_line(stderr)}"
        if serial_tail.strip():
            message += f"; last serial lines:\n{serial_tail}"
        else:
            message += "; the serial log is empty"
        super().__init__(message)


class QemuTripleFault(QemuExited):
    """The guest triple-faulted under int_log: QEMU exited (or, with
    keep_after_shutdown, paused the VM with its state for gdb)."""

    def __init__(self, log_path: Path, serial_tail: str, paused: bool = False):
        self.log_path = log_path
        QemuExited.__init__(self, EXIT_TRIPLE_FAULT, serial_tail)
        message = ("triple fault; the VM is paused with its state" if paused else "triple fault") + \
            f" (QEMU's log: {log_path})"
        message += f"; last serial lines:\n{serial_tail}" if serial_tail.strip() else "; the serial log is empty"
        self.args = (message,)

    def __str__(self) -> str:
        return self.args[0]


def describe_status(status: int | None) -> str:
    """A few words for a QEMU exit status."""
    return {
        EXIT_SUCCESS: "guest reported success",
        EXIT_FAULT: "guest reported a fault",
        EXIT_RAN_ON: "guest ran on despite a mistake",
        EXIT_RESET: "guest reset (e.g. a triple fault), or QEMU told to quit (gdb's `kill`)",
        EXIT_TRIPLE_FAULT: "triple fault (QEMU's interrupt log says so)",
        1: "QEMU failed to start or run",
        None: "still running",
    }.get(status, "killed by a signal" if status is not None and status < 0 else "unexpected status")


# -- building ---------------------------------------------------------------


@dataclass(frozen=True)
class KernelPaths:
    efi: Path  # BOOTX64.EFI: the loader with kernel.elf inside
    elf: Path  # kernel.elf with symbols: what gdb loads
    esp_image: Path  # FAT image holding EFI/BOOT/BOOTX64.EFI


def in_checkout() -> bool:
    """Whether this gdbext runs from a source tree that can build its kernel."""
    return (KERNEL_DIR / "Makefile").is_file()


def kernel_paths() -> KernelPaths:
    """Where the bundled kernel is (whether or not it exists yet): the
    checkout's `make -C kernel` outputs, or an installation's packaged copy."""
    where = BUILD_DIR if in_checkout() else PACKAGED_KERNEL_DIR
    return KernelPaths(
        efi=where / "BOOTX64.EFI",
        elf=where / "kernel.elf",
        esp_image=where / "esp.img",
    )


def _check_build_tools() -> None:
    for tool, package in BUILD_TOOLS:
        if shutil.which(tool) is None:
            raise LaunchError(f"`{tool}` not found: install the Debian package {package}")
    for path in GNU_EFI_FILES:
        if not path.exists():
            raise LaunchError(f"{path} not found: install the Debian package gnu-efi")


@dataclass
class _FileLock:
    """An exclusive flock, so parallel test workers do not run make at once."""

    path: Path
    _fd: int = -1

    def __enter__(self) -> _FileLock:  # noqa: PYI034 (Self needs Python 3.11)
        self._fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


def _first_error_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower():
            return line
    return lines[-1] if lines else "no output"


def build_kernel(force: bool = False) -> KernelPaths:
    """Run `make -C kernel` (make decides what is stale) and return the outputs.

    `force` rebuilds everything (make -B).  Raises LaunchError naming the
    Debian package when gcc, binutils, gnu-efi or mtools is missing, or with
    the first error line when the build fails.  An installed gdbext (no
    kernel sources) returns the kernel its wheel carries; nothing is built.
    """
    if not in_checkout():
        return _packaged_kernel()
    _check_build_tools()
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    command = ["make", "-s", "-C", str(KERNEL_DIR)] + (["-B"] if force else [])
    with _FileLock(BUILD_DIR / ".build.lock"):
        proc = subprocess.run(command, check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        raise LaunchError(f"building the kernel failed: {_first_error_line(proc.stderr + proc.stdout)}")
    paths = kernel_paths()
    for path in (paths.efi, paths.elf, paths.esp_image):
        if not path.exists():
            raise LaunchError(f"building the kernel did not produce {path.name}")
    return paths


def _packaged_kernel() -> KernelPaths:
    paths = kernel_paths()
    for path in (paths.efi, paths.elf, paths.esp_image):
        if not path.is_file():
            raise LaunchError(f"this gdbext installation has no bundled kernel ({path.name} missing in "
                              f"{path.parent}): install gdbext from its wheel or a checkout (pip install .), "
                              "not from a bare copy of the package")
    return paths


# -- host resources ---------------------------------------------------------


def ovmf_path() -> Path:
    """The OVMF firmware image (GDBEXT_OVMF overrides the Debian location)."""
    path = Path(os.environ.get("GDBEXT_OVMF", DEFAULT_OVMF))
    if not path.is_file():
        raise LaunchError(f"OVMF firmware not found at {path}: install the Debian package ovmf")
    return path


def qemu_binary() -> str:
    found = shutil.which(QEMU_BINARY)
    if found is None:
        raise LaunchError(f"`{QEMU_BINARY}` not found: install the Debian package qemu-system-x86")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the caller may still lose a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on 127.0.0.1:port, from /proc/net/tcp."""
    wanted = f"0100007F:{port:04X}"
    inodes = set()
    with open("/proc/net/tcp") as table:
        next(table)
        for row in table:
            fields = row.split()
            if fields[1] == wanted and fields[3] == "0A":  # 0A: TCP_LISTEN
                inodes.add(fields[9])
    return inodes


def _process_socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def _die_with_parent() -> None:
    """In the child before exec: QEMU gets SIGKILL if the process that started it dies."""
    PR_SET_PDEATHSIG = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


# -- QEMU -------------------------------------------------------------------


def _ram_dir(memory_mib: int) -> str:
    """/dev/shm when it can hold the guest's RAM (a container's is often 64 MiB,
    and a guest touching past a full tmpfs dies of SIGBUS), else the temp dir."""
    try:
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize >= (memory_mib << 20) * 2:
            return "/dev/shm"
    except OSError:
        pass
    return tempfile.gettempdir()


@dataclass
class QemuOptions:
    """How to start QEMU.

    scenario:    the kernel's scenario (SCENARIOS), passed through fw_cfg.
    gdb_port:    start the gdb stub on 127.0.0.1:PORT (TCP only); 0 picks a
                 free port.  None: no stub, unless `wait` asks for one.
    wait:        start with the CPUs stopped (-S) until gdb continues them;
                 implies a gdb stub.
    serial_path: where COM1 goes; default a temporary file the Qemu owns.
    memory_mib, smp: guest RAM and vCPUs.
    ram_file:    back guest RAM with a shared file (Qemu.ram_path) that gdbext
                 maps to read guest memory with no packet at all; on by default.
                 In /dev/shm when it has room for the RAM, else the temporary
                 directory.
    efi_image:   boot this EFI application (or, if it ends in .img, this
                 FAT image) under OVMF instead of the bundled kernel.
    kernel, initrd, append: direct kernel boot with QEMU's -kernel (a Linux
                 bzImage or a Multiboot v1 image; no OVMF, no scenario).
    drive, cdrom: boot this raw disk image / this ISO (either or both; the
                 disk is opened with snapshot=on, so the guest's writes are
                 never kept), under `firmware`: "bios" (SeaBIOS, the default)
                 or "uefi" (OVMF).
    extra_args:  appended to QEMU's command line.
    int_log:     log every exception and interrupt QEMU delivers, and resets
                 (`-d int,cpu_reset -D Qemu.int_log_path`; TCG only), so
                 Qemu.triple_faulted() can say the guest triple-faulted.
    keep_after_shutdown: -no-shutdown: a triple fault (or any shutdown)
                 pauses the VM with its state for a debugger, instead of
                 ending QEMU.  Since QEMU 9 the guest's isa-debug-exit and
                 gdb's `kill` are shutdowns too and pause it: whoever drives
                 the stub ends QEMU (`monitor quit` exits with the guest's
                 status).  Only with a gdb stub.
                 It slows a guest that takes many interrupts (see
                 scripts/bench-int-log); off by default.
    first_line:  a regular expression for the first serial line the guest's
                 kernel prints, to tell a guest that died before its kernel
                 ran; default the bundled kernel's, or Linux's for a bzImage
                 `kernel`, none for other images.
    """

    scenario: str = "ok"
    gdb_port: int | None = None
    wait: bool = False
    serial_path: Path | None = None
    memory_mib: int = 256
    smp: int = 1
    ram_file: bool = True
    efi_image: Path | None = None
    kernel: Path | None = None
    initrd: Path | None = None
    append: str | None = None
    drive: Path | None = None
    cdrom: Path | None = None
    firmware: str | None = None
    extra_args: list[str] = field(default_factory=list)
    first_line: str | None = None
    int_log: bool = False
    keep_after_shutdown: bool = False

    @property
    def kernel_first_line(self) -> str | None:
        if self.first_line is not None:
            return self.first_line
        if self.kernel is not None:
            try:
                return LINUX_FIRST_LINE if kernel_image_kind(self.kernel) == "linux" else None
            except OSError:
                return None
        return BUNDLED_KERNEL_FIRST_LINE if self.bundled else None

    @property
    def disk_boot(self) -> bool:
        return self.drive is not None or self.cdrom is not None

    @property
    def bundled(self) -> bool:
        return self.kernel is None and self.efi_image is None and not self.disk_boot

    def validate(self) -> None:
        media = [name for name, value in (("kernel", self.kernel), ("efi_image", self.efi_image),
                                          ("drive/cdrom", self.disk_boot or None)) if value is not None]
        if len(media) > 1:
            raise LaunchError(f"{' and '.join(media)} exclude each other: boot one")
        if self.firmware is not None and (self.firmware not in FIRMWARES or not self.disk_boot):
            raise LaunchError(f"firmware is {' or '.join(FIRMWARES)}, for a drive or cdrom boot only")
        if self.bundled and self.scenario not in SCENARIOS:
            raise LaunchError(f"unknown scenario {self.scenario!r}; valid scenarios: {', '.join(SCENARIOS)}")
        if self.kernel is None and (self.initrd is not None or self.append is not None):
            raise LaunchError("initrd and append need kernel (direct Linux boot)")
        if self.memory_mib <= 0 or self.smp <= 0:
            raise LaunchError("memory_mib and smp must be positive")
        if self.gdb_port is not None and not 0 <= self.gdb_port <= 65535:
            raise LaunchError(f"gdb_port {self.gdb_port} is not a TCP port")
        if self.keep_after_shutdown and not self.wants_gdb:
            raise LaunchError("keep_after_shutdown needs a gdb stub: a paused VM with nothing attached waits forever")
        if self.int_log and any("kvm" in arg or arg in ("-d", "-D") for arg in self.extra_args):
            raise LaunchError("int_log needs QEMU's TCG and its own -d/-D: drop the -accel, -enable-kvm, "
                              "-d and -D arguments")

    @property
    def wants_gdb(self) -> bool:
        return self.gdb_port is not None or self.wait


def qemu_argv(
    opts: QemuOptions,
    *,
    qemu: str,
    serial_path: Path,
    gdb_port: int | None,
    firmware: Path | None = None,
    esp_image: Path | None = None,
    ram_path: Path | None = None,
    int_log_path: Path | None = None,
) -> list[str]:
    """QEMU's command line for `opts` (pure: no files are touched)."""
    machine = "q35"
    argv = [qemu, "-nodefaults", "-cpu", "max", "-m", str(opts.memory_mib), "-smp", str(opts.smp)]
    if ram_path is not None:
        argv += ["-object", f"memory-backend-file,id=ram,size={opts.memory_mib}M,mem-path={ram_path},share=on"]
        machine += ",memory-backend=ram"
    argv[1:1] = ["-machine", machine]
    if opts.kernel is not None:
        argv += ["-kernel", str(opts.kernel)]
        if opts.initrd is not None:
            argv += ["-initrd", str(opts.initrd)]
        if opts.append is not None:
            argv += ["-append", opts.append]
    elif opts.disk_boot:
        if firmware is not None:
            argv += ["-bios", str(firmware)]
        if opts.drive is not None:
            argv += ["-drive", f"file={opts.drive},format=raw,if=ide,snapshot=on"]
        if opts.cdrom is not None:
            argv += ["-drive", f"file={opts.cdrom},format=raw,if=ide,media=cdrom,readonly=on"]
    else:
        assert firmware is not None and esp_image is not None
        argv += [
            "-bios", str(firmware),
            # Read-only, so parallel runs share one image.
            "-drive", f"if=none,id=esp,format=raw,file={esp_image},readonly=on",
            "-device", "virtio-blk-pci,drive=esp",
            "-fw_cfg", f"name={SCENARIO_FW_CFG_NAME},string={opts.scenario}",
        ]
    argv += [
        "-nic", "none",
        "-display", "none",
        "-no-reboot",
        "-serial", f"file:{serial_path}",
        "-monitor", "none",
        "-device", ISA_DEBUG_EXIT,
    ]
    if gdb_port is not None:
        argv += ["-gdb", f"tcp:127.0.0.1:{gdb_port}"]
    if opts.int_log:
        assert int_log_path is not None
        argv += ["-d", "int,cpu_reset", "-D", str(int_log_path)]
    if opts.keep_after_shutdown:
        argv.append("-no-shutdown")
    if opts.wait:
        argv.append("-S")
    return argv + list(opts.extra_args)


_live: weakref.WeakSet[Qemu] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for qemu in list(_live):
        qemu.stop()


class Qemu:
    """One QEMU process.  A context manager: leaving it always stops and reaps QEMU.

    After start(): argv, pid, serial_path, gdb_port (None without a stub),
    ram_path (None without ram_file), int_log_path (None without int_log).
    """

    def __init__(self, opts: QemuOptions):
        opts.validate()
        self.opts = opts
        self.argv: list[str] = []
        self.pid: int = 0
        self.serial_path: Path = Path()
        self.ram_path: Path | None = None
        self.gdb_port: int | None = None
        self.int_log_path: Path | None = None
        self._triple_fault: TripleFaultWatch | None = None
        self.process: subprocess.Popen | None = None
        self._tempdir: Path | None = None
        self._final_serial: str | None = None
        self._stderr_path: Path | None = None
        self._stopped = False  # stop() ended it: not the guest's doing

    # -- lifetime -----------------------------------------------------------
    def __enter__(self) -> Qemu:  # noqa: PYI034 (Self needs Python 3.11)
        if self.process is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Qemu:
        if self.process is not None:
            raise LaunchError("this Qemu was already started")
        qemu = qemu_binary()
        firmware, esp_image = self._boot_media_prerequisites()
        self._tempdir = Path(tempfile.mkdtemp(prefix="gdbext-qemu-"))
        _live.add(self)
        try:
            if esp_image is None and self.opts.efi_image is not None:
                esp_image = self._wrap_efi_image(self.opts.efi_image)
            self.serial_path = Path(self.opts.serial_path or self._tempdir / "serial.log")
            self._stderr_path = self._tempdir / "qemu.stderr"
            if self.opts.int_log:
                self.int_log_path = self._tempdir / INT_LOG_NAME
                self._triple_fault = TripleFaultWatch(self.int_log_path)
            if self.opts.ram_file:
                fd, name = tempfile.mkstemp(prefix="gdbext-ram-", dir=_ram_dir(self.opts.memory_mib))
                os.close(fd)  # QEMU sizes and maps it
                self.ram_path = Path(name)
            self._launch(qemu, firmware, esp_image)
        except BaseException:
            self.stop()
            raise
        return self

    def _boot_media_prerequisites(self) -> tuple[Path | None, Path | None]:
        """(firmware, ESP image); the image is None when it must be made from efi_image."""
        if self.opts.kernel is not None:
            if not Path(self.opts.kernel).is_file():
                raise LaunchError(f"kernel {self.opts.kernel} not found")
            return None, None
        if self.opts.disk_boot:
            for label, path in (("drive image", self.opts.drive), ("cdrom image", self.opts.cdrom)):
                if path is not None and not Path(path).is_file():
                    raise LaunchError(f"{label} {path} not found")
            return (ovmf_path() if self.opts.firmware == "uefi" else None), None
        firmware = ovmf_path()
        image = self.opts.efi_image
        if image is None:
            return firmware, build_kernel().esp_image
        if not Path(image).is_file():
            raise LaunchError(f"EFI image {image} not found")
        return firmware, (Path(image) if Path(image).suffix == ".img" else None)

    def _wrap_efi_image(self, efi: Path | None) -> Path:
        """A FAT image with `efi` as EFI/BOOT/BOOTX64.EFI, in the temporary directory."""
        assert efi is not None and self._tempdir is not None
        for tool in ("mformat", "mmd", "mcopy"):
            if shutil.which(tool) is None:
                raise LaunchError(f"`{tool}` not found: install the Debian package mtools")
        image = self._tempdir / "esp.img"
        size_kib = max(2880, (Path(efi).stat().st_size // 1024) * 2 + 1024)
        with open(image, "wb") as f:
            f.truncate(size_kib * 1024)
        for command in (
            ["mformat", "-i", str(image), "-T", str(size_kib * 2), "-h", "2", "-s", "36", "::"],
            ["mmd", "-i", str(image), "::/EFI", "::/EFI/BOOT"],
            ["mcopy", "-i", str(image), str(efi), "::/EFI/BOOT/BOOTX64.EFI"],
        ):
            proc = subprocess.run(command, check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True)
            if proc.returncode != 0:
                raise LaunchError(f"making an ESP image for {efi} failed: {_first_error_line(proc.stderr)}")
        return image

    def _launch(self, qemu: str, firmware: Path | None, esp_image: Path | None) -> None:
        """Start QEMU; with a gdb stub, retry on a fresh port if another process took ours."""
        attempts = GDB_PORT_ATTEMPTS if self.opts.wants_gdb else 1
        for attempt in range(1, attempts + 1):
            port = None
            if self.opts.wants_gdb:
                asked = self.opts.gdb_port
                port = asked if asked and attempt == 1 else free_port()
            self.argv = qemu_argv(
                self.opts, qemu=qemu, serial_path=self.serial_path, gdb_port=port,
                firmware=firmware, esp_image=esp_image, ram_path=self.ram_path,
                int_log_path=self.int_log_path,
            )
            self._spawn()
            self.gdb_port = port
            if port is None or self._wait_for_gdb_stub(port):
                return
            stderr = self.stderr_text()
            self._reap()
            if "Address already in use" not in stderr and "Failed to bind" not in stderr:
                raise LaunchError(f"QEMU exited at start: {_first_error_line(stderr)}")
        raise LaunchError(f"QEMU could not bind a gdb port in {attempts} attempts")

    def _spawn(self) -> None:
        assert self._stderr_path is not None
        with open(self._stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=subprocess.STDOUT,
                close_fds=True,
                start_new_session=True,  # our signals are ours; stop() decides QEMU's end
                # QEMU must not outlive us; the prctl runs before exec, nothing else does.
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        self.pid = self.process.pid

    def _wait_for_gdb_stub(self, port: int, timeout: float = 20.0) -> bool:
        """True once QEMU listens on the port; False if it exited first."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if _listening_inodes(port) & _process_socket_inodes(self.pid):
                return True
            time.sleep(POLL_SECONDS)
        raise LaunchError(f"QEMU did not open its gdb stub on port {port} within {timeout:.0f} s")

    def _reap(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def stop(self) -> None:
        """Stop QEMU (SIGTERM, then SIGKILL), reap it and remove its temporary files.  Idempotent."""
        if self.running:
            self._stopped = True
        self._reap()
        if self._tempdir is not None:
            try:
                self._final_serial = self._read_serial()
            except OSError:
                pass
            shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = None
        if self.ram_path is not None:
            try:
                self.ram_path.unlink()
            except FileNotFoundError:
                pass
        _live.discard(self)

    # -- observing ----------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def _read_serial(self) -> str:
        data = self.serial_path.read_bytes()
        return data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "")

    def serial_text(self) -> str:
        """COM1 so far, with CR-LF turned into LF ("" before QEMU has written anything)."""
        try:
            return self._read_serial()
        except OSError:
            return self._final_serial or ""

    def stderr_text(self) -> str:
        try:
            return self._stderr_path.read_text(errors="replace") if self._stderr_path else ""
        except OSError:
            return ""

    def serial_tail(self, lines: int = 15) -> str:
        """The last lines of COM1 that say something (no screen control, no NULs)."""
        text = serial_clean(self.serial_text())
        return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])

    def kernel_started(self) -> bool | None:
        """Whether the guest's kernel printed its first line; None when unknown
        (an EFI image or kernel whose first line was not given)."""
        pattern = self.opts.kernel_first_line
        if pattern is None:
            return None
        return re.search(pattern, self.serial_text(), re.MULTILINE) is not None

    def describe_exit(self, status: int | None) -> str:
        """describe_status, with what this QEMU said: gdb's `kill` makes it
        print "Terminated via GDBstub" and exit 0, as a reset does."""
        if status == EXIT_RESET and "Terminated via GDBstub" in self.stderr_text():
            return "ended by gdb's `kill` (QEMU: Terminated via GDBstub), not a reset"
        if status == EXIT_TRIPLE_FAULT and self.opts.keep_after_shutdown:
            return describe_status(status) + "; the VM is paused with its state"
        return describe_status(status)

    def triple_faulted(self) -> bool:
        """The interrupt log says "Triple fault" (int_log only; always False without it).
        Reads only what QEMU appended since the last call."""
        return self._triple_fault is not None and self._triple_fault.check()

    def triple_fault_error(self) -> QemuTripleFault | None:
        if not self.triple_faulted():
            return None
        assert self.int_log_path is not None
        return QemuTripleFault(self.int_log_path, self.serial_tail(),
                               paused=self.opts.keep_after_shutdown and self.running)

    def exited_error(self) -> QemuExited | None:
        """What ended QEMU, as an exception to raise or print; None while it
        runs, or when stop() ended it."""
        status = self.returncode
        if status is None or self._stopped:
            return None
        if status == EXIT_RESET and self.triple_faulted():
            return self.triple_fault_error()
        return QemuExited(status, self.serial_tail(), self.stderr_text(), before_kernel=self.kernel_started() is False)

    def exit_summary(self) -> str | None:
        """exited_error() as one message (for gdb drivers: what to say instead
        of "no target" once the guest is gone)."""
        error = self.exited_error()
        return None if error is None else str(error)

    def wait_serial(self, pattern: str, timeout: float) -> re.Match:
        """The first match of `pattern` (re.MULTILINE) in the serial log.

        Raises TimeoutError if it does not appear within `timeout` seconds,
        QemuExited if QEMU exits without it, QemuTripleFault (a QemuExited)
        when, under int_log, the guest triple-faults without it.
        """
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            exited = self.process is None or self.process.poll() is not None
            paused = not exited and self.triple_faulted()
            match = regex.search(self.serial_text())
            if match:
                return match
            if paused:
                raise self.triple_fault_error()
            if exited:
                raise self.exited_error() or QemuExited(self.returncode, self.serial_tail(), self.stderr_text())
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{pattern!r} not in the serial log after {timeout:g} s; last lines:\n{self.serial_tail()}")
            time.sleep(POLL_SECONDS)

    def wait(self, timeout: float) -> int:
        """QEMU's exit status; EXIT_TRIPLE_FAULT as soon as the interrupt log
        (int_log) says the guest triple-faulted (QEMU then keeps running, the
        VM paused, until stop()); TimeoutError if it is still running after
        `timeout` seconds."""
        if self.process is None:
            raise LaunchError("QEMU was not started")
        if self._triple_fault is None:
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                raise TimeoutError(f"QEMU still running after {timeout:g} s") from None
        deadline = time.monotonic() + timeout
        while True:
            status = self.process.poll()
            if status is not None:
                # Without -no-shutdown QEMU exits 0 after the triple fault.
                return EXIT_TRIPLE_FAULT if status == EXIT_RESET and self.triple_faulted() else status
            if self.triple_faulted():
                return EXIT_TRIPLE_FAULT
            if time.monotonic() >= deadline:
                raise TimeoutError(f"QEMU still running after {timeout:g} s")
            time.sleep(POLL_SECONDS)

    def follow_serial(self, poll: float = 0.05) -> Iterator[str]:
        """Yield complete serial lines as they arrive, until QEMU exits (or,
        under int_log, the guest triple-faults: the VM is paused then)."""
        offset = 0
        pending = ""
        while True:
            exited = self.process is None or self.process.poll() is not None or self.triple_faulted()
            text = self.serial_text()
            pending += text[offset:]
            offset = len(text)
            *lines, pending = pending.split("\n")
            yield from lines
            if exited:
                if pending:
                    yield pending
                return
            time.sleep(poll)

