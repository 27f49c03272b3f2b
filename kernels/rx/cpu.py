"""RX, CPU tier: BLAS-backed numpy for global RX, compiled C++ for local RX.

Global RX is two BLAS-3 products around a B x B symmetric eigendecomposition:
``C = Z^T Z / (N-1)``, ``C = V diag(w) V^T``, ``score = sum((Z V_k)^2 / w_k)`` over the
eigenvalues kept by the pseudo-inverse cutoff ``|w| > rcond * max|w|`` (the singular
values of a symmetric matrix are ``|w|``), so singular scenes get the reference's answer.
"""

from __future__ import annotations

import numpy as np

from .reference import DEFAULT_RCOND, _regularize, background_mask

_PIVOT_TOL = 1e-12


def unavailable_reason() -> str | None:
    try:
        from edgesentry.kernels import _cpu_rx  # noqa: F401
    except ImportError as exc:
        return f"compiled CPU kernels not built ({exc}); reinstall with `pip install -e .`"
    return None


def whitening(cov: np.ndarray, rcond: float = DEFAULT_RCOND) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvectors and eigenvalues of ``cov`` kept by the pinv cutoff."""
    w, v = np.linalg.eigh(cov)
    keep = np.abs(w) > rcond * np.abs(w).max() if w.size and np.abs(w).max() > 0 else np.zeros(w.shape, bool)
    return v[:, keep], w[keep]


def global_rx(pixels: np.ndarray, *, ridge: float = 0.0, rcond: float = DEFAULT_RCOND) -> np.ndarray:
    """Global RX; see ``reference.global_rx`` for the arguments."""
    x = np.asarray(pixels, dtype=np.float64)
    z = x - x.mean(axis=0)
    cov = _regularize((z.T @ z) / (x.shape[0] - 1), ridge)
    vectors, values = whitening(cov, rcond)
    projected = z @ vectors
    return np.square(projected) @ (1.0 / values)


def local_rx(
    cube: np.ndarray, *, inner: int, outer: int, ridge: float = 0.0, rcond: float = DEFAULT_RCOND
) -> np.ndarray:
    """Local dual-window RX; see ``reference.local_rx`` for the arguments and border rule."""
    from edgesentry.kernels import _cpu_rx

    x = np.asarray(cube, dtype=np.float64)
    centred = x - x.reshape(-1, x.shape[-1]).mean(axis=0)
    scores, failed = _cpu_rx.local_rx(centred, int(inner), int(outer), float(ridge), _PIVOT_TOL)
    # Windows whose covariance is (near) singular take the reference pseudo-inverse path.
    for i, j in np.argwhere(failed):
        background = centred[background_mask(i, j, x.shape[:2], inner, outer)]
        cov = _regularize(np.atleast_2d(np.cov(background, rowvar=False)), ridge)
        z = centred[i, j] - background.mean(axis=0)
        scores[i, j] = z @ np.linalg.pinv(cov, rcond=rcond) @ z
    return scores
