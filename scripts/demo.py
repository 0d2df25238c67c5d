#!/usr/bin/env python3
"""Boot the bundled kernel under QEMU, attach gdb with gdbext, and show it at work.

1. `ok`: stop in the kernel right before its first sysretq and look at what
   the CPU sees (CPL, GDT, TSS, IDT, MSRs, the page walk of the user entry,
   sysret-check); then stop in ring 3 and read MSRs from there; then watch
   every sysret to the clean end.
2. `gdt-order`: the same watch stops the broken kernel at the wrmsr that
   makes its sysret fail, and says why.
3. `iret-cs-rpl0`: the watch stops an iretq to ring 3 whose frame faults.
4. `tss-rsp0-unmapped` with no symbols in gdb and no watch: fault-watch
   sees nothing (no handler can be reached), QEMU's interrupt log sees the
   triple fault, and fault-chain explains every failed delivery.

Usage: scripts/demo [--scenario NAME]   (NAME: a broken scenario for part 2)
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gdbext.tools.driver import GdbDriver, GdbError  # noqa: E402
from gdbext.tools.launch import (  # noqa: E402
    SCENARIOS,
    LaunchError,
    Qemu,
    QemuExited,
    QemuOptions,
    build_kernel,
)


def show(g: GdbDriver, command: str, hide: str = "", shown: str = "") -> None:
    """Run and print a command; `hide` (a temporary path) is printed as `shown`."""
    print(f"(gdb) {command.replace(hide, shown) if hide else command}")
    try:
        out = g.command(command).rstrip()
    except GdbError as exc:
        out = str(exc)
    print(out.replace(hide, shown) if hide else out)


def session(scenario: str, elf: Path | None, int_log: bool = False):
    qemu = Qemu(QemuOptions(scenario=scenario, gdb_port=0, wait=True, int_log=int_log,
                            keep_after_shutdown=int_log)).start()
    gdb = GdbDriver(elf, target_exit=qemu.exit_summary)
    gdb.connect(qemu.gdb_port)
    gdb.load_gdbext()
    gdb.command("set width 100")
    return qemu, gdb


def stop_at(g: GdbDriver, qemu: Qemu, timeout: float):
    """Run to the next stop; a guest that died on the way is the demo's end."""
    stop = g.resume_until_stop(timeout)
    if stop is None or stop.reason == "exited":
        error = qemu.exited_error()
        if error is not None:
            raise error
    return stop


def part_one(elf: Path) -> None:
    print("=== The bundled kernel, scenario ok: in ring 0, right before the first sysretq")
    qemu, g = session("ok", elf)
    try:
        g.command("break enter_user_sysret")
        stop_at(g, qemu, 60)
        for cmd in ("info cpl", "info gdt", "info tss", "info idt 14", "info msr",
                    "pagewalk $rcx", "sysret-check"):
            show(g, cmd)
        print("\n=== In ring 3 (user_main): CPL 3, and MSRs read from there all the same")
        g.command("delete")
        g.command("break user_main")
        stop_at(g, qemu, 30)
        for cmd in ("info cpl", "info msr STAR", "pagewalk $rip --access exec --user"):
            show(g, cmd)
        print("\n=== Watching every sysret to the end")
        g.command("delete")
        show(g, "sysret-watch on")
        stop = g.resume_until_stop(60)
        print(f"(guest {'exited' if stop and stop.reason == 'exited' else 'stopped: ' + (stop.reason if stop else 'timeout')})")
        print("\n".join(line for line in qemu.serial_text().splitlines() if "exit" in line or "[user]" in line))
    finally:
        g.close()
        qemu.stop()


def part_two(elf: Path, scenario: str) -> None:
    print(f"\n=== Scenario {scenario}: sysret-watch stops the mistake before it becomes a fault")
    qemu, g = session(scenario, elf)
    try:
        show(g, "sysret-watch on")
        stop = stop_at(g, qemu, 60)
        if stop is not None:
            print(stop.console.rstrip())
        show(g, "info symbol $pc")
        show(g, "sysret-watch status")
    finally:
        g.close()
        qemu.stop()


def part_three(elf: Path) -> None:
    print("\n=== Scenario iret-cs-rpl0: the watch checks iretq to ring 3 too")
    qemu, g = session("iret-cs-rpl0", elf)
    try:
        g.command("sysret-watch on")
        stop = stop_at(g, qemu, 60)
        if stop is not None:
            print(stop.console.rstrip())
    finally:
        g.close()
        qemu.stop()


def part_four() -> None:
    print("\n=== Scenario tss-rsp0-unmapped, no symbols: a triple fault, from QEMU's interrupt log")
    qemu, g = session("tss-rsp0-unmapped", None, int_log=True)
    try:
        log = str(qemu.int_log_path)
        show(g, f"gdbext-qemu-log {log}", log, "qemu-int.log")
        show(g, "fault-watch on --user")
        stop = g.resume_until_stop(60)
        print(stop.console.rstrip() if stop is not None else "(no stop)")
        show(g, "fault-chain", log, "qemu-int.log")
        show(g, "info tss")
    finally:
        g.close()
        qemu.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="gdt-order", choices=[s for s in SCENARIOS if s not in ("ok", "spin")])
    args = parser.parse_args()
    try:
        paths = build_kernel()
        part_one(paths.elf)
        part_two(paths.elf, args.scenario)
        part_three(paths.elf)
        part_four()
    except QemuExited as exc:
        print(f"demo: the guest died: {exc}", file=sys.stderr)
        return 1
    except (LaunchError, GdbError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
