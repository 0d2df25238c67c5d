"""The machine-state format: real captured states survive a save and a load
with every report unchanged, random states round-trip exactly, and damaged
files are refused in one line."""
from __future__ import annotations

import gzip
import json
import random

import pytest

from gdbext.model.machine_state import (
    FORMAT,
    VERSION,
    CpuState,
    MachineState,
    MachineStateError,
    page_runs,
)
from gdbext.model.snapshot import PAGE, SegmentCache, SnapshotError, TableRegister
from gdbext.rules import sysret
from gdbext.views.common import ReportError, to_json
from gdbext.views.cpl import cpl_report
from gdbext.views.gdt import gdt_report
from gdbext.views.idt import idt_report
from gdbext.views.tss import tss_report
from tests.support.snapshots import CAPTURED, captured

SCENARIOS = sorted(CAPTURED)


def _state_of(scenario: str) -> tuple[MachineState, object]:
    snap, _opsize, _label = captured(scenario)
    # Everything the captured run read, read once more through its memo, as
    # gdbext-save does: the pages it holds are the pages to save.
    state = MachineState(cpus=[CpuState.of(snap)], pages=dict(snap.pages))
    return state, snap


def _outcome(make, snap) -> str:
    """The report's JSON, or its error up to the reason (the captured state
    holds only what the sysret rules read, so some tables are missing from
    both: "was not captured" live, "was not saved" reloaded)."""
    try:
        return to_json(make(snap))
    except ReportError as exc:
        return "error: " + str(exc).split(": physical")[0]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_captured_state_gives_the_same_reports(scenario):
    state, snap = _state_of(scenario)
    again = MachineState.decode(state.encode()).snapshot(snap.cpu)
    _, opsize, _ = captured(scenario)
    for make in (cpl_report, gdt_report, tss_report, idt_report):
        assert _outcome(make, again) == _outcome(make, captured(scenario)[0]), make.__name__
    assert sysret.evaluate(again, opsize=opsize).to_json() == \
        sysret.evaluate(captured(scenario)[0], opsize=opsize).to_json()


def test_linux_values_survive():
    state, snap = _state_of("linux")
    loaded = MachineState.decode(state.encode())
    c = loaded.cpu(snap.cpu)
    # The captured Debian Linux 6.1 state (tests/support/snapshots.py): STAR
    # is __USER32_CS << 48 | __KERNEL_CS << 32, CR0 0x80050033.
    assert c.msrs[0xC0000081] == 0x0023001000000000
    assert c.regs["cr0"] == 0x80050033
    assert c.segments["cs"] == snap.segments["cs"]
    assert c.tr == snap.tr and c.gdtr == snap.gdtr and c.idtr == snap.idtr


def test_an_unsaved_page_is_an_error_not_zeros():
    state, snap = _state_of("ok")
    missing = next(pfn for pfn in range(1, 1 << 20) if pfn not in state.pages)
    s = MachineState.decode(state.encode()).snapshot(snap.cpu)
    with pytest.raises(SnapshotError, match=f"physical page {missing * PAGE:#x} was not saved"):
        s.read_phys(missing * PAGE + 8, 8)
    with pytest.raises(SnapshotError, match="MSR 0x12345678 was not saved"):
        s.msr(0x12345678)


def _random_state(rng: random.Random) -> MachineState:
    def seg() -> SegmentCache:
        return SegmentCache(rng.getrandbits(16), rng.getrandbits(64), rng.getrandbits(32),
                            rng.getrandbits(32) & 0x00F0FF00)

    cpus = []
    for index in rng.sample(range(8), rng.randint(1, 4)):
        regs = {name: rng.getrandbits(64) for name in ("rax", "rip", "rsp", "cr3", "cr0", "cr4", "efer")}
        cpus.append(CpuState(cpu=index, cpl=rng.randint(0, 3), halted=rng.random() < 0.5, regs=regs,
                             segments={n: seg() for n in ("cs", "ss", "ds", "es", "fs", "gs")},
                             gdtr=TableRegister(rng.getrandbits(64), rng.getrandbits(16)),
                             idtr=TableRegister(rng.getrandbits(64), rng.getrandbits(16)),
                             ldtr=seg(), tr=seg(),
                             msrs={rng.getrandbits(32): rng.getrandbits(64) for _ in range(rng.randint(0, 5))}))
    pages = {}
    for _ in range(rng.randint(0, 40)):
        pfn = rng.getrandbits(20)
        kind = rng.random()
        pages[pfn] = (bytes(PAGE) if kind < 0.3 else rng.randbytes(PAGE) if kind < 0.6
                      else bytes([rng.getrandbits(8)]) * PAGE)
        if rng.random() < 0.5:  # runs of consecutive pages too
            pages[pfn + 1] = rng.randbytes(PAGE)
    ram = [(0, 0xA0000), (0x100000, 0x8000000)] if rng.random() < 0.5 else None
    return MachineState(cpus=cpus, pages=pages, ram=ram, unknown=["EFER: unknown"] if rng.random() < 0.5 else [],
                        report={"verdict": rng.getrandbits(8)} if rng.random() < 0.5 else None,
                        extra={"fault": {"last": {"json": {"vector": 14}, "text": "x"}}} if rng.random() < 0.5 else {})


@pytest.mark.parametrize("seed", range(30))
def test_random_states_round_trip(seed):
    rng = random.Random(seed)
    state = _random_state(rng)
    loaded = MachineState.decode(state.encode())
    assert loaded.cpus == state.cpus
    assert loaded.pages == state.pages
    assert loaded.ram == state.ram and loaded.unknown == state.unknown and loaded.report == state.report
    assert loaded.extra == state.extra
    # Every saved byte reads back through a snapshot, at any offset.
    for c in state.cpus:
        s = loaded.snapshot(c.cpu)
        for pfn in list(state.pages)[:5]:
            off = rng.randrange(PAGE - 16)
            assert s.read_phys(pfn * PAGE + off, 16) == state.pages[pfn][off:off + 16]


@pytest.mark.parametrize("seed", range(10))
def test_runs_are_consecutive_pages(seed):
    rng = random.Random(1000 + seed)
    pages = {rng.getrandbits(12): rng.randbytes(PAGE) for _ in range(50)}
    seen = {}
    previous_end = -1
    for start, data in page_runs(pages):
        assert start % PAGE == 0 and len(data) % PAGE == 0
        assert start > previous_end  # sorted, and two runs never touch
        previous_end = start + len(data)
        for i in range(len(data) // PAGE):
            seen[start // PAGE + i] = data[i * PAGE:(i + 1) * PAGE]
    assert seen == pages


def _encoded(doc: object) -> bytes:
    return gzip.compress(json.dumps(doc).encode(), mtime=0)


def _good_doc() -> dict:
    state, _ = _state_of("ok")
    return state.to_json()


@pytest.mark.parametrize("data, message", [
    (b"", "not gzip-compressed"),
    (b"hello world", "not gzip-compressed"),
    (gzip.compress(b"{not json", mtime=0), "not JSON"),
    (gzip.compress(b"\xff\xfe", mtime=0), "not JSON"),
    (_encoded([1, 2]), "not a gdbext machine-state file"),
    (_encoded({"format": "something-else"}), "not a gdbext machine-state file"),
    (_encoded({**_good_doc(), "version": VERSION + 1}), "version 2 is not one"),
    (_encoded({**_good_doc(), "cpus": []}), "no vCPU"),
    (_encoded({**_good_doc(), "cpus": [{"cpu": 0}]}), "damaged"),
    (_encoded({**_good_doc(), "memory": {"page_size": 512, "encoding": "zlib+base64", "runs": []}}),
     "4096-byte pages"),
    (_encoded({**_good_doc(), "memory": {"page_size": 4096, "encoding": "zlib+base64",
                                         "runs": [{"start": 0x1000, "pages": 2, "data": "!!"}]}}), "damaged"),
])
def test_bad_files_are_refused_in_one_line(data, message):
    with pytest.raises(MachineStateError, match=message) as info:
        MachineState.decode(data)
    assert "\n" not in str(info.value)


def test_truncated_file_is_refused():
    data = MachineState.decode(_encoded(_good_doc())).encode()
    for cut in (len(data) // 2, len(data) - 1, 11):
        with pytest.raises(MachineStateError, match="damaged or truncated|not JSON"):
            MachineState.decode(data[:cut])


def test_format_names_itself_and_no_path():
    doc = json.loads(gzip.decompress(MachineState.decode(_encoded(_good_doc())).encode()))
    assert doc["format"] == FORMAT and doc["version"] == VERSION
    assert "/" not in json.dumps({k: v for k, v in doc.items() if k != "memory"})
