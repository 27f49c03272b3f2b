"""Triton tier of RX against the numpy reference (Triton interpreter on CPU machines).

Tolerance: every tier computes in float64; the tiers differ from the reference only in
summation order and in eigh-vs-SVD for the pseudo-inverse, which on these well-scaled
random inputs moves scores by ~1e-13 relative. ``rtol=1e-8`` (plus ``atol`` of 1e-8 x
the largest score, for scores near 0) leaves room for that and still fails on any float32
step in the pipeline (~1e-6) or on a wrongly kept/dropped eigenvalue (O(1)).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgesentry.kernels import _triton
from edgesentry.kernels.rx import global_rx as public_global_rx, local_rx as public_local_rx, reference
from tests.utils import assert_verbose_allclose

pytestmark = pytest.mark.skipif(_triton.unavailable_reason() is not None,
                                reason=f"triton tier unavailable: {_triton.unavailable_reason()}")

RTOL = 1e-8


def _check(got, want) -> None:
    assert_verbose_allclose(got, want, atol=RTOL * float(np.abs(want).max()), rtol=RTOL)


def _triton_module():
    from edgesentry.kernels.rx import triton as rx_triton

    return rx_triton


@pytest.mark.parametrize(
    ("n", "b", "dtype"),
    [(2, 1, np.float64), (37, 5, np.float64), (97, 7, np.float32), (300, 12, np.float64), (61, 3, np.int16)],
)
def test_global_matches_reference(rng, n, b, dtype):
    x = (rng.normal(size=(n, b)) * 40 - 7).astype(dtype)  # int16 keeps negative values
    got, tier = public_global_rx(x, tier="triton")
    assert tier == "triton"
    assert isinstance(got, np.ndarray) and got.dtype == np.float64 and got.shape == (n,)
    _check(got, reference.global_rx(x))


def test_global_singular_constant_and_duplicated_bands(rng):
    x = rng.normal(size=(200, 9)) * 3 + 100
    x[:, 4] = x[:, 1]  # duplicated band
    x[:, 7] = 5.0  # constant band
    x[:, 8] = 2 * x[:, 0] - x[:, 2]  # linear combination
    got, _ = public_global_rx(x, tier="triton")
    _check(got, reference.global_rx(x))


@pytest.mark.parametrize("ridge", [1e-3, 0.5])
def test_global_ridge(rng, ridge):
    x = rng.normal(size=(53, 6))
    x[:, 5] = x[:, 0]
    got, _ = public_global_rx(x, ridge=ridge, tier="triton")
    _check(got, reference.global_rx(x, ridge=ridge))


def test_global_zero_covariance_gives_zero_scores():
    x = np.full((11, 4), 3.25)
    got, _ = public_global_rx(x, tier="triton")
    _check(got, reference.global_rx(x))


def test_global_torch_in_torch_out(rng):
    torch = pytest.importorskip("torch")
    x = rng.normal(size=(41, 5))
    t = torch.from_numpy(x).to(_triton.device())
    got = _triton_module().global_rx(t, ridge=0.0, rcond=reference.DEFAULT_RCOND)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    _check(got, reference.global_rx(x))


def test_building_blocks_write_every_element(rng):
    """Mean and Gram partials start as NaN; any unwritten element would surface here."""
    mod = _triton_module()
    x = rng.normal(size=(45, 13))  # 13 bands: partial band tiles at 16
    t = _triton.to_tensor(x)
    mean = mod.column_mean(t)
    gram = mod.centred_gram(t, mean)
    z = x - x.mean(axis=0)
    assert_verbose_allclose(mean, x.mean(axis=0), atol=1e-12, rtol=1e-12)
    assert_verbose_allclose(gram, z.T @ z, atol=1e-10, rtol=1e-12)


@pytest.mark.parametrize(
    ("shape", "window"),
    [((9, 8, 4), (1, 5)), ((7, 11, 3), (3, 5)), ((8, 9, 2), (2, 4))],
)
def test_local_matches_reference(rng, shape, window):
    cube = rng.normal(size=shape) * 50 + 300
    got, tier = public_local_rx(cube, inner=window[0], outer=window[1], tier="triton")
    assert tier == "triton" and got.shape == shape[:2] and got.dtype == np.float64
    _check(got, reference.local_rx(cube, inner=window[0], outer=window[1]))


@pytest.mark.parametrize(("extra_pixels", "rows", "pixels"), [(1, 1, 1), (3, 1, 3), (100, 9, 63)])
def test_local_batches_and_pixel_chunks_match_one_pass(rng, extra_pixels, rows, pixels):
    """The smallest budgets: one output row per batch and 1 or 3 pixels per factorisation chunk
    (ragged), with the running sums carried across batches; and one batch for the whole cube."""
    from edgesentry.kernels.rx.local_plan import plan_local

    cube = rng.normal(size=(9, 7, 3))
    mod = _triton_module()
    pixel_bytes = mod._PIXEL_BYTES_PER_BAND2 * 9
    need = plan_local(9, 7, 3, 1, 5, 10**9, pixel_bytes=pixel_bytes)
    budget = need.fixed_bytes + need.row_bytes + extra_pixels * pixel_bytes
    plan = plan_local(9, 7, 3, 1, 5, budget, pixel_bytes=pixel_bytes)
    assert (plan.rows, plan.pixels) == (rows, pixels) and plan.peak_bytes <= budget
    got = mod.local_rx(cube, inner=1, outer=5, chunk_bytes=budget)
    _check(got, reference.local_rx(cube, inner=1, outer=5))


def test_local_singular_windows_take_pinv_path(rng):
    cube = rng.normal(size=(9, 8, 4))
    cube[..., 3] = cube[..., 1]  # every window covariance is singular
    got, _ = public_local_rx(cube, inner=1, outer=5, tier="triton")
    _check(got, reference.local_rx(cube, inner=1, outer=5))


def test_local_ridge(rng):
    cube = rng.normal(size=(8, 8, 4))
    cube[..., 2] = 1.0
    got, _ = public_local_rx(cube, inner=1, outer=5, ridge=0.05, tier="triton")
    _check(got, reference.local_rx(cube, inner=1, outer=5, ridge=0.05))
