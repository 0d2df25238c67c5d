"""Reading QEMU's `-d int,cpu_reset` log into the chain of a triple fault.

The fixtures are real QEMU 7.2 logs:
  empty_idt_qemu72.log   the multiboot kernel of tests/kernels/empty_idt.asm
                         (lidt with limit 0, then ud2 at 0x100027), run with
                         -d int,cpu_reset -no-reboot -no-shutdown
  lm_user_pf_qemu72.log  the bundled kernel's user-page-nx scenario: its first
                         CPU reset, two timer interrupts (with QEMU's
                         `Servicing hardware INT` lines) and the ring-3 #PF
                         the kernel's own serial line reports as
                         "vector=14 error=0x0015 cr2=0x400000 rip=0x400000 cpl=3"
"""
from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from gdbext.model.qemu_log import (
    Escalation,
    LogError,
    TripleFaultWatch,
    build_chain,
    escalates,
    exception_class,
    linked,
    parse_text,
    read_tail,
)

FIXTURES = Path(__file__).parent / "fixtures" / "qemu_log"
EMPTY_IDT = FIXTURES / "empty_idt_qemu72.log"
LM_USER_PF = FIXTURES / "lm_user_pf_qemu72.log"


def _record_line(index, vector, error, cpl, cs, ip, ss, sp, *, software=0, cr2=None):
    tail = f" CR2={cr2:016x}" if cr2 is not None else f" env->regs[R_EAX]={0:016x}"
    return (f"{index:6d}: v={vector:02x} e={error:04x} i={software} cpl={cpl} IP={cs:04x}:{ip:016x} "
            f"pc={ip:016x} SP={ss:04x}:{sp:016x}{tail}\n")


def _dump_of(path: Path) -> str:
    """The register dump of the first record of a fixture, to reuse in made-up logs."""
    lines = path.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if ": v=" in line) + 1
    end = next(i for i in range(start, len(lines)) if not lines[i][:1].isupper()
               or lines[i].startswith(("check_exception", "Servicing", "Triple")))
    return "".join(lines[start:end])


def test_empty_idt_chain_is_ud_gp_df_then_shutdown():
    chain = build_chain(read_tail(EMPTY_IDT))
    assert chain.triple_fault and chain.complete
    assert [(r.vector, r.error_code) for r in chain.records] == [(6, 0), (13, 0x32), (8, 0)]
    assert [r.name for r in chain.records] == ["#UD", "#GP", "#DF"]
    # ud2 at 0x100027 (lidt [idtr] is 7 bytes from the entry at 0x100020); the
    # registers never moved, as every delivery failed.
    assert {(r.cs, r.rip, r.ss, r.rsp, r.cpl) for r in chain.records} == {(8, 0x100027, 0x10, 0x6F08, 0)}
    assert chain.delivery_failed == (True, True, True)
    # QEMU's check_exception lines: #UD is benign (old none), the #GP raised
    # delivering #GP escalated to #DF, and the #GP raised delivering #DF shut down.
    assert [r.escalation for r in chain.records] == [Escalation(None, 6), Escalation(None, 13), Escalation(13, 13)]
    assert chain.final == Escalation(8, 13)
    assert chain.vcpus == 1 and chain.notes == ()
    regs = chain.records[0].registers
    assert regs is not None and (regs.idt.base, regs.idt.limit) == (0, 0)
    assert regs.gdt.limit == 0x27 and regs.mode_hint == "protected" and not regs.wide


def test_record_offsets_point_at_their_lines():
    data = EMPTY_IDT.read_bytes()
    tail = read_tail(EMPTY_IDT)
    for record in tail.records:
        line = data[record.offset:data.index(b"\n", record.offset)].decode()
        assert line.strip().startswith(f"{record.index}: v={record.vector:02x} e={record.error_code:04x}")


def test_long_mode_page_fault_and_timer_interrupts():
    tail = read_tail(LM_USER_PF)
    records = tail.records
    assert [(r.vector, r.hardware, r.exception) for r in records] == [(0x20, True, False), (0x20, True, False),
                                                                       (14, False, True)]
    pf = records[-1]
    # Equal to the kernel's own serial FAULT line.
    assert (pf.error_code, pf.cr2, pf.rip, pf.cpl, pf.cs, pf.ss, pf.rsp) == (
        0x15, 0x400000, 0x400000, 3, 0x2B, 0x23, 0x7FFFFFF00000)
    assert pf.line_cr2 == 0x400000 and pf.registers.wide and pf.registers.regs["cr2"] == 0x400000
    assert pf.registers.idt.limit == 0xFFF and pf.registers.tr.selector == 0x30
    chain = build_chain(tail)
    # No triple fault: the last exceptions; the timer interrupts are not exceptions.
    assert not chain.triple_fault and [r.vector for r in chain.records] == [14]
    assert chain.delivery_failed == (False,) and chain.final is None


def test_hardware_interrupt_without_servicing_line_is_still_hardware():
    text = _record_line(5, 0x30, 0, 0, 0x10, 0xFFFFFFFF81000000, 0x18, 0xFFFFC90000007F00)
    (record,) = parse_text(text).records
    assert record.hardware and not record.exception and record.escalation is None


def test_software_interrupt_whose_delivery_fails_starts_the_chain():
    # int $0x80 from ring 3 through a DPL-0 gate: #GP(0x80 * 8 + 2), then a
    # #PF on the unmapped RSP0 escalates to #DF, which cannot be delivered.
    ip, sp = 0x401000, 0x7FFC0000
    text = (_record_line(0, 0x80, 0, 3, 0x33, ip, 0x2B, sp, software=1)
            + "check_exception old: 0xffffffff new 0xd\n" + _record_line(1, 0x0D, 0x402, 3, 0x33, ip, 0x2B, sp)
            + "check_exception old: 0xd new 0xe\n" + _record_line(2, 0x0E, 0x2, 3, 0x33, ip, 0x2B, sp, cr2=0xFF8)
            + "check_exception old: 0xe new 0xe\n" + _record_line(3, 0x08, 0, 3, 0x33, ip, 0x2B, sp)
            + "check_exception old: 0x8 new 0xe\nTriple fault\n")
    chain = build_chain(parse_text(text))
    assert [r.vector for r in chain.records] == [0x80, 13, 14, 8]
    assert chain.records[0].software and chain.records[2].cr2 == 0xFF8
    assert chain.final == Escalation(8, 14)


def test_retried_fault_is_not_a_failed_delivery():
    # A #PF handler that returns without fixing anything: the same #PF at the
    # same place again, and check_exception says no exception was being
    # delivered (the first one was).
    ip, sp = 0xFFFFFFFF81000100, 0xFFFFC90000007F00
    one = "check_exception old: 0xffffffff new 0xe\n" + _record_line(0, 0x0E, 0, 0, 0x10, ip, 0x18, sp, cr2=0x1000)
    two = "check_exception old: 0xffffffff new 0xe\n" + _record_line(1, 0x0E, 0, 0, 0x10, ip, 0x18, sp, cr2=0x1000)
    a, b = parse_text(one + two).records
    assert a.same_state(b) and not linked(a, b)
    chain = build_chain(parse_text(one + two))
    assert [r.index for r in chain.records] == [0, 1] and chain.delivery_failed == (False, False)


def test_double_fault_table():
    # Intel SDM Vol. 3A table 6-5.
    assert [exception_class(v) for v in (0, 6, 10, 11, 12, 13, 14, 8, 3)] == [
        "contributory", "benign", "contributory", "contributory", "contributory", "contributory",
        "page fault", "benign", "benign"]
    assert escalates(13, 13) == "double fault" and escalates(0, 10) == "double fault"
    assert escalates(14, 14) == "double fault" and escalates(14, 13) == "double fault"
    assert escalates(13, 14) == "serial" and escalates(6, 13) == "serial" and escalates(14, 6) == "serial"
    assert escalates(8, 13) == "shutdown" and escalates(8, 14) == "shutdown"


def test_several_vcpus_are_noted():
    head = "CPU Reset (CPU 0)\nCPU Reset (CPU 1)\n"
    text = head + EMPTY_IDT.read_text()
    chain = build_chain(parse_text(text))
    assert chain.vcpus == 2 and any("may mix vCPUs" in n for n in chain.notes)


def test_last_n_cuts_the_chain():
    chain = build_chain(read_tail(EMPTY_IDT), last=2)
    assert [r.vector for r in chain.records] == [13, 8]
    with pytest.raises(ValueError):
        build_chain(read_tail(EMPTY_IDT), last=0)


def test_missing_log_is_one_line():
    with pytest.raises(LogError) as info:
        read_tail("/nonexistent/qemu-int.log")
    assert "\n" not in str(info.value) and "-d int,cpu_reset" in str(info.value)


def _big_log(path: Path, megabytes: int) -> int:
    """A 64-bit guest's log: timer interrupts (real records' text) for
    `megabytes` MiB, then the empty-IDT chain.  Returns its size."""
    timer = LM_USER_PF.read_text().split("Servicing hardware INT=0x20\n")[1]
    timer = "Servicing hardware INT=0x20\n" + timer.split("Servicing")[0]
    block = timer * 200
    chain = EMPTY_IDT.read_text().split("SMM: after RSM\n")[1]
    with open(path, "w") as f:
        f.write(EMPTY_IDT.read_text().split("SMM: enter")[0])
        f.writelines(block for _ in range(-(-(megabytes << 20) // len(block))))
        f.write(chain)
    return path.stat().st_size


def test_fifty_megabyte_log_is_read_from_its_tail_fast(tmp_path):
    log = tmp_path / "qemu-int.log"
    size = _big_log(log, 50)
    assert size > 50 << 20
    started = time.perf_counter()
    tail = read_tail(log)
    chain = build_chain(tail)
    elapsed = time.perf_counter() - started
    assert [(r.vector, r.error_code) for r in chain.records] == [(6, 0), (13, 0x32), (8, 0)]
    assert chain.triple_fault and not chain.complete and tail.end == size
    assert chain.vcpus == 1   # from the CPU Reset lines at the head of the file
    assert tail.end - tail.start <= 1 << 20
    assert elapsed < 0.5, f"{elapsed:.2f} s for the tail of a {size >> 20} MiB log"
    started = time.perf_counter()
    watch = TripleFaultWatch(log)
    assert watch.check()
    assert log.read_bytes()[watch.found_at:watch.found_at + 12] == b"Triple fault"
    assert time.perf_counter() - started < 2.0


def test_tail_that_starts_inside_a_record_skips_the_piece(tmp_path):
    log = tmp_path / "qemu-int.log"
    log.write_bytes(EMPTY_IDT.read_bytes())
    data = log.read_bytes()
    for max_bytes in range(50, len(data), 97):
        tail = read_tail(log, max_bytes=max_bytes)
        whole = [r for r in read_tail(log).records if r.offset >= tail.start]
        assert [(r.offset, r.vector) for r in tail.records] == [(r.offset, r.vector) for r in whole]


def test_a_line_being_written_is_left_for_later(tmp_path):
    log = tmp_path / "qemu-int.log"
    text = EMPTY_IDT.read_text()
    cut = text.index("Triple fault") + 5
    log.write_text(text[:cut])
    assert not build_chain(read_tail(log)).triple_fault
    watch = TripleFaultWatch(log)
    assert not watch.check()
    with open(log, "a") as f:
        f.write(text[cut:])
    assert build_chain(read_tail(log)).triple_fault
    assert watch.check() and watch.found_at == text.index("Triple fault")


def test_watch_finds_the_line_split_across_reads(tmp_path):
    log = tmp_path / "qemu-int.log"
    text = EMPTY_IDT.read_bytes()
    at = text.index(b"Triple fault")
    rng = random.Random(10)
    for _ in range(20):
        log.write_bytes(b"")
        watch = TripleFaultWatch(log)
        cuts = sorted(rng.sample(range(1, len(text)), 6)) + [len(text)]
        done = 0
        for cut in cuts:
            with open(log, "ab") as f:
                f.write(text[done:cut])
            done = cut
            assert watch.check() == (done >= at + len(b"Triple fault"))
        assert watch.found_at == at


def test_garbage_and_cut_text_never_raise():
    rng = random.Random(7)
    real = EMPTY_IDT.read_text() + LM_USER_PF.read_text()
    lines = real.splitlines(keepends=True)
    for _ in range(300):
        pieces = []
        for _ in range(rng.randrange(1, 40)):
            choice = rng.random()
            if choice < 0.5:
                line = rng.choice(lines)
                pieces.append(line[:rng.randrange(len(line) + 1)] + "\n")
            elif choice < 0.8:
                pieces.append(rng.choice(lines))
            else:
                pieces.append("".join(chr(rng.randrange(32, 127)) for _ in range(rng.randrange(60))) + "\n")
        tail = parse_text("".join(pieces))
        chain = build_chain(tail)
        for record in chain.records:
            regs = record.registers   # parses or is None, never raises
            assert regs is None or regs.cpl in (0, 1, 2, 3)
            assert 0 <= record.vector <= 0xFF
            assert record.cr2 is None or isinstance(record.cr2, int)


def test_made_up_long_mode_dump_reads_registers():
    dump = _dump_of(LM_USER_PF)
    text = ("check_exception old: 0xffffffff new 0xd\n" + _record_line(0, 0x0D, 0x10, 0, 0x10, 0x1000, 0x18, 0x2000)
            + dump)
    (record,) = parse_text(text).records
    assert record.registers is not None and record.registers.wide
