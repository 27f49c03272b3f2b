"""No kernel spills registers or overflows shared memory on Jetson Orin (sm_87) or Hopper (sm_90).

Every Triton kernel is lowered ahead of time at its launchers' settings (each module's
``AOT_CONFIGS``: signature types, constexprs, warps) with Triton's own compiler and ptxas, and
every CUDA kernel is built by NVRTC; registers, spill stores / loads and shared memory come from
``ptxas -v`` in both cases (``benchmarks/gpu_check.py --resources``, which prints the tables).
No GPU is needed. A spill (local-memory traffic per thread) is what made the MAVD
align-and-fuse kernel slow on paper (~41 KB per thread at sm_90); the interpreter cannot see it.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from edgesentry.kernels import _cuda

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import gpu_check  # noqa: E402

#: Registers per multiprocessor (every target here): a block of T threads at R registers needs R T of them.
REGISTERS_PER_SM = 65536
#: Static shared memory a kernel may declare without opting in.
STATIC_SHARED = 48 * 1024


@pytest.mark.slow
def test_every_triton_kernel_compiles_without_spills_for_every_target():
    pytest.importorskip("triton")
    rows = gpu_check.triton_resources()
    print("\n" + gpu_check._rows_table(rows, ("family", "capability", "label", "registers", "spill_stores",
                                               "spill_loads", "shared_bytes")))
    assert {r["capability"] for r in rows} == {87, 90}
    assert {r["family"] for r in rows} == set(gpu_check.KERNEL_FAMILIES)
    bad = [r for r in rows if not r["ok"]]
    assert not bad, "spills or shared memory over the target's limit:\n" + gpu_check._rows_table(
        bad, ("family", "capability", "label", "registers", "spill_stores", "spill_loads", "shared_bytes"))


def test_aot_configs_name_every_triton_kernel():
    """Every ``@triton.jit`` kernel of a tier has an entry, so none escapes the spill test."""
    pytest.importorskip("triton")
    for family in gpu_check.KERNEL_FAMILIES:
        module = importlib.import_module(f"edgesentry.kernels.{family}.triton")
        kernels = {name for name in dir(module) if name.endswith("_kernel") and hasattr(getattr(module, name), "fn")}
        assert kernels == {c.kernel for c in module.AOT_CONFIGS}, family


@pytest.mark.skipif(_cuda.nvrtc_unavailable_reason() is not None, reason=str(_cuda.nvrtc_unavailable_reason()))
def test_every_cuda_kernel_builds_without_spills_for_every_target():
    rows = gpu_check.cuda_resources()
    print("\n" + gpu_check._rows_table(rows, ("family", "source", "arch", "name", "registers", "spill_stores",
                                               "spill_loads", "stack_bytes", "shared_bytes")))
    for family in gpu_check.KERNEL_FAMILIES:  # every listed kernel was built, for both targets
        module = importlib.import_module(f"edgesentry.kernels.{family}.cuda")
        for name, kernels in module.KERNELS.items():
            for arch in _cuda.TARGET_ARCHS:
                built = {r["name"] for r in rows if r["family"] == family and r["source"] == name and r["arch"] == arch}
                assert set(kernels) <= built, (family, name, arch)
    bad = [r for r in rows if r["spill_stores"] or r["spill_loads"] or r["shared_bytes"] > STATIC_SHARED]
    assert not bad, bad
    # the launchers' largest blocks (256 threads) must fit a multiprocessor's register file
    assert all(r["registers"] * 256 <= REGISTERS_PER_SM for r in rows), [r for r in rows if r["registers"] > 255]


def test_ptxas_log_parser_reads_spills_of_entries_and_callees():
    log = """ptxas info    : Compiling entry function 'k1' for 'sm_90'
ptxas info    : Function properties for k1
    16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 16 bytes cumulative stack size, 1040 bytes smem
ptxas info    : Function properties for helper
    0 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Compiling entry function 'k2' for 'sm_90'
ptxas info    : Function properties for k2
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 40 registers, used 0 barriers
"""
    usage = _cuda.parse_ptxas_log(log)
    assert usage["k1"] == _cuda.KernelResources("k1", 255, 12, 16, 16, 1040)
    assert usage["k2"].registers == 40 and usage["k2"].spill_stores == 4  # a callee's spills count (conservative)
