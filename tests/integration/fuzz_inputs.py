"""Generated bad (and good) inputs for every gdbext command and function, and
what a correct gdbext must do with each: the oracle of test_bad_input.py.

Pure Python, no gdb: a seeded `random.Random` builds the cases, so a seed
gives the same list on every run.  What an input *should* do is decided from
the rules of issue 15 and from what gdb itself reads for each word, which was
checked once against gdb 13 (`gdb.parse_and_eval` of every token below) and
is written down here as data:

- numbers are read as gdb reads them: `010` is 8, `0b101` is 5, `5u` is 5,
  `$rsp-8`, `&kmain` and `$cpl()+13` are expressions; `1_000`, `0o17` and
  Unicode digits are *not* numbers for gdb (Python's int() takes them);
- a value that does not fit where it goes is refused, never wrapped or
  truncated: 0x10000000000000000 and bigger (gdb: "Numeric constant too
  large"), 1.5 (a double), -1 for a PKRU, a physical address, a count, a
  selector, a vector, an MSR number;
- a negative number is never read as an option: refused as negative (any
  one-line message that is not argparse's "unrecognized arguments" /
  "arguments are required" / "expected one argument"), or, in a slot for a
  64-bit address, taken as the expression gdb reads (-0x1000 is then
  0xfffffffffffff000);
- a convenience function given the wrong number or kind of arguments
  refuses in one line, never with a Python exception.

Verdicts: ACCEPT (the command must succeed), REFUSE (it must fail with one
line), EITHER (both are right; if it succeeds, the value it used must still be
one of `values`).
"""
from __future__ import annotations

import random
import re
import shlex
from dataclasses import dataclass, field
from typing import Optional

MASK64 = (1 << 64) - 1
ACCEPT, REFUSE, EITHER = "accept", "refuse", "either"

# ---------------------------------------------------------------------------
# What the live guest looks like (filled in by the test, from gdb and QEMU)
# ---------------------------------------------------------------------------

# gdb's amd64 registers whose type is a signed int64 (the others used here are
# pointers, int32 selectors or unsigned flag words).
SIGNED_REGS = frozenset({"rax", "rbx", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12",
                         "r13", "r14", "r15", "fs_base", "gs_base", "k_gs_base"})

# gdbext's MSR names (README, `help info msr`) and their numbers (Intel SDM Vol. 4).
MSR_NUMBERS = {
    "EFER": 0xC0000080, "STAR": 0xC0000081, "LSTAR": 0xC0000082, "CSTAR": 0xC0000083,
    "SFMASK": 0xC0000084, "FS_BASE": 0xC0000100, "GS_BASE": 0xC0000101, "KERNEL_GS_BASE": 0xC0000102,
    "TSC_AUX": 0xC0000103, "PAT": 0x277, "SYSENTER_CS": 0x174, "SYSENTER_ESP": 0x175,
    "SYSENTER_EIP": 0x176, "APIC_BASE": 0x1B,
}


@dataclass
class Live:
    """The stopped guest, as the test read it before the batch."""

    cpl: int
    regs: dict[str, int]                  # `info registers`: name -> value (unsigned)
    symbols: dict[str, int]               # kmain, user_main -> address
    gdt_limit: int
    gdt_entries: frozenset[int]           # indices that start a descriptor (16-byte ones once)
    idt_limit: int
    elf: str                              # the kernel ELF gdb has loaded
    not_elf: str                          # a file that exists and is not an ELF
    msrs: dict[int, int] = field(default_factory=dict)       # known MSR values
    sysret_ok: dict[Optional[int], int] = field(default_factory=dict)  # opsize -> $sysret_ok value

    def base(self, name: str) -> int:
        if name == "cpl":
            return self.cpl
        if name == "sysret_ok":
            return self.sysret_ok[None]
        if name.startswith("sym:"):
            return self.symbols[name[4:]]
        name = {"pc": "rip", "sp": "rsp"}.get(name, name)
        value = self.regs[name]
        if name in SIGNED_REGS and value >> 63:
            value -= 1 << 64
        return value


# ---------------------------------------------------------------------------
# Words, and what gdb reads for each
# ---------------------------------------------------------------------------

INT, PTR, CODEPTR, CHARPTR, FLOAT, HUGE, BAD, PYONLY, STRING, VOID, FUNC, WORD = (
    "int", "ptr", "codeptr", "charptr", "float", "huge", "bad", "pyonly", "string", "void", "func", "word")


@dataclass(frozen=True)
class Tok:
    """One argument word (as the command receives it, after shlex) and gdb's reading.

    kind: INT (an integer), PTR/CODEPTR/CHARPTR (a pointer: an address),
    FLOAT (a double), HUGE (gdb: "Numeric constant too large"), BAD (gdb
    cannot evaluate it), PYONLY (gdb cannot, Python's int() can), STRING (a
    char array), VOID (an unset convenience variable), FUNC (a function, not
    its address), WORD (a name for a string slot: MSR name, file, choice).
    value: the integer (relative to `base` when set) or the double."""

    text: str
    kind: str
    value: float = 0
    base: str = ""
    literal: bool = False   # a plain decimal or 0x literal: every reading of a number takes it

    def reading(self, live: Live) -> Optional[int]:
        """The integer gdb reads, or None when it reads no integer."""
        if self.kind in (INT, PTR, CODEPTR, CHARPTR):
            value = int(self.value) + (live.base(self.base) if self.base else 0)
            return value & MASK64 if self.kind != INT else value
        if self.kind == FUNC:
            return live.base(self.base)
        return None

    @property
    def negative_word(self) -> bool:
        """Starts with '-' and argparse takes it for an option: it takes only
        words like -1 and -2.5 (its _negative_number_matcher) as values."""
        return (self.text.startswith("-") and self.text not in ("-", "--")
                and re.fullmatch(r"-\d+|-\d*\.\d+", self.text) is None)


def _lit(text: str, value: int) -> Tok:
    return Tok(text, INT, value, literal=True)


def _int(text: str, value: int, base: str = "") -> Tok:
    return Tok(text, INT, value, base)


NUMBERS = (
    # plain literals, in and out of every slot's range
    _lit("0", 0), _lit("1", 1), _lit("3", 3), _lit("8", 8), _lit("16", 16), _lit("0x10", 16),
    _lit("32", 32), _lit("64", 64), _lit("0x20", 32), _lit("0x3f", 0x3F), _lit("0x28", 0x28),
    _lit("0x2b", 0x2B), _lit("0x30", 0x30), _lit("0x38", 0x38), _lit("0x40", 0x40), _lit("255", 255),
    _lit("256", 256), _lit("14", 14), _lit("0x1000", 0x1000), _lit("4096", 4096), _lit("0x400000", 0x400000),
    _lit("0x7ffffff00000", 0x7FFFFFF00000), _lit("0x7fffffeffff8", 0x7FFFFFEFFFF8),
    _lit("0xffffffff80000000", 0xFFFFFFFF80000000), _lit("0xffffffff", 0xFFFFFFFF),
    _lit("0x100000000", 1 << 32), _lit("0xc0000080", 0xC0000080), _lit("0xc0000081", 0xC0000081),
    _lit("3221225602", 0xC0000082), _lit("0x12345678", 0x12345678), _lit("0x1b", 0x1B),
    _lit("0xffffffffffffffff", MASK64), _lit("18446744073709551615", MASK64),
    _lit("0xfffffffffffff000", MASK64 - 0xFFF),
    # gdb's own number syntax (Python's int(text, 0) reads some differently)
    _int("010", 8), _int("0X10", 16), _int("+5", 5), _int(" 0x20 ", 32), _int("5u", 5),
    _int("0x10L", 16), _int("5UL", 5), _int("0b101", 5), _int("-1UL", MASK64),
    # non-canonical addresses (4-level paging: bits 63:47 must be equal)
    _lit("0x800000000000", 1 << 47), _lit("0x0000800000000000", 1 << 47),
    _lit("0xffff7fffffffffff", 0xFFFF7FFFFFFFFFFF), _lit("0x8000000000000000", 1 << 63),
    _lit("0xdeadbeefdeadbeef", 0xDEADBEEFDEADBEEF),
    # negative
    _lit("-1", -1), _lit("-8", -8), _lit("-0x10", -16), _lit("-0x1000", -4096), _lit("-4096", -4096),
    _int("~0", -1), _int("-(0x10)", -16), _int("$k_gs_base", 0, "k_gs_base"),
    # too big for 64 bits
    Tok("0x10000000000000000", HUGE), Tok("18446744073709551616", HUGE),
    Tok("0x1ffffffffffffffffffff", HUGE), Tok("99999999999999999999999999", HUGE),
    # fractional, and doubles that happen to be integral
    Tok("1.5", FLOAT, 1.5), Tok("0.5", FLOAT, 0.5), Tok("-2.5", FLOAT, -2.5), Tok("1e-3", FLOAT, 1e-3),
    Tok("64.5", FLOAT, 64.5), Tok("1.0", FLOAT, 1.0), Tok("2.5e1", FLOAT, 25.0), Tok("0x1p3", FLOAT, 8.0),
    # gdb expressions
    Tok("$rsp", PTR, 0, "rsp"), Tok("$rsp-8", PTR, -8, "rsp"), Tok("$rsp+8", PTR, 8, "rsp"),
    Tok("$rsp - 8", PTR, -8, "rsp"), Tok("$sp", PTR, 0, "sp"), Tok("$rip", CODEPTR, 0, "rip"),
    Tok("$pc", CODEPTR, 0, "pc"), Tok("$rip+1", CODEPTR, 1, "rip"), Tok("&kmain", CODEPTR, 0, "sym:kmain"),
    Tok("&user_main", CODEPTR, 0, "sym:user_main"), Tok("(char*)0x1000", CHARPTR, 0x1000),
    Tok("$rsp+0x800000000000", PTR, 1 << 47, "rsp"),
    _int("$cs", 0, "cs"), _int("$ss", 0, "ss"), _int("$cr3", 0, "cr3"), _int("$efer", 0, "efer"),
    _int("$rcx", 0, "rcx"), _int("sizeof(long)", 8), _int("1<<12", 4096), _int("3/2", 1),
    _int("0x1000+0x10", 0x1010), _int("(0x10)", 16), _int("(long)1.5", 1),
    _int("$cpl()", 0, "cpl"), _int("$cpl()+13", 13, "cpl"), _int("$sysret_ok()", 0, "sysret_ok"),
    _int('$msr("EFER")', 0, "efer"),
    Tok("kmain", FUNC, 0, "sym:kmain"), Tok("user_main", FUNC, 0, "sym:user_main"),
    # not numbers
    Tok("foo", BAD), Tok("nope_symbol", BAD), Tok("0xZZ", BAD), Tok("0x", BAD), Tok("%", BAD),
    Tok("@", BAD), Tok("-", BAD), Tok("1..2", BAD), Tok("", BAD), Tok(" ", BAD), Tok("1 2", BAD),
    Tok("$cpl(1)", BAD), Tok("$msr()", BAD), Tok("$sysret_ok(16)", BAD),
    Tok("1_000", PYONLY), Tok("0o17", PYONLY), Tok("\u0661\u0662", PYONLY),
    Tok('"x"', STRING), Tok('"STAR"', STRING), Tok('""', STRING),
    Tok("$nonexistent", VOID), Tok("$_exitcode", VOID),
)

# Cheap values for `ptdump --cr3` (a garbage root makes a dump of garbage tables).
PTDUMP_CR3 = (_int("$cr3", 0, "cr3"), _lit("-1", -1), _lit("0xfffffffffffff000", MASK64 - 0xFFF),
              Tok("0x10000000000000000", HUGE), Tok("1.5", FLOAT, 1.5), Tok("foo", BAD),
              _lit("-0x1000", -4096), Tok("1_000", PYONLY))


def _word(text: str) -> Tok:
    return Tok(text, WORD)


MSR_WORDS = tuple(_word(w) for w in ("STAR", "star", "IA32_LSTAR", "MSR_SFMASK", "EFER", "KERNEL_GS_BASE",
                                     "FS_BASE", "TSC_AUX", "PAT", "APIC_BASE", "SYSENTER_EIP",
                                     "NOPE", "STARX", "IA32_", "ia32_nope", ""))
ACTION_WORDS = tuple(_word(w) for w in ("on", "off", "status", "ON", "bogus", "", "1", "0x1"))
ACCESS_WORDS = tuple(_word(w) for w in ("read", "write", "exec", "READ", "rw", "x", "", "1"))
VECTOR_WORDS = tuple(_word(w) for w in ("0-31", "13,14", "6,13-14", "14", "0", "31", "32", "0-32", "5-3", "13,",
                                        "", "x", "0x0e", "1-2-3", " 13 , 14 ", "08", "-1", "0-", "13-13", "all"))
# Names that are no number and no symbol of the bundled kernel (checked with nm).
NAMES = tuple(t for t in MSR_WORDS + ACTION_WORDS + ACCESS_WORDS if t.text and not t.text[0].isdigit())
FILE_WORDS = ("@elf", "@not_elf", "/nonexistent/kernel.elf", "/etc/passwd", "/", "", "123", "$rsp", "-")

# Argument words for the functions: written inside `$f(...)`.
FUNCTION_ARGS = tuple(t for t in NUMBERS if t.text.strip() and t.text not in ("-", "1 2")) + (
    Tok('"star"', STRING), Tok('"NOPE"', STRING), Tok('"0xc0000081"', STRING), Tok('"EFER"', STRING),
    Tok('"LSTAR"', STRING),
)

# ---------------------------------------------------------------------------
# Judging one value in one slot
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    verdict: str
    rule: str = ""
    values: Optional[frozenset] = None   # when accepted, the value used must be one of these

    @staticmethod
    def accept(value, rule: str = "") -> "Judgement":
        return Judgement(ACCEPT, rule, frozenset([value]))


def _refuse(rule: str) -> Judgement:
    return Judgement(REFUSE, rule)


def _not_integer(tok: Tok) -> Optional[Judgement]:
    """The refusal for a word from which gdb reads no integer, else None."""
    if tok.kind == HUGE:
        return _refuse("a number bigger than 64 bits is refused, not wrapped")
    if tok.kind == FLOAT:
        if tok.value != int(tok.value):
            return _refuse("a fractional number is refused, not truncated")
        return None
    if tok.kind == BAD:
        return _refuse("not a number or expression gdb can evaluate")
    if tok.kind == PYONLY:
        return _refuse("numbers are read as gdb reads them: gdb does not take Python-only syntax")
    if tok.kind == STRING:
        return _refuse("a string in a number slot is refused")
    if tok.kind == VOID:
        return _refuse("a void value is not a number")
    if tok.kind == WORD:
        return _refuse("a name in a number slot is refused")
    return None


def judge_number(tok: Tok, live: Live, lo: int, hi: int, *, wrap_negative: bool = False,
                 strict: bool = True) -> Judgement:
    """A slot that takes a number in [lo, hi].

    wrap_negative: a 64-bit address slot, where gdb's reading of a negative
    expression (-0x1000 -> 0xfffffffffffff000) is as good as a refusal.
    strict: the slot is documented as "a number or a gdb expression", so
    every in-range reading gdb makes must be accepted; otherwise (a count, a
    choice) only plain literals must, and other readings may be refused."""
    bad = _not_integer(tok)
    if bad is not None:
        return bad
    if tok.kind == FLOAT:  # integral double: either is fine, never another value
        value = int(tok.value)
        return Judgement(EITHER, "an integral double", frozenset([value])) if lo <= value <= hi else \
            _refuse("does not fit")
    value = tok.reading(live)
    assert value is not None
    if tok.kind == FUNC:
        return Judgement(EITHER, "a function, read as its address", frozenset([value])) if lo <= value <= hi \
            else _refuse("does not fit")
    if lo <= value <= hi:
        if strict or tok.literal:
            return Judgement.accept(value)
        return Judgement(EITHER, "gdb syntax in a count/choice slot", frozenset([value]))
    if value < 0 and wrap_negative and value >= -(1 << 63):
        return Judgement(EITHER, "a negative address: refused, or gdb's reading as an address",
                         frozenset([value & MASK64]))
    if value < 0:
        return _refuse("a negative number is refused here")
    return _refuse(f"does not fit in [{lo:#x}, {hi:#x}]")


def judge_selector(tok: Tok, live: Live) -> Judgement:
    j = judge_number(tok, live, 0, 0xFFFF)
    if j.verdict == REFUSE or j.values is None:
        return j
    selector = next(iter(j.values))
    if selector & 4:
        return Judgement(EITHER, "TI=1 names the LDT", j.values)
    if (selector >> 3) in live.gdt_entries:
        return j
    if (selector | 7) <= live.gdt_limit:
        return Judgement(EITHER, "the second half of a 16-byte descriptor", j.values)
    return _refuse("a selector past the GDT limit is refused")


def judge_vector(tok: Tok, live: Live) -> Judgement:
    gates = min(256, (live.idt_limit + 1) // 16)
    return judge_number(tok, live, 0, gates - 1)


def msr_word_number(text: str) -> Optional[int]:
    key = text.strip().upper()
    for prefix in ("IA32_", "MSR_"):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return MSR_NUMBERS.get(key)


def judge_msr(tok: Tok, live: Live) -> Judgement:
    if not tok.text:   # '' drawn from the names or from the numbers: the same word
        return Judgement(EITHER, "an empty name: refused, or taken as no name")
    if tok.kind == WORD:
        if not tok.text:
            return Judgement(EITHER, "an empty name: refused, or taken as no name")
        number = msr_word_number(tok.text)
        return Judgement.accept(number) if number is not None else _refuse("an unknown MSR name is refused")
    if tok.kind == STRING:
        return Judgement(EITHER, "a quoted name")
    if tok.kind in (PTR, CODEPTR, CHARPTR):
        value = tok.reading(live)
        return Judgement(EITHER, "an address as an MSR number", frozenset([value])) if value <= 0xFFFFFFFF \
            else _refuse("an MSR number is 32 bits")
    return judge_number(tok, live, 0, 0xFFFFFFFF, strict=False)


def judge_opsize(tok: Tok, live: Live) -> Judgement:
    j = judge_number(tok, live, 0, MASK64, strict=False)
    if j.verdict == REFUSE:
        return j
    if j.values and not j.values <= {32, 64}:
        return _refuse("--opsize is 32 or 64")
    if j.verdict == ACCEPT and tok.text not in ("32", "64"):
        return Judgement(EITHER, "32 or 64 written another way", j.values)
    return j


def judge_iret_opsize(tok: Tok, live: Live) -> Judgement:
    j = judge_number(tok, live, 0, MASK64, strict=False)
    if j.verdict == REFUSE:
        return j
    if j.values and not j.values <= {16, 32, 64}:
        return _refuse("--opsize is 16, 32 or 64")
    if j.verdict == ACCEPT and tok.text not in ("16", "32", "64"):
        return Judgement(EITHER, "16, 32 or 64 written another way", j.values)
    return j


def judge_choice(choices: tuple[str, ...]):
    def judge(tok: Tok, live: Live) -> Judgement:
        if tok.text in choices:
            return Judgement.accept(tok.text)
        if tok.text.lower() in choices:
            return Judgement(EITHER, "another case", frozenset([tok.text.lower()]))
        return _refuse(f"one of {', '.join(choices)}")
    return judge


def judge_file(tok: Tok, live: Live) -> Judgement:
    if tok.text == live.elf:
        return Judgement.accept(tok.text)
    return _refuse("not a readable ELF file")


def judge_cpu_index(tok: Tok, live: Live) -> Judgement:
    """A vCPU index of a saved machine state: 0..4095."""
    return judge_number(tok, live, 0, 4095)


_VECTOR_END = r"\s*(0[xX][0-9a-fA-F]+|[0-9]+)\s*"


def judge_vectors(tok: Tok, live: Live) -> Judgement:
    """`fault-watch on --vectors LIST`: vectors 0..31, single or LOW-HIGH,
    comma-separated (help fault-watch).  A decimal with a leading zero may be
    refused or read as decimal; anything else outside that form is refused."""
    vectors: set[int] = set()
    odd = False
    for part in tok.text.split(","):
        m = re.fullmatch(_VECTOR_END + r"(?:-" + _VECTOR_END + ")?", part)
        if m is None:
            return _refuse("not a list of vectors such as 0-31 or 13,14")
        ends = [e for e in m.groups() if e is not None]
        odd |= any(len(e) > 1 and e[0] == "0" and e[1] not in "xX" for e in ends)
        lo, hi = (int(e, 16) if e[:2].lower() == "0x" else int(e, 10) for e in (ends[0], ends[-1]))
        if not lo <= hi <= 31:
            return _refuse("vectors are 0..31, low to high")
        vectors.update(range(lo, hi + 1))
    value = tuple(sorted(vectors))
    if odd:
        return Judgement(EITHER, "a leading zero", frozenset([value]))
    return Judgement.accept(value)


def addr64(tok: Tok, live: Live) -> Judgement:
    return judge_number(tok, live, 0, MASK64, wrap_negative=True)


def pkru(tok: Tok, live: Live) -> Judgement:
    return judge_number(tok, live, 0, 0xFFFFFFFF)


def phys(tok: Tok, live: Live) -> Judgement:
    j = judge_number(tok, live, 0, MASK64)
    if j.verdict == ACCEPT and next(iter(j.values)) >> 52:
        return Judgement(EITHER, "above MAXPHYADDR", j.values)
    return j


def count(tok: Tok, live: Live) -> Judgement:
    return judge_number(tok, live, 0, MASK64, strict=False)


def offset(tok: Tok, live: Live) -> Judgement:
    j = judge_number(tok, live, 0, MASK64, wrap_negative=True)
    if j.verdict == EITHER and j.values and tok.kind == INT:
        # an offset may also be kept as the negative number gdb read
        return Judgement(EITHER, j.rule, j.values | {tok.reading(live)})
    return j


# ---------------------------------------------------------------------------
# Commands: their slots, from each command's `help`
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    name: str                        # "VA", "--pkru" ...
    field: str                       # the key the test checks the value under
    judge: object                    # (Tok, Live) -> Judgement
    pool: tuple = ()                 # the words to draw from
    nvalues: int = 1                 # 2 for --range
    optional: bool = True            # positionals only
    group: str = ""                  # mutually exclusive flags
    numeric: bool = True             # takes a number (a negative one must never read as an option)


FLAG = None


@dataclass(frozen=True)
class Spec:
    positionals: tuple[Slot, ...]
    options: tuple[Slot, ...]        # judge None: a flag


def _flag(name: str, group: str = "") -> Slot:
    return Slot(name, name.lstrip("-"), FLAG, group=group)


COMMANDS: dict[str, Spec] = {
    "info gdt": Spec((Slot("SELECTOR", "selector", judge_selector, NUMBERS),), (_flag("--no-star"),)),
    "info tss": Spec((), ()),
    "info idt": Spec((Slot("VECTOR", "vector", judge_vector, NUMBERS),), ()),
    "info msr": Spec((Slot("MSR", "msr", judge_msr, MSR_WORDS + NUMBERS),), ()),
    "info cpl": Spec((), ()),
    "pagewalk": Spec(
        (Slot("VA", "va", addr64, NUMBERS, optional=False),),
        (Slot("--access", "access", judge_choice(("read", "write", "exec")), ACCESS_WORDS, numeric=False),
         _flag("--user", "mode"), _flag("--supervisor", "mode"),
         Slot("--cr3", "cr3", addr64, NUMBERS), _flag("--kpti"),
         Slot("--pkru", "pkru", pkru, NUMBERS), _flag("--fresh"))),
    "ptdump": Spec(
        (),
        (_flag("--user", "who"), _flag("--kernel", "who"), _flag("--wx"),
         Slot("--range", "range", addr64, NUMBERS, nvalues=2),
         Slot("--phys", "phys", phys, NUMBERS), Slot("--limit", "limit", count, NUMBERS),
         Slot("--cr3", "cr3", addr64, PTDUMP_CR3), _flag("--kpti"), _flag("--fresh"))),
    "sysret-check": Spec((Slot("ADDRESS", "address", addr64, NUMBERS),),
                         (Slot("--opsize", "opsize", judge_opsize, NUMBERS),)),
    "sysret-watch": Spec((Slot("ACTION", "action", judge_choice(("on", "off", "status")), ACTION_WORDS,
                               optional=False, numeric=False),),
                         (_flag("--warnings"), _flag("--no-wrmsr"), _flag("--no-iret"))),
    "iret-check": Spec((Slot("ADDRESS", "address", addr64, NUMBERS),),
                       (Slot("--opsize", "opsize", judge_iret_opsize, NUMBERS),)),
    "fault-watch": Spec((Slot("ACTION", "action", judge_choice(("on", "off", "status")), ACTION_WORDS,
                              optional=False, numeric=False),),
                        (Slot("--vectors", "vectors", judge_vectors, VECTOR_WORDS, numeric=False),
                         _flag("--user"), _flag("--record"))),
    "info fault": Spec((), (_flag("--all"),)),
    "gdbext-symbols": Spec((Slot("FILE", "file", judge_file, (), optional=False, numeric=False),
                            Slot("OFFSET", "offset", offset, NUMBERS)), ()),
    "gdbext-status": Spec((), ()),
    # Connected to a live guest, both always refuse (a saved state opens only
    # in place of a target; gdbext-cpu picks a saved vCPU).  gdbext-save is
    # not fuzzed: its FILE words would be written to (/etc/passwd as root).
    "gdbext-open": Spec((Slot("FILE", "file", judge_file, (), numeric=False),),
                        (Slot("--cpu", "cpu", judge_cpu_index, NUMBERS), _flag("--close"),
                         _flag("--no-sidecar"))),
    "gdbext-cpu": Spec((Slot("N", "cpu", judge_cpu_index, NUMBERS),), ()),
}

JUNK_OPTIONS = ("--nope", "--JSON", "-j", "--json=1", "---json", "-x", "--no-such-option=3")


@dataclass(frozen=True)
class Unit:
    """One positional, or one option with its values, as typed."""

    slot: Optional[Slot]             # None: --json, or a junk option
    words: tuple[str, ...]
    toks: tuple[Tok, ...] = ()
    junk: bool = False
    extra: bool = False              # a positional past the last one the command takes

    @property
    def name(self) -> str:
        return self.slot.name if self.slot else self.words[0]


def quote(word: str) -> str:
    """The word as a user would type it: bare unless shlex needs quotes."""
    if word and not any(c in word for c in " \t\"'\\"):
        return word
    return shlex.quote(word)


@dataclass(frozen=True)
class Case:
    """One input: a command line, or a function evaluated with print/output."""

    text: str
    command: str                      # "pagewalk", "$msr" ...
    units: tuple[Unit, ...] = ()
    expect: str = ""                  # set for fixed cases that are not judged from units
    rule: str = ""
    func_args: tuple[Tok, ...] = ()
    form: str = ""                    # print | output | print/x (functions)
    help: bool = False
    origin: str = "generated"         # or "issue": quoted in issue 15

    @property
    def json(self) -> bool:
        return any(u.words == ("--json",) for u in self.units)


def command_case(command: str, units: list[Unit], origin: str = "generated") -> Case:
    words = [command] + [quote(w) for u in units for w in u.words]
    return Case(" ".join(words), command, tuple(units), origin=origin)


# ---------------------------------------------------------------------------
# The verdict for a command case
# ---------------------------------------------------------------------------


@dataclass
class Expectation:
    verdict: str
    rules: list[str]
    values: dict[str, frozenset]      # field -> values the accepted command must have used
    negatives: list[Unit]             # units holding a word argparse could take for an option


def expect(case: Case, live: Live) -> Expectation:
    if case.expect:
        return Expectation(case.expect, [case.rule], {}, [])
    if case.func_args or case.command.startswith("$"):
        return expect_function(case, live)
    spec = COMMANDS[case.command]
    verdicts: list[tuple[str, str]] = []
    values: dict[str, frozenset] = {}
    negatives: list[Unit] = []
    positionals = [u for u in case.units if u.slot is not None and u.slot in spec.positionals]
    groups: dict[str, int] = {}
    for u in case.units:
        if u.junk:
            verdicts.append((REFUSE, f"an unknown option {u.words[0]} is refused"))
            continue
        if u.slot is None or u.extra:
            continue  # --json; a word too many (counted below)
        if u.slot.group:
            groups[u.slot.group] = groups.get(u.slot.group, 0) + 1
        if u.slot.judge is FLAG:
            continue
        if len(u.toks) < u.slot.nvalues:
            verdicts.append((REFUSE, f"{u.slot.name} without its value is refused"))
            continue
        if u.slot.numeric and any(t.negative_word for t in u.toks):
            negatives.append(u)
        judged = [u.slot.judge(t, live) for t in u.toks]
        for j in judged:
            verdicts.append((j.verdict, f"{u.slot.name}: {j.rule}" if j.rule else ""))
        if u.slot.nvalues == 2 and all(j.verdict == ACCEPT for j in judged):
            lo, hi = (next(iter(j.values)) for j in judged)
            if lo < hi:
                values[u.slot.field] = frozenset([(lo, hi)])
            else:
                verdicts.append((REFUSE, "--range START END needs START < END"))
        elif u.slot.nvalues == 1 and judged[0].values is not None:
            values[u.slot.field] = judged[0].values
    for group, n in groups.items():
        if n > 1:
            verdicts.append((REFUSE, f"mutually exclusive options ({group}) are refused together"))
    if any(u.extra for u in positionals):
        verdicts.append((REFUSE, "too many arguments are refused"))
    given = {u.slot.name for u in positionals if not u.extra}
    for slot in spec.positionals:
        if not slot.optional and slot.name not in given:
            verdicts.append((REFUSE, f"{slot.name} is required"))
    if case.command == "fault-watch" and values.get("action") and "on" not in values["action"] and any(
            u.slot is not None and u.slot.name in ("--vectors", "--user", "--record") for u in case.units):
        verdicts.append((REFUSE, "--vectors, --user and --record go with `on` only"))
    if case.command == "info fault":
        verdicts.append((EITHER, "no exception caught yet: a one-line refusal"))
    if case.command == "gdbext-open":
        verdicts.append((REFUSE, "gdbext-open refuses while gdb is connected to a target"))
    if case.command == "gdbext-cpu":
        verdicts.append((REFUSE, "gdbext-cpu needs an open saved machine state"))
    refusals = [r for v, r in verdicts if v == REFUSE]
    if refusals:
        return Expectation(REFUSE, refusals, values, negatives)
    eithers = [r for v, r in verdicts if v == EITHER]
    return Expectation(EITHER if eithers else ACCEPT, eithers, values, negatives)


def expect_function(case: Case, live: Live) -> Expectation:
    name, args = case.command, case.func_args
    if name == "$cpl":
        if args:
            return Expectation(REFUSE, ["$cpl() takes no argument"], {}, [])
        return Expectation(ACCEPT, [], {"value": frozenset([live.cpl])}, [])
    if name == "$msr":
        if len(args) != 1:
            return Expectation(REFUSE, ["$msr() takes exactly one argument"], {}, [])
        tok = args[0]
        if tok.kind == STRING:
            number = msr_word_number(tok.text.strip('"'))
            if number is None:
                if tok.text == '"0xc0000081"':
                    return Expectation(EITHER, ["a number in a string"], {}, [])
                return Expectation(REFUSE, ["an unknown MSR name is refused"], {}, [])
            return Expectation(ACCEPT, [], _msr_value(live, number), [])
        if tok.kind in (PTR, CODEPTR):
            return Expectation(REFUSE, ["an address is not an MSR number or name"], {}, [])
        if tok.kind == CHARPTR:
            return Expectation(EITHER, ["a char * may be read as a name"], {}, [])
        j = judge_number(tok, live, 0, 0xFFFFFFFF)
        if j.verdict == REFUSE or not j.values:
            return Expectation(j.verdict, [f"$msr(): {j.rule}"], {}, [])
        number = next(iter(j.values))
        if number not in MSR_NUMBERS.values():
            # hardware raises #GP for an MSR it lacks: a one-line refusal is right too
            return Expectation(EITHER, ["an MSR gdbext has no name for"], {}, [])
        return Expectation(j.verdict, [j.rule] if j.rule else [], _msr_value(live, number), [])
    if name == "$sysret_ok":
        if len(args) > 1:
            return Expectation(REFUSE, ["$sysret_ok() takes at most one argument"], {}, [])
        if not args:
            return Expectation(ACCEPT, [], {"value": frozenset([live.sysret_ok[None]])}, [])
        j = judge_number(args[0], live, 0, MASK64)
        if j.verdict == REFUSE or not j.values:
            return Expectation(REFUSE, [f"$sysret_ok(): {j.rule}"], {}, [])
        size = next(iter(j.values))
        if size not in (32, 64):
            return Expectation(REFUSE, ["$sysret_ok(N): N is 32 or 64"], {}, [])
        return Expectation(j.verdict, [j.rule] if j.rule else [], {"value": frozenset([live.sysret_ok[size]])}, [])
    if name == "$iret_ok":
        # 0 or 1: the frame at the stopped RSP is whatever it is; what matters
        # here is that bad arguments are refused in one line.
        either = {"value": frozenset([0, 1])}
        if len(args) > 1:
            return Expectation(REFUSE, ["$iret_ok() takes at most one argument"], {}, [])
        if not args:
            return Expectation(ACCEPT, [], either, [])
        j = judge_number(args[0], live, 0, MASK64)
        if j.verdict == REFUSE or not j.values:
            return Expectation(REFUSE, [f"$iret_ok(): {j.rule}"], {}, [])
        if next(iter(j.values)) not in (16, 32, 64):
            return Expectation(REFUSE, ["$iret_ok(N): N is 16, 32 or 64"], {}, [])
        return Expectation(j.verdict, [j.rule] if j.rule else [], either, [])
    raise KeyError(name)


def _msr_value(live: Live, number: int) -> dict[str, frozenset]:
    return {"value": frozenset([live.msrs[number]])} if number in live.msrs else {}


# ---------------------------------------------------------------------------
# Generating the cases
# ---------------------------------------------------------------------------


def _value_words(rng: random.Random, slot: Slot, live_files: dict[str, str]) -> list[Tok]:
    toks = []
    for _ in range(slot.nvalues):
        if slot.name == "FILE":
            word = rng.choice(FILE_WORDS)
            toks.append(Tok(live_files.get(word, word), WORD))
            continue
        pool = slot.pool
        if rng.random() < 0.2:  # a wrong type: names to number slots, numbers to name slots
            pool = NAMES if slot.pool and slot.pool[0].kind != WORD else NUMBERS
        toks.append(rng.choice(pool))
    return toks


def random_command(rng: random.Random, command: str, files: dict[str, str]) -> Case:
    spec = COMMANDS[command]
    positionals: list[Unit] = []
    for slot in spec.positionals:
        if slot.optional and rng.random() < 0.3:
            break  # later optional positionals need this one
        if not slot.optional and rng.random() < 0.05:
            break  # a required one missing
        toks = _value_words(rng, slot, files)
        positionals.append(Unit(slot, tuple(t.text for t in toks), tuple(toks)))
    if spec.positionals and len(positionals) == len(spec.positionals) and rng.random() < 0.1:  # one too many
        extra = rng.choice(NUMBERS)
        positionals.append(Unit(spec.positionals[-1], (extra.text,), (extra,), extra=True))
    options: list[Unit] = []
    flags_and_values = [s for s in spec.options if rng.random() < 0.35]
    for slot in flags_and_values:
        if slot.judge is FLAG:
            options.append(Unit(slot, (slot.name,)))
        else:
            toks = _value_words(rng, slot, files)
            if rng.random() < 0.03:
                toks = toks[:-1]  # the option without (all of) its values
            options.append(Unit(slot, (slot.name,) + tuple(t.text for t in toks), tuple(toks)))
    if rng.random() < 0.5:
        options.append(Unit(None, ("--json",)))
    if rng.random() < 0.06:
        options.append(Unit(None, (rng.choice(JUNK_OPTIONS),), junk=True))
    # Every option in every position: options go anywhere between the
    # positionals (which keep their order).  An option whose values were cut
    # short can only go last, or it would take the next word as its value.
    dangling = [u for u in options if u.slot is not None and u.slot.judge is not FLAG
                and len(u.toks) < u.slot.nvalues]
    placed = [u for u in options if u not in dangling]
    units: list[Unit] = list(positionals)
    for u in placed:
        units.insert(rng.randint(0, len(units)), u)
    units += dangling
    return command_case(command, units)


def function_case(name: str, args: tuple[Tok, ...], form: str, origin: str = "generated") -> Case:
    call = f"{name}({', '.join(t.text for t in args)})"
    return Case(f"{form} {call}", name, func_args=args, form=form, origin=origin)


def random_function(rng: random.Random) -> Case:
    name = rng.choice(("$cpl", "$msr", "$msr", "$sysret_ok", "$sysret_ok", "$iret_ok"))
    usual = {"$cpl": 0, "$msr": 1, "$sysret_ok": rng.choice((0, 1)), "$iret_ok": rng.choice((0, 1))}[name]
    r = rng.random()
    nargs = usual if r < 0.6 else rng.choice([n for n in (0, 1, 2, 3) if n != usual])
    args = tuple(rng.choice(FUNCTION_ARGS) for _ in range(nargs))
    return function_case(name, args, rng.choice(("print", "output", "print/x")))


def fixed_cases(files: dict[str, str]) -> list[Case]:
    """What issue 15 names, what every help shows, and each command once as it should work."""
    cases: list[Case] = []
    for command in COMMANDS:
        cases.append(Case(f"help {command}", command, expect=ACCEPT, rule="help", help=True))
        cases.append(Case(f"{command} --help", command, expect=ACCEPT, rule="--help", help=True))
    cases.append(Case("info gdt -h", "info gdt", expect=ACCEPT, rule="-h", help=True))
    cases.append(Case("pagewalk 'unterminated", "pagewalk", expect=REFUSE, rule="unbalanced quote"))

    def tok(text: str) -> Tok:
        return next(t for t in NUMBERS + MSR_WORDS + ACTION_WORDS + ACCESS_WORDS + VECTOR_WORDS if t.text == text)

    def cmd(command: str, *parts, origin: str = "issue") -> Case:
        spec = COMMANDS[command]
        units = []
        positional = iter(spec.positionals)
        for part in parts:
            if part == "--json":
                units.append(Unit(None, ("--json",)))
            elif isinstance(part, tuple):  # (option, value words...)
                slot = next(s for s in spec.options if s.name == part[0])
                toks = tuple(tok(w) for w in part[1:])
                units.append(Unit(slot, (part[0],) + part[1:], toks))
            elif part.startswith("--") and any(s.name == part for s in spec.options):
                units.append(Unit(next(s for s in spec.options if s.name == part), (part,)))
            else:
                slot = next(positional)
                t = Tok(files[part], WORD) if part in files else tok(part)
                units.append(Unit(slot, (t.text,), (t,)))
        return command_case(command, units, origin)

    cases += [
        cmd("pagewalk", "0x10000000000000000"), cmd("pagewalk", "0x10000000000000000", "--json"),
        cmd("pagewalk", "1.5"), cmd("pagewalk", "-0x1000"), cmd("pagewalk", "$rsp-8"),
        cmd("pagewalk", "$rsp-8", "--json"), cmd("pagewalk", "$rsp", ("--pkru", "-1")),
        cmd("pagewalk", "0x800000000000", "--json"), cmd("pagewalk", "1_000"),
        cmd("info gdt", "-0x10"), cmd("info gdt", "1.5"), cmd("info gdt", "0x10000000000000000"),
        cmd("info idt", "1.5"), cmd("info idt", "-1"),
        cmd("ptdump", ("--phys", "-1")), cmd("ptdump", ("--limit", "0")),
        cmd("ptdump", ("--limit", "0"), "--json"), cmd("ptdump", ("--limit", "010"), "--json"),
        cmd("ptdump", ("--limit", "0x10"), "--json"),
        cmd("sysret-check", "-1"), cmd("sysret-check", "0x10000000000000000"), cmd("sysret-check", "1.5"),
        cmd("iret-check", "-1"), cmd("iret-check", "0x10000000000000000"), cmd("iret-check", ("--opsize", "8")),
        cmd("gdbext-symbols", "@elf", "0x10000000000000000"),
        cmd("gdbext-symbols", "@elf", "--json", "0x10"),
        cmd("info msr", "0x12345678"), cmd("info msr", "1_000"),
        # causes an earlier seed drew: pinned so that every seed covers them
        cmd("pagewalk", "$rsp", ("--pkru", "&kmain"), "--json"),
        cmd("ptdump", ("--limit", "99999999999999999999999999")), cmd("ptdump", ("--phys", "-2.5")),
        cmd("gdbext-symbols", "@elf", "64.5"), cmd("info gdt", "0o17"),
    ]
    # each command as it is meant to be used, with and without --json
    for parts in (("info gdt",), ("info gdt", "$cs"), ("info gdt", "--no-star"), ("info tss",), ("info idt",),
                  ("info idt", "14"), ("info msr",), ("info msr", "STAR"), ("info cpl",),
                  ("pagewalk", "$rip"), ("pagewalk", "$rsp-8", ("--access", "write"), "--user"),
                  ("ptdump",), ("ptdump", "--wx"), ("ptdump", ("--range", "0x400000", "0x7ffffff00000")),
                  ("sysret-check",), ("sysret-check", ("--opsize", "32")), ("sysret-watch", "status"),
                  ("sysret-watch", "on"), ("sysret-watch", "off"), ("gdbext-symbols", "@elf"),
                  ("iret-check",), ("iret-check", ("--opsize", "32")), ("iret-check", "$rip"),
                  ("sysret-watch", "on", "--no-iret"), ("sysret-watch", "off"),
                  ("fault-watch", "status"), ("fault-watch", "on"), ("fault-watch", "on", "--user"),
                  ("fault-watch", "on", ("--vectors", "13,14"), "--record"), ("fault-watch", "off"),
                  ("info fault",), ("info fault", "--all")):
        cases.append(cmd(*parts, origin="usual"))
        cases.append(cmd(*parts, "--json", origin="usual"))
    arg = {t.text: t for t in FUNCTION_ARGS}
    for name, args in (("$cpl", ("1",)), ("$msr", ()), ("$msr", ("0xc0000081", "1")), ("$msr", ("$rip",)),
                       ("$sysret_ok", ("16",)), ("$sysret_ok", ('"x"',)), ("$sysret_ok", ("0x20",)),
                       ("$sysret_ok", ("32", "64")), ("$sysret_ok", ("1.5",)), ("$cpl", ()),
                       ("$msr", ('"STAR"',)), ("$msr", ("0xc0000080",)), ("$msr", ("-1",)), ("$msr", ("1.5",)),
                       ("$msr", ("kmain",)), ("$msr", ("0x100000000",)), ("$sysret_ok", ()),
                       ("$sysret_ok", ("64",)), ("$sysret_ok", ("32",)), ("$msr", ("(char*)0x1000",)),
                       ("$msr", ("$nonexistent",)), ("$msr", ('"NOPE"',)), ("$iret_ok", ()),
                       ("$iret_ok", ("64",)), ("$iret_ok", ("8",)), ("$iret_ok", ("16", "32")),
                       ("$iret_ok", ('"x"',))):
        cases.append(function_case(name, tuple(arg[a] for a in args), "print", origin="issue"))
    return cases


def generate(seed: int, n_commands: int, n_functions: int, files: dict[str, str]) -> list[Case]:
    """The fixed cases, then n_commands random command lines (spread over
    every command) and n_functions random function calls, interleaved."""
    rng = random.Random(seed)
    names = list(COMMANDS)
    generated = [random_command(rng, names[i % len(names)], files) for i in range(n_commands)]
    generated += [random_function(rng) for _ in range(n_functions)]
    rng.shuffle(generated)
    return fixed_cases(files) + generated
