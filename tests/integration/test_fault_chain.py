"""fault-chain in real gdb attached to real QEMU, on guests that triple-fault.

The oracle is QEMU's own log, read here with a regular expression of this
file (not gdbext's parser), and the Intel SDM for the reasons: an empty IDT
(tests/kernels/empty_idt.asm) gives #UD -> #GP(6*8+2) -> #DF -> shutdown; the
bundled kernel with TSS.RSP0 unmapped and IST1 zeroed gives, at its
`int $0x80` from ring 3, #PF on RSP0 -> #PF -> #DF -> #PF on IST1 -> shutdown.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gdbext.tools import launch
from gdbext.tools.driver import GdbDriver, GdbError
from tests.support import asmkernel

pytestmark = pytest.mark.qemu

RECORD = re.compile(r"^ *\d+: v=([0-9a-f]{2}) e=([0-9a-f]{4}) i=(\d) cpl=(\d) IP=[0-9a-f]{4}:([0-9a-f]+) "
                    r"pc=[0-9a-f]+ SP=[0-9a-f]{4}:([0-9a-f]+)(?: CR2=([0-9a-f]+))?", re.MULTILINE)
UD_AT = 0x100027    # ud2 in empty_idt.asm: `lidt [m]` (7 bytes) from the entry at 0x100020
UNMAPPED = 0xFFFFFFFF90000000


def logged(path: Path) -> list[tuple[int, int, int, int, int, int | None]]:
    """(vector, error code, software, CPL, RIP, CR2) of every record QEMU wrote."""
    return [(int(v, 16), int(e, 16), int(i), int(c), int(ip, 16), int(cr2, 16) if cr2 else None)
            for v, e, i, c, ip, _sp, cr2 in RECORD.findall(path.read_text())]


@contextmanager
def attached(elf: Path | None = None, **options) -> Iterator[tuple[launch.Qemu, GdbDriver]]:
    qemu = launch.Qemu(launch.QemuOptions(int_log=True, keep_after_shutdown=True, wait=True, gdb_port=0, **options))
    gdb = None
    try:
        qemu.start()
        gdb = GdbDriver(elf=elf, timeout=60, target_exit=qemu.exit_summary)
        gdb.load_gdbext()
        gdb.connect(qemu.gdb_port)
        yield qemu, gdb
    finally:
        if gdb is not None:
            gdb.close()
        qemu.stop()
        assert not qemu.running


def one_line_error(gdb: GdbDriver, command: str) -> str:
    with pytest.raises(GdbError) as err:
        gdb.command(command)
    message = str(err.value)
    assert "\n" not in message.strip() and "Traceback" not in message
    return message


def test_empty_idt_triple_fault_chain_equals_qemus_log(tmp_path):
    kernel = asmkernel.build("empty_idt", tmp_path)
    with attached(kernel=kernel, ram_file=False, first_line="") as (qemu, gdb):
        assert "no QEMU log" in one_line_error(gdb, "fault-chain")
        gdb.command(f"gdbext-qemu-log {qemu.int_log_path}")
        stop = gdb.resume_until_stop(60)
        # What gdb sees when the guest triple-faults under `continue`: QEMU
        # pauses the VM (-no-shutdown) and its stub reports SIGQUIT, at the
        # instruction whose fault could not be delivered.
        assert stop is not None and stop.reason == "signal-received"
        assert stop.payload.get("signal-name") == "SIGQUIT" and stop.address == UD_AT
        assert qemu.running and qemu.triple_faulted() and qemu.wait(1) == launch.EXIT_TRIPLE_FAULT

        doc = gdb.json("fault-chain")
        records = logged(qemu.int_log_path)
        assert qemu.int_log_path.read_text().rstrip().endswith("Triple fault")
        assert [(e["vector"], e["error_code"] or 0, int(e["software"]), e["cpl"], e["rip"], e["cr2"])
                for e in doc["chain"]] == records[-3:]
        assert [e["name"] for e in doc["chain"]] == ["#UD", "#GP", "#DF"]
        assert [e["error_code"] for e in doc["chain"]] == [None, 0x32, 0]
        assert doc["triple_fault"] and doc["vcpus"] == 1 and doc["log"] == str(qemu.int_log_path)
        assert doc["summary"] == ("#UD at 0x100027; vector 6 is past the IDT limit 0x0: #GP(0x32); "
                                  "#GP's gate is past the IDT limit: #DF; #DF's gate is past the IDT limit: shutdown")
        assert doc["chain"][0]["explanation"].startswith("vector 6 is past the IDT limit 0x0")
        assert doc["chain"][2]["explanation"].endswith("shutdown (a triple fault; SDM Vol. 3A 6.15)")
        assert all(e["matches_log"] for e in doc["chain"])

        text = gdb.command("fault-chain")
        assert "triple fault" in text.splitlines()[0]
        assert max(len(line) for line in text.splitlines()) <= 80
        assert [e["vector"] for e in gdb.json("fault-chain --last 1")["chain"]] == [8]

        assert "outside" in one_line_error(gdb, "fault-chain --last 0")
        assert "does not exist" in one_line_error(gdb, f"fault-chain --log {tmp_path}/none.log")
        assert "not a file" in one_line_error(gdb, f"gdbext-qemu-log {tmp_path}/none.log")
        # The state the failed deliveries saw is still there.
        assert gdb.json("info cpl")["rip"] == UD_AT


def test_environment_names_the_log_until_set_off(tmp_path, monkeypatch):
    kernel = asmkernel.build("empty_idt", tmp_path)
    qemu = launch.Qemu(launch.QemuOptions(kernel=kernel, int_log=True, keep_after_shutdown=True, wait=True, gdb_port=0, ram_file=False,
                                          first_line=""))
    gdb = None
    try:
        qemu.start()
        monkeypatch.setenv("GDBEXT_QEMU_LOG", str(qemu.int_log_path))   # gdb inherits it
        gdb = GdbDriver(timeout=60, target_exit=qemu.exit_summary)
        gdb.load_gdbext()
        gdb.connect(qemu.gdb_port)
        assert gdb.resume_until_stop(60).payload.get("signal-name") == "SIGQUIT"
        assert gdb.json("gdbext-qemu-log show") == {"log": str(qemu.int_log_path),
                                                     "source": "$GDBEXT_QEMU_LOG", "exists": True}
        assert gdb.json("fault-chain")["triple_fault"]
        gdb.command("gdbext-qemu-log off")
        assert "no QEMU log" in one_line_error(gdb, "fault-chain")
        assert gdb.json(f"fault-chain --log {qemu.int_log_path}")["triple_fault"]
    finally:
        if gdb is not None:
            gdb.close()
        qemu.stop()
        assert not qemu.running


def test_unmapped_rsp0_and_ist_triple_fault_in_long_mode(kernel_paths):
    with attached(elf=kernel_paths.elf, scenario="ok") as (qemu, gdb):
        gdb.command("tbreak user_int80")
        assert gdb.resume_until_stop(120).reason == "breakpoint-hit"
        tss = gdb.json("info tss")
        assert tss["ist"][0] != 0          # the kernel gives #DF its own stack (IST1)
        gdb.command(f"set {{unsigned long}}{tss['base'] + 0x04:#x} = {UNMAPPED:#x}")   # RSP0
        gdb.command(f"set {{unsigned long}}{tss['base'] + 0x24:#x} = 0")               # IST1
        gdb.command(f"gdbext-qemu-log {qemu.int_log_path}")
        stop = gdb.resume_until_stop(60)
        assert stop is not None and stop.payload.get("signal-name") == "SIGQUIT"
        int80 = stop.address                # the int $0x80 whose delivery failed

        doc = gdb.json("fault-chain")
        records = logged(qemu.int_log_path)
        assert [(e["vector"], e["error_code"] or 0, int(e["software"]), e["cpl"], e["rip"], e["cr2"])
                for e in doc["chain"]] == records[-3:]
        # SDM 6.14.2/6.14.4: the frame is pushed below RSP0 aligned to 16; a
        # supervisor write to a not-present page is #PF error 0x2 (4.7).
        assert [(e["vector"], e["cpl"], e["rip"]) for e in doc["chain"]] == [(0x80, 3, int80), (14, 3, int80),
                                                                                 (8, 3, int80)]
        assert doc["chain"][0]["software"] and doc["chain"][1]["error_code"] == 0x2
        assert doc["chain"][1]["cr2"] == UNMAPPED - 8
        assert [e["outcome"] for e in doc["chain"]] == [f"#PF(error 0x2, CR2={UNMAPPED - 8:#x})", "#DF", "shutdown"]
        assert "IST1 0x0" in doc["chain"][2]["explanation"] and "0xfffffffffffffff8" in doc["chain"][2]["explanation"]
        assert all(e["matches_log"] for e in doc["chain"])
        assert doc["summary"].endswith("#PF's RSP0 is not mapped: #DF; #DF's IST1 is not mapped: shutdown")
