"""Reusing a SYSRET verdict (gdbext.rules.memo): sound, and a miss on any change.

Soundness is the property that matters: whenever the recorded inputs still
hold, evaluating the rules again gives the same report.  It is tested by
mutating the baseline machine at random (a register, an MSR, a byte of
memory anywhere the rules might look) and comparing.
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gdbext.model.snapshot import (
    CONTROL_REGS,
    GENERAL_REGS,
    MSR_LSTAR,
    MSR_STAR,
    SEGMENT_NAMES,
)
from gdbext.rules import sysret as rules
from gdbext.rules.memo import Inputs, LazyRegisters, VerdictCache
from tests.support.snapshots import PA_GDT, PA_TSS, baseline

NAMES = frozenset(GENERAL_REGS + SEGMENT_NAMES + CONTROL_REGS)
MONITOR = object()   # stands for one `info registers` answer


def recorded(machine, monitor=MONITOR):
    """Evaluate the way the watch does: lazy registers, exact reads with a log."""
    snap = machine.snapshot()
    regs = LazyRegisters(machine.regs.get, NAMES)
    snap.regs = regs
    snap.exact_reads = True
    snap.read_log = []
    snap.msrs.update(machine.msrs)
    report = rules.evaluate(snap, opsize=64)
    return report, Inputs.of(regs, machine.msrs, snap.read_log, monitor)


def holds(inputs, machine, monitor=MONITOR):
    return inputs.still_hold(machine.regs.get, machine.msrs, machine.mem.read, monitor)


def statuses(report):
    return [(r.rule, r.status, r.message) for r in report.results]


def test_lazy_registers_record_what_was_read():
    regs = LazyRegisters({"rcx": 5, "rsp": 7}.get, NAMES)
    assert regs["rcx"] == 5 and "rsp" in regs and regs.get("pkru") is None and "r99" not in regs
    assert dict(regs) == {"rcx": 5, "rsp": 7}


def test_inputs_cover_what_the_rules_use():
    report, inputs = recorded(baseline())
    assert report.ok(warnings=True)
    names = {n for n, _ in inputs.regs}
    assert {"rcx", "rsp", "r11", "cr3", "cr4", "efer", "gs_base", "k_gs_base"} <= names
    assert "rax" not in names and "rbx" not in names   # never read: not an input
    pas = [pa for pa, _, _ in inputs.reads]
    assert any(PA_GDT <= pa < PA_GDT + 0x80 for pa in pas), "the STAR descriptors were not recorded"
    assert any(PA_TSS <= pa < PA_TSS + 0x68 for pa in pas), "the TSS was not recorded"


def test_unchanged_holds_and_each_kind_of_change_misses():
    m = baseline()
    _, inputs = recorded(m)
    assert holds(inputs, m)
    assert not holds(inputs, m, monitor=object()), "a new monitor state must miss"

    m.regs["rcx"] += 0x1000
    assert not holds(inputs, m)
    m.regs["rcx"] -= 0x1000

    m.regs["rax"] ^= 1                       # not an input: still holds
    assert holds(inputs, m)

    m.msrs[MSR_STAR] ^= 1 << 48
    assert not holds(inputs, m)
    m.msrs[MSR_STAR] ^= 1 << 48

    pa, size, data = inputs.reads[0]
    m.mem.write(pa, bytes([data[0] ^ 0x80]))
    assert not holds(inputs, m)


def test_a_broken_kernel_page_table_entry_is_seen():
    """LSTAR's page made NX after a pass: the reused verdict must not stand."""
    m = baseline()
    _, inputs = recorded(m)
    lstar = m.msrs[MSR_LSTAR]
    m.set_bits(lstar, m.levels[-1], 1 << 63)
    assert not holds(inputs, m)
    report, _ = recorded(m)
    assert not report.ok()


_REGS = sorted(NAMES - {"rip"})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_whenever_inputs_hold_the_verdict_is_the_same(data):
    m = baseline()
    report, inputs = recorded(m)
    kind = data.draw(st.sampled_from(["reg", "msr", "mem-read", "mem-any"]))
    if kind == "reg":
        name = data.draw(st.sampled_from(_REGS))
        m.regs[name] = (m.regs.get(name, 0) ^ (1 << data.draw(st.integers(0, 63))))
    elif kind == "msr":
        number = data.draw(st.sampled_from(sorted(m.msrs)))
        m.msrs[number] ^= 1 << data.draw(st.integers(0, 63))
    else:
        if kind == "mem-read":   # somewhere the rules looked
            pa, size, _ = data.draw(st.sampled_from(list(inputs.reads)))
            pa += data.draw(st.integers(0, size - 1))
        else:                    # any page of the machine
            pfn = data.draw(st.sampled_from(sorted(m.mem.pages)))
            pa = pfn * 4096 + data.draw(st.integers(0, 4095))
        old = m.mem.read(pa, 1)[0]
        m.mem.write(pa, bytes([old ^ (1 << data.draw(st.integers(0, 7)))]))
    again, _ = recorded(m)
    if holds(inputs, m):
        assert statuses(again) == statuses(report)
    if kind == "mem-read":
        assert not holds(inputs, m), "a change in recorded memory must miss"


def test_cache_keeps_the_most_recent_few_per_key():
    cache = VerdictCache(limit=2)
    machines = [baseline() for _ in range(3)]
    for i, m in enumerate(machines):
        m.regs["rcx"] += i * 0x1000
        cache.store("cpu0", recorded(m)[1])
    read = machines[0].mem.read
    # The oldest was pushed out; the two newest are found, and count as hits.
    assert not cache.lookup("cpu0", machines[0].regs.get, machines[0].msrs, read, MONITOR)
    assert cache.lookup("cpu0", machines[1].regs.get, machines[1].msrs, read, MONITOR)
    assert cache.lookup("cpu0", machines[2].regs.get, machines[2].msrs, read, MONITOR)
    assert not cache.lookup("cpu1", machines[2].regs.get, machines[2].msrs, read, MONITOR)
    assert (cache.hits, cache.misses) == (2, 2)
    cache.clear()
    assert not cache.lookup("cpu0", machines[2].regs.get, machines[2].msrs, read, MONITOR)
