"""Portability checks that are cheap enough for every run: the oldest Python the package
declares (vermin reads the sources), and one compiled kernel cross-built for aarch64 with its
hot loops read back from the machine code.

The full aarch64 side (every kernel built into a wheel and tested under qemu-aarch64, the
torch-free runtime on aarch64, wheels installed into fresh environments) is
``scripts/test_aarch64.sh``.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ["sdk", "kernels", "export", "scripts", "benchmarks", "tests", "setup.py"]
SYSROOT = ROOT / ".aarch64" / "sysroot"  # scripts/aarch64_sysroot.sh (run by scripts/services.sh)


def _declared_minimum() -> str:
    text = (ROOT / "pyproject.toml").read_text()  # no tomllib: it is 3.11+, and this file is checked too
    match = re.search(r'^requires-python\s*=\s*">=\s*(3\.\d+)"', text, re.MULTILINE)
    assert match, "pyproject.toml declares no requires-python >= 3.x"
    return match.group(1)


def _vermin(*paths: str | Path, target: str) -> subprocess.CompletedProcess:
    pytest.importorskip("vermin", reason="vermin is in requirements-dev.txt")
    # --eval-annotations: annotations count (a `X | None` outside `from __future__ import
    # annotations` needs 3.10); `long`: vermin takes tensor.long() for Python 2's long.
    run_vermin = "import sys; from vermin import main; sys.exit(main())"  # there is no `python -m vermin`
    cmd = [sys.executable, "-c", run_vermin, "--no-tips", "--eval-annotations", "--exclude", "long",
           f"-t={target}-", "--violations", *map(str, paths)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_sources_run_on_the_declared_minimum_python():
    minimum = _declared_minimum()
    assert minimum == "3.10", "JetPack 6 (Ubuntu 22.04) ships Python 3.10"
    proc = _vermin(*SOURCES, target=minimum)
    assert proc.returncode == 0, f"code that needs a Python newer than {minimum}:\n{proc.stdout}{proc.stderr}"


def test_vermin_flags_code_newer_than_the_minimum(tmp_path):
    newer = tmp_path / "newer.py"
    newer.write_text("try:\n    pass\nexcept* ValueError:\n    pass\n")  # exception groups: 3.11
    proc = _vermin(newer, target=_declared_minimum())
    assert proc.returncode != 0 and "3.11" in proc.stdout, proc.stdout


def _setup_compile_args() -> list[str]:
    spec = importlib.util.spec_from_file_location("edgesentry_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # setup() itself only runs as __main__
    return module.compile_args()


def test_global_rx_kernel_cross_compiles_to_neon_fma_loops(tmp_path):
    """rx_global.cpp built for aarch64 with the wheel's flags: its Gram tile and whitening loops
    are NEON FMA loops without register spills (scripts/aarch64_codegen.py)."""
    cxx, objdump = shutil.which("aarch64-linux-gnu-g++"), shutil.which("aarch64-linux-gnu-objdump")
    if cxx is None or objdump is None:
        pytest.skip("no aarch64 cross compiler (scripts/services.sh installs g++-aarch64-linux-gnu)")
    headers = SYSROOT / "usr/include/python3.11"
    if not (headers / "Python.h").is_file():
        pytest.skip(f"no arm64 Python headers at {headers} (scripts/aarch64_sysroot.sh)")
    pybind11 = pytest.importorskip("pybind11")
    obj = tmp_path / "_cpu_rx_global.o"
    cmd = [cxx, "-std=c++17", "-fPIC", "-fvisibility=hidden", *_setup_compile_args(),
           f"-I{pybind11.get_include()}", f"-I{headers}", "-idirafter", str(SYSROOT / "usr/include"),
           "-c", str(ROOT / "kernels/cpu/rx_global.cpp"), "-o", str(obj)]
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    assert "warning" not in build.stderr, build.stderr[-3000:]
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/aarch64_codegen.py"), "--check", str(obj)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("fmla.2d") == 2 and "0 q spills" in proc.stdout, proc.stdout
