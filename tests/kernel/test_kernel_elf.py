"""kernel.elf, as a debugger sees it: segments where the CPU runs them, W^X,
the user program at 0x400000, and a label on every sysret."""
from __future__ import annotations

import pytest
from elftools.elf.constants import P_FLAGS
from elftools.elf.elffile import ELFFile

from gdbext.tools import launch

KERNEL_BASE = 0xFFFFFFFF80000000
USER_SPACE_END = 1 << 47
SYSRETQ, SYSRETL, IRETQ = b"\x48\x0f\x07", b"\x0f\x07", b"\x48\xcf"


@pytest.fixture(scope="module")
def elf(kernel_paths: launch.KernelPaths):
    with open(kernel_paths.elf, "rb") as f:
        yield ELFFile(f)


@pytest.fixture(scope="module")
def symbols(elf) -> dict[str, int]:
    return {s.name: s["st_value"] for s in elf.get_section_by_name(".symtab").iter_symbols() if s.name}


def loads(elf):
    return [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]


def code_at(elf, address: int, size: int) -> bytes:
    for seg in loads(elf):
        if seg["p_vaddr"] <= address < seg["p_vaddr"] + seg["p_filesz"]:
            offset = address - seg["p_vaddr"]
            return seg.data()[offset:offset + size]
    raise AssertionError(f"{address:#x} is in no loadable segment")


def test_segments_are_page_aligned_and_never_writable_and_executable(elf):
    for seg in loads(elf):
        flags = seg["p_flags"]
        assert seg["p_vaddr"] % 4096 == 0
        assert not (flags & P_FLAGS.PF_W and flags & P_FLAGS.PF_X), hex(seg["p_vaddr"])


def test_kernel_is_in_the_top_2gib_and_the_user_program_at_0x400000(elf, symbols):
    kernel = [s for s in loads(elf) if s["p_vaddr"] >= KERNEL_BASE]
    user = [s for s in loads(elf) if s["p_vaddr"] < USER_SPACE_END]
    assert len(kernel) == 3 and len(user) == 3  # text, rodata, data+bss for each
    assert [s["p_flags"] for s in kernel] == [P_FLAGS.PF_R | P_FLAGS.PF_X, P_FLAGS.PF_R, P_FLAGS.PF_R | P_FLAGS.PF_W]
    assert user[0]["p_vaddr"] == 0x400000 == symbols["user_start"]
    assert elf.header["e_entry"] == symbols["_start"] == KERNEL_BASE
    for name in ("kmain", "setup_gdt", "setup_tss", "setup_idt", "setup_paging", "setup_syscall",
                 "enter_user", "syscall_entry", "fault_report"):
        assert symbols[name] >= KERNEL_BASE, name
    assert 0x400000 <= symbols["user_main"] < 0x401000


@pytest.mark.parametrize("label,opcode", [
    ("enter_user_sysret", SYSRETQ),
    ("syscall_return_sysret", SYSRETQ),
    ("syscall_return_sysret_no_swapgs", SYSRETQ),
    ("syscall_return_sysret_kernel_rsp", SYSRETQ),
    ("syscall_return_sysret_unchecked", SYSRETQ),
    ("syscall_return_sysretl", SYSRETL),
    ("int80_return_iretq", IRETQ),
])
def test_every_return_to_ring3_has_a_label_on_its_instruction(elf, symbols, label, opcode):
    assert code_at(elf, symbols[label], len(opcode)) == opcode


def test_no_sysret_without_a_label(elf, symbols):
    labelled = {v for k, v in symbols.items() if "sysret" in k}
    text = elf.get_section_by_name(".text")
    data, base = text.data(), text["sh_addr"]
    found = set()
    start = data.find(SYSRETL)
    while start != -1:
        found.add(base + start - (1 if data[start - 1:start] == b"\x48" else 0))
        start = data.find(SYSRETL, start + 1)
    assert found == labelled
