"""CUDA tier of line-scan RX: NVRTC compilation for every target, a CPU emulation run against
the reference, a GPU run where there is one.

Same three levels as ``tests/rx/test_rx_cuda.py`` (and its emulator: one OS thread per CUDA
thread, real barriers). Tolerances as the cpu tier's (``test_linescan_kernels.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgesentry.kernels import _cuda, linescan
from edgesentry.kernels.linescan import cuda as tier
from tests.linescan.helpers import MODES, compare_with_reference, masks, scan
from tests.rx import _cuda_emulator as emu
from tests.utils import assert_verbose_allclose

NVRTC_REASON = _cuda.nvrtc_unavailable_reason()
GPU_REASON = _cuda.unavailable_reason()
needs_nvrtc = pytest.mark.skipif(NVRTC_REASON is not None, reason=f"NVRTC unavailable: {NVRTC_REASON}")
needs_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=f"no GPU to run the cuda tier: {GPU_REASON}")
needs_emulator = pytest.mark.skipif(emu.available() is not None, reason=f"CPU emulator: {emu.available()}")


@needs_nvrtc
@pytest.mark.parametrize("arch", _cuda.TARGET_ARCHS)
@pytest.mark.parametrize("name", sorted(tier.SOURCES))
def test_every_source_compiles_to_a_cubin(name, arch):
    emu.check_tier_sources(tier, name, arch)


@pytest.fixture
def emulated(monkeypatch):
    emu.patch(monkeypatch, tier)  # scratch is NaN-poisoned there: an unwritten element fails
    return tier


@needs_emulator
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("width, bands", [(13, 7), (5, 19)])  # full rank soon; W < B and a partial tile
def test_emulated_matches_reference(emulated, rng, mode, width, bands):
    options = MODES[mode]
    cube = scan(rng, 6, width, bands)
    compare_with_reference(emulated.LineModel(bands, **options), cube, options)


@needs_emulator
def test_emulated_masked_pixels_threshold_and_float32(emulated, rng):
    cube = scan(rng, 6, 18, 5)
    cube[3:, 2] += 300.0
    valid = masks(rng, 6, 18, 0.2)
    cube[~valid] = np.nan  # masked pixels are never read
    compare_with_reference(emulated.LineModel(5), cube, {}, valid=valid, update_threshold=40.0)
    compare_with_reference(emulated.LineModel(5, dtype="float32"), scan(rng, 5, 30, 5), {}, rtol=1e-4)


@needs_emulator
def test_emulated_score_kernel_writes_every_pixel(emulated, rng):
    """W = 21 pixels: one full and one partial block of 16; masked pixels read as NaN."""
    model = emulated.LineModel(4)
    model.step(scan(rng, 1, 21, 4)[0])
    line = scan(rng, 1, 21, 4)[0]
    valid = np.ones(21, bool)
    valid[[0, 20]] = False
    got = model.score(line, valid)
    count, mean, cov = model.statistics()
    z = line - mean
    expected = np.where(valid, np.einsum("nb,bc,nc->n", z, np.linalg.inv(cov), z), np.nan)
    assert_verbose_allclose(got, expected, atol=0, rtol=1e-10)


@needs_gpu
@pytest.mark.parametrize("mode", sorted(MODES))
def test_gpu_matches_reference(rng, mode):
    options = MODES[mode]
    model, used = linescan.line_model(40, tier="cuda", **options)
    assert used == "cuda"
    compare_with_reference(model, scan(rng, 8, 200, 40), options)
