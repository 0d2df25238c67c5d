"""scripts/triage end to end: real QEMU, real gdb, the bundled kernel's scenarios.

Each boot takes a few seconds; the scenarios are chosen so every way a triage
can end is seen once: clean exit, a finding at a wrmsr, a finding at a
sysret, an exception with no watch, a timeout, and unusable input."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gdbext.tools import launch, triage
from tests.support import linuxguest

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ROOT / "tests" / "kernels"


def run_triage(tmp_path: Path, *args: str) -> tuple[int, dict, ET.Element, str]:
    """Run the wrapper script as CI would (no terminal, stdin closed)."""
    report, junit = tmp_path / "report.json", tmp_path / "junit.xml"
    env = dict(os.environ, CI="true")
    proc = subprocess.run([str(ROOT / "scripts" / "triage"), *args, "--json", str(report), "--junit", str(junit)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180, env=env, check=False)
    return proc.returncode, json.loads(report.read_text()), ET.parse(junit).getroot(), proc.stdout


def junit_failures(suite: ET.Element) -> dict[str, str]:
    return {tc.get("name"): tc.find("failure").get("message") for tc in suite.iter("testcase")
            if tc.find("failure") is not None}


@pytest.mark.qemu
def test_ok_is_clean(tmp_path, kernel_paths):
    code, report, suite, out = run_triage(tmp_path, "--scenario", "ok", "--timeout", "60")
    assert code == 0, out
    assert report["findings"] == [] and report["exception"] is None
    assert report["stopped_because"] == "guest-exit" and report["exit_code"] == 33
    assert "exit: ok" in report["serial_log"]
    assert suite.get("name") == "gdbext-triage" and suite.get("failures") == "0"
    names = {tc.get("name") for tc in suite.iter("testcase")}
    assert {"SR-SCE", "SR-STAR-CS", "SR-RSP-USER", "guest exception", "guest exit"} <= names
    assert "CLEAN" in out.splitlines()[0]


@pytest.mark.qemu
@pytest.mark.parametrize("scenario, rule, kind", [
    ("gdt-order", "SR-STAR-CS", "wrmsr"),
    ("kernel-rsp", "SR-RSP-USER", "sysret"),
    ("sce-off", "SR-SCE", "sysret"),
])
def test_broken_scenarios_report_their_rule(tmp_path, kernel_paths, scenario, rule, kind):
    code, report, suite, out = run_triage(tmp_path, "--scenario", scenario, "--timeout", "60")
    assert code == 1, out
    assert report["stopped_because"] == "finding"
    found = {f["rule"]: f for f in report["findings"]}
    assert rule in found and found[rule]["severity"] == "error" and found[rule]["kind"] == kind
    assert rule in junit_failures(suite)
    # The state was collected where the guest stopped, as JSON of each command.
    assert report["state"]["info cpl"]["cpl"] == 0
    assert report["state"]["sysret-watch status"]["findings"] == 1
    assert "entries" in report["state"]["info gdt"]
    # The text says where it stopped (the watched site), in hex, with its
    # symbol and instruction, and RFLAGS by flag name, never as decimals.
    stop = report["stop"]
    assert stop["rip"] == found[rule]["address"] and stop["instruction"].startswith(kind)
    assert f"  stopped at: {stop['rip']:#x} <{stop['symbol']}>: {kind}" in out, out
    cpu = next(line for line in out.splitlines() if line.startswith("  cpu: "))
    flags = " ".join(report["state"]["info cpl"]["rflags_flags"])
    assert f"RFLAGS {report['state']['info cpl']['rflags']:#x} [{flags}]" in cpu, cpu
    ours = out.split("  serial log (last lines):")[0]
    assert not re.search(r"=\d{4,}", ours), "a number printed in decimal"


@pytest.mark.qemu
def test_exception_without_the_watch(tmp_path, kernel_paths):
    code, report, suite, out = run_triage(tmp_path, "--scenario", "gdt-order", "--no-watch", "--timeout", "60")
    assert code == 1, out
    exc = report["exception"]
    assert report["stopped_because"] == "exception"
    assert (exc["vector"], exc["name"], exc["error_code"], exc["cs"]) == (13, "#GP", 0x28, 0x08)
    assert exc["symbol"] == "int80_return_iretq"
    assert report["findings"] == []
    assert "guest exception" in junit_failures(suite)
    assert all(g["present"] for g in report["state"]["info idt"]["gates"])


@pytest.mark.qemu
def test_until_stops_cleanly_and_keeps_the_serial_log(tmp_path, kernel_paths):
    serial = tmp_path / "serial.log"
    code, report, suite, out = run_triage(tmp_path, "--scenario", "ok", "--until", "enter_user",
                                          "--serial", str(serial), "--timeout", "60")
    assert code == 0, out
    assert report["stopped_because"] == "until" and report["exit_code"] is None
    assert report["state"]["info cpl"]["cpl"] == 0
    assert "scenario: ok" in serial.read_text()
    assert suite.get("failures") == "0"


@pytest.mark.qemu
def test_a_hang_is_cut_off_and_says_where_it_spins(tmp_path, kernel_paths):
    # spin makes system calls forever: under --timeout that is a hang, and
    # the report says where the vCPU runs.  The oracle for "user program" is
    # the ELF's own symbol table (user_* functions linked below the kernel).
    code, report, suite, out = run_triage(tmp_path, "--scenario", "spin", "--timeout", "6")
    assert code == 1, out
    assert report["stopped_because"] == "timeout" and report["timeout_reason"] == "did not exit"
    assert "did not exit within 6 s" in out.splitlines()[0]
    failure = junit_failures(suite)["guest exit"]
    assert "timeout" in failure and "did not exit" in failure
    assert report["durations"]["run"] < 20
    hang = report["hang"]
    samples = [t for t in hang["samples"] if "halted" in t]
    assert len(samples) >= 3 and not hang["halted"] and not any(t["halted"] for t in samples)
    user = [t for t in samples if t["rip"] < 1 << 47]
    assert user, f"no sample in the user program: {samples}"
    assert all(t["cpl"] == 3 and t["symbol"] and t["symbol"].startswith("user_") for t in user), user
    assert all(t["symbol"] and t["instruction"] for t in samples)
    assert "hang: vCPU 0 spinning, not halted; at 0x" in out


@pytest.mark.qemu
def test_run_for_a_guest_that_runs_on_is_clean(tmp_path, kernel_paths):
    code, report, suite, out = run_triage(tmp_path, "--scenario", "spin", "--run-for", "8")
    assert code == 0, out
    assert report["stopped_because"] == "ran-for" and report["run_for"] == 8 and report["hang"] is None
    assert "CLEAN" in out.splitlines()[0] and "ran 8 s, still running" in out.splitlines()[0]
    assert suite.get("failures") == "0"
    assert report["state"]["sysret-watch status"]["checks"] > 0   # it was watched all along
    assert "[kernel] scenario: spin" in report["serial_log"]


@pytest.mark.parametrize("argv, words", [
    (["--efi", "/nonexistent/BOOTX64.EFI"], "not found"),
    (["--bogus-flag"], "unrecognized arguments"),
    (["--scenario", "nope"], "unknown scenario"),
    (["--scenario", "ok", "--efi", "x.efi"], "not allowed with"),
    (["--run-for", "5", "--timeout", "5"], "exclude each other"),
    (["--run-for", "0"], "must be positive"),
])
def test_unusable_input_exits_2_with_one_line(capsys, argv, words):
    assert triage.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("triage: error:") and words in err


def test_wrapper_reports_bad_input_too(tmp_path):
    proc = subprocess.run([str(ROOT / "scripts" / "triage"), "--scenario", "nope"], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "unknown scenario" in proc.stderr


# -- the pieces, on real text ------------------------------------------------

FAULT = ("[kernel] FAULT vector=13 (#GP) error=0x0028 cr2=0x0 rip=0xffffffff80001a62 cs=0x08 "
         "rflags=0x82 rsp=0xffffffff8000c618 ss=0x00 cpl=0\n")


def test_fault_line_from_the_serial_log():
    exc = triage.parse_fault_line("scenario: gdt-order\n" + FAULT)
    assert exc is not None
    assert (exc["vector"], exc["name"], exc["error_code"], exc["rip"], exc["cs"]) == (13, "#GP", 0x28,
                                                                                      0xffffffff80001a62, 8)
    assert triage.parse_fault_line("exit: ok\n") is None


def test_gdb_array_output_with_repeats():
    assert triage.parse_words("{0x0 <repeats 15 times>, 0xd, 0x28, 0xffffffff80001a62}") == [0] * 15 + [
        13, 0x28, 0xffffffff80001a62]


def test_junit_marks_timeout_and_findings():
    r = triage.Triage(scenario="x", stopped_because="timeout",
                      findings=[{"rule": "SR-SCE", "severity": "error", "message": "EFER.SCE is 0"}])
    suite = ET.fromstring(triage.junit_xml(r))
    assert set(junit_failures(suite)) == {"SR-SCE", "guest exit"}
    assert r.status == 1
    assert triage.Triage(scenario="ok", exit_code=33, stopped_because="guest-exit").status == 0



def test_junit_survives_firmware_escape_codes():
    # OVMF writes ANSI escapes (ESC is not allowed in XML 1.0) to the serial port.
    r = triage.Triage(scenario="ok", serial_log="BdsDxe\x1b[0m\x1b[37m\x00 loading\n", exit_code=35,
                      stopped_because="guest-exit")
    suite = ET.fromstring(triage.junit_xml(r))
    assert "loading" in suite.find("system-out").text
    assert "35" in junit_failures(suite)["guest exit"]
    assert "\x1b" not in ET.tostring(suite, encoding="unicode")
    assert "?[0m" not in suite.find("system-out").text


def test_x_i_output_parsed():
    assert triage.parse_x_i("=> 0xffffffff800013ec <setup_syscall+108>:\twrmsr\n") == {
        "rip": 0xffffffff800013ec, "symbol": "setup_syscall+108", "instruction": "wrmsr"}
    assert triage.parse_x_i("=> 0xfff0:\tjmp    0xf000:0xe05b\n") == {
        "rip": 0xfff0, "symbol": None, "instruction": "jmp    0xf000:0xe05b"}
    assert triage.parse_x_i("Cannot access memory at address 0x0\n") is None


def test_cpu_line_in_hex_with_flag_names():
    line = triage.cpu_line({"cpu": 0, "cpl": 3, "mode": "64-bit", "iopl": 0, "if": True, "rflags": 0x246,
                            "rflags_flags": ["PF", "ZF", "IF"], "cs": 0x2B, "ss": 0x23, "halted": False})
    assert line == "CPL 3, 64-bit mode, IOPL 0, IF 1, RFLAGS 0x246 [PF ZF IF], CS 0x2b, SS 0x23, vCPU 0"


@pytest.mark.parametrize("flag", ["--json", "--junit", "--serial"])
def test_output_paths_refused_before_the_guest_boots(tmp_path, capsys, flag):
    # A path in a missing directory, and one that is a directory: exit 2 at
    # once (no QEMU is started: the bundled kernel would take seconds).
    for path, words in ((tmp_path / "missing" / "out", "does not exist"), (tmp_path, "is a directory")):
        t0 = time.monotonic()
        assert triage.main(["--scenario", "ok", flag, str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and flag in err and words in err, err
        assert time.monotonic() - t0 < 1.0


# -- kernels nobody here wrote: Multiboot images, Debian's Linux ----------------

def nasm_kernel(tmp_path: Path, source: str, *defines: str) -> Path:
    if shutil.which("nasm") is None:
        pytest.skip("nasm not installed (Debian package nasm)")
    out = tmp_path / (Path(source).stem + "".join(defines) + ".bin")
    subprocess.run(["nasm", "-f", "bin", *(f"-D{d}" for d in defines), "-o", str(out), str(KERNELS / source)],
                   check=True, capture_output=True)
    return out


@pytest.mark.qemu
@pytest.mark.parametrize("defines, loop, halted", [
    ((), b"\xf4\xeb\xfd", True),     # hlt; jmp back to it: RIP rests after the hlt
    (("SPIN",), b"\xeb\xfe", False),  # jmp $
])
def test_a_multiboot_kernel_that_hangs_is_described(tmp_path, defines, loop, halted):
    image = nasm_kernel(tmp_path, "hang.asm", *defines)
    assert launch.kernel_image_kind(image) == "multiboot"
    # The oracle is the image itself: its load address (the header's
    # load_addr, 0x100000) plus the offset of the loop's bytes.
    expected = 0x100000 + image.read_bytes().index(loop) + (1 if halted else 0)
    code, report, suite, out = run_triage(tmp_path, "--kernel", str(image), "--timeout", "3")
    assert code == 1, out
    assert report["stopped_because"] == "timeout" and report["boot"]["kernel_kind"] == "multiboot"
    assert report["boot"]["append"] is None        # console=ttyS0 is for Linux only
    assert report["serial_log"].startswith("hang: ")
    hang = report["hang"]
    assert hang["halted"] is halted and hang["if"] is False and hang["cpl"] == 0
    assert hang["rips"] == [expected], hang
    assert ("halted (HLT)" if halted else "spinning, not halted") in out
    assert report["watch"]["armed"] is False and "paging" in report["watch"]["last_error"]
    assert "never armed" in out
    assert "halted" in junit_failures(suite)["guest exit"] or "spinning" in junit_failures(suite)["guest exit"]


@pytest.fixture(scope="session")
def guest() -> linuxguest.LinuxGuest:
    return linuxguest.prepare()


@pytest.mark.qemu
def test_linux_runs_on_cleanly_with_the_watch_armed_once_paging_is_on(tmp_path, guest):
    # No --append: triage gives the bzImage console=ttyS0 itself.  Linux
    # turns paging on in its decompressor and maps its own text later, so
    # the watch cannot arm at attach: it arms while the guest runs.
    code, report, suite, out = run_triage(tmp_path, "--kernel", str(guest.vmlinuz), "--initrd", str(guest.initrd),
                                          "--run-for", "25")
    assert code == 0, out
    assert report["stopped_because"] == "ran-for" and suite.get("failures") == "0"
    assert report["boot"]["kernel_kind"] == "linux" and report["boot"]["console_appended"]
    assert "console=ttyS0 appended" in out
    w = report["watch"]
    assert w["armed"] and w["paging"] is True and w["armed_at_s"] > 0 and w["attempts"] >= 2, w
    assert w["sites"] > 0 and "scan of" in w["source"]
    assert re.search(r"Linux version \d", report["serial_log"]), out
    assert report["state"]["sysret-watch status"]["armed"] is True


def test_kernel_image_kinds(tmp_path):
    bz = bytearray(0x400)
    bz[0x202:0x206] = b"HdrS"
    mb = bytearray(0x3000)
    mb[0x1004:0x1008] = (0x1BADB002).to_bytes(4, "little")     # 32-bit aligned, within 8 KiB
    late = bytearray(0x3000)
    late[0x2004:0x2008] = (0x1BADB002).to_bytes(4, "little")   # past the first 8 KiB: not Multiboot
    for name, data, kind in (("bz", bz, "linux"), ("mb", mb, "multiboot"), ("late", late, "unknown")):
        (tmp_path / name).write_bytes(bytes(data))
        assert launch.kernel_image_kind(tmp_path / name) == kind, name


def test_disk_boot_options(tmp_path):
    disk, iso = tmp_path / "disk.img", tmp_path / "boot.iso"
    for opts, words in ((launch.QemuOptions(drive=disk, kernel=disk), "exclude each other"),
                        (launch.QemuOptions(firmware="uefi"), "drive or cdrom"),
                        (launch.QemuOptions(drive=disk, firmware="coreboot"), "bios or uefi")):
        with pytest.raises(launch.LaunchError, match=words):
            opts.validate()
    opts = launch.QemuOptions(drive=disk, cdrom=iso, firmware="bios")
    opts.validate()
    argv = launch.qemu_argv(opts, qemu="qemu", serial_path=tmp_path / "s", gdb_port=None)
    assert f"file={disk},format=raw,if=ide,snapshot=on" in argv and "-bios" not in argv
    assert f"file={iso},format=raw,if=ide,media=cdrom,readonly=on" in argv
    uefi = launch.qemu_argv(launch.QemuOptions(cdrom=iso, firmware="uefi"), qemu="qemu",
                            serial_path=tmp_path / "s", gdb_port=None, firmware=Path("/ovmf.fd"))
    assert uefi[uefi.index("-bios") + 1] == "/ovmf.fd"


def test_fault_sources_become_the_exception():
    record = {"vector": 14, "name": "#PF", "error_code": 6, "rip": 0x401000, "cs": 0x2B, "cpl": 3,
              "cr2": 0x10, "symbol": None, "source": "idt-breakpoint", "resumed": False}
    exc = triage.exception_from_fault_record(record)
    assert exc["source"] == "idt-breakpoint" and exc["vector"] == 14 and triage.user_fault(exc)
    chain = {"chain": [{"vector": 6, "error_code": None, "rip": 0x100010, "cpl": 0, "cr2": 0},
                       {"vector": 13, "error_code": 0x32, "rip": 0x100010, "cpl": 0, "cr2": 0},
                       {"vector": 8, "error_code": 0, "rip": 0x100010, "cpl": 0, "cr2": 0}],
             "triple_fault": True}
    last = triage.exception_from_chain(chain)
    assert (last["vector"], last["name"], last["source"], last["triple_fault"], last["chain_length"]) == (
        8, "#DF", "qemu-log", True, 3)
    assert triage.exception_from_chain({"chain": [], "triple_fault": False}) is None
    assert triage.exception_from_fault_record(None) is None


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
