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

import mmap
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from edgesentry.errors import ConfigError
from edgesentry.kernels.rx.reference import DEFAULT_RCOND, _regularize, window_bounds

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


#: float64 bytes of one chunk of pixels in global RX: a float32, integer or on-disk cube is
#: converted chunk by chunk, never whole (a float64 copy of a float32 cube is twice its size)
CHUNK_BYTES = 16 << 20


def global_rx(
    pixels: np.ndarray, *, ridge: float = 0.0, rcond: float = DEFAULT_RCOND, chunk_rows: int | None = None
) -> np.ndarray:
    """Global RX; see ``reference.global_rx`` for the arguments.

    ``pixels`` is (N, B), or an (H, W, B) cube of any layout (a memory-mapped ENVI file, a
    band slice), scored as its H * W pixels in C order. Two passes over chunks of
    ``chunk_rows`` leading-axis entries (default: ``CHUNK_BYTES`` of float64), each chunk
    converted to float64 on its own: the moments of the chunks are merged exactly (Chan et
    al.), then every chunk is whitened into the output. Extra memory is a chunk, not a copy.
    """
    from edgesentry.kernels import _cpu_rx_global

    mapping = getattr(pixels, "_mmap", None)  # a numpy memory map (and its views) of a cube file
    x = np.asarray(pixels)
    mean, cov = _merged_moments(_float64_chunks(x, chunk_rows, mapping), x.shape[-1])
    cov = _regularize(cov, ridge)
    factor = inverse_cholesky(cov, rcond)
    if factor is None:
        vectors, values = whitening(cov, rcond)
    out = np.empty(int(np.prod(x.shape[:-1], dtype=np.int64)))
    for start, data, band_major in _float64_chunks(x, chunk_rows, mapping):
        if factor is not None:
            scores = _cpu_rx_global.mahalanobis(data, mean, factor, band_major)
        else:
            scores = np.square(((data.T if band_major else data) - mean) @ vectors) @ (1.0 / values)
        out[start : start + scores.shape[0]] = scores
    return out


def release_pages(mapping: Any) -> None:
    """Unmap the pages of a file mapping already read (``numpy.memmap._mmap``; None: nothing).

    The pages of a memory-mapped file count in the resident set for as long as they stay
    mapped, so a cube read through a map would end up wholly resident; dropping them after
    each block (they stay in the page cache, not in this process) keeps the resident set at
    a block. Cheap on the ranges never touched.
    """
    if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)


def _float64_chunks(
    x: np.ndarray, chunk_rows: int | None, mapping: Any = None
) -> Iterator[tuple[int, np.ndarray, bool]]:
    """(first pixel, float64 C-contiguous chunk, band-major) over ``x`` along its first axis.

    (N, B) pixels that are band-major in memory (a Fortran-ordered MATLAB cube) give (B, rows)
    chunks read as they lie; everything else gives (pixels, B) chunks. A chunk is a view when
    ``x`` is already float64 and contiguous. Every chunk holds at least 2 pixels (the compiled
    passes need them): a last chunk of one pixel joins the one before. ``mapping``: the file
    map under ``x``, whose pages are released after each chunk (``release_pages``).
    """
    bands = x.shape[-1]
    per_row = int(np.prod(x.shape[1:-1], dtype=np.int64))  # pixels per leading-axis entry
    rows = chunk_rows if chunk_rows is not None else max(1, CHUNK_BYTES // (8 * bands * per_row))
    if rows < 1:
        raise ConfigError(f"chunk_rows must be >= 1; got {rows}")
    if per_row == 1:
        rows = max(rows, 2)
    starts = list(range(0, x.shape[0], rows))
    ends = starts[1:] + [x.shape[0]]
    if len(starts) > 1 and (ends[-1] - starts[-1]) * per_row == 1:
        del starts[-1], ends[-2]
    band_major = x.ndim == 2 and not x.flags.c_contiguous and x.T.flags.c_contiguous
    for r0, r1 in zip(starts, ends):
        if band_major:
            chunk = np.ascontiguousarray(x.T[:, r0:r1], dtype=np.float64)
        else:
            chunk = np.ascontiguousarray(x[r0:r1], dtype=np.float64).reshape(-1, bands)
        yield (r0 if band_major else r0 * per_row), chunk, band_major
        release_pages(mapping)  # after the chunk is used: a float64 map's chunk is a view of it


def _merged_moments(chunks: Iterable[tuple[int, np.ndarray, bool]], bands: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (N - 1 divisor) of all chunks, merged pairwise in float64.

    Each chunk's centred moments come from the compiled kernel; two sets combine exactly as
    ``M = M_a + M_b + d d^T n_a n_b / n`` with ``d`` the difference of the means (Chan, Golub
    & LeVeque), which never forms the ill-conditioned raw second moment.
    """
    from edgesentry.kernels import _cpu_rx_global

    count, mean, scatter = 0, np.zeros(bands), np.zeros((bands, bands))
    for _, data, band_major in chunks:
        size = data.shape[1] if band_major else data.shape[0]
        chunk_mean, chunk_cov = _cpu_rx_global.moments(data, band_major)
        chunk_scatter = chunk_cov * (size - 1)
        total = count + size
        delta = chunk_mean - mean
        scatter = scatter + chunk_scatter + np.outer(delta, delta) * (count * size / total)
        mean = mean + delta * (size / total)
        count = total
    return mean, scatter / (count - 1)


#: unit costs of local RX's cost model (``_cpu_rx.measure_costs``) when measuring is off: the
#: fixed ratios it used before (one column-moment add ~ ten multiply-adds)
DEFAULT_COSTS = {"direct_mac": 1.0, "tile_mac": 1.0, "moment_add": 10.0}


def unit_costs(bands: int) -> tuple[float, float, float]:
    """(direct_mac, tile_mac, moment_add) for ``bands``, measured once per CPU model and band
    bucket (~50 ms; cached in the user's cache directory, see ``edgesentry._machine``)."""
    from edgesentry import _machine
    from edgesentry.kernels import _cpu_rx

    bucket = int(min(1024, max(16, 2 ** round(np.log2(max(bands, 1))))))  # per-MAC costs vary slowly with B
    values = _machine.measured(f"rx.local.costs.b{bucket}", 1, lambda: _cpu_rx.measure_costs(bucket, 3),
                               default=DEFAULT_COSTS)
    return values["direct_mac"], values["tile_mac"], values["moment_add"]


#: ``shared_windows`` of ``local_rx``: where pixels that share an outer window are scored
#: together (one Cholesky of the window + a Woodbury correction for each guard window)
SHARED_WINDOWS = {"never": 0, "auto": 1, "always": 2}


#: float64 bytes of one block of image rows in local RX (the rows scored and their windows'
#: halo), converted and centred on its own: a float32, integer or memory-mapped cube is never
#: copied whole (the kernel's own column moments, 2 x W x B^2 / 2 doubles, come on top)
LOCAL_BLOCK_BYTES = 128 << 20


def local_rx(
    cube: np.ndarray,
    *,
    inner: int,
    outer: int,
    ridge: float = 0.0,
    rcond: float = DEFAULT_RCOND,
    shared_windows: str = "auto",
    sample_space: bool = True,
    block_rows: int | None = None,
) -> np.ndarray:
    """Local dual-window RX; see ``reference.local_rx`` for the arguments and border rule.

    ``shared_windows``: ``"auto"`` lets the kernel's cost model choose, group by group,
    between one factorisation per shared outer window and one per pixel (its unit costs are
    measured on this machine: ``unit_costs``); ``"never"`` and
    ``"always"`` force either path (tests and benchmarks compare them). With ``ridge > 0``
    every pixel takes the per-pixel path. ``sample_space=False`` sends the rings with no more
    distinct spectra than bands to the decomposition path (an SVD of each ring) instead of the
    sample-space Cholesky (tests compare them).

    The cube (any dtype, a memory map) is read in blocks of ``block_rows`` output rows
    (default: ``LOCAL_BLOCK_BYTES`` of float64), each with the rows its windows reach
    (``block_halo``), converted to float64 and centred by the scene mean on its own; the
    scores of the block's rows go into the (H, W) output. Extra memory is a block, not a copy.
    """
    if shared_windows not in SHARED_WINDOWS:
        raise ConfigError(f"shared_windows must be one of {sorted(SHARED_WINDOWS)}; got {shared_windows!r}")
    mapping = getattr(cube, "_mmap", None)
    x = np.asarray(cube)
    h, w, bands = x.shape
    total = np.zeros(bands)
    for _, data, _ in _float64_chunks(x, None, mapping):
        total += data.sum(axis=0)
    mean = total / (h * w)
    costs = unit_costs(bands) if shared_windows == "auto" else (1.0, 1.0, 1.0)
    rows = block_rows if block_rows is not None else max(1, LOCAL_BLOCK_BYTES // (8 * w * bands) - outer)
    if rows < 1:
        raise ConfigError(f"block_rows must be >= 1; got {rows}")
    out = np.empty((h, w))
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        s0, s1 = block_halo(r0, r1, h, inner, outer)
        centred = np.subtract(x[s0:s1], mean, order="C")  # float64, converted as it is read
        release_pages(mapping)
        out[r0:r1] = _local_block(centred, r0 - s0, r1 - s0, inner=inner, outer=outer, ridge=ridge, rcond=rcond,
                                  shared_windows=shared_windows, sample_space=sample_space, costs=costs)
        del centred  # before the next block is converted: one block at a time
    return out


def block_halo(r0: int, r1: int, height: int, inner: int, outer: int) -> tuple[int, int]:
    """[s0, s1): the image rows the windows of output rows [r0, r1) reach.

    Scored as a cube of its own, this block gives its rows r0..r1-1 the windows they have in
    the whole image: a window shifted at the image's border is shifted the same way at the
    block's (the block then starts or ends there), and any other lies inside the block.
    """
    starts = [window_bounds(r, size, height) for r in (r0, r1 - 1) for size in (inner, outer)]
    return min(s for s, _ in starts), max(e for _, e in starts)


def _local_block(centred: np.ndarray, row0: int, row1: int, *, inner: int, outer: int, ridge: float, rcond: float,
                 shared_windows: str, sample_space: bool, costs: tuple[float, float, float]) -> np.ndarray:
    """Scores of rows [row0, row1) of a block of centred float64 rows (their halo around them)."""
    from edgesentry.kernels import _cpu_rx

    scores, left = _cpu_rx.local_rx(
        centred, int(inner), int(outer), float(ridge), _PIVOT_TOL, SHARED_WINDOWS[shared_windows], bool(sample_space),
        costs, row0, row1,
    )
    left = left.view(bool)
    if left.any():
        # rings the Cholesky paths cannot take (dependent spectra beyond exact duplicates, or too
        # ill-conditioned): LAPACK's SVD of the ring, called from the kernel's OpenMP threads
        # with one BLAS thread each (threaded BLAS inside them oversubscribes the cores: 30x
        # slower on a busy 2-core machine)
        from scipy.linalg import cython_lapack
        from threadpoolctl import threadpool_limits

        capi = cython_lapack.__pyx_capi__
        # a fresh controller, after scipy's LAPACK is loaded: its OpenBLAS must be among those limited
        with threadpool_limits(limits=1, user_api="blas"):
            scores[left] = _cpu_rx.local_rx_decomposed(
                centred, int(inner), int(outer), float(ridge), float(rcond), np.argwhere(left),
                capi["dgesdd"], capi["dsyevd"],
            )
    return scores[row0:row1]
