"""Build script: maps the three source folders into the one ``edgesentry`` namespace and
compiles the CPU kernels.

``sdk/`` -> ``edgesentry``, ``kernels/`` -> ``edgesentry.kernels``, ``export/`` ->
``edgesentry.export``. Every ``kernels/cpu/<op>.cpp`` becomes the pybind11 extension
``edgesentry.kernels._cpu_<op>``, so adding a kernel never means editing this file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

ROOT = Path(__file__).parent
ROOTS = {"edgesentry": "sdk", "edgesentry.kernels": "kernels", "edgesentry.export": "export"}


def _packages() -> tuple[list[str], dict[str, str]]:
    packages, package_dir = [], {}
    for name, folder in ROOTS.items():
        package_dir[name] = folder
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            rel = init.parent.relative_to(ROOT / folder)
            packages.append(".".join([name, *rel.parts]) if rel.parts else name)
    return packages, package_dir


def _openmp_flags() -> tuple[list[str], list[str]]:
    # MSVC and Apple clang need other spellings; the product targets Linux x86-64 and aarch64.
    if sys.platform.startswith("linux") and os.environ.get("EDGESENTRY_NO_OPENMP") != "1":
        return ["-fopenmp"], ["-fopenmp"]
    return [], []


def compile_args() -> list[str]:
    """Flags of every kernel (also used by the aarch64 build check in tests/core)."""
    # -O3 lets GCC vectorise the `omp simd` reductions; no -march=native so wheels stay portable
    # (hot loops carry target_clones for AVX2/AVX-512 on x86-64; NEON is baseline on aarch64).
    # The instruction set is the compiler's target (kernels/cpu/simd.h), not this machine's: a
    # cross build (scripts/build_wheels.sh) compiles the aarch64 paths on an x86-64 host.
    return [*_openmp_flags()[0], "-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=fast", "-Wno-psabi"]


def _extensions() -> list[Pybind11Extension]:
    link_args = _openmp_flags()[1]
    exts = []
    for src in sorted((ROOT / "kernels" / "cpu").glob("*.cpp")):
        exts.append(
            Pybind11Extension(
                f"edgesentry.kernels._cpu_{src.stem}",
                [str(src.relative_to(ROOT))],
                cxx_std=17,
                extra_compile_args=compile_args(),
                extra_link_args=link_args,
                # shared headers next to the sources: a change to one rebuilds every kernel
                depends=[str(h.relative_to(ROOT)) for h in sorted((ROOT / "kernels" / "cpu").glob("*.h"))],
            )
        )
    return exts


class ParallelBuildExt(build_ext):
    """build_ext compiling the kernels in parallel (one per core, EDGESENTRY_BUILD_JOBS to change):
    each kernel is one translation unit of ~20-60 s, so a serial build waits for the sum."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if not self.parallel:
            self.parallel = int(os.environ.get("EDGESENTRY_BUILD_JOBS", "0")) or os.cpu_count() or 1


# Folders of data (the kernel sources ship so that an sdist or wheel can be rebuilt) are listed
# as packages of their own: setuptools warns about importable folders missing from `packages`.
DATA = {"edgesentry.kernels.cpu": ["*.cpp", "*.h"], "edgesentry.export.data": ["*.json"],
        "edgesentry.line": ["*.schema.json"], "edgesentry.line.dashboard": ["static/*"]}

if __name__ == "__main__":  # as setuptools' build backend and `python setup.py` run it
    packages, package_dir = _packages()
    setup(
        packages=[*packages, *(name for name in DATA if name not in packages)],
        package_dir=package_dir,
        package_data=DATA,
        ext_modules=_extensions(),
        cmdclass={"build_ext": ParallelBuildExt},
    )
