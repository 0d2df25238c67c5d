"""Packaging hooks pyproject.toml cannot express: a wheel carries the built
bundled kernel (BOOTX64.EFI, kernel.elf, esp.img) as gdbext/kernel_image/, so
an installed gdbext boots it from anywhere.  An editable install uses the
checkout's kernel/build instead, rebuilt by make when stale."""
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

KERNEL = Path(__file__).resolve().parent / "kernel"
OUTPUTS = ("BOOTX64.EFI", "kernel.elf", "esp.img")


class BuildPyWithKernel(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        proc = subprocess.run(["make", "-s", "-C", str(KERNEL)], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
            sys.exit("gdbext: building the bundled kernel for the wheel failed (it needs the Debian "
                     "packages gcc binutils make gnu-efi mtools): " + (lines[-1] if lines else "make failed"))
        dest = Path(self.build_lib) / "gdbext" / "kernel_image"
        dest.mkdir(parents=True, exist_ok=True)
        for name in OUTPUTS:
            shutil.copy2(KERNEL / "build" / name, dest / name)


setup(cmdclass={"build_py": BuildPyWithKernel})
