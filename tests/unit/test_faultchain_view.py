"""fault-chain's report and text, on QEMU's real empty-IDT log (no gdb)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from gdbext.model.qemu_log import build_chain, parse_text, read_tail
from gdbext.rules.delivery import memory_only
from gdbext.views.common import to_json
from gdbext.views.faultchain import fault_chain_report, fault_chain_text

LOG = Path(__file__).parent / "fixtures" / "qemu_log" / "empty_idt_qemu72.log"


def test_json_has_the_documented_keys_and_values():
    report = fault_chain_report(str(LOG), build_chain(read_tail(LOG)), memory_only())
    doc = json.loads(to_json(report))
    assert list(doc)[:4] == ["log", "chain", "triple_fault", "vcpus"] and "notes" in doc and "summary" in doc
    first = doc["chain"][0]
    for key in ("vector", "name", "error_code", "rip", "cpl", "cr2", "rsp", "software", "explanation"):
        assert key in first
    assert [(e["vector"], e["error_code"], e["outcome"]) for e in doc["chain"]] == [
        (6, None, "#GP(0x32)"), (13, 0x32, "#DF"), (8, 0, "shutdown")]
    assert doc["chain"][2]["escalation"] == {"old": 13, "new": 13}
    assert doc["triple_fault"] and doc["vcpus"] == 1


def test_text_fits_80_columns_and_says_the_chain():
    report = fault_chain_report(str(LOG), build_chain(read_tail(LOG)), memory_only())
    text = fault_chain_text(report)
    # The first line names the log file, whose path is as long as it is.
    assert max(len(line) for line in text.splitlines()[1:]) <= 80
    assert text.splitlines()[0] == f"QEMU log {LOG}: triple fault, 1 vCPU"
    assert "vector 6 is past the IDT limit 0x0: #GP(0x32)" in " ".join(text.split())


def test_live_vcpus_add_the_mixing_note_once():
    chain = build_chain(read_tail(LOG))
    report = fault_chain_report(str(LOG), dataclasses.replace(chain, vcpus=None), memory_only(), live_vcpus=2)
    assert report.vcpus == 2 and sum("may mix vCPUs" in n for n in report.notes) == 1


def test_long_mode_reasons_that_need_memory_say_they_cannot_tell():
    # A 64-bit #GP whose gate is within the IDT limit, with no memory to read it from.
    text = (LOG.parent / "lm_user_pf_qemu72.log").read_text()
    report = fault_chain_report("x", build_chain(parse_text(text)), memory_only())
    (pf,) = report.chain
    assert pf.outcome == "unknown" and "cannot be read" in pf.explanation and pf.matches_log is None
