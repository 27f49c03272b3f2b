"""FERS RX-on-features, CPU tier: float64 statistics over chunks of image rows.

The fused cube is summed in the official float32 order and min-max normalised in float32
(as the reference), element by element, so every chunk holds exactly the reference's
values; then the statistics are float64: the chunks' centred moments merged exactly
(``edgesentry.kernels.rx.cpu._merged_moments``), an eigendecomposition with the
pseudo-inverse cutoff (``edgesentry.kernels.rx.cpu.whitening``) and
``score = sum_k (v_k^T z)^2 / w_k``, written chunk by chunk into the map. Neither the fused
cube nor a float64 copy of it is ever formed: the extra memory is a chunk (``CHUNK_BYTES``).
On the fused features Sigma is badly conditioned (~3e10 at 200 bands), so this tier matches
the reference to ~1e-3 of the map's maximum, not to the last bit (see the tests' tolerances).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from edgesentry.kernels.fers.reference import DEFAULT_RCOND, EPS_F32, as_bhw, s2one
from edgesentry.kernels.rx.cpu import CHUNK_BYTES, _merged_moments, whitening


def _row_chunks(parts: Sequence[np.ndarray], chunk_rows: int | None) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, (B, rows, W) float32 fused chunk) of the sum of ``parts`` in their order."""
    bands, rows, cols = parts[0].shape
    step = chunk_rows if chunk_rows is not None else max(1, CHUNK_BYTES // (8 * bands * cols))
    step = max(step, -(-2 // cols))  # the compiled moments need 2 pixels a chunk
    for r0 in range(0, rows, step):
        chunk = parts[0][:, r0 : r0 + step]
        for part in parts[1:]:
            chunk = chunk + part[:, r0 : r0 + step]  # float32, the official order
        yield r0, chunk


def _normalised_chunks(parts: Sequence[np.ndarray], eps: float, chunk_rows: int | None
                       ) -> Iterator[tuple[int, np.ndarray, bool]]:
    """(first pixel, (B, pixels) float64 chunk, True) of the fused cube after its float32 global
    min-max; the form ``_merged_moments`` reads (band-major chunks)."""
    lo = hi = None
    for _, chunk in _row_chunks(parts, chunk_rows):
        lo = chunk.min() if lo is None else min(lo, chunk.min())
        hi = chunk.max() if hi is None else max(hi, chunk.max())
    span = (hi - lo + np.float32(eps)) if eps else (hi - lo)
    cols = parts[0].shape[2]
    for r0, chunk in _row_chunks(parts, chunk_rows):
        norm = (chunk - lo) / span
        yield r0 * cols, norm.reshape(norm.shape[0], -1).astype(np.float64), True


def _mahalanobis(parts: Sequence[np.ndarray], rcond: float, eps: float = 0.0, chunk_rows: int | None = None
                 ) -> np.ndarray:
    """RX of the normalised sum of the (B, H, W) float32 ``parts`` -> (H, W) float64 squared
    Mahalanobis distances with a pinv-style cutoff."""
    bands, rows, cols = parts[0].shape
    mean, cov = _merged_moments(_normalised_chunks(parts, eps, chunk_rows), bands)
    vectors, values = whitening(cov, rcond)
    out = np.empty(rows * cols)
    for start, pixels, _ in _normalised_chunks(parts, eps, chunk_rows):
        projected = vectors.T @ (pixels - mean[:, None])
        out[start : start + pixels.shape[1]] = (1.0 / values) @ np.square(projected)
    return out.reshape(rows, cols)


def _fused_parts(x: np.ndarray, spe: np.ndarray, spa: np.ndarray | None) -> list[np.ndarray]:
    """The terms of ``reference.fuse`` in its order: ``(spa + spe) + x``, or ``spe + x``."""
    return ([] if spa is None else [as_bhw(spa)]) + [as_bhw(spe), as_bhw(x)]


def fers_rx(x: np.ndarray, spe: np.ndarray, spa: np.ndarray | None = None, *,
            rcond: float = DEFAULT_RCOND, chunk_rows: int | None = None) -> np.ndarray:
    """See ``reference.fers_rx``; (H, W) float64. ``chunk_rows``: image rows per chunk
    (default: ``CHUNK_BYTES`` of float64)."""
    return _mahalanobis(_fused_parts(x, spe, spa), rcond, chunk_rows=chunk_rows)


def _rx_torch_like(parts: Sequence[np.ndarray], chunk_rows: int | None) -> np.ndarray:
    # torch.linalg.pinv's default cutoff (B * eps_float32 relative), on float64 statistics.
    return _mahalanobis(parts, parts[0].shape[0] * EPS_F32, eps=1e-10, chunk_rows=chunk_rows)


def fers_ham(x: np.ndarray, spe: np.ndarray, spa: np.ndarray | None = None, *,
             chunk_rows: int | None = None) -> np.ndarray:
    """See ``reference.fers_ham``; (H, W) float64."""
    x = as_bhw(x)
    spatial = [x] if spa is None else [as_bhw(spa), x]
    return s2one(_rx_torch_like(spatial, chunk_rows)) * s2one(_rx_torch_like([as_bhw(spe), x], chunk_rows))
