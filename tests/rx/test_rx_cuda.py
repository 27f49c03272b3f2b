"""CUDA tier of RX: NVRTC compilation for every target, a CPU emulation run, a GPU run.

Three levels, each honest about what it shows:
1. Every source in ``kernels/rx/cuda.SOURCES`` compiles with NVRTC for sm_87 and sm_90 to
   an ELF cubin holding the expected kernels (no GPU needed).
2. The kernels *and* the Python launchers run on a CPU emulator (``_cuda_emulator``: one
   OS thread per CUDA thread, real barriers) against the numpy reference.
3. On a machine with a GPU, the tier runs for real; skipped here with the reason.

Tolerance as in ``test_rx_triton.py``: everything is float64, the tier differs from the
reference by summation order and eigh-vs-SVD (~1e-13 relative on these inputs), so
``rtol=1e-8`` catches any float32 step or wrongly kept eigenvalue.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgesentry.errors import InputError, KernelUnavailableError
from edgesentry.kernels import _cuda
from edgesentry.kernels.rx import cuda as rx_cuda, global_rx as public_global_rx, reference
from tests.rx import _cuda_emulator as emu
from tests.utils import assert_verbose_allclose

RTOL = 1e-8
NVRTC_REASON = _cuda.nvrtc_unavailable_reason()
GPU_REASON = _cuda.unavailable_reason()
needs_nvrtc = pytest.mark.skipif(NVRTC_REASON is not None, reason=f"NVRTC unavailable: {NVRTC_REASON}")
needs_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=f"no GPU to run the cuda tier: {GPU_REASON}")
needs_emulator = pytest.mark.skipif(emu.available() is not None, reason=f"CPU emulator: {emu.available()}")


def _check(got, want) -> None:
    assert_verbose_allclose(got, want, atol=RTOL * float(np.abs(want).max()), rtol=RTOL)


# ----------------------------------------------------------------------------- compile
@needs_nvrtc
@pytest.mark.parametrize("arch", _cuda.TARGET_ARCHS)
@pytest.mark.parametrize("name", sorted(rx_cuda.SOURCES))
def test_every_source_compiles_to_a_cubin(name, arch):
    emu.check_tier_sources(rx_cuda, name, arch)


@needs_nvrtc
def test_compile_error_carries_the_nvrtc_log():
    broken = rx_cuda.MAHALANOBIS_SOURCE.replace("acc += dot * dot * invw[k0 + tx];", "acc += undeclared_name;")
    with pytest.raises(KernelUnavailableError) as info:
        _cuda.compile_cubin(broken, arch="sm_90")
    message = str(info.value)
    assert "NVRTC failed to compile for sm_90" in message
    assert 'identifier "undeclared_name" is undefined' in message


# ----------------------------------------------------------------------------- emulator
@pytest.fixture
def emulated(monkeypatch):
    """The cuda tier with launches on the CPU emulator; 32 threads per local-RX block keeps
    the OS-thread count low while the strided loops still wrap (tests use B up to 35)."""
    emu.patch(monkeypatch, rx_cuda)
    monkeypatch.setattr(rx_cuda, "_LOCAL_THREADS", 32)
    return rx_cuda


@needs_emulator
@pytest.mark.parametrize(("n", "b"), [(2, 1), (37, 5), (300, 17)])
def test_emulated_global_matches_reference(emulated, rng, n, b):
    x = (rng.normal(size=(n, b)) * 30 + 500).astype(np.float32)
    _check(emulated.global_rx(x), reference.global_rx(x))


@needs_emulator
def test_emulated_global_singular_and_ridge(emulated, rng):
    x = rng.normal(size=(150, 9)) * 3 + 100
    x[:, 4] = x[:, 1]
    x[:, 7] = 5.0
    _check(emulated.global_rx(x), reference.global_rx(x))
    _check(emulated.global_rx(x, ridge=0.01), reference.global_rx(x, ridge=0.01))


@needs_emulator
def test_emulated_global_multiple_slices(emulated, monkeypatch, rng):
    """Several pixel slices per reduction (the partial-sum path) with a ragged last slice."""
    monkeypatch.setattr(rx_cuda, "_ROWS_PER_BLOCK", 40)
    x = rng.normal(size=(131, 6))
    _check(emulated.global_rx(x), reference.global_rx(x))


@needs_emulator
@pytest.mark.parametrize(("shape", "window"), [((9, 8, 4), (1, 5)), ((8, 7, 35), (1, 7))])
def test_emulated_local_matches_reference(emulated, rng, shape, window):
    """35 bands wrap the 32-thread strided loops; every 7x7 window holds 48 background pixels
    for 35 bands, so each covariance is full rank (no round-off eigenvalues in the comparison)."""
    cube = rng.normal(size=shape) * 50 + 300
    _check(emulated.local_rx(cube, inner=window[0], outer=window[1]),
           reference.local_rx(cube, inner=window[0], outer=window[1]))


def test_a_window_wider_than_the_image_is_refused_below_the_tiers():
    """An outer window wider than the image would start at column -1 and the device kernels
    would read before their buffers (the last CI failure: a 7x6 cube with a 7x7 window)."""
    with pytest.raises(InputError, match="does not fit"):
        rx_cuda.local_rx(np.ones((7, 6, 3)), inner=1, outer=7)


@needs_emulator
@pytest.mark.parametrize("rows", [1, 3])
def test_emulated_local_row_batches_and_ridge(emulated, rng, rows):
    """Batches of 1 and 3 output rows (ragged last batch): the running sums carry across batches."""
    cube = rng.normal(size=(8, 7, 3))
    plan = rx_cuda.plan_local(8, 7, 3, 3, 5, 10**9)
    budget = plan.fixed_bytes + rows * plan.row_bytes
    assert rx_cuda.plan_local(8, 7, 3, 3, 5, budget).rows == rows
    got = emulated.local_rx(cube, inner=3, outer=5, ridge=0.2, chunk_bytes=budget)
    _check(got, reference.local_rx(cube, inner=3, outer=5, ridge=0.2))


@needs_emulator
def test_emulated_local_singular_windows_are_flagged_and_use_pinv(emulated, monkeypatch, rng):
    cube = rng.normal(size=(7, 6, 4))
    cube[..., 3] = cube[..., 0]  # every window covariance is singular: every pixel is flagged
    calls = []
    real_mask = rx_cuda.background_mask
    monkeypatch.setattr(rx_cuda, "background_mask", lambda *a: calls.append(a) or real_mask(*a))
    _check(emulated.local_rx(cube, inner=1, outer=5), reference.local_rx(cube, inner=1, outer=5))
    assert len(calls) == 7 * 6


# ----------------------------------------------------------------------------- GPU
@needs_gpu
@pytest.mark.parametrize(("n", "b"), [(37, 5), (1000, 31), (5000, 64)])
def test_gpu_global_matches_reference(rng, n, b):
    x = rng.normal(size=(n, b)) * 30 + 500
    x[:, 2] = x[:, 1]
    got, tier = public_global_rx(x, tier="cuda")
    assert tier == "cuda"
    _check(got, reference.global_rx(x))


@needs_gpu
@pytest.mark.parametrize(("shape", "window"), [((9, 8, 4), (1, 5)), ((13, 11, 40), (3, 9))])
def test_gpu_local_matches_reference(rng, shape, window):
    cube = rng.normal(size=shape)
    _check(rx_cuda.local_rx(cube, inner=window[0], outer=window[1]),
           reference.local_rx(cube, inner=window[0], outer=window[1]))
