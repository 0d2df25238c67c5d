"""Boot every scenario of the bundled kernel under QEMU + OVMF and check
that it ends the way kernel/README.md says, from the serial transcript, the
exit status and the kernel's symbols (kernel.elf is linked where it runs)."""
from __future__ import annotations

import re
import time

import kernel_log
import pytest
from elftools.elf.elffile import ELFFile

from gdbext.tools import launch

pytestmark = pytest.mark.qemu

BOOT_TIMEOUT = 90.0  # OVMF alone takes ~3 s; two parallel TCG guests share 2 cores
USER_SPACE_END = 1 << 47
USER_CS, USER_DS, USER32_CS, KERNEL_CS = 0x2B, 0x23, 0x1B, 0x08
GETCOUNTER_CALLS = 10
KERNEL_STACK_SIZE, PAGE_SIZE = 16384, 4096


@pytest.fixture(scope="module")
def symbols(kernel_paths: launch.KernelPaths) -> dict[str, int]:
    with open(kernel_paths.elf, "rb") as f:
        table = ELFFile(f).get_section_by_name(".symtab")
        return {s.name: s["st_value"] for s in table.iter_symbols() if s.name}


def boot(qemu_factory, scenario: str, record_property) -> tuple[launch.Qemu, str, int]:
    """Run a scenario to its end; returns (qemu, transcript, QEMU's exit status) and records the times."""
    start = time.monotonic()
    qemu = qemu_factory(scenario=scenario)
    qemu.wait_serial(r"^\[kernel\] scenario: ", BOOT_TIMEOUT)
    kernel_at = time.monotonic() - start
    qemu.wait_serial(r"^\[(kernel|loader)\] exit: ", BOOT_TIMEOUT)
    status = qemu.wait(10)
    total = time.monotonic() - start
    print(f"{scenario}: kernel's first line after {kernel_at:.2f} s, QEMU exited after {total:.2f} s")
    record_property("seconds_to_kernel", round(kernel_at, 2))
    record_property("seconds_to_exit", round(total, 2))
    return qemu, qemu.serial_text(), status


# The scenarios that end well, and how each first enters ring 3.
CLEAN_ENTRIES = {"ok": "sysretq", "iret-ok": "iretq"}


@pytest.mark.parametrize("scenario", sorted(CLEAN_ENTRIES))
def test_ok_reaches_ring3_makes_its_system_calls_and_exits_33(qemu_factory, symbols, record_property, scenario):
    _, log, status = boot(qemu_factory, scenario, record_property)

    assert status == launch.EXIT_SUCCESS, log
    assert f"[kernel] scenario: {scenario}\n" in log
    assert "[kernel] cpu: vendor=" in log
    assert f"[kernel] entering ring 3: rip={symbols['user_start']:#x} rsp=0x7ffffff00000 rflags=0x202 mode=0" in log
    by_iretq = f"[kernel] entering ring 3 by iretq: cs={USER_CS:#x} ss={USER_DS:#x}\n" in log
    assert by_iretq == (CLEAN_ENTRIES[scenario] == "iretq"), log
    assert "[user] hello from ring 3\n" in log
    calls = kernel_log.syscalls(log)
    names = [(c["name"], c["via"]) for c in calls]
    assert names == (
        [("write", "syscall")]
        + [("getcounter", "syscall")] * GETCOUNTER_CALLS
        + [("getcounter", "int80"), ("report", "syscall"), ("exit", "syscall")]
    )
    assert [int(c["n"]) for c in calls] == list(range(1, len(calls) + 1))
    # The report comes after the int $0x80 call: the iretq took ring 3 back correctly.
    report = kernel_log.report(log)
    assert report == {"cs": USER_CS, "ss": USER_DS, "rflags": report["rflags"], "iopl": 0, "if": 1}
    assert "[kernel] user program exited with code=0 after 14 system calls, counter=11" in log
    assert kernel_log.exit_line(log)["how"] == "ok"
    assert kernel_log.fault(log) is None


def test_ok_logs_the_tables_a_debugger_compares_with(qemu_factory, symbols, record_property):
    _, log, status = boot(qemu_factory, "ok", record_property)
    assert status == launch.EXIT_SUCCESS
    # The kernel's tables are at their symbols' addresses, GDT limit 0x3f, IDT with 256 gates.
    assert "[kernel] gdt loaded: base=0xffffffff8" in log and " limit=0x3f " in log
    assert "[kernel] idt loaded: base=0xffffffff8" in log and " limit=0xfff " in log
    assert "[kernel] tss loaded: selector=0x30 " in log and " limit=0x67 " in log and "iomap_base=0x68" in log
    assert f"lstar={symbols['syscall_entry']:#x}" in log
    assert "star=0x1b000800000000 " in log
    assert "sfmask=0x44700" in log
    assert "[kernel] map user segment: va=0x400000 " in log and " r-x user" in log
    assert "[kernel] map identity: pa=0x200000..0x100000000" in log


def test_spin_keeps_making_system_calls_until_stopped(qemu_factory, record_property):
    start = time.monotonic()
    qemu = qemu_factory(scenario="spin")
    first = int(qemu.wait_serial(r"^\[user\] spin: counter=(\d+)$", BOOT_TIMEOUT).group(1))
    # Ask for a later line than the first: the counter must grow while the guest runs.
    later = int(qemu.wait_serial(rf"^\[user\] spin: counter=(?!{first}$)(\d+)$", 30).group(1))
    record_property("seconds_to_second_spin_line", round(time.monotonic() - start, 2))
    assert later > first and first % 65536 == 0 and later % 65536 == 0
    assert qemu.running
    assert kernel_log.exit_line(qemu.serial_text()) is None
    qemu.stop()
    assert not qemu.running


# scenario -> (vector, error code, CPL at the fault, where the fault is reported)
FAULTS = {
    "gdt-order": (13, 0x28, 0, "int80_return_iretq"),
    "sce-off": (6, 0, 0, "enter_user_sysret"),
    "rcx-noncanonical": (13, 0, 3, "user program"),
    "user-page-supervisor": (14, 0x15, 3, "user program"),
    "user-page-nx": (14, 0x15, 3, "user program"),
    "no-swapgs": (14, 0x2, 0, "syscall_entry"),
    "kernel-rsp": (14, 0x5, 3, "user program"),
    "sysret32": (14, 0x5, 3, "user program"),
    "double-fault": (8, 0, 0, "kernel"),
    "iret-cs-rpl0": (13, 0x28, 0, "enter_user_iretq"),
    "iret-ss-dpl0": (13, 0x10, 0, "enter_user_iretq"),
    "iret-supervisor-page": (14, 0x15, 3, "user program"),
}


@pytest.mark.parametrize("scenario", sorted(FAULTS))
def test_faulting_scenario_ends_with_its_fault(qemu_factory, symbols, record_property, scenario):
    _, log, status = boot(qemu_factory, scenario, record_property)
    vector, error, cpl, site = FAULTS[scenario]

    assert status == launch.EXIT_FAULT, log
    fault = kernel_log.fault(log)
    assert fault is not None, log
    assert (fault.vector, fault.error, fault.cpl, fault.site) == (vector, error, cpl, site), log
    assert kernel_log.exit_line(log)["how"] == "fault"
    check_fault_details(scenario, fault, symbols, log)


def check_fault_details(scenario: str, fault: kernel_log.Fault, sym: dict[str, int], log: str) -> None:
    """What each mistake looks like beyond the vector: addresses tie back to kernel.elf's symbols."""
    after_syscall = sym["user_syscall_return"]
    if scenario == "gdt-order":
        # iretq to CS=0x2b found a data descriptor at 0x28 and refused it in ring 0.
        assert fault.rip == sym["int80_return_iretq"] and fault.cs == KERNEL_CS
        assert "via=int80" in log and kernel_log.report(log) is None
    elif scenario == "sce-off":
        assert fault.rip == sym["enter_user_sysret"] and fault.cs == KERNEL_CS
        assert "[user]" not in log
    elif scenario == "rcx-noncanonical":
        # QEMU 7.2 loads the non-canonical RIP and faults on the fetch in ring 3
        # (Intel CPUs raise #GP in ring 0 at the sysret instead).
        assert fault.rip == after_syscall + USER_SPACE_END
        assert (fault.cs, fault.ss) == (USER_CS, USER_DS)
    elif scenario in ("user-page-supervisor", "user-page-nx"):
        # The first instruction fetch in ring 3: present, user, instruction fetch.
        assert fault.rip == fault.cr2 == sym["user_start"]
        assert "[user]" not in log
    elif scenario == "no-swapgs":
        # GS_BASE = 0: the write of the user RSP to the per-CPU area hits address 0x10.
        assert fault.cr2 == 0x10 and fault.cs == KERNEL_CS
        assert sym["syscall_entry"] < fault.rip < sym["syscall_entry"] + 16
        assert fault.rsp < USER_SPACE_END  # still on the user stack
    elif scenario == "kernel-rsp":
        # Ring 3 runs on the kernel stack; its `ret` reads a supervisor page.
        assert fault.rip == after_syscall and fault.cs == USER_CS
        assert fault.rsp == fault.cr2 and fault.rsp >= 0xFFFFFFFF80000000
    elif scenario == "sysret32":
        # Compatibility mode at the right EIP; `ret` pops 4 bytes at ESP (the
        # user RSP cut to 32 bits), which lands in the supervisor identity map.
        assert fault.rip == after_syscall and fault.cs == USER32_CS
        assert fault.cr2 == fault.rsp & 0xFFFFFFFF
    elif scenario == "double-fault":
        # The recursion's push ran into the guard page below the kernel stack; the
        # #PF's own push there faulted too, and the #DF came on IST1 with that RSP.
        guard = logged_stack_guard(log)
        assert guard == logged_kernel_rsp(log) - KERNEL_STACK_SIZE - PAGE_SIZE
        assert guard <= fault.cr2 < guard + PAGE_SIZE and fault.cr2 == fault.rsp - 8
        assert fault.cs == KERNEL_CS and sym["count_recursive"] <= fault.rip < sym["count_recursive"] + 0x40
        assert [c["name"] for c in kernel_log.syscalls(log)] == ["write", "getcounter"]
    elif scenario in ("iret-cs-rpl0", "iret-ss-dpl0"):
        # CS 0x28 (RPL 0) names the DPL-3 user code; SS 0x13 (RPL 3) the DPL-0
        # kernel data: either is refused at the iretq, in ring 0.
        frame = {"iret-cs-rpl0": "cs=0x28 ss=0x23", "iret-ss-dpl0": "cs=0x2b ss=0x13"}[scenario]
        assert fault.rip == sym["enter_user_iretq"] and fault.cs == KERNEL_CS
        assert f"[kernel] entering ring 3 by iretq: {frame}\n" in log
        assert "[user]" not in log
    elif scenario == "iret-supervisor-page":
        # The iretq itself succeeds (CS/SS right); the first fetch in ring 3 is refused.
        assert "[kernel] entering ring 3 by iretq: cs=0x2b ss=0x23\n" in log
        assert re.search(r"^\[kernel\] map user segment: va=0x400000 .* r-x supervisor$", log, re.MULTILINE), log
        assert fault.rip == fault.cr2 == sym["user_start"] and (fault.cs, fault.ss) == (USER_CS, USER_DS)
        assert fault.rsp == 0x7FFFFFF00000 and "[user]" not in log


# scenario -> what the user program reports about itself in ring 3 (QEMU 7.2 TCG)
RAN_ON = {
    "star-rpl0": {"cs": USER_CS, "ss": USER_DS, "iopl": 0, "if": 1},  # TCG forces RPL 3 on SS, like Intel
    "iopl3": {"cs": USER_CS, "ss": USER_DS, "iopl": 3, "if": 1},
    "if-off": {"cs": USER_CS, "ss": USER_DS, "iopl": 0, "if": 0},
}


@pytest.mark.parametrize("scenario", sorted(RAN_ON))
def test_scenario_that_runs_on_is_reported_and_exits_37(qemu_factory, record_property, scenario):
    _, log, status = boot(qemu_factory, scenario, record_property)

    assert status == launch.EXIT_RAN_ON, log
    assert kernel_log.fault(log) is None
    report = kernel_log.report(log)
    assert report is not None
    assert {k: report[k] for k in ("cs", "ss", "iopl", "if")} == RAN_ON[scenario]
    line = kernel_log.exit_line(log)
    assert line["how"] == "ran-on-wrongly" and f"scenario={scenario} " in line["rest"]
    if scenario == "star-rpl0":
        assert "star=0x18000800000000 " in log


# scenarios that end in a triple fault: each has its own test below
RESETS = ("tss-rsp0-unmapped",)


def boot_to_reset(qemu_factory, scenario: str, int_log, record_property) -> tuple[str, str, int]:
    """Run a scenario that ends in a triple fault under QEMU's -d int log;
    returns (serial transcript, the log's text, QEMU's exit status)."""
    start = time.monotonic()
    qemu = qemu_factory(scenario=scenario, extra_args=["-d", "int,cpu_reset", "-D", str(int_log)])
    qemu.wait_serial(r"^\[kernel\] scenario: ", BOOT_TIMEOUT)
    status = qemu.wait(BOOT_TIMEOUT)
    record_property("seconds_to_exit", round(time.monotonic() - start, 2))
    return qemu.serial_text(), int_log.read_text(errors="replace"), status


def logged_stack_pointers(log: str) -> dict[str, int]:
    m = re.search(r"^\[kernel\] tss loaded: .* rsp0=(0x[0-9a-f]+) ist1=(0x[0-9a-f]+) ", log, re.MULTILINE)
    assert m is not None, log
    return {"rsp0": int(m[1], 16), "ist1": int(m[2], 16)}


def logged_stack_guard(log: str) -> int:
    m = re.search(r"^\[kernel\] unmap kernel stack guard: va=(0x[0-9a-f]+) ", log, re.MULTILINE)
    assert m is not None, log
    return int(m[1], 16)


def logged_kernel_rsp(log: str) -> int:
    """The kernel stack's top, as the per-CPU area (the SYSCALL stack) holds it."""
    m = re.search(r"^\[kernel\] percpu: .* kernel_rsp=(0x[0-9a-f]+) ", log, re.MULTILINE)
    assert m is not None, log
    return int(m[1], 16)


def test_tss_rsp0_unmapped_triple_faults_at_the_first_interrupt_from_ring3(
    qemu_factory, symbols, record_property, tmp_path
):
    log, int_log, status = boot_to_reset(qemu_factory, "tss-rsp0-unmapped", tmp_path / "int.log", record_property)

    # No handler ran: no FAULT line, no exit line, and QEMU ended on the reset.
    assert status == launch.EXIT_RESET, log
    assert kernel_log.fault(log) is None and kernel_log.exit_line(log) is None, log
    # Ring 3 ran (SYSCALL uses the per-CPU stack, not RSP0) up to its int $0x80.
    assert [c["via"] for c in kernel_log.syscalls(log)] == ["syscall"] * (1 + GETCOUNTER_CALLS)
    stacks = logged_stack_pointers(log)
    assert stacks["rsp0"] != logged_kernel_rsp(log) and stacks["rsp0"] >= 0xFFFFFFFF80000000

    events = kernel_log.qemu_int_events(int_log)
    from_ring3 = [i for i, e in enumerate(events) if isinstance(e, kernel_log.Delivery) and e.cpl == 3]
    assert from_ring3, int_log[-3000:]
    chain = events[from_ring3[0]:]
    int80 = symbols["user_int80_return"] - 2  # int $0x80 is cd 80; QEMU logs its address
    # int $0x80 -> #PF pushing SS at RSP0-8 (write, supervisor, not present) ->
    # #PF again delivering the #PF (same RSP0) -> #DF, on IST1, also unmapped -> shutdown.
    assert chain == [
        kernel_log.Delivery(0x80, 0, True, 3, USER_CS, int80, None),
        kernel_log.Raised(None, 14),
        kernel_log.Delivery(14, 0x2, False, 3, USER_CS, int80, stacks["rsp0"] - 8),
        kernel_log.Raised(14, 14),
        kernel_log.Delivery(8, 0, False, 3, USER_CS, int80, None),
        kernel_log.Raised(8, 14),
        kernel_log.TripleFault(),
    ], int_log[-3000:]


def test_double_fault_chain_in_qemu_log_matches_the_kernel_report(qemu_factory, record_property, tmp_path):
    int_log = tmp_path / "int.log"
    qemu = qemu_factory(scenario="double-fault", extra_args=["-d", "int,cpu_reset", "-D", str(int_log)])
    qemu.wait_serial(r"^\[kernel\] exit: ", BOOT_TIMEOUT)
    assert qemu.wait(10) == launch.EXIT_FAULT
    fault = kernel_log.fault(qemu.serial_text())
    assert fault is not None and fault.vector == 8

    # #PF in ring 0 at the push, #PF again delivering it on the same stack,
    # #DF delivered (IST1 is mapped): what the handler then reported.
    events = kernel_log.qemu_int_events(int_log.read_text(errors="replace"))
    # The #PF's CR2 is the push that faulted, in the guard page; which slot
    # of the frame QEMU writes first differs (7.2: the one the handler's CR2
    # names; 10.0: 16 bytes above), so the page is compared.
    last = events[-4:]
    pf = last[1]
    assert isinstance(pf, kernel_log.Delivery) and pf.cr2 is not None and pf.cr2 >> 12 == fault.cr2 >> 12, last
    assert last == [
        kernel_log.Raised(None, 14),
        kernel_log.Delivery(14, 0x2, False, 0, KERNEL_CS, fault.rip, pf.cr2),
        kernel_log.Raised(14, 14),
        kernel_log.Delivery(8, 0, False, 0, KERNEL_CS, fault.rip, None),
    ], events[-6:]


def test_every_scenario_is_covered():
    assert set(FAULTS) | set(RAN_ON) | set(CLEAN_ENTRIES) | set(RESETS) | {"spin"} == set(launch.SCENARIOS)
