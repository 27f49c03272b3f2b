"""RX, CPU tier: compiled C++ for global and local RX.

Global RX (``kernels/cpu/rx_global.cpp``) is two passes over the pixels: the centred
moments (the lower triangle of ``Z^T Z / (N-1)`` only), then, with ``C = L L^T`` and
``W = L^-1``, the triangular whitening ``score = |W z|^2`` (half the work of a dense
projection). Both passes pack chunks of pixels band-major and never materialise Z.

The Cholesky path is taken only when the covariance is safely positive definite (LAPACK's
condition estimate below ``CHOLESKY_MAX_COND``): then no eigenvalue falls under the
pseudo-inverse cutoff and ``L^-T L^-1`` is the reference's pinv to ~cond x eps. Otherwise
(singular scenes such as 3 of the 6 FERS ABU ones) the eigendecomposition path reproduces
pinv exactly: ``C = V diag(w) V^T``, ``score = sum((Z V_k)^2 / w_k)`` over the eigenvalues
kept by ``|w| > rcond * max|w|`` (the singular values of a symmetric matrix are ``|w|``).

Local RX (``kernels/cpu/rx.cpp``) has two paths, chosen by a cost model group by group:
pixels whose (shifted) outer windows coincide, i.e. every pixel within ``outer // 2`` of a
border, share one Cholesky of that window, and each pixel's guard window becomes a rank-
``inner**2`` Woodbury correction; the others factor their own ring covariance, built from
sliding column moments. Both are float64 and equal the reference to ~1e-9 relative.
"""

from __future__ import annotations

import numpy as np

from edgesentry.errors import ConfigError
from edgesentry.kernels.rx.reference import DEFAULT_RCOND, _regularize, background_mask

_PIVOT_TOL = 1e-12
#: largest 1-norm condition estimate of the covariance for the Cholesky path of global RX
CHOLESKY_MAX_COND = 1e9


def unavailable_reason() -> str | None:
    try:
        from edgesentry.kernels import _cpu_rx, _cpu_rx_global  # noqa: F401
    except ImportError as exc:
        return f"compiled CPU kernels not built ({exc}); reinstall with `pip install -e .`"
    return None


def whitening(cov: np.ndarray, rcond: float = DEFAULT_RCOND, rank: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvectors and eigenvalues of ``cov`` kept by the pinv cutoff; with ``rank``, at most
    the ``rank`` largest (a covariance of n pixels has rank n - 1: beyond it lie round-off)."""
    w, v = np.linalg.eigh(cov)
    keep = np.abs(w) > rcond * np.abs(w).max() if w.size and np.abs(w).max() > 0 else np.zeros(w.shape, bool)
    if rank is not None:
        keep[np.argsort(np.abs(w))[:max(len(w) - rank, 0)]] = False
    return v[:, keep], w[keep]


def inverse_cholesky(cov: np.ndarray, rcond: float = DEFAULT_RCOND) -> np.ndarray | None:
    """``L^-1`` (lower triangular, C-contiguous) for ``cov = L L^T``, or None when ``cov`` is
    not safely positive definite (the caller then takes the pseudo-inverse path)."""
    from scipy.linalg import lapack

    from edgesentry._threads import single_threaded_blas

    # B x B work (~0.6 ms): BLAS threads would only wake up to spin against the kernels' OpenMP.
    # LAPACK directly: np.linalg.cholesky's checks and copies doubled the time (1.0 ms).
    with single_threaded_blas():
        chol, info = lapack.dpotrf(cov.T, lower=1, clean=1)  # cov is symmetric: .T is its F-order view
        if info != 0:
            return None
        # reciprocal 1-norm condition estimate; the margin covers its factor-of-B looseness
        estimate, info = lapack.dpocon(chol, float(np.abs(cov).sum(axis=0).max()), uplo="L")
        if info != 0 or not estimate > max(1.0 / CHOLESKY_MAX_COND, 1e3 * cov.shape[0] * rcond):
            return None
        inverse, info = lapack.dtrtri(chol, lower=1)  # the upper triangle stays zero (clean=1)
    return np.ascontiguousarray(inverse) if info == 0 else None


def global_rx(pixels: np.ndarray, *, ridge: float = 0.0, rcond: float = DEFAULT_RCOND) -> np.ndarray:
    """Global RX; see ``reference.global_rx`` for the arguments."""
    from edgesentry.kernels import _cpu_rx_global

    x = np.asarray(pixels, dtype=np.float64)
    # a Fortran-ordered cube (MATLAB files) gives band-major pixels: read them as they lie
    band_major = not x.flags.c_contiguous and x.T.flags.c_contiguous
    data = x.T if band_major else np.ascontiguousarray(x)
    mean, cov = _cpu_rx_global.moments(data, band_major)
    cov = _regularize(cov, ridge)
    factor = inverse_cholesky(cov, rcond)
    if factor is not None:
        return _cpu_rx_global.mahalanobis(data, mean, factor, band_major)
    vectors, values = whitening(cov, rcond)
    return np.square((x - mean) @ vectors) @ (1.0 / values)


#: ``shared_windows`` of ``local_rx``: where pixels that share an outer window are scored
#: together (one Cholesky of the window + a Woodbury correction for each guard window)
SHARED_WINDOWS = {"never": 0, "auto": 1, "always": 2}


def local_rx(
    cube: np.ndarray,
    *,
    inner: int,
    outer: int,
    ridge: float = 0.0,
    rcond: float = DEFAULT_RCOND,
    shared_windows: str = "auto",
) -> np.ndarray:
    """Local dual-window RX; see ``reference.local_rx`` for the arguments and border rule.

    ``shared_windows``: ``"auto"`` lets the kernel's cost model choose, group by group,
    between one factorisation per shared outer window and one per pixel; ``"never"`` and
    ``"always"`` force either path (tests and benchmarks compare them). With ``ridge > 0``
    every pixel takes the per-pixel path.
    """
    from edgesentry.kernels import _cpu_rx

    if shared_windows not in SHARED_WINDOWS:
        raise ConfigError(f"shared_windows must be one of {sorted(SHARED_WINDOWS)}; got {shared_windows!r}")
    x = np.asarray(cube, dtype=np.float64)
    centred = x - x.reshape(-1, x.shape[-1]).mean(axis=0)
    scores, failed = _cpu_rx.local_rx(
        centred, int(inner), int(outer), float(ridge), _PIVOT_TOL, SHARED_WINDOWS[shared_windows]
    )
    # Windows whose covariance is (near) singular take the reference pseudo-inverse path.
    for i, j in np.argwhere(failed):
        background = centred[background_mask(i, j, x.shape[:2], inner, outer)]
        cov = _regularize(np.atleast_2d(np.cov(background, rowvar=False)), ridge)
        z = centred[i, j] - background.mean(axis=0)
        scores[i, j] = z @ np.linalg.pinv(cov, rcond=rcond) @ z
    return scores
