"""views/text.py: tables and lines made to fit gdb's width."""
from __future__ import annotations

import random
import string

import pytest
from tabulate import tabulate

from gdbext.views import text
from gdbext.views.text import WRAP_MIN, fit_lines, fit_table, widest

GDT_HEADERS = ("#", "sel", "kind", "base", "limit", "DPL", "P", "flags / type", "used by")
GDT_ROWS = [
    (0, "0x0000", "null", "", "", "", "", "", ""),
    (1, "0x0008", "code", "0x0", "0xffffffff", 0, "P", "L G  code, execute/read, accessed", "syscall CS"),
    (4, "0x0020", "data", "0x0", "0xffffffff", 3, "P", "D/B G  data, read/write, accessed", "SS, sysret SS"),
    (6, "0x0030", "tss-busy (16B)", "0xffffffff8000c640", "0x67", 0, "P", "TSS (busy)", "TR"),
]


def _words(text: str) -> list[str]:
    return text.replace(";", " ").replace(":", " ").split()


def test_with_room_or_no_width_the_table_is_tabulates():
    expected = tabulate(GDT_ROWS, headers=GDT_HEADERS, tablefmt="simple")
    assert fit_table(GDT_HEADERS, GDT_ROWS, None) == expected
    assert fit_table(GDT_HEADERS, GDT_ROWS, 0) == expected
    assert fit_table(GDT_HEADERS, GDT_ROWS, 200) == expected


def test_narrow_the_gdt_wraps_first_then_moves_type_and_roles_below_each_row():
    wrapped = fit_table(GDT_HEADERS, GDT_ROWS, 80, wrap=(2, 7, 8), below=(7, 8))
    assert widest(wrapped) <= 80 and wrapped.splitlines()[0].split()[-5:] == ["flags", "/", "type", "used", "by"]
    text = fit_table(GDT_HEADERS, GDT_ROWS, 64, wrap=(2, 7, 8), below=(7, 8))
    assert widest(text) <= 64
    lines = text.splitlines()
    assert lines[0].split() == ["#", "sel", "kind", "base", "limit", "DPL", "P"]
    assert "      flags / type: D/B G  data, read/write, accessed; used by:" in lines
    # Every word of every cell is still there.
    full = tabulate(GDT_ROWS, headers=GDT_HEADERS, tablefmt="simple")
    assert {w for w in _words(full) if set(w) != {"-"}} <= set(_words(text))


def test_wrapping_keeps_words_whole_and_numbers_right_aligned():
    rows = [(9, "Coprocessor Segment Overrun", "isr_9"), (128, "", "int80_entry")]
    text = fit_table(("vec", "name", "symbol"), rows, 30, wrap=(1,))
    assert widest(text) <= 30
    assert "Coprocessor" in text and "Overrun" in text and "int80_entry" in text
    first = text.splitlines()[2]
    assert first.startswith("  9 ")  # the vector column stays right-aligned


def test_a_row_too_wide_for_any_table_becomes_labelled_lines():
    rows = [("a" * 30, "b" * 30, "c" * 30)]
    text = fit_table(("one", "two", "three"), rows, 40, wrap=(0, 1, 2))
    assert widest(text) <= 40
    assert text.splitlines() == ["  one  " + "a" * 30, "  two  " + "b" * 30, "three  " + "c" * 30]


def test_fit_lines_wraps_at_spaces_and_keeps_blocks():
    lines = fit_lines(["warning: " + "word " * 30, "a\nb" + "x" * 100, "short"], 40)
    assert all(len(line) <= 40 for line in lines if "\n" not in line)
    assert lines[-1] == "short" and ("a\nb" + "x" * 100) in lines
    assert lines[1].startswith("  ")  # continuations are indented
    assert fit_lines(["x" * 100], None) == ["x" * 100]


@pytest.mark.parametrize("seed", range(40))
def test_random_tables_fit_whenever_their_words_do(seed):
    rng = random.Random(seed)
    ncols = rng.randint(1, 8)
    headers = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(1, 8))) for _ in range(ncols)]

    def cell():
        kind = rng.random()
        if kind < 0.2:
            return rng.randint(0, 10 ** rng.randint(1, 6))
        if kind < 0.3:
            return ""
        return " ".join("".join(rng.choices(string.ascii_letters + "/-()", k=rng.randint(1, 9)))
                        for _ in range(rng.randint(1, 6)))

    rows = [[cell() for _ in range(ncols)] for _ in range(rng.randint(1, 12))]
    width = rng.randint(30, 120)
    wrap = [i for i in range(ncols) if rng.random() < 0.6]
    below = [i for i in range(ncols) if rng.random() < 0.4]
    text = fit_table(headers, rows, width, wrap=wrap, below=below)
    longest_word = max([len(h) for h in headers] + [len(w) for r in rows for c in r for w in str(c).split()])
    if longest_word + 10 < width:
        assert widest(text) <= width, text
    # Nothing is lost: every word of every cell is in the text.
    words = set(text.replace(";", " ").split())
    for r in rows:
        for c in r:
            for w in str(c).split():
                assert w in words or any(w in x for x in words), (w, text)
    assert WRAP_MIN >= 1


# -- simple_table is tabulate's layout, made faster ---------------------------

def _random_cell(rng: random.Random):
    kind = rng.randrange(10)
    if kind == 0:
        return None
    if kind in (1, 2):
        return rng.choice([0, 7, -3, 14, 255, 2 ** 64 - 1, rng.randrange(-10 ** 6, 10 ** 6)])
    if kind == 3:   # strings tabulate reads as numbers, or that it treats otherwise
        return rng.choice(["14", "1e5", "nan", "inf", "-2", "0.5", "", " pad", "two\nlines", "1_000"])
    if kind == 4:
        return rng.choice([True, False, 1.5])
    return rng.choice(["0x10", "#PF", "interrupt-gate", "kernel code", "-", "yes", "no", "0xffffffff81000000",
                       "entry_SYSCALL_64+0x1b", "RW U NX"])


def test_simple_table_equals_tabulate_on_random_tables():
    rng = random.Random(1212)
    quick = 0
    for _ in range(3000):
        ncols = rng.randrange(1, 6)
        rows = [[_random_cell(rng) for _ in range(ncols)] for _ in range(rng.randrange(0, 6))]
        # Most columns of views are of one kind: make some columns uniform.
        for i in range(ncols):
            if rng.random() < 0.5 and rows:
                pick = rng.choice([lambda: rng.randrange(0, 300), lambda: rng.choice(["0x10", "#GP", "trap-gate"])])
                for row in rows:
                    row[i] = pick()
        headers = [] if rng.random() < 0.3 else [rng.choice(["vec", "name", "CPL", "handler", "x", "7", ""])
                                                   for _ in range(ncols)]
        if not headers and not rows:
            continue
        expected = (tabulate(rows, headers=headers, tablefmt="simple") if headers
                    else tabulate(rows, tablefmt="plain"))
        assert text.simple_table(rows, headers) == expected, (rows, headers)
        quick += text._quick(rows, headers) is not None
    assert quick > 500   # the fast path is taken, not only the fallback
