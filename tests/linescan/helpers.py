"""Line sequences and a driver shared by the line-scan kernel tests of every tier."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgesentry.kernels.linescan import reference
from tests.utils import assert_verbose_allclose


def scan(rng: np.random.Generator, lines: int, width: int, bands: int, *, offset: float = 1000.0) -> np.ndarray:
    """(lines, W, B) radiance-like pixels: correlated bands (a random mixing), per-band scales
    and a large offset, so that an uncentred Gram would cancel visibly."""
    mixing = rng.normal(size=(bands, bands)) / np.sqrt(bands) + np.eye(bands)
    return (rng.normal(size=(lines, width, bands)) @ mixing) * rng.uniform(2, 20, size=bands) + offset


def masks(rng: np.random.Generator, lines: int, width: int, p_invalid: float) -> np.ndarray | None:
    """(lines, W) validity masks with about ``p_invalid`` of the pixels invalid (None: all valid)."""
    return None if p_invalid == 0 else rng.random((lines, width)) >= p_invalid


def run(model: Any, cube: np.ndarray, valid: np.ndarray | None = None, *, update_threshold: float = np.inf,
        want_scores: bool = True) -> np.ndarray:
    """Step every line of ``cube`` through ``model``; (lines, W) float64 scores."""
    out = []
    for t, line in enumerate(cube):
        scores = model.step(line, None if valid is None else valid[t], update_threshold, want_scores)
        out.append(np.asarray(scores.detach().cpu() if hasattr(scores, "detach") else scores, dtype=np.float64))
    return np.stack(out)


#: Model options x what each case exercises (shared by every tier's correctness test).
MODES = {
    "cumulative": {},  # lam = 1: every line counts
    "forgetting": {"forgetting": 0.9},
    "window": {"window": 3},
    "ridge": {"ridge": 0.05},
}


#: Lines scored against a model of fewer pixels than this many times B use ``FEW_PIXELS_RTOL``:
#: near-square or rank-deficient covariances (condition numbers up to 1e10 on random scans)
#: where Cholesky (or eigh) and the reference's SVD pseudo-inverse differ by ~cond x eps.
FEW_PIXELS = 3
FEW_PIXELS_RTOL = 1e-6


def compare_with_reference(model: Any, cube: np.ndarray, options: dict, *, valid: np.ndarray | None = None,
                           update_threshold: float = np.inf, rtol: float = 1e-9) -> None:
    """Scores and final statistics of ``model`` equal the reference's on the same lines.

    NaN pattern must agree exactly (not scored = NaN: before the model holds 2 pixels, invalid
    pixels), so a score the tier forgets to write (outputs start as NaN) fails. Lines scored
    against fewer than ``FEW_PIXELS * B`` pixels are held to ``FEW_PIXELS_RTOL`` only."""
    bands = cube.shape[-1]
    expected_model = reference.LineModel(bands, **options)
    counts, expected = [], []
    for t, line in enumerate(cube):
        counts.append(expected_model.statistics()[0])
        expected.append(expected_model.step(line, None if valid is None else valid[t], update_threshold))
    expected = np.stack(expected)
    got = run(model, cube, valid, update_threshold=update_threshold)
    scale = float(np.nanmax(np.abs(expected)))
    few = np.asarray(counts) < FEW_PIXELS * bands
    for rows, tol in ((few, max(rtol, FEW_PIXELS_RTOL)), (~few, rtol)):
        if rows.any():
            assert_verbose_allclose(got[rows], expected[rows], atol=tol * scale, rtol=tol)
    count, mean, cov = expected_model.statistics()
    got_count, got_mean, got_cov = model.statistics()
    assert got_count == count or abs(got_count - count) <= 1e-12 * count
    assert_verbose_allclose(got_mean, mean, atol=1e-12 * np.abs(mean).max(), rtol=1e-12)
    assert_verbose_allclose(got_cov, cov, atol=rtol * np.abs(cov).max(), rtol=rtol)
