"""RX (Reed-Xiaoli) anomaly detector: the numpy reference, the specification of every tier.

Global RX scores each pixel by its squared Mahalanobis distance to the scene's mean and
covariance (Reed & Yu, IEEE TASSP 1990). The seed (FERS ``utils/RX.py``, itself GatorSense
``md_anomaly``) uses float64 ``np.cov`` with the N-1 divisor and ``np.linalg.pinv`` with
numpy's default cutoff (singular values below 1e-15 x the largest are dropped), which is
what keeps it defined on scenes whose covariance is exactly singular (3 of the 6 FERS ABU
scenes). Here every statistic is float64.

Local (dual-window) RX uses, per pixel, the mean and covariance of the pixels inside an
``outer`` x ``outer`` window but outside the ``inner`` x ``inner`` guard window. Border
rule (the one ``spectral.rx(window=...)`` uses): each window is shifted, independently,
to lie inside the image, so every pixel gets exactly ``outer**2 - inner**2`` background
pixels; near the border the windows are no longer centred on the pixel.

Ridge: ``ridge > 0`` adds ``ridge * trace(C) / B`` to the diagonal before inverting
(relative, so it means the same at any radiance scale).
"""

from __future__ import annotations

import numpy as np

DEFAULT_RCOND = 1e-15


def _regularize(cov: np.ndarray, ridge: float) -> np.ndarray:
    if ridge <= 0:
        return cov
    bands = cov.shape[-1]
    scale = np.trace(cov, axis1=-2, axis2=-1)[..., None, None] / bands
    return cov + ridge * scale * np.eye(bands)


def global_rx(pixels: np.ndarray, *, ridge: float = 0.0, rcond: float = DEFAULT_RCOND) -> np.ndarray:
    """Global RX scores.

    Args:
        pixels: (N, B) pixel spectra, any real dtype.
        ridge: relative diagonal loading (0 = the seed's plain pseudo-inverse).
        rcond: pseudo-inverse cutoff relative to the largest singular value.

    Returns:
        (N,) float64 squared Mahalanobis distances.
    """
    x = np.asarray(pixels, dtype=np.float64)
    mean = x.mean(axis=0)
    cov = _regularize(np.atleast_2d(np.cov(x, rowvar=False)), ridge)
    precision = np.linalg.pinv(cov, rcond=rcond)
    z = x - mean
    return np.einsum("nb,bc,nc->n", z, precision, z)


def window_bounds(index: int, size: int, length: int) -> tuple[int, int]:
    """[start, stop) of a ``size`` window around ``index``, shifted to fit in ``length``."""
    start = index - size // 2
    if start < 0:
        start = 0
    elif start + size > length:
        start = length - size
    return start, start + size


def background_mask(i: int, j: int, shape: tuple[int, int], inner: int, outer: int) -> np.ndarray:
    """Boolean (H, W) mask of the background pixels of pixel (i, j)."""
    h, w = shape
    mask = np.zeros((h, w), dtype=bool)
    r0, r1 = window_bounds(i, outer, h)
    c0, c1 = window_bounds(j, outer, w)
    mask[r0:r1, c0:c1] = True
    r0, r1 = window_bounds(i, inner, h)
    c0, c1 = window_bounds(j, inner, w)
    mask[r0:r1, c0:c1] = False
    return mask


def local_rx(
    cube: np.ndarray,
    *,
    inner: int,
    outer: int,
    ridge: float = 0.0,
    rcond: float = DEFAULT_RCOND,
) -> np.ndarray:
    """Dual-window local RX, one pixel at a time (slow; the specification).

    Args:
        cube: (H, W, B) hyperspectral cube, H and W at least ``outer``.
        inner: guard window size (pixels excluded from the background), >= 1.
        outer: background window size, > inner.
        ridge, rcond: as in ``global_rx``.

    Returns:
        (H, W) float64 scores.
    """
    x = np.asarray(cube, dtype=np.float64)
    h, w, _ = x.shape
    out = np.empty((h, w))
    for i in range(h):
        for j in range(w):
            background = x[background_mask(i, j, (h, w), inner, outer)]
            mean = background.mean(axis=0)
            cov = _regularize(np.atleast_2d(np.cov(background, rowvar=False)), ridge)
            z = x[i, j] - mean
            out[i, j] = z @ np.linalg.pinv(cov, rcond=rcond) @ z
    return out
