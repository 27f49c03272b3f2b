"""Triton tier of line-scan RX against the reference (Triton interpreter on CPU machines).

Tolerance as the cpu tier's (``test_linescan_kernels.py``): float64 statistics and Cholesky
against the reference's SVD pseudo-inverse, ``rtol=1e-9`` on full-rank models, ``1e-6`` where
the pseudo-inverse path cuts numerically zero directions; float32 scoring ``1e-4``.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgesentry.kernels import _triton, linescan
from tests.linescan.helpers import MODES, compare_with_reference, masks, run, scan
from tests.utils import assert_verbose_allclose

pytestmark = pytest.mark.skipif(_triton.unavailable_reason() is not None,
                                reason=f"triton tier unavailable: {_triton.unavailable_reason()}")


def _model(bands: int, **options):
    model, used = linescan.line_model(bands, tier="triton", **options)
    assert used == "triton"
    return model


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("width, bands", [(13, 7), (5, 17)])  # full rank soon; W < B: pinv path first
def test_matches_reference(rng, mode, width, bands):
    options = MODES[mode]
    cube = scan(rng, 7, width, bands)
    compare_with_reference(_model(bands, **options), cube, options)


def test_masked_pixels_and_update_threshold(rng):
    cube = scan(rng, 8, 21, 5)
    cube[4:, 2] += 300.0
    valid = masks(rng, 8, 21, 0.2)
    cube[~valid] = np.nan  # masked pixels are never read
    compare_with_reference(_model(5), cube, {}, valid=valid, update_threshold=40.0)


def test_float32_scoring(rng):
    cube = scan(rng, 6, 40, 9)
    compare_with_reference(_model(9, dtype="float32"), cube, {}, rtol=1e-4)


def test_building_blocks_write_every_element(rng):
    """Gram, sums and scores start as NaN; B = 19 leaves partial tiles of 16, W = 37 partial
    pixel blocks of 16 and 32."""
    from edgesentry.kernels.linescan import triton as tier

    x = rng.normal(size=(37, 19)) + 5
    keep = (rng.random(37) > 0.2).astype(np.int8)
    centre = x.mean(axis=0)
    gram, sums = tier.line_gram(_triton.to_tensor(x), _triton.to_tensor(keep), _triton.to_tensor(centre))
    z = (x - centre)[keep.astype(bool)]
    assert_verbose_allclose(gram, z.T @ z, atol=1e-10, rtol=1e-12)
    assert_verbose_allclose(sums, z.sum(axis=0), atol=1e-10, rtol=1e-12)
    inverse = np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False)))
    scores = tier.line_scores(_triton.to_tensor(x), _triton.to_tensor(keep), _triton.to_tensor(centre),
                              _triton.to_tensor(inverse))
    expected = np.where(keep.astype(bool), np.square((x - centre) @ inverse.T).sum(axis=1), np.nan)
    assert_verbose_allclose(scores, expected, atol=1e-9, rtol=1e-10)


def test_causal(rng):
    cube = scan(rng, 8, 9, 4)
    other = cube.copy()
    other[5:] = scan(rng, 3, 9, 4, offset=10.0)
    assert_verbose_allclose(run(_model(4), cube)[:5], run(_model(4), other)[:5], atol=0, rtol=1e-12)
