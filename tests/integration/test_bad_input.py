"""Bad input, generated: every command, option and convenience function of
gdbext, in real gdb against the bundled kernel under QEMU, at CPL 0 and CPL 3.

A few hundred inputs per session (tests/integration/fuzz_inputs.py builds
them from a fixed seed, and says what a correct gdbext does with each): junk,
empty, huge, negative, fractional, non-canonical, wrong types, too many
arguments, every option in every position, --json with all of them, gdb
expressions.  For every one:

- no Python traceback anywhere in what gdb printed ("Traceback", "Error
  occurred in Python", "Python Exception");
- a refusal is exactly one non-empty line, and nothing else is printed;
- refused or accepted as issue 15's rules say (numbers read as gdb reads them,
  a value that does not fit is refused, not wrapped; a negative number is not
  an option); an accepted input used the value gdb reads (checked in the JSON
  document or the header line), and --json printed one JSON document;
- the guest is as it was: gdb's general registers, `monitor info registers N`
  of every vCPU, the bytes at RIP and around RSP and the GDT, hashed after
  each input; and the full state_digest() of test_info_live before and after
  the whole batch.

Every failure is collected, and the test fails once at the end with all of
them grouped by cause (for a Python exception: its type and the innermost
gdbext frame of the traceback).  GDBEXT_FUZZ_SEED=N reruns with other inputs.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

import fuzz_inputs as fz
from gdbext.tools.driver import GdbTimeout
from test_info_live import log_value, monitor, run_to, state_digest, symbol_address

pytestmark = pytest.mark.qemu

SEED = int(os.environ.get("GDBEXT_FUZZ_SEED", "15"))
N_COMMANDS = int(os.environ.get("GDBEXT_FUZZ_COMMANDS", "200"))  # random command lines per session
N_FUNCTIONS = int(os.environ.get("GDBEXT_FUZZ_FUNCTIONS", "70"))  # random function calls per session
SMP = 2                 # so that "every vCPU" means more than one
ROOT = Path(__file__).resolve().parents[2]

PYTHON_ERRORS = ("Traceback", "Error occurred in Python", "Python Exception")
# argparse's words when it took a word for an option (or never saw a value)
# gdb's own lexer warns so (before its error) for a non-ASCII word such as ١٢
# gdb 18 prints errors and warnings on the console too, after these marks
# (its "emoji" style): an error's line is then the message itself.
GDB_MARKS = ("\u274c\ufe0f ", "\u26a0\ufe0f ")


def _unmarked(line: str) -> str:
    for mark in GDB_MARKS:
        line = line.removeprefix(mark)
    return line


GDB_CHARSET_WARNING = re.compile(r"^(warning: charset conversion failure for |You may have the wrong value for 'set ada source-charset')")
OPTION_CONFUSION = ("unrecognized arguments", "arguments are required", "expected one argument",
                    "expected 2 arguments")


# ---------------------------------------------------------------------------
# Talking to gdb
# ---------------------------------------------------------------------------

@dataclass
class Answer:
    ok: bool
    printed: str      # everything gdb printed for the command: console, log, output, target streams
    message: str      # the error message when it failed
    seconds: float


def run(gdb, text: str) -> Answer:
    """One CLI command, once; what it printed and how it ended."""
    quoted = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    t0 = time.monotonic()
    result, seen = gdb.mi(f"-interpreter-exec console {quoted}", final=("done", "error"))
    printed = "".join(m.get("payload") or "" for m in seen if m.get("type") in ("console", "log", "output", "target"))
    ok = result.get("message") == "done"
    message = "" if ok else str((result.get("payload") or {}).get("msg", ""))
    return Answer(ok, printed, message, time.monotonic() - t0)


def text_of(gdb, command: str) -> str:
    """What a read-only command printed, its error included (both are state)."""
    answer = run(gdb, command)
    return answer.printed + ("" if answer.ok else f"\nERROR: {answer.message}")


def xb_bytes(text: str) -> bytes:
    """The bytes of an `x/Nxb` dump."""
    out = bytearray()
    for line in text.splitlines():
        if ":" in line:
            out += bytes(int(b, 16) for b in re.findall(r"0x([0-9a-f]{2})\b", line.split(":", 1)[1]))
    return bytes(out)


# ---------------------------------------------------------------------------
# The guest's state
# ---------------------------------------------------------------------------

# Runs inside gdb's own Python (not gdbext's): the state's parts hashed in
# one round trip instead of one per part.
STATE_PY = """
def _fuzz_state(commands):
    import gdb, hashlib, json
    parts = {}
    for name, command in commands:
        try:
            text = gdb.execute(command, to_string=True)
        except gdb.error as exc:
            text = "ERROR: %s" % exc
        parts[name] = hashlib.sha256(text.encode()).hexdigest()
    print(json.dumps(parts))
"""


@dataclass
class Guest:
    cpus: int
    gdt_base: int
    gdt_limit: int

    def commands(self) -> list[tuple[str, str]]:
        parts = [("gdb registers", "info registers")]
        parts += [(f"monitor info registers {cpu}", f"monitor info registers {cpu}") for cpu in range(self.cpus)]
        parts += [("bytes at RIP", "x/32xb $pc"), ("bytes below RSP", "x/16xb $rsp-16"),
                  ("bytes at RSP", "x/16xb $rsp"),
                  ("GDT bytes", f"x/{self.gdt_limit + 1}xb {self.gdt_base:#x}")]
        return parts

    def cheap(self, gdb) -> dict[str, str]:
        """Hashes of what must not change, by part (cheap enough for every input)."""
        answer = run(gdb, f"python _fuzz_state({self.commands()!r})")
        assert answer.ok, f"reading the guest's state failed: {answer.message}"
        return json.loads(answer.printed)

    def full(self, gdb) -> dict[str, str]:
        state = self.cheap(gdb)
        state["state_digest (all registers)"] = state_digest(gdb)
        return state


def gdt_entries(table: bytes, limit: int) -> frozenset[int]:
    """Indices where a descriptor starts; a long-mode system descriptor (LDT,
    TSS, gates: S=0 with type 2, 9, B, C, E, F) takes two slots (SDM Vol. 3A 3.5)."""
    starts, index = set(), 0
    while index * 8 + 7 <= limit:
        q = int.from_bytes(table[index * 8:index * 8 + 8], "little")
        starts.add(index)
        system = not (q >> 44) & 1 and ((q >> 40) & 0xF) in (2, 9, 0xB, 0xC, 0xE, 0xF)
        index += 2 if system and q else 1
    return frozenset(starts)


def read_live(gdb, qemu, cpl: int) -> tuple[fz.Live, Guest]:
    """The oracle's view of the stopped guest, from gdb and QEMU (not from gdbext)."""
    regs = {m.group(1): int(m.group(2), 16)
            for m in re.finditer(r"^(\w+)\s+(0x[0-9a-f]+)", text_of(gdb, "info registers"), re.MULTILINE)}
    hmp = monitor(gdb, 0)
    assert hmp.cpl == cpl, f"stopped at CPL {hmp.cpl}, not {cpl}"
    table = xb_bytes(text_of(gdb, f"x/{hmp.gdt.limit + 1}xb {hmp.gdt.base:#x}"))
    assert len(table) == hmp.gdt.limit + 1, "the GDT is not readable through gdb"
    serial = qemu.serial_text()
    msrs = {
        fz.MSR_NUMBERS["EFER"]: regs["efer"], fz.MSR_NUMBERS["FS_BASE"]: regs["fs_base"],
        fz.MSR_NUMBERS["GS_BASE"]: regs["gs_base"], fz.MSR_NUMBERS["KERNEL_GS_BASE"]: regs["k_gs_base"],
        fz.MSR_NUMBERS["STAR"]: log_value(serial, "syscall msrs:", "star"),
        fz.MSR_NUMBERS["LSTAR"]: log_value(serial, "syscall msrs:", "lstar"),
        fz.MSR_NUMBERS["SFMASK"]: log_value(serial, "syscall msrs:", "sfmask"),
    }
    # The bundled kernel's sysretq at enter_user_sysret is right (scenario ok);
    # in ring 3 no sysret works (SR-CPL); a sysretl would return 64-bit user
    # code to compatibility mode (SR-OPSIZE).
    ok64 = 1 if cpl == 0 else 0
    live = fz.Live(
        cpl=cpl, regs=regs,
        symbols={name: symbol_address(gdb, name) for name in ("kmain", "user_main")},
        gdt_limit=hmp.gdt.limit, gdt_entries=gdt_entries(table, hmp.gdt.limit), idt_limit=hmp.idt.limit,
        elf=str(ROOT / "kernel" / "build" / "kernel.elf"), not_elf=str(ROOT / "kernel" / "build" / "BOOTX64.EFI"),
        msrs=msrs, sysret_ok={None: ok64, 64: ok64, 32: 0})
    return live, Guest(SMP, hmp.gdt.base, hmp.gdt.limit)


# ---------------------------------------------------------------------------
# Judging one answer
# ---------------------------------------------------------------------------

@dataclass
class Finding:
    cause: str        # what groups findings
    case: str         # the input
    detail: str       # what gdbext did


def python_error_cause(text: str) -> str:
    """What a Python exception in gdb's output comes from: its type and the
    innermost gdbext frame of the traceback ("Python OverflowError at
    gdbext/commands/sysret.py:74 in _site_opsize()"), else its message with
    the numbers blanked (an arity TypeError is raised before any frame)."""
    m = (re.search(r"Python Exception <class '([\w.]+)'>", text)
         or re.search(r"^([\w.]*(?:Error|Exception|error)): ", text, re.MULTILINE))
    etype = m.group(1) if m else None
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', text)
    own = [f for f in frames if "/gdbext/" in f[0]]
    if own:
        path, line, func = own[-1]
        try:
            path = str(Path(path).resolve().relative_to(ROOT))
        except ValueError:
            pass
        if etype is None:
            m = re.search(r"^([\w.]+): ", text[text.rindex(f'line {line}, in {func}'):], re.MULTILINE)
            etype = m.group(1) if m else "exception"
        return f"Python {etype} at {path}:{line} in {func}()"
    m = re.search(r"Error occurred in Python: (.*)", text)
    message = m.group(1).split(") (see `help")[0].strip() if m else "?"
    message = re.sub(r"\b\d+\b", "N", message)
    return f"Python {etype or 'exception'}: {message[:100]}"


def short(text: str, n: int = 220) -> str:
    text = " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return text if len(text) <= n else text[:n] + "..."


def canonical(va: int) -> bool:
    top = va >> 47
    return top in (0, (1 << 17) - 1)


def parse_int(text: str) -> int:
    text = text.strip()
    return int(text, 16) if re.match(r"-?0x", text) else int(text)


def judge(case: fz.Case, exp: fz.Expectation, answer: Answer, live: fz.Live) -> list[Finding]:
    found: list[Finding] = []
    everything = answer.printed + "\n" + answer.message

    def add(cause: str, detail: str) -> None:
        found.append(Finding(cause, case.text, detail))

    if any(marker in everything for marker in PYTHON_ERRORS):
        add(python_error_cause(everything), short(answer.message or answer.printed))
        return found
    if not answer.ok:
        message = answer.message.strip()
        lines = [_unmarked(line) for line in answer.printed.strip().splitlines()]
        extra = "\n".join(line for line in lines if not GDB_CHARSET_WARNING.match(line))
        if not message or "\n" in message or extra not in ("", message):
            add(f"{case.command}: a refusal of more than one line",
                f"message {message!r}, printed {short(answer.printed)!r}")
        for unit in exp.negatives:
            negative = [t.text for t in unit.toks if t.negative_word]
            if any(word in message for word in OPTION_CONFUSION) and (
                    any(t in message for t in negative) or unit.name in message
                    or (unit.slot is not None and f"required: {unit.slot.field}" in message)):
                add(f"{case.command} {unit.name}: a negative number read as an option",
                    f"refused with {message!r}")
                break
        else:
            if exp.verdict == fz.ACCEPT:
                add(f"{case.command}: refuses what it must accept ({refusal_kind(message)})",
                    f"refused with {message!r}")
        return found
    # accepted
    if exp.verdict == fz.REFUSE:
        add(f"{case.command}: accepted, but {exp.rules[0]}", short(answer.printed))
        return found
    if case.help:
        if not answer.printed.strip():
            add(f"{case.command}: help printed nothing", "")
        return found
    if case.command.startswith("$"):
        found += check_function(case, exp, answer, live)
        return found
    doc = None
    if case.json:
        try:
            doc = json.loads(answer.printed)
        except ValueError:
            add(f"{case.command} --json: not one JSON document", short(answer.printed))
            return found
    elif not answer.printed.strip():
        add(f"{case.command}: accepted and printed nothing", "")
    for problem in check_values(case, exp, answer.printed, doc, live):
        add(f"{case.command}: {problem[0]}", problem[1])
    return found


def refusal_kind(message: str) -> str:
    """A refusal message with its particular values blanked, to group by."""
    text = re.sub(r"'[^']*'", "'…'", message)
    text = re.sub(r"-?0x[0-9a-f]+|-?\d+", "N", text)
    return text[:110]


def check_function(case: fz.Case, exp: fz.Expectation, answer: Answer, live: fz.Live) -> list[Finding]:
    out = answer.printed.strip()
    if case.form.startswith("print"):
        m = re.match(r"^\$\d+ = (.*)$", out, re.DOTALL)
        out = m.group(1).strip() if m else out
    try:
        value = parse_int(out)
    except ValueError:
        return [Finding(f"{case.command}: printed no integer", case.text, short(answer.printed))]
    wanted = exp.values.get("value")
    if wanted is not None and value & fz.MASK64 not in {v & fz.MASK64 for v in wanted}:
        return [Finding(f"{case.command}: wrong value", case.text,
                        f"printed {value:#x}, expected {' or '.join(hex(v) for v in sorted(wanted))}")]
    if case.command in ("$sysret_ok", "$iret_ok") and value not in (0, 1):
        return [Finding(f"{case.command}: not 0 or 1", case.text, out)]
    return []


def check_values(case: fz.Case, exp: fz.Expectation, printed: str, doc, live: fz.Live):
    """(problem, detail) for every value the accepted command did not take as gdb reads it."""
    want = exp.values
    flags = {u.words[0] for u in case.units if u.slot is not None and u.slot.judge is fz.FLAG}
    kpti = 1 << 12 if "--kpti" in flags else 0

    def differs(field: str, got) -> bool:
        return field in want and got not in want[field]

    def shown(field: str) -> str:
        return " or ".join(hex(v) if isinstance(v, int) else str(v) for v in sorted(want[field]))

    c = case.command
    if c == "pagewalk":
        if doc is not None:
            if differs("va", doc.get("va")):
                yield "walked another address than gdb reads", f"walked {doc.get('va')!r}, gdb reads {shown('va')}"
            if isinstance(doc.get("va"), int) and doc.get("canonical") != canonical(doc["va"]):
                yield "wrong canonical flag", f"va {doc['va']:#x} canonical={doc.get('canonical')}"
            ctx = doc.get("context") or {}
            if "pkru" in want and ctx.get("pkru") not in want["pkru"]:
                yield "--pkru: used another value than gdb reads", f"pkru {ctx.get('pkru')!r}, expected {shown('pkru')}"
            if "cr3" in want and ctx and ctx.get("cr3") not in {v ^ kpti for v in want["cr3"]}:
                yield "--cr3: used another value than gdb reads", f"cr3 {ctx.get('cr3')!r}, expected {shown('cr3')}"
        else:
            m = re.match(r"pagewalk:? (-?0x[0-9a-f]+)", printed)
            if m is None:
                yield "no address in the header line", short(printed, 120)
            elif differs("va", parse_int(m.group(1))):
                yield "walked another address than gdb reads", f"walked {m.group(1)}, gdb reads {shown('va')}"
    elif c == "ptdump":
        if doc is not None:
            filt = doc.get("filter") or {}
            if differs("limit", filt.get("limit")):
                yield "--limit: used another count than gdb reads", f"limit {filt.get('limit')!r}, expected {shown('limit')}"
            if isinstance(filt.get("limit"), int) and doc.get("shown", 0) > filt["limit"]:
                yield "--limit: showed more ranges than the limit", f"shown {doc.get('shown')}, limit {filt['limit']}"
            if differs("phys", filt.get("phys")):
                yield "--phys: used another address than gdb reads", f"phys {filt.get('phys')!r}, expected {shown('phys')}"
            if "range" in want and tuple(filt.get("range") or ()) not in want["range"]:
                yield "--range: used other bounds than gdb reads", f"range {filt.get('range')!r}, expected {shown('range')}"
            ctx = doc.get("context") or {}
            if "cr3" in want and ctx.get("cr3") not in {v ^ kpti for v in want["cr3"]}:
                yield "--cr3: used another value than gdb reads", f"cr3 {ctx.get('cr3')!r}, expected {shown('cr3')}"
        else:
            more = re.search(r"\.\.\. (\d+) more", printed)
            if "no mappings" in printed and more:
                yield ("says 'no mappings' and '... N more' together",
                       f"{short(printed[printed.index('no mappings'):], 80)}")
            m = re.search(r"physical (-?0x[0-9a-f]+) is mapped", printed)
            if m and differs("phys", parse_int(m.group(1))):
                yield "--phys: used another address than gdb reads", f"phys {m.group(1)}, expected {shown('phys')}"
    elif c == "info gdt" and doc is not None:
        if "selector" in want:
            sel = next(iter(want["selector"]))
            indices = [e.get("index") for e in doc.get("entries", [])]
            if indices != [sel >> 3]:
                yield "showed other entries than the selector gdb reads", f"entries {indices}, selector {sel:#x}"
        elif (doc.get("base"), doc.get("limit")) != (None, None) and doc.get("limit") != live.gdt_limit:
            yield "GDT limit differs from QEMU's", f"limit {doc.get('limit')!r}"
    elif c == "info idt" and doc is not None and "vector" in want:
        vectors = [g.get("vector") for g in doc.get("gates", [])]
        if vectors != sorted(want["vector"]):
            yield "showed other gates than the vector gdb reads", f"gates {vectors}, expected {shown('vector')}"
    elif c == "info msr" and doc is not None and "msr" in want:
        number = next(iter(want["msr"]))
        name = next((n for n, v in fz.MSR_NUMBERS.items() if v == number), f"{number:#x}")
        shown_msrs = set(doc.get("msrs", {})) | set(doc.get("errors", {}))
        if name not in shown_msrs:
            yield "showed another MSR than asked", f"asked {name}, showed {sorted(shown_msrs)}"
        elif number in live.msrs and name in doc.get("msrs", {}) and doc["msrs"][name] != live.msrs[number]:
            yield f"wrong {name} value", f"{doc['msrs'][name]:#x}, expected {live.msrs[number]:#x}"
    elif c == "sysret-check":
        if doc is not None:
            if differs("address", doc.get("address")):
                yield "checked another address than gdb reads", f"address {doc.get('address')!r}, expected {shown('address')}"
            if differs("opsize", doc.get("opsize")):
                yield "--opsize: used another size", f"opsize {doc.get('opsize')!r}, expected {shown('opsize')}"
        else:
            m = re.search(r"(?:no sysret at|sysret[ql] at) (-?0x[0-9a-f]+)", printed)
            if m and differs("address", parse_int(m.group(1))):
                yield "checked another address than gdb reads", f"address {m.group(1)}, expected {shown('address')}"
    elif c == "gdbext-symbols":
        if doc is not None:
            if differs("offset", doc.get("offset")):
                yield "OFFSET: used another value than gdb reads", f"offset {doc.get('offset')!r}, expected {shown('offset')}"
        else:
            m = re.search(r"\(offset (-?0x[0-9a-f]+)\)", printed)
            if m and differs("offset", parse_int(m.group(1))):
                yield "OFFSET: used another value than gdb reads", f"offset {m.group(1)}, expected {shown('offset')}"
    elif c == "sysret-watch" and doc is not None and "action" in want:
        action = next(iter(want["action"]))
        if action in ("on", "off") and doc.get("armed") != (action == "on"):
            yield f"'{action}' left armed={doc.get('armed')!r}", ""
    elif c == "fault-watch" and doc is not None and "action" in want:
        action = next(iter(want["action"]))
        if action in ("on", "off") and doc.get("armed") != (action == "on"):
            yield f"'{action}' left armed={doc.get('armed')!r}", ""
        if action == "on" and "vectors" in want and tuple(doc.get("vectors") or ()) not in want["vectors"]:
            yield "--vectors: watched other vectors", f"vectors {doc.get('vectors')!r}, expected {shown('vectors')}"
    elif c == "info cpl" and doc is not None and doc.get("cpl") != live.cpl:
        yield "wrong CPL", f"cpl {doc.get('cpl')!r}, QEMU says {live.cpl}"


# ---------------------------------------------------------------------------
# The test
# ---------------------------------------------------------------------------

SESSIONS = [
    pytest.param("ok", "enter_user_sysret", 0, id="cpl0-enter_user_sysret"),
    pytest.param("spin", "user_main", 3, id="cpl3-user_main"),
]


@pytest.mark.parametrize("scenario, location, cpl", SESSIONS)
def test_bad_input_never_crashes_lies_or_changes_the_guest(kernel_session, scenario, location, cpl):
    findings: list[Finding] = []
    timings: list[tuple[float, str]] = []
    with kernel_session(scenario, smp=SMP) as (qemu, gdb):
        # A Python exception then shows its whole traceback (file and line);
        # a gdb.GdbError (a refusal) still prints only its message.
        gdb.command("set python print-stack full")
        gdb.command(f"python exec({STATE_PY!r})")
        run_to(gdb, location)
        live, guest = read_live(gdb, qemu, cpl)
        files = {"@elf": live.elf, "@not_elf": live.not_elf}
        cases = fz.generate(SEED + cpl, N_COMMANDS, N_FUNCTIONS, files)
        before_all = guest.full(gdb)
        before = guest.cheap(gdb)
        for case in cases:
            exp = fz.expect(case, live)
            try:
                answer = run(gdb, case.text)
            except GdbTimeout as exc:
                findings.append(Finding(f"{case.command}: no answer", case.text, str(exc)))
                break
            timings.append((answer.seconds, case.text))
            findings += judge(case, exp, answer, live)
            if qemu.exit_summary() is not None:
                findings.append(Finding("QEMU exited", case.text, str(qemu.exit_summary())))
                break
            after = guest.cheap(gdb)
            changed = [part for part in before if after.get(part) != before[part]]
            if changed:
                findings.append(Finding(f"{case.command}: changed the guest's state", case.text,
                                        "changed: " + ", ".join(changed)))
                before = after  # judge the next input against the state it found
        else:
            run(gdb, "sysret-watch off")
            run(gdb, "fault-watch off")
            after_all = guest.full(gdb)
            changed = [part for part in before_all if after_all.get(part) != before_all[part]]
            if changed:
                findings.append(Finding("the whole batch changed the guest's state", f"{len(cases)} inputs",
                                        "changed: " + ", ".join(changed)))
    slowest = sorted(timings, reverse=True)[:3]
    print(f"\n{len(cases)} inputs at CPL {cpl} (seed {SEED + cpl}); slowest: "
          + "; ".join(f"{s:.2f}s {t}" for s, t in slowest))
    if findings:
        pytest.fail(report(findings, cpl, len(cases)), pytrace=False)


def report(findings: list[Finding], cpl: int, total: int) -> str:
    by_cause: dict[str, list[Finding]] = defaultdict(list)
    for f in findings:
        by_cause[f.cause].append(f)
    inputs = len({f.case for f in findings})
    lines = [f"CPL {cpl}: {inputs} of {total} inputs went wrong, {len(by_cause)} causes:"]
    for cause, group in sorted(by_cause.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        lines.append(f"- {cause}  [{len(group)} input(s)]")
        for f in group[:3]:
            lines.append(f"    {f.case}" + (f"  ->  {f.detail}" if f.detail else ""))
        if len(group) > 3:
            lines.append(f"    ... and {len(group) - 3} more")
    return "\n".join(lines)
