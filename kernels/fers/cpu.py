"""FERS RX-on-features, CPU tier: BLAS-backed numpy with float64 statistics.

The fused cube is summed in the official float32 order and min-max normalised in float32
(as the reference), then the statistics are float64: ``C = Z Z^T / (N-1)`` with one BLAS-3
product, an eigendecomposition with the pseudo-inverse cutoff
(``edgesentry.kernels.rx.cpu.whitening``) and ``score = sum_k (v_k^T z)^2 / w_k``. On the
fused features Sigma is badly conditioned (~3e10 at 200 bands), so this tier matches the
reference to ~1e-3 of the map's maximum, not to the last bit (see the tests' tolerances).
"""

from __future__ import annotations

import numpy as np

from edgesentry.kernels.fers.reference import DEFAULT_RCOND, EPS_F32, as_bhw, fuse, s2one
from edgesentry.kernels.rx.cpu import whitening


def _normalised_pixels(cube: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """(B, H, W) float32 -> (B, N) float64 after the float32 global min-max."""
    lo, hi = cube.min(), cube.max()
    norm = (cube - lo) / (hi - lo + np.float32(eps)) if eps else (cube - lo) / (hi - lo)
    return norm.reshape(cube.shape[0], -1).astype(np.float64)


def _mahalanobis(pixels: np.ndarray, rcond: float) -> np.ndarray:
    """(B, N) float64 -> (N,) squared Mahalanobis distances with a pinv-style cutoff."""
    z = pixels - pixels.mean(axis=1, keepdims=True)
    cov = (z @ z.T) / (z.shape[1] - 1)
    vectors, values = whitening(cov, rcond)
    projected = vectors.T @ z
    return (1.0 / values) @ np.square(projected)


def fers_rx(x: np.ndarray, spe: np.ndarray, spa: np.ndarray | None = None, *,
            rcond: float = DEFAULT_RCOND) -> np.ndarray:
    """See ``reference.fers_rx``; (H, W) float64."""
    cube = fuse(x, spe, spa)
    _, rows, cols = cube.shape
    return _mahalanobis(_normalised_pixels(cube), rcond).reshape(rows, cols)


def _rx_torch_like(cube: np.ndarray) -> np.ndarray:
    bands, rows, cols = cube.shape
    # torch.linalg.pinv's default cutoff (B * eps_float32 relative), on float64 statistics.
    return _mahalanobis(_normalised_pixels(cube, eps=1e-10), bands * EPS_F32).reshape(rows, cols)


def fers_ham(x: np.ndarray, spe: np.ndarray, spa: np.ndarray | None = None) -> np.ndarray:
    """See ``reference.fers_ham``; (H, W) float64."""
    x = as_bhw(x)
    spatial = x if spa is None else as_bhw(spa) + x
    return s2one(_rx_torch_like(spatial)) * s2one(_rx_torch_like(as_bhw(spe) + x))
