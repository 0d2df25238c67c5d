"""gdbext against a kernel nobody here wrote: Debian's Linux 6.1 under QEMU.

The guest (tests.support.linuxguest, scripts/linux-guest) is Debian's own kernel
image with a busybox initramfs whose /init prints the addresses of the
kernel's entry code (KSYM lines, from /proc/kallsyms) and then makes system
calls forever.  Linux sets up its GDT, TSS, IDT, 5-level page tables, KPTI
and syscall MSRs its own way, so every value gdbext shows is checked against
two oracles that owe nothing to gdbext:

- QEMU's monitor (`monitor info registers 0`), parsed here with a few
  regular expressions (not gdbext.model.qemu_text, which is part of what is tested);
- the kernel's own symbols (LSTAR must be entry_SYSCALL_64, IDT vector 14
  asm_exc_page_fault) and Linux's fixed selectors (STAR[47:32] is
  __KERNEL_CS = 0x10, STAR[63:48] is __USER32_CS = 0x23).

The checks run stopped in the kernel (a breakpoint on entry_SYSCALL_64, where
the CPU has just executed SYSCALL and CR3 still holds the *user* page tables
of KPTI) and stopped in user mode (where SYSCALL returns), with and without
KASLR, with 5-level and 4-level paging, and in the idle loop (vCPU halted).
"""
from __future__ import annotations

import gzip
import hashlib
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from gdbext.tools import launch
from gdbext.tools.driver import GdbDriver, GdbError
from tests.support import linuxguest

# Under TCG a boot to GUEST READY takes 5-10 s on an idle machine; with
# other QEMUs running in parallel it has taken over 20 s.
BOOT_TIMEOUT = 180.0
STOP_TIMEOUT = 60.0

KERNEL_CS = 0x10    # Linux's __KERNEL_CS (GDT entry 2): SYSCALL's CS
USER32_CS = 0x23    # Linux's __USER32_CS (entry 4, RPL 3): SYSRET's base selector
LA57 = 1 << 12      # CR4.LA57 (SDM Vol. 3A 2.5): 5-level paging


# ---------------------------------------------------------------------------
# QEMU's monitor, read independently of gdbext
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Seg:
    selector: int
    base: int
    limit: int
    attrs: int


@dataclass(frozen=True)
class Monitor:
    """The few facts of `info registers` these tests compare against."""

    text: str
    cpl: int
    halted: bool
    rip: int
    efer: int
    cr3: int
    cr4: int
    gdt_base: int
    gdt_limit: int
    idt_base: int
    idt_limit: int
    segments: dict[str, Seg]   # es cs ss ds fs gs ldt tr


def parse_monitor(text: str) -> Monitor:
    def field(pattern: str) -> str:
        match = re.search(pattern, text, re.MULTILINE)
        assert match, f"no {pattern!r} in QEMU's info registers:\n{text}"
        return match.group(1)

    segments = {}
    for m in re.finditer(r"^(ES|CS|SS|DS|FS|GS|LDT|TR) *=([0-9a-f]{4}) ([0-9a-f]+) ([0-9a-f]+) ([0-9a-f]+)",
                         text, re.MULTILINE):
        segments[m.group(1).lower()] = Seg(*(int(g, 16) for g in m.groups()[1:]))
    gdt = re.search(r"^GDT= +([0-9a-f]+) ([0-9a-f]+)", text, re.MULTILINE)
    idt = re.search(r"^IDT= +([0-9a-f]+) ([0-9a-f]+)", text, re.MULTILINE)
    assert gdt and idt and len(segments) == 8, f"unexpected info registers layout:\n{text}"
    return Monitor(
        text=text,
        cpl=int(field(r"CPL=(\d)")),
        halted=field(r"HLT=(\d)") == "1",
        rip=int(field(r"^RIP=([0-9a-f]+)"), 16),
        efer=int(field(r"EFER=([0-9a-f]+)"), 16),
        cr3=int(field(r"CR3=([0-9a-f]+)"), 16),
        cr4=int(field(r"CR4=([0-9a-f]+)"), 16),
        gdt_base=int(gdt.group(1), 16), gdt_limit=int(gdt.group(2), 16),
        idt_base=int(idt.group(1), 16), idt_limit=int(idt.group(2), 16),
        segments=segments,
    )


def monitor(g: GdbDriver) -> Monitor:
    return parse_monitor(g.command("monitor info registers 0"))


# A segment cache keeps the descriptor's high dword bits 23:20 and 15:8
# (G, D/B, L, AVL, P, DPL, S, type), which is what QEMU prints masked to
# 0x00ffff00 -- but a cache made by SYSCALL/SYSRET has no limit bits 19:16,
# so those are left out on both sides (SDM Vol. 3A 3.4.5).  The accessed bit
# (type bit 0) is set in the table by the CPU on a load, and is ignored.
CACHE_ATTRS = 0x00F0FE00
# For TR the type's busy bit (bit 9 of the high dword) is ignored too: LTR
# marks the table entry busy, and QEMU's cache keeps the type it loaded
# (measured: monitor TR attrs 00008900, table entry type 0xb).
TR_ATTRS = CACHE_ATTRS & ~0x200


def qemu_maps(g: GdbDriver, va: int, pages: dict[int, bool] | None = None) -> bool:
    """QEMU's own translation under the current CR3 (`gva2gpa`).  `pages`
    remembers the answer per 4 KiB page for one stop (256 IDT handlers sit
    in a handful of pages)."""
    page = va & ~0xFFF
    if pages is not None and page in pages:
        return pages[page]
    text = g.command(f"monitor gva2gpa {va:#x}")
    assert "gpa:" in text or "Unmapped" in text, f"unexpected gva2gpa answer: {text!r}"
    if pages is not None:
        pages[page] = "gpa:" in text
    return "gpa:" in text


def entry_for(gdt: dict, selector: int) -> dict:
    rows = [e for e in gdt["entries"] if e["index"] == selector >> 3]
    assert rows, f"info gdt has no entry for selector {selector:#x}"
    return rows[0]


def high_dword(entry: dict) -> int:
    return (entry["raw"] >> 32) & 0xFFFFFFFF


# ---------------------------------------------------------------------------
# Unit tests (no QEMU): the KSYM parser and the initramfs writer
# ---------------------------------------------------------------------------

# Lines as the guest printed them on a real boot (nokaslr), with a kernel
# message and the console's CR-LF around them.
SERIAL = (
    "KSYM entry_SYSCALL_64 0xffffffff81c00080\r\n"
    "KSYM entry_SYSRETQ_unsafe_stack 0xffffffff81c0021b\r\n"
    "[    3.512] random: crng init done\r\n"
    "KSYM entry_SYSRETQ_end 0xffffffff81c0022a\r\n"
    "KSYM asm_exc_page_fault 0xffffffff81c00be0\n"
    "KSYM native_irq_return_iret 0000000000000000\n"       # no 0x: not a KSYM line
    "KSYM entry_SYSCALL_compat 0x0000000000000000\n"       # hidden by kptr_restrict
    "xKSYM bogus 0x1\n"
    "KINFO release 6.1.0-56-amd64\r\n"
    "KINFO pti [    0.097182] Kernel/User page tables isolation: enabled\n"
    "GUEST READY\n"
)


def test_parse_ksyms_takes_only_real_ksym_lines():
    assert linuxguest.parse_ksyms(SERIAL) == {
        "entry_SYSCALL_64": 0xFFFFFFFF81C00080,
        "entry_SYSRETQ_unsafe_stack": 0xFFFFFFFF81C0021B,
        "entry_SYSRETQ_end": 0xFFFFFFFF81C0022A,
        "asm_exc_page_fault": 0xFFFFFFFF81C00BE0,
    }


def test_parse_kinfo():
    info = linuxguest.parse_kinfo(SERIAL)
    assert info["release"] == "6.1.0-56-amd64"
    assert info["pti"].endswith("Kernel/User page tables isolation: enabled")


def test_kernel_append_variants():
    assert linuxguest.kernel_append() == "console=ttyS0 nokaslr pti=on quiet panic=-1 gdbext.mode=syscalls"
    line = linuxguest.kernel_append(mode="idle", kaslr=True, five_level=False)
    assert "nokaslr" not in line.split() and "no5lvl" in line.split() and "gdbext.mode=idle" in line.split()
    with pytest.raises(ValueError):
        linuxguest.kernel_append(mode="busy")


def test_kernel_append_pages_mode():
    line = linuxguest.kernel_append(mode="pages", pages=20000).split()
    assert "gdbext.mode=pages" in line and "gdbext.pages=20000" in line
    assert not any(w.startswith("gdbext.pages=") for w in linuxguest.kernel_append(mode="pages").split())
    for bad in ({"mode": "syscalls", "pages": 10}, {"mode": "pages", "pages": 0},
                {"mode": "pages", "pages": True}, {"mode": "pages", "pages": "10"}):
        with pytest.raises(ValueError):
            linuxguest.kernel_append(**bad)


def test_parse_pages_ready():
    assert linuxguest.parse_pages_ready("KINFO x\r\nPAGES READY 20000 0x7f9abcc35000 0x2000\r\n") == (
        20000, 0x7F9ABCC35000, 0x2000)
    assert linuxguest.parse_pages_ready("PAGES FAILED mmap -12\n") is None
    assert linuxguest.parse_pages_ready("xPAGES READY 1 0x1 0x1\n") is None


@pytest.fixture
def pages_program(tmp_path) -> bytes:
    if not linuxguest.pages_toolchain():
        pytest.skip("nasm or ld not installed (Debian packages nasm, binutils)")
    return linuxguest.build_pages(tmp_path)


def test_pages_program_touches_every_other_page_without_huge_pages(pages_program, tmp_path):
    """bin/pages run here, on this machine's own Linux: its line, and the
    kernel's accounting of its mapping in /proc/PID/smaps as the oracle."""
    exe = tmp_path / "pages"
    exe.write_bytes(pages_program)
    exe.chmod(0o755)
    n = 3000
    proc = subprocess.Popen([str(exe), str(n)], stdout=subprocess.PIPE)
    try:
        line = proc.stdout.readline().decode()
        assert linuxguest.parse_pages_ready(line) is not None, line
        pages, va, stride = linuxguest.parse_pages_ready(line)
        assert (pages, stride) == (n, 8192) and va % 4096 == 0
        smaps = Path(f"/proc/{proc.pid}/smaps").read_text()
        block = smaps[smaps.index(f"{va:x}-"):].split("VmFlags")[0]
        fields = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+):\s+(\d+) kB", block, re.M)}
        assert fields["Size"] == 2 * n * 4           # 2N pages mapped
        assert fields["Rss"] == n * 4                # N of them touched, 4 KiB each
        assert fields["AnonHugePages"] == 0          # MADV_NOHUGEPAGE
        assert proc.poll() is None, "bin/pages did not keep spinning"
    finally:
        proc.kill()
        proc.wait()
    bad = subprocess.run([str(exe), str(1 << 40)], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and bad.stdout.startswith("PAGES FAILED mmap -"), bad.stdout


def test_pages_program_is_in_the_archive_and_in_its_digest(pages_program, tmp_path):
    files = _read_newc(gzip.decompress(linuxguest.build_initramfs(b"busybox", extra={"bin/pages": pages_program})))
    mode, data, _, _ = files["bin/pages"]
    assert mode == 0o100755 and data == pages_program and data.startswith(b"\x7fELF")
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"busybox")
    assert linuxguest._rootfs_digest(busybox, True) != linuxguest._rootfs_digest(busybox, False)


def _read_newc(archive: bytes) -> dict[str, tuple]:
    """An independent reader of the newc format: name -> (mode, data, rdevmajor, rdevminor)."""
    out, pos = {}, 0
    while True:
        assert archive[pos:pos + 6] == b"070701", f"bad magic at {pos}"
        f = [int(archive[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = f[11], f[6]
        name_start = pos + 110
        name = archive[name_start:name_start + namesize - 1].decode()
        data_start = (name_start + namesize + 3) & ~3
        data = archive[data_start:data_start + filesize]
        pos = (data_start + filesize + 3) & ~3
        if name == "TRAILER!!!":
            assert archive[pos:].strip(b"\0") == b""
            return out
        out[name] = (f[1], data, f[9], f[10])


def test_initramfs_layout(tmp_path):
    (tmp_path / "init").write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "init").chmod(0o755)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "motd").write_text("x" * 5)
    archive = linuxguest.build_initramfs(b"\x7fELF-busybox", tmp_path)
    assert archive == linuxguest.build_initramfs(b"\x7fELF-busybox", tmp_path), "not reproducible"
    files = _read_newc(gzip.decompress(archive))
    assert files["init"][0] == 0o100755 and files["init"][1] == b"#!/bin/sh\necho hi\n"
    assert files["etc/motd"][0] == 0o100644 and files["etc/motd"][1] == b"xxxxx"
    assert files["etc"][0] == 0o040755
    assert files["bin/busybox"] == (0o100755, b"\x7fELF-busybox", 0, 0)
    assert files["bin/sh"][0] == 0o120777 and files["bin/sh"][1] == b"busybox"
    assert files["dev/console"] == (0o020600, b"", 5, 1)  # char device 5:1, made without mknod


def test_the_guest_init_is_in_the_archive_and_executable():
    files = _read_newc(gzip.decompress(linuxguest.build_initramfs(b"busybox")))
    mode, script, _, _ = files["init"]
    assert mode == 0o100755
    assert script.startswith(b"#!/bin/sh\n")
    for needed in (b"kptr_restrict", b"GUEST READY", b"gdbext.mode=", b"KSYM "):
        assert needed in script


# ---------------------------------------------------------------------------
# The guest under QEMU, with gdb and gdbext
# ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def guest() -> linuxguest.LinuxGuest:
    """Built once (the first run downloads Debian's kernel package, ~70 MB)."""
    return linuxguest.prepare()


@dataclass
class Booted:
    qemu: launch.Qemu
    gdb: GdbDriver
    ksyms: dict[str, int]
    kinfo: dict[str, str]
    boot_seconds: float


@contextmanager
def boot(guest: linuxguest.LinuxGuest, **variant) -> Iterator[Booted]:
    """Boot a variant of the guest to GUEST READY and attach gdb with gdbext.
    gdb is closed and QEMU stopped and reaped on the way out, whatever happened."""
    g = guest.variant(**variant)
    qemu = launch.Qemu(launch.QemuOptions(kernel=g.vmlinuz, initrd=g.initrd, append=g.append,
                                          memory_mib=1024, gdb_port=0))
    gdb = None
    try:
        started = time.monotonic()
        qemu.start()
        qemu.wait_serial(rf"^{linuxguest.READY}$", BOOT_TIMEOUT)
        seconds = time.monotonic() - started
        serial = qemu.serial_text()
        gdb = GdbDriver(timeout=60)
        gdb.load_gdbext()
        gdb.connect(qemu.gdb_port)
        yield Booted(qemu, gdb, linuxguest.parse_ksyms(serial), linuxguest.parse_kinfo(serial), seconds)
    finally:
        if gdb is not None:
            gdb.close()
        qemu.stop()
        assert not qemu.running, "a QEMU outlived its test"


def stop_in_kernel(b: Booted) -> Monitor:
    """Run to the first instruction of the SYSCALL entry (CPL 0, user CR3 under KPTI)."""
    g = b.gdb
    entry = b.ksyms["entry_SYSCALL_64"]
    g.command("delete")
    g.command(f"break *{entry:#x}")
    stop = g.resume_until_stop(STOP_TIMEOUT)
    g.command("delete")
    assert stop is not None and stop.address == entry, f"no stop at entry_SYSCALL_64 {entry:#x}: {stop}"
    m = monitor(g)
    assert m.rip == entry and m.cpl == 0
    return m


# Where the kernel returns to user mode, by each path: the SYSRET path
# (swapgs; sysretq: the CS/SS caches are SYSRET's fixed ones) and the IRET
# path (the caches are loaded from the GDT).  Both are in kallsyms.
RETURN_PATHS = {
    "sysret": "entry_SYSRETQ_unsafe_stack",
    "iret": "swapgs_restore_regs_and_return_to_usermode",
}


def stop_in_user(b: Booted, via: str = "sysret") -> Monitor:
    """Stop at the first user instruction after a return to user mode by `via`:
    a breakpoint on the return path, then single steps until CPL is 3."""
    g = b.gdb
    label = b.ksyms[RETURN_PATHS[via]]
    g.command("delete")
    g.command(f"break *{label:#x}")
    stop = g.resume_until_stop(STOP_TIMEOUT)
    g.command("delete")
    assert stop is not None and stop.address == label, f"no stop at {RETURN_PATHS[via]} {label:#x}: {stop}"
    for _ in range(100):  # the IRET path is ~30 instructions (pops, CR3 switch, swapgs, iretq)
        if int(g.command("output $cs & 3").strip()) == 3:
            break
        stop = g.resume_until_stop(STOP_TIMEOUT, "-exec-step-instruction")
        assert stop is not None, f"a single step on the {via} path did not stop"
    m = monitor(g)
    assert m.cpl == 3 and m.rip < 1 << 47, f"not in user mode after the {via} path: CPL={m.cpl} RIP={m.rip:#x}"
    return m


def check_against_qemu(b: Booted, m: Monitor) -> None:
    """Everything gdbext's info commands say, against the monitor and the kernel's symbols."""
    g = b.gdb
    failures = []

    def expect(what: str, got, want) -> None:
        if got != want:
            show = (lambda v: f"{v:#x}" if isinstance(v, int) else repr(v))
            failures.append(f"{what}: gdbext {show(got)}, expected {show(want)}")

    cpl = g.json("info cpl")
    expect("info cpl cpl", cpl["cpl"], m.cpl)
    expect("info cpl rip", cpl["rip"], m.rip)
    expect("info cpl halted", cpl["halted"], m.halted)
    expect("info cpl cs", cpl["cs"], m.segments["cs"].selector)

    gdt = g.json("info gdt")
    expect("info gdt base", gdt["base"], m.gdt_base)
    expect("info gdt limit", gdt["limit"], m.gdt_limit)
    for name in ("cs", "ss", "ds", "es", "fs", "gs"):
        seg = m.segments[name]
        if seg.selector & ~3 == 0 or seg.selector & 4:
            continue  # null (no descriptor is read) or LDT
        entry = entry_for(gdt, seg.selector)
        expect(f"GDT entry {seg.selector:#x} attrs vs live {name.upper()}",
               high_dword(entry) & CACHE_ATTRS, seg.attrs & CACHE_ATTRS)
    tr = m.segments["tr"]
    tss_entry = entry_for(gdt, tr.selector)
    expect(f"GDT TSS entry {tr.selector:#x} attrs vs live TR", high_dword(tss_entry) & TR_ATTRS,
           tr.attrs & TR_ATTRS)
    expect(f"GDT TSS entry {tr.selector:#x} base vs live TR", tss_entry["base"], tr.base)
    expect(f"GDT TSS entry {tr.selector:#x} limit vs live TR", tss_entry["limit"], tr.limit)

    msr = g.json("info msr")
    msrs = msr["msrs"]
    assert not msr["errors"], f"info msr could not read: {msr['errors']}"
    expect("info msr EFER", msrs["EFER"], m.efer)
    expect("info msr LSTAR", msrs["LSTAR"], b.ksyms["entry_SYSCALL_64"])
    if "entry_SYSCALL_compat" in b.ksyms:
        expect("info msr CSTAR", msrs["CSTAR"], b.ksyms["entry_SYSCALL_compat"])
    star = msrs["STAR"]
    expect("STAR[63:48]", (star >> 48) & 0xFFFF, USER32_CS)
    expect("STAR[47:32]", (star >> 32) & 0xFFFF, KERNEL_CS)
    decoded = msr["decoded"]["STAR"]
    expect("info msr STAR syscall_cs", decoded["syscall_cs"], KERNEL_CS)
    expect("info msr STAR sysret_cs64", decoded["sysret_cs64"], USER32_CS + 16)
    expect("info msr STAR sysret_ss", decoded["sysret_ss"], USER32_CS + 8)

    idt = g.json("info idt")
    expect("info idt base", idt["base"], m.idt_base)
    expect("info idt limit", idt["limit"], m.idt_limit)
    gates = {gate["vector"]: gate for gate in idt["gates"]}
    pages: dict[int, bool] = {}
    for vector, symbol in ((14, "asm_exc_page_fault"), (13, "asm_exc_general_protection"),
                           (8, "asm_exc_double_fault")):
        if symbol in b.ksyms:
            expect(f"info idt vector {vector} handler ({symbol})", gates[vector]["handler"], b.ksyms[symbol])
            expect(f"info idt vector {vector} selector", gates[vector]["selector"], KERNEL_CS)
    # Linux leaves the vectors it has no handler for (20-28, 30, 31 here)
    # pointing into early_idt_handler_array, in .init.text, which is freed
    # and unmapped after boot: gdbext's "not mapped" warnings for them are
    # right.  Every gate's verdict is checked against QEMU's own page walk.
    for gate in idt["gates"]:
        if not gate["present"]:
            continue
        says_unmapped = any("is not mapped" in p for p in gate["problems"])
        expect(f"info idt vector {gate['vector']} handler {gate['handler']:#x} unmapped",
               says_unmapped, not qemu_maps(g, gate["handler"], pages))
        others = [p for p in gate["problems"] if "is not mapped" not in p]
        expect(f"info idt vector {gate['vector']} problems", others, [])

    tss = g.json("info tss")
    expect("info tss base", tss["base"], tr.base)
    expect("info tss limit", tss["limit"], tr.limit)
    expect("info tss selector", tss["selector"], tr.selector)
    for name, state in tss["stacks"].items():
        if state["value"] and state["canonical"]:
            # A push writes at value - 8 (SDM Vol. 3A 6.14.2).
            expect(f"info tss {name} {state['value']:#x} mapped", state["mapped"],
                   qemu_maps(g, (state["value"] - 8) & (1 << 64) - 1))

    assert not failures, "gdbext disagrees with QEMU / the kernel:\n" + "\n".join(failures)



@pytest.fixture(scope="module")
def linux(guest) -> Iterator[Booted]:
    """The default guest (nokaslr, 5-level, syscall loop), shared by this module's tests."""
    with boot(guest) as b:
        print(f"\nLinux guest ({b.kinfo.get('release')}) to GUEST READY in {b.boot_seconds:.1f} s")
        yield b


@pytest.mark.qemu
def test_guest_is_what_it_claims(linux):
    """The facts the other tests build on: symbols printed, KPTI on, 5-level paging."""
    assert {"entry_SYSCALL_64", "asm_exc_page_fault", "swapgs_restore_regs_and_return_to_usermode",
            "entry_SYSCALL_compat", "native_irq_return_iret"} <= set(linux.ksyms)
    assert any("sysret" in name.lower() for name in linux.ksyms)
    assert linux.kinfo["pti"].endswith("Kernel/User page tables isolation: enabled")
    assert "nokaslr" in linux.kinfo["cmdline"].split()
    m = stop_in_kernel(linux)
    assert m.cr4 & LA57, f"CR4={m.cr4:#x}: expected 5-level paging with -cpu max"
    # nokaslr: the kernel runs where it was linked.
    assert linux.ksyms["entry_SYSCALL_64"] >> 24 == 0xFFFFFFFF81
    # KPTI: at the first instruction of the SYSCALL entry CR3 is still the
    # user half of the pair (the kernel PGD + 4 KiB).
    assert m.cr3 & (1 << 12), f"CR3={m.cr3:#x} at entry_SYSCALL_64: not the KPTI user page tables"


@pytest.mark.qemu
def test_workload_makes_system_calls(linux):
    """The syscall loop runs: its counter advances while the guest runs."""
    def count() -> int:
        found = re.findall(r"^SYSCALLS (\d+)", linux.qemu.serial_text(), re.MULTILINE)
        return int(found[-1]) if found else 0

    before = count()
    linux.gdb.resume_until_stop(8)   # nothing to stop at: runs 8 s, then is interrupted
    assert count() > before, "the syscall loop printed no progress in 8 s of running"


@pytest.mark.qemu
def test_stopped_in_kernel_at_syscall_entry(linux):
    check_against_qemu(linux, stop_in_kernel(linux))


@pytest.mark.qemu
@pytest.mark.parametrize("via", sorted(RETURN_PATHS))
def test_stopped_in_user_mode(linux, via):
    check_against_qemu(linux, stop_in_user(linux, via))


def _region(g: GdbDriver, register: str, below: int, above: int) -> str:
    """Bytes around a register's value, within its page.  The page may be
    unmapped: after an execve, Linux returns to the new program's entry
    through IRET before its first page is faulted in."""
    value = int(g.command(f"output/x ${register}").strip(), 16)
    start = max(value - below, value & ~0xFFF)
    end = min(value + above, (value | 0xFFF) + 1)
    code = (f"python print(bytes(gdb.selected_inferior().read_memory({start:#x}, {end - start:#x})).hex())")
    try:
        data = g.command(code).strip()
    except GdbError as exc:
        if "Cannot access memory" not in str(exc):
            raise
        data = "not mapped"
    return f"{register} {value:#x} [{start:#x}, {end:#x}): " + data


def _machine_state(g: GdbDriver, gdt_base: int, gdt_limit: int) -> dict[str, str]:
    g.command("maint flush dcache")  # read the guest, not gdb's cache of it
    gdt = g.command(f"python print(bytes(gdb.selected_inferior().read_memory({gdt_base:#x}, "
                    f"{gdt_limit + 1:#x})).hex())").strip()
    return {
        "monitor info registers 0": g.command("monitor info registers 0"),
        "gdb registers": g.command("info registers"),
        "bytes around RIP": _region(g, "rip", 64, 64),
        "bytes around RSP (red zone included)": _region(g, "rsp", 512, 64),
        "GDT bytes": gdt,
    }


def _differences(before: dict[str, str], after: dict[str, str]) -> str:
    out = []
    for key, old in before.items():
        new = after[key]
        if hashlib.sha256(old.encode()).digest() != hashlib.sha256(new.encode()).digest():
            lines = [f"  - {a}\n  + {b}" for a, b in zip(old.splitlines(), new.splitlines()) if a != b]
            out.append(f"{key} changed:\n" + "\n".join(lines[:10]))
    return "\n".join(out)


@pytest.mark.qemu
@pytest.mark.parametrize("where", ["user after sysret", "user after iret", "kernel"])
def test_info_msr_changes_nothing(linux, where):
    """rdmsr injection (through ring 0 and back at CPL 3) leaves no trace."""
    m = stop_in_kernel(linux) if where == "kernel" else stop_in_user(linux, where.split()[-1])
    before = _machine_state(linux.gdb, m.gdt_base, m.gdt_limit)
    msr = linux.gdb.json("info msr")
    assert msr["msrs"]["STAR"] is not None, f"rdmsr was not injected at CPL {m.cpl}: {msr['errors']}"
    after = _machine_state(linux.gdb, m.gdt_base, m.gdt_limit)
    # And the guest still runs: the breakpoint at the SYSCALL entry is hit again.
    diff = _differences(before, after)
    stop_in_kernel(linux)
    assert not diff, diff


# The session's memory read through the stub (and back): see test_paging_live.
_STUB_ONLY = ("import os, gdbext.target as t, gdbext.target.memory as m; os.environ['GDBEXT_MEMORY'] = 'stub'; "
              "s = t.current(); s.saved_phys = s.phys; s.phys = m.PhysicalMemory(); s.snapshots.clear()")
_RESTORE = ("import os, gdbext.target as t; os.environ.pop('GDBEXT_MEMORY', None); "
            "s = t.current(); s.phys = getattr(s, 'saved_phys', s.phys); s.snapshots.clear()")


@pytest.mark.qemu
@pytest.mark.parametrize("where", ["user after sysret", "kernel"])
def test_stub_reads_and_rdmsr_in_one_command_change_nothing(linux, where):
    """Commands read tables physically and MSRs by rdmsr injection (at CPL 3
    it patches GDT slots it found by a physical walk): the stub must be in
    virtual mode again for the injection's reads, writes and steps (Linux's
    addresses are not physical ones), and after the command."""
    m = stop_in_kernel(linux) if where == "kernel" else stop_in_user(linux, "sysret")
    g = linux.gdb
    local = g.json("info gdt")
    local_tss = g.json("info tss")
    local_msr = g.json("info msr")["msrs"]
    before = _machine_state(g, m.gdt_base, m.gdt_limit)
    g.command("python " + _STUB_ONLY)
    try:
        assert g.json("ptdump --limit 0")["phys_source"].startswith("gdb stub")
        stub = g.json("info gdt")
        tss = g.json("info tss")
        g.command("python import gdbext.target as t; t.invalidate()")   # MSRs read again, through ring 0 at CPL 3
        msr = g.json("info msr")["msrs"]
        assert 'received: "0"' in g.command("maint packet qqemu.PhyMemMode")
    finally:
        g.command("python " + _RESTORE)
    after = _machine_state(g, m.gdt_base, m.gdt_limit)
    assert local["star"] == stub["star"] is not None and local["entries"] == stub["entries"]
    assert tss == local_tss
    assert msr == local_msr and msr["STAR"] is not None
    diff = _differences(before, after)
    stop_in_kernel(linux)
    assert not diff, diff


def run_to_sysretq(b: Booted) -> int:
    """Stop on Linux's own sysretq: break on entry_SYSRETQ_unsafe_stack (swapgs,
    then alternatives) and step to the instruction."""
    g = b.gdb
    label = b.ksyms["entry_SYSRETQ_unsafe_stack"]
    g.command("delete")
    g.command(f"break *{label:#x}")
    stop = g.resume_until_stop(STOP_TIMEOUT)
    g.command("delete")
    assert stop is not None and stop.address == label, f"no stop at entry_SYSRETQ_unsafe_stack: {stop}"
    for _ in range(8):
        if "sysretq" in g.command("x/i $pc"):
            return int(g.command("output/x $pc").strip(), 16)
        assert g.resume_until_stop(STOP_TIMEOUT, "-exec-step-instruction") is not None
    raise AssertionError(f"no sysretq within 8 instructions of {label:#x}")


@pytest.mark.qemu
def test_sysret_rules_pass_on_linux(linux):
    """Linux's SYSRET is right by construction: every rule must pass at its
    sysretq, and a watch over its syscall loop must stop nowhere."""
    sysretq = run_to_sysretq(linux)
    assert linux.ksyms["entry_SYSRETQ_unsafe_stack"] < sysretq < linux.ksyms["entry_SYSRETQ_end"]
    check = linux.gdb.json("sysret-check")
    assert check["at_sysret"] and check["address"] == sysretq
    assert check["findings"] == [], check["findings"]
    assert {c["status"] for c in check["checked"]} == {"pass"}, check["checked"]

    g = linux.gdb
    # The sysret rate of the syscall loop: iretq sites are watched by their own test.
    status = g.json("sysret-watch on --no-iret")
    try:
        assert sysretq in status["sites"], f"sysretq {sysretq:#x} not among the watched sites {status['sites']}"
        if "entry_SYSRETL_compat_unsafe_stack" in linux.ksyms:
            low, high = linux.ksyms["entry_SYSRETL_compat_unsafe_stack"], linux.ksyms["entry_SYSRETL_compat_end"]
            assert any(low <= site < high for site in status["sites"]), "the compat sysretl is not watched"
        stop = g.resume_until_stop(15)
        assert stop is None, f"sysret-watch stopped Linux: {stop.console[-1500:]}"
        status = g.json("sysret-watch status")
        print(f"\nLinux, 15 s watched: {status['checks']} sysret checks, {status['reused_verdicts']} reused, "
              f"mean check {status['mean_check_ms']} ms")
        assert status["findings"] == 0
        # Enough checks for "no finding" to mean something; how many a second
        # is scripts/bench-sysret's to say (a loaded machine does far fewer).
        assert status["checks"] >= 200, f"only {status['checks']} sysret checks in 15 s of the syscall loop"
        # And with every check evaluating every rule (no verdict reused): still no finding.
        g.command("sysret-watch on --no-iret")
        g.command("python from gdbext.commands import sysret as _w; _w.WATCH.verdicts.limit = 0")
        stop = g.resume_until_stop(5)
        assert stop is None, f"sysret-watch stopped Linux: {stop.console[-1500:]}"
        status = g.json("sysret-watch status")
        print(f"Linux, 5 s watched, no reuse: {status['checks']} checks, mean {status['mean_evaluated_ms']} ms")
        assert status["findings"] == 0 and status["reused_verdicts"] == 0
        assert status["checks"] >= 50, f"only {status['checks']} full sysret checks in 5 s"
    finally:
        g.command("sysret-watch off")


@pytest.mark.qemu
def test_kaslr_and_four_level_paging(guest):
    """Debian's default randomized layout, and no5lvl: the same checks hold."""
    with boot(guest, kaslr=True, five_level=False) as b:
        print(f"\nLinux guest (KASLR, 4-level) to GUEST READY in {b.boot_seconds:.1f} s")
        m = stop_in_kernel(b)
        assert not m.cr4 & LA57, f"CR4={m.cr4:#x}: no5lvl should leave 4-level paging"
        check_against_qemu(b, m)
        check_against_qemu(b, stop_in_user(b, "sysret"))
        check_against_qemu(b, stop_in_user(b, "iret"))


@pytest.mark.qemu
def test_idle_guest_halted_in_kernel(guest):
    """Stopped in the idle loop (HLT): CPL 0, halted; rdmsr waits for the
    vCPU's own LAPIC timer (read from `info lapic`), which wakes it without
    being delivered.  Afterwards every register and the bytes at RIP are as
    before, the vCPU is awake with the timer interrupt pending in its IRR,
    and the guest takes that interrupt when it resumes."""
    with boot(guest, mode="idle") as b:
        g = b.gdb
        m: Monitor | None = None
        for _ in range(20):
            g.resume_until_stop(0.5)   # interrupted after half a second
            m = monitor(g)
            if m.halted:
                break
        assert m is not None and m.halted, "never found the idle guest halted"
        cpl = g.json("info cpl")
        assert (cpl["cpl"], cpl["halted"], cpl["rip"]) == (0, True, m.rip)
        gdt = g.json("info gdt --no-star")
        assert (gdt["base"], gdt["limit"]) == (m.gdt_base, m.gdt_limit)
        assert g.json("info tss")["base"] == m.segments["tr"].base

        lapic = g.command("monitor info lapic 0")
        timer_vector = int(re.search(r"^LVTT\s+0x([0-9a-f]{8})", lapic, re.M).group(1), 16) & 0xFF
        before = _machine_state(g, m.gdt_base, m.gdt_limit)
        # Without --wake, looking changes nothing: the rdmsr-only MSRs say what --wake would do.
        asleep = g.json("info msr")
        assert asleep["msrs"]["EFER"] == m.efer and asleep["msrs"]["STAR"] is None
        assert "--wake" in asleep["errors"]["STAR"], asleep["errors"]
        assert _machine_state(g, m.gdt_base, m.gdt_limit) == before
        msr = g.json("info msr --wake")
        assert msr["msrs"]["EFER"] == m.efer
        assert msr["msrs"]["STAR"] >> 32 == (USER32_CS << 16) | KERNEL_CS, msr["errors"]
        assert msr["msrs"]["LSTAR"] == b.ksyms["entry_SYSCALL_64"]
        assert any("halted in HLT" in n for n in msr["notes"]), msr["notes"]
        after = _machine_state(g, m.gdt_base, m.gdt_limit)

        key = "monitor info registers 0"
        woke = parse_monitor(after[key])
        assert not woke.halted and woke.rip == m.rip
        # The only change in the monitor's dump is HLT=1 -> HLT=0.
        assert after[key].replace("HLT=0", "HLT=1") == before[key]
        assert {k: v for k, v in after.items() if k != key} == {k: v for k, v in before.items() if k != key}
        irr = re.search(r"^IRR\s+(.*)$", g.command("monitor info lapic 0"), re.M).group(1)
        assert str(timer_vector) in irr.split(), f"timer vector {timer_vector} not pending: IRR {irr}"
        # The guest goes on: it takes the interrupt and idles again.
        g.resume_until_stop(0.5)
        assert parse_monitor(g.command(key)).cpl == 0
        assert "GUEST READY" in b.qemu.serial_text()

@pytest.mark.qemu
def test_iret_watch_on_linux_finds_nothing_wrong(linux):
    """Linux returns from every interrupt with iretq (a timer tick in ring 3
    returns there by `native_irq_return_iret`): watched over its own iretq
    sites for 15 s, the watch must stop nowhere, and say how many it checked."""
    g = linux.gdb
    status = g.json("sysret-watch on")
    try:
        sites = status["iret_sites"]
        assert sites, "no iretq site proven in Linux's code"
        iret = linux.ksyms.get("native_irq_return_iret")
        if iret is not None:
            assert iret in sites, f"native_irq_return_iret {iret:#x} not among {[hex(s) for s in sites]}"
        stop = g.resume_until_stop(15)
        assert stop is None, f"the watch stopped Linux at an iretq: {stop.console[-1500:]}"
        status = g.json("sysret-watch status")
        print(f"\nLinux, 15 s watched: {status['iret_checks']} iretq checks on {len(sites)} sites, "
              f"{status['checks']} sysret checks, {status['dropped_candidates']} candidates left out, "
              f"{status['reused_verdicts']} verdicts reused, mean check {status['mean_check_ms']} ms")
        assert status["findings"] == 0 and status["last_finding"] is None
        assert status["iret_checks"] >= 15, f"only {status['iret_checks']} iretq checks in 15 s"
    finally:
        g.command("sysret-watch off")
