"""A Linux guest nobody here wrote, for checking gdbext against a real kernel.

`prepare()` builds, once, in build/linux/:
- vmlinuz: Debian's own kernel image, taken out of the `linux-image-*-amd64`
  package that `linux-image-amd64` points at (`apt-get download` and
  `dpkg-deb --fsys-tarfile`: nothing is installed, no initramfs-tools run);
- initramfs.cpio.gz: busybox-static's `bin/busybox`, the files under
  tests/linux/rootfs/ (its /init prints kernel symbols, then makes system
  calls forever) and `bin/pages`, tests/linux/pages.asm assembled with nasm
  (a process with N touched pages, for gdbext.mode=pages), written here as
  a "newc" cpio archive.

Later calls find both and return at once; a change under tests/linux/rootfs
or to pages.asm rebuilds only the initramfs.  Standard library only: the tests, benchmarks
and scripts/linux-guest use it without gdb.

Facts about this kernel under QEMU 7.2 TCG with `-cpu max` (measured; more in
tests/linux/README.md): it uses 5-level paging (CR4.LA57) unless `no5lvl` is
given; `pti=on` makes KPTI certain (QEMU's max CPU may report itself not
vulnerable); kallsyms prints the real (relocated) addresses, so the KSYM
lines match the running kernel with or without KASLR.
"""
from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROOTFS = ROOT / "tests" / "linux" / "rootfs"
PAGES_SOURCE = ROOT / "tests" / "linux" / "pages.asm"
DEFAULT_OUT = ROOT / "build" / "linux"

KERNEL_META_PACKAGE = "linux-image-amd64"
BUSYBOX_PACKAGE = "busybox-static"

READY = "GUEST READY"
KSYM_PREFIX = "KSYM "
KINFO_PREFIX = "KINFO "
MODES = ("syscalls", "idle", "pages")
# gdbext.mode=pages: /init runs `pages N` (tests/linux/pages.asm), which
# touches N pages and prints this line, then spins in ring 3.
PAGES_READY = "PAGES READY"
DEFAULT_PAGES = 100_000

# Bump when the archive layout written below changes, so caches rebuild.
_FORMAT = 1


class GuestBuildError(RuntimeError):
    """The guest cannot be prepared; the message is one line saying why and what to do."""


@dataclass(frozen=True)
class LinuxGuest:
    """A bootable guest: the kernel image, the initramfs and a kernel command line."""

    vmlinuz: Path
    initrd: Path
    append: str
    # Whether the initramfs has bin/pages (nasm and ld were there to build it).
    has_pages: bool = True

    def variant(self, *, mode: str = "syscalls", kaslr: bool = False, five_level: bool = True,
                extra: str = "", pages: int | None = None) -> LinuxGuest:
        """The same guest with another command line (see `kernel_append`)."""
        if mode == "pages" and not self.has_pages:
            raise GuestBuildError("linux-guest: gdbext.mode=pages needs bin/pages, built with nasm and ld "
                                  "(Debian packages nasm, binutils; scripts/setup installs them)")
        return replace(self, append=kernel_append(mode=mode, kaslr=kaslr, five_level=five_level,
                                                  extra=extra, pages=pages))

    def qemu_argv(self, *, qemu: str = "qemu-system-x86_64", memory_mib: int = 1024, smp: int = 1,
                  gdb_port: int | None = None, serial_file: Path | None = None,
                  extra_args: Sequence[str] = ()) -> list[str]:
        """QEMU's command line.  Without serial_file the console is this
        terminal (-nographic); with it, the console goes to the file and QEMU
        shows nothing and takes no input (for tests)."""
        argv = [qemu, "-machine", "q35", "-accel", "tcg", "-cpu", "max", "-m", str(memory_mib),
                "-smp", str(smp), "-kernel", str(self.vmlinuz), "-initrd", str(self.initrd),
                "-append", self.append, "-no-reboot"]
        if serial_file is None:
            argv.append("-nographic")
        else:
            argv += ["-display", "none", "-monitor", "none", "-serial", f"file:{serial_file}"]
        if gdb_port is not None:
            argv += ["-gdb", f"tcp:127.0.0.1:{gdb_port}"]
        return argv + list(extra_args)


def kernel_append(*, mode: str = "syscalls", kaslr: bool = False, five_level: bool = True,
                  extra: str = "", pages: int | None = None) -> str:
    """The kernel command line.

    nokaslr by default: the kernel then runs at the addresses its image was
    linked for, the same on every boot, so a failure report's addresses can
    be compared across runs and a breakpoint can be planted before boot.
    (kallsyms prints real addresses either way; `kaslr=True` boots the
    randomized layout Debian ships, to show nothing depends on it.)
    `panic=-1` with QEMU's -no-reboot makes a kernel panic end QEMU at once
    instead of leaving a test waiting for a line that never comes.
    `pages` (mode "pages" only) is how many pages bin/pages touches
    (gdbext.pages=N; DEFAULT_PAGES without it).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if pages is not None and (mode != "pages" or isinstance(pages, bool) or not isinstance(pages, int)
                              or pages < 1):
        raise ValueError(f"pages must be a positive int, and only with mode='pages', not {pages!r}")
    words = ["console=ttyS0", "pti=on", "quiet", "panic=-1", f"gdbext.mode={mode}"]
    if pages is not None:
        words.append(f"gdbext.pages={pages}")
    if not kaslr:
        words.insert(1, "nokaslr")
    if not five_level:
        words.append("no5lvl")
    if extra:
        words.append(extra)
    return " ".join(words)


def parse_ksyms(serial_text: str) -> dict[str, int]:
    """The `KSYM name 0xaddr` lines the guest's /init printed.

    A zero address means kallsyms hid it (kptr_restrict), so it is left out
    rather than returned as a symbol at 0.  The serial console may carry
    kernel messages and carriage returns around the lines; they are ignored.
    """
    syms: dict[str, int] = {}
    for match in re.finditer(r"^KSYM (\S+) 0x([0-9a-fA-F]+)\r?$", serial_text, re.MULTILINE):
        address = int(match.group(2), 16)
        if address:
            syms[match.group(1)] = address
    return syms


def parse_pages_ready(serial_text: str) -> tuple[int, int, int] | None:
    """(pages, first VA, stride) from bin/pages' `PAGES READY N 0xVA 0xSTRIDE`
    line, or None before it is printed."""
    match = re.search(r"^PAGES READY (\d+) 0x([0-9a-f]+) 0x([0-9a-f]+)\r?$", serial_text, re.MULTILINE)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2), 16), int(match.group(3), 16)


def parse_kinfo(serial_text: str) -> dict[str, str]:
    """The `KINFO key text` lines (release, mode, cmdline, pti, cpu-la57)."""
    return {m.group(1): m.group(2).strip()
            for m in re.finditer(r"^KINFO (\S+) ?(.*?)\r?$", serial_text, re.MULTILINE)}


# ---------------------------------------------------------------------------
# prepare
# ---------------------------------------------------------------------------

def prepare(out: Path = DEFAULT_OUT) -> LinuxGuest:
    """Build (or find built) the kernel image and initramfs in `out`.

    Safe to call from several processes at once (pytest -n): one builds
    while the others wait on a lock file.  Raises GuestBuildError (a
    RuntimeError) with one line when it cannot.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out / ".lock"):
        manifest = _read_manifest(out)
        vmlinuz = out / "vmlinuz"
        busybox = out / "busybox"
        if not (vmlinuz.is_file() and busybox.is_file() and "kernel_package" in manifest):
            manifest = _fetch_packages(out)
        initrd = out / "initramfs.cpio.gz"
        can_build = pages_toolchain()
        digest = _rootfs_digest(busybox, can_build)
        if not initrd.is_file() or manifest.get("initramfs_sources") != digest:
            extra = {"bin/pages": build_pages(out)} if can_build else {}
            _atomic_write(initrd, build_initramfs(busybox.read_bytes(), ROOTFS, extra))
            manifest["initramfs_sources"] = digest
            manifest["pages_program"] = can_build
            _atomic_write(out / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return LinuxGuest(vmlinuz=vmlinuz, initrd=initrd, append=kernel_append(),
                      has_pages=bool(manifest.get("pages_program")))


def pages_toolchain() -> bool:
    """nasm and ld, to assemble tests/linux/pages.asm."""
    return shutil.which("nasm") is not None and shutil.which("ld") is not None


def build_pages(out: Path) -> bytes:
    """tests/linux/pages.asm as a static ELF executable (nasm, ld)."""
    with tempfile.TemporaryDirectory(prefix="pages-", dir=out) as tmp:
        obj, exe = Path(tmp) / "pages.o", Path(tmp) / "pages"
        for argv in (["nasm", "-f", "elf64", "-o", str(obj), str(PAGES_SOURCE)],
                     ["ld", "-static", "-o", str(exe), str(obj)]):
            proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                raise GuestBuildError(f"linux-guest: {argv[0]} failed on {PAGES_SOURCE.name}: "
                                      f"{_last_line(proc.stderr)}")
        return exe.read_bytes()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_manifest(out: Path) -> dict:
    try:
        return json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _fetch_packages(out: Path) -> dict:
    for tool in ("apt-get", "apt-cache", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise GuestBuildError(f"linux-guest: needs Debian's {tool} (apt and dpkg) to fetch the kernel and busybox")
    kernel_package = current_kernel_package()
    with tempfile.TemporaryDirectory(prefix="linux-guest-", dir=out) as tmp:
        debs = _download([kernel_package, BUSYBOX_PACKAGE], Path(tmp))
        kernel = _extract(debs[kernel_package], lambda n: re.fullmatch(r"\./boot/vmlinuz-.*", n) is not None)
        # Debian 12 ships ./bin/busybox; Debian 13 is merged-/usr: ./usr/bin/busybox.
        box = _extract(debs[BUSYBOX_PACKAGE], lambda n: n in ("./bin/busybox", "./usr/bin/busybox"))
        versions = {pkg: _deb_version(deb) for pkg, deb in debs.items()}
    (kname, kdata), (_, bdata) = kernel, box
    _atomic_write(out / "vmlinuz", kdata)
    _atomic_write(out / "busybox", bdata)
    (out / "busybox").chmod(0o755)
    manifest = {
        "format": _FORMAT,
        "kernel_package": kernel_package,
        "kernel_version": versions[kernel_package],
        "kernel_image": kname.rsplit("/", 1)[-1],
        "busybox_version": versions[BUSYBOX_PACKAGE],
    }
    _atomic_write(out / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def current_kernel_package() -> str:
    """The linux-image-<version>-amd64 package Debian's meta-package points at now."""
    text = _apt_query(["apt-cache", "depends", KERNEL_META_PACKAGE])
    match = re.search(r"Depends: (linux-image-\S+-amd64)\b", text)
    if match is None:
        _apt_update("apt-cache does not know linux-image-amd64")
        text = _apt_query(["apt-cache", "depends", KERNEL_META_PACKAGE])
        match = re.search(r"Depends: (linux-image-\S+-amd64)\b", text)
    if match is None:
        raise GuestBuildError(f"linux-guest: `apt-cache depends {KERNEL_META_PACKAGE}` names no kernel package")
    return match.group(1)


def _apt_query(argv: list[str]) -> str:
    proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120)
    return proc.stdout


def _apt_update(why: str) -> None:
    if os.geteuid() != 0:
        raise GuestBuildError(f"linux-guest: {why}; run `sudo apt-get update` once, then again")
    proc = subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise GuestBuildError(f"linux-guest: apt-get update failed: {_last_line(proc.stderr)}")


def _download(packages: list[str], where: Path) -> dict[str, Path]:
    """apt-get download, retried once after apt-get update: an old package
    list names versions the archive no longer has."""
    # apt drops to the _apt user for downloads; let it write here, or it
    # warns and downloads as root anyway.
    where.chmod(0o777)
    for attempt in (1, 2):
        proc = subprocess.run(["apt-get", "download", "-q", *packages], cwd=where, check=False,
                              capture_output=True, text=True, timeout=900)
        if proc.returncode == 0:
            break
        if attempt == 2:
            raise GuestBuildError(f"linux-guest: apt-get download failed: {_last_line(proc.stderr)}")
        _apt_update(f"apt-get download failed ({_last_line(proc.stderr)})")
    found = {}
    for pkg in packages:
        debs = sorted(where.glob(f"{pkg}_*.deb"))
        if not debs:
            raise GuestBuildError(f"linux-guest: apt-get download left no {pkg}_*.deb")
        found[pkg] = debs[-1]
    return found


def _extract(deb: Path, wanted: Callable[[str], bool]) -> tuple[str, bytes]:
    """One file out of a .deb, streamed from `dpkg-deb --fsys-tarfile`
    (the kernel package unpacks to 400 MB of modules we do not need)."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    result = None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                if member.isfile() and wanted(member.name):
                    result = (member.name, tar.extractfile(member).read())
                    break
    finally:
        proc.stdout.close()
        proc.kill()
        proc.wait()
    if result is None:
        raise GuestBuildError(f"linux-guest: {deb.name} holds no such file")
    return result


def _deb_version(deb: Path) -> str:
    proc = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=False, capture_output=True,
                          text=True, timeout=60)
    return proc.stdout.strip()


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def _rootfs_digest(busybox: Path, with_pages: bool) -> str:
    h = hashlib.sha256(f"format {_FORMAT}\n".encode())
    h.update(hashlib.sha256(busybox.read_bytes()).digest())
    # bin/pages: its source, or that it could not be built (nasm or ld
    # missing), so installing them later rebuilds the archive.
    h.update(b"pages\n" + (PAGES_SOURCE.read_bytes() if with_pages else b"absent\n"))
    for path in sorted(p for p in ROOTFS.rglob("*")):
        rel = path.relative_to(ROOTFS).as_posix()
        h.update(f"{rel} {_mode_of(path):o}\n".encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------
# The initramfs: a gzip'd "newc" cpio archive
# ---------------------------------------------------------------------------

def build_initramfs(busybox: bytes, rootfs: Path = ROOTFS, extra: dict[str, bytes] | None = None) -> bytes:
    """The archive the kernel unpacks into its rootfs before running /init.

    Written here rather than with cpio(1) so that it needs no root and no
    extra package: /dev/console must be a character device (5, 1) in the
    archive, because the kernel opens it for init's stdin/stdout before
    init can mount devtmpfs; cpio would need mknod, i.e. root.  Timestamps
    are 0, so the same inputs give the same bytes.  `extra` adds
    executables built elsewhere (archive path -> bytes), e.g. bin/pages.
    """
    w = _CpioWriter()
    for d in ("bin", "dev", "proc", "sys", "tmp"):
        w.directory(d)
    w.device("dev/console", major=5, minor=1, mode=0o600)
    w.file("bin/busybox", busybox, mode=0o755)
    w.symlink("bin/sh", "busybox")  # for /init's #!/bin/sh
    for path in sorted(rootfs.rglob("*")):
        rel = path.relative_to(rootfs).as_posix()
        if path.is_dir():
            w.directory(rel)
        elif path.is_file():
            w.file(rel, path.read_bytes(), mode=_mode_of(path))
    for rel, data in sorted((extra or {}).items()):
        w.file(rel, data, mode=0o755)
    return gzip.compress(w.finish(), compresslevel=6, mtime=0)


def _mode_of(path: Path) -> int:
    # Only the executable bit is taken from the checkout (umasks differ).
    if path.is_dir():
        return 0o755
    return 0o755 if os.access(path, os.X_OK) else 0o644


class _CpioWriter:
    """The "newc" format the kernel reads (Documentation/driver-api/early-userspace/
    buffer-format.rst): a 110-byte ASCII header ("070701" and 13 8-digit hex
    fields), the NUL-terminated name, then the data, each padded to 4 bytes."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._ino = 1
        self._seen: set = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple = (0, 0), nlink: int = 1) -> None:
        if name in self._seen:
            return
        self._seen.add(name)
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self._ino += 1
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._buf.write(header + encoded)
        self._pad()
        self._buf.write(data)
        self._pad()

    def _pad(self) -> None:
        self._buf.write(b"\0" * (-self._buf.tell() % 4))

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755, nlink=2)

    def file(self, name: str, data: bytes, mode: int) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def device(self, name: str, major: int, minor: int, mode: int) -> None:
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0, nlink=1)
        return self._buf.getvalue()


# ---------------------------------------------------------------------------
# scripts/linux-guest
# ---------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="linux-guest",
        description="Prepare a Debian Linux guest (kernel + busybox initramfs) for gdbext, "
                    "and print how to boot it under QEMU.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to build (default: build/linux)")
    args = parser.parse_args(argv)
    try:
        guest = prepare(args.out)
    except GuestBuildError as exc:
        print(exc, file=sys.stderr)
        return 1
    manifest = _read_manifest(args.out)
    print(f"kernel:    {guest.vmlinuz}  ({manifest.get('kernel_package')} {manifest.get('kernel_version')})")
    print(f"initramfs: {guest.initrd}  (busybox-static {manifest.get('busybox_version')})")
    print()
    print("Boot it (Ctrl-A X quits; add -gdb tcp:127.0.0.1:1234 -S to debug from the first instruction):")
    print("  nokaslr, the default (the same addresses every boot):")
    print("    " + shlex.join(guest.qemu_argv()))
    print("  KASLR as Debian ships it:")
    print("    " + shlex.join(guest.variant(kaslr=True).qemu_argv()))
    print("  idle (the vCPU sleeps in the kernel's idle loop):")
    print("    " + shlex.join(guest.variant(mode="idle").qemu_argv()))
    print("  4-level paging instead of 5 (no5lvl):")
    print("    " + shlex.join(guest.variant(five_level=False).qemu_argv()))
    if guest.has_pages:
        print(f"  a process with {DEFAULT_PAGES} touched pages, spinning in ring 3 (4 GiB):")
        print("    " + shlex.join(guest.variant(mode="pages").qemu_argv(memory_mib=4096)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
