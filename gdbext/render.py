"""Reports (gdbext.reports) as text for people.  JSON is the report itself."""
from __future__ import annotations

import json
from typing import List, Optional

from tabulate import tabulate


def to_json(report: dict) -> str:
    return json.dumps(report, indent=1, sort_keys=False)


def hx(value: Optional[int], width: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:#0{width + 2}x}" if width else f"{value:#x}"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _warnings(lines: List[str]) -> List[str]:
    return [f"warning: {w}" for w in lines]


def cpl_text(r: dict) -> str:
    rows = [
        ("CPL", r["cpl"]), ("mode", r["mode"]), ("IOPL", r["iopl"]), ("IF", int(r["if"])),
        ("RFLAGS", f"{hx(r['rflags'])} [{' '.join(r['rflags_flags'])}]"),
        ("CS / SS", f"{hx(r['cs'], 4)} / {hx(r['ss'], 4)}"),
        ("RIP", hx(r["rip"])), ("vCPU", f"{r['cpu']}{' (halted in HLT)' if r['halted'] else ''}"),
    ]
    return tabulate(rows, tablefmt="plain")


def msr_text(r: dict) -> str:
    rows = []
    for name, value in r["msrs"].items():
        number = r["numbers"][name]
        if value is None:
            rows.append((name, hx(number), "unavailable", r["errors"].get(name, "")))
            continue
        rows.append((name, hx(number), hx(value, 16), _msr_meaning(name, r["decoded"].get(name, {}))))
    text = tabulate(rows, headers=("MSR", "number", "value", "meaning"), tablefmt="simple")
    return "\n".join([text] + [f"note: {n}" for n in r.get("notes", [])])


def _msr_meaning(name: str, d: dict) -> str:
    if "flags" in d:
        return " ".join(d["flags"]) or "(none)"
    if "syscall_cs" in d:
        parts = [f"syscall CS={hx(d['syscall_cs'], 4)} SS={hx(d['syscall_ss'], 4)}",
                 f"sysret CS={hx(d['sysret_cs64'], 4)} SS={hx(d['sysret_ss'], 4)} CS32={hx(d['sysret_cs32'], 4)}",
                 f"STAR[63:48]={hx(d['sysret_base'], 4)} (RPL {d['sysret_rpl']})"]
        for role in ("syscall_cs", "syscall_ss", "sysret_cs64", "sysret_ss", "sysret_cs32"):
            if role + "_descriptor" in d:
                parts.append(f"{role}: {d[role + '_descriptor']}")
        return "\n".join(parts)
    if "clears" in d:
        return "clears " + (" ".join(d["clears"]) or "nothing")
    if "symbol" in d:
        sym = d["symbol"] or "no symbol"
        return sym if d["canonical"] else f"{sym} (NON-CANONICAL)"
    if "half" in d:
        return f"{d['half']} half" + ("" if d["canonical"] else " (NON-CANONICAL)")
    return ""


def gdt_text(r: dict) -> str:
    rows = []
    for e in r["entries"]:
        if e["kind"] == "null" and not e["used_by"]:
            rows.append((e["index"], hx(e["selector"], 4), "null", "", "", "", "", "", ""))
            continue
        flags = []
        if e["long"]:
            flags.append("L")
        if e["db"]:
            flags.append("D/B")
        if e["granularity"]:
            flags.append("G")
        if e["avl"]:
            flags.append("AVL")
        rows.append((
            e["index"], hx(e["selector"], 4), e["kind"] + (" (16B)" if e["size"] == 16 else ""),
            hx(e["base"]), hx(e["limit"]), e["dpl"], "P" if e["present"] else "not present",
            " ".join(flags) + ("  " if flags else "") + e["type_words"], ", ".join(e["used_by"]),
        ))
    head = f"GDT base={hx(r['base'])} limit={hx(r['limit'])}"
    table = tabulate(rows, headers=("#", "sel", "kind", "base", "limit", "DPL", "P", "flags / type", "used by"),
                     tablefmt="simple")
    return "\n".join([head, table] + _warnings(r["warnings"]))


def tss_text(r: dict) -> str:
    head = (f"TSS selector={hx(r['selector'], 4)} base={hx(r['base'])} limit={hx(r['limit'])}"
            f"{' busy' if r['busy'] else ''}  I/O map base={hx(r['iomap_base'])} ({r['iomap']})")
    rows = []
    for name, s in r["stacks"].items():
        if s.get("problem") == "unused":
            rows.append((name.upper(), hx(0), "", "", "(unused)"))
            continue
        rows.append((name.upper(), hx(s["value"], 16), _yes(s["canonical"]), _yes(s["mapped"]),
                     "yes" if s["supervisor_writable"] else f"no: {s['problem']}"))
    table = tabulate(rows, headers=("stack", "pointer", "canonical", "mapped", "supervisor-writable"),
                     tablefmt="simple")
    return head + "\n" + table


def idt_text(r: dict) -> str:
    rows = []
    for g in r["gates"]:
        if not g["present"]:
            continue
        sym = g["symbol"] or ""
        rows.append((g["vector"], g["name"], g["kind"], hx(g["selector"], 4), hx(g["handler"], 16), sym,
                     g["ist"] or "", g["dpl"]))
    absent = sum(1 for g in r["gates"] if not g["present"])
    head = f"IDT base={hx(r['base'])} limit={hx(r['limit'])}  ({len(r['gates'])} gates, {absent} not present)"
    table = tabulate(rows, headers=("vec", "name", "type", "sel", "handler", "symbol", "IST", "DPL"),
                     tablefmt="simple")
    return "\n".join([head, table] + _warnings(r["warnings"]))
