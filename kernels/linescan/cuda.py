"""Line-scan RX, CUDA tier: the per-line Gram and scores as CUDA C kernels (NVRTC), launched
through the driver API; no torch (the Jetson / torch-free GPU path).

Specification: ``reference.py``. Per line:

  ``ls_line_score_f64`` / ``_f32``  ``score_p = |R (x_p - m)|^2`` with ``R = L^-1`` of the model
                       before the line. A (16, 16) block owns 16 pixels and walks 16-wide tiles of
                       R's rows and, for each, only the column tiles on or below the diagonal
                       (both staged in shared memory); squares and reduces in registers.
                       Masked pixels are never read and score NaN. ``_f32`` runs the product in
                       float32 (``dtype="float32"``, as the cpu tier's ``strsm``).
  ``ls_line_gram``     the Gram of the kept pixels centred on m, 16 x 16 tiles, float64.
  ``ls_line_sums``     their per-band sums, float64.
  host (numpy)         the statistics update (``_stats.RunningStatistics``: B^2 work), the
                       Cholesky factor with the same pivot rule as the triton tier, ``R = L^-1``,
                       or the pseudo-inverse path (eigh with the pinv cutoff and RX's
                       ``rx_mahalanobis`` kernel) for a model that is not safely positive definite.

The B x B matrices cross the bus once each way per line (~0.7 MB at B = 205; nothing on a
Jetson's unified memory), which keeps the factorisation in LAPACK.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgesentry.kernels import _cuda
from edgesentry.kernels._cuda import KernelCall, c_int, c_long
from edgesentry.kernels.rx.cpu import whitening
from edgesentry.kernels.rx.cuda import MAHALANOBIS_SOURCE
from edgesentry.kernels.rx.reference import _regularize

from ._stats import RunningStatistics
from .reference import DEFAULT_RCOND, check_line, check_options

#: Largest condition bound of the factor (smallest pivot^2 against the largest diagonal entry);
#: the cpu tier's ``MAX_COND`` (not imported: the cpu module binds the compiled extension).
MAX_COND = 1e12

LINESCAN_SOURCE = r"""
#define TILE 16

// Gram of the kept pixels centred on `centre`: block (16, 16), grid (ceil(b / 16), ceil(b / 16)).
// gram[i][j] = sum over kept rows r of (x[r][i] - centre[i]) (x[r][j] - centre[j]).
extern "C" __global__ void ls_line_gram(const double* __restrict__ x, const unsigned char* __restrict__ keep,
                                        const double* __restrict__ centre, int w, int b,
                                        double* __restrict__ gram) {
  __shared__ double zi[TILE][TILE + 1];
  __shared__ double zj[TILE][TILE + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int i0 = blockIdx.x * TILE, j0 = blockIdx.y * TILE;
  double acc = 0.0;
  for (int r0 = 0; r0 < w; r0 += TILE) {
    const int r = r0 + ty;
    const bool kept = r < w && keep[r];  // a masked pixel is never read (it may hold NaN)
    zi[ty][tx] = (kept && i0 + tx < b) ? x[(long long)r * b + i0 + tx] - centre[i0 + tx] : 0.0;
    zj[ty][tx] = (kept && j0 + tx < b) ? x[(long long)r * b + j0 + tx] - centre[j0 + tx] : 0.0;
    __syncthreads();
#pragma unroll
    for (int t = 0; t < TILE; ++t) acc += zi[t][ty] * zj[t][tx];
    __syncthreads();
  }
  if (i0 + ty < b && j0 + tx < b) gram[(long long)(i0 + ty) * b + j0 + tx] = acc;
}

// sums[c] = sum over kept rows of x[r][c] - centre[c]: one thread per band.
extern "C" __global__ void ls_line_sums(const double* __restrict__ x, const unsigned char* __restrict__ keep,
                                        const double* __restrict__ centre, int w, int b,
                                        double* __restrict__ sums) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= b) return;
  double s = 0.0;
  for (int r = 0; r < w; ++r)
    if (keep[r]) s += x[(long long)r * b + c] - centre[c];
  sums[c] = s;
}

// score[p] = |R (x[p] - centre)|^2 for kept pixels (NaN otherwise), R (b, b) lower triangular in T.
// Block (16, 16): 16 pixels (threadIdx.y) x 16 rows of R (threadIdx.x); grid ceil(w / 16).
template <class T>
__device__ void line_score(const double* __restrict__ x, const unsigned char* __restrict__ keep,
                           const double* __restrict__ centre, const T* __restrict__ r, int w, int b,
                           double* __restrict__ score) {
  __shared__ T zs[TILE][TILE + 1];  // pixel x band
  __shared__ T rs[TILE][TILE + 1];  // band x row of R
  __shared__ double red[TILE][TILE + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int p = blockIdx.x * TILE + ty;
  const bool kept = p < w && keep[p];
  double acc = 0.0;
  for (int k0 = 0; k0 < b; k0 += TILE) {
    T dot = 0;
    for (int c0 = 0; c0 <= k0; c0 += TILE) {  // R[k][c] = 0 for c > k: tiles on or below the diagonal
      zs[ty][tx] = (kept && c0 + tx < b) ? (T)(x[(long long)p * b + c0 + tx] - centre[c0 + tx]) : (T)0;
      rs[ty][tx] = (c0 + ty < b && k0 + tx < b) ? r[(long long)(k0 + tx) * b + c0 + ty] : (T)0;
      __syncthreads();
#pragma unroll
      for (int t = 0; t < TILE; ++t) dot += zs[ty][t] * rs[t][tx];
      __syncthreads();
    }
    if (k0 + tx < b) acc += (double)dot * (double)dot;
  }
  red[ty][tx] = acc;
  __syncthreads();
  if (tx == 0 && p < w) {
    double s = 0.0;
    for (int t = 0; t < TILE; ++t) s += red[ty][t];
    score[p] = kept ? s : __longlong_as_double(0x7ff8000000000000LL);
  }
}

extern "C" __global__ void ls_line_score_f64(const double* __restrict__ x, const unsigned char* __restrict__ keep,
                                             const double* __restrict__ centre, const double* __restrict__ r,
                                             int w, int b, double* __restrict__ score) {
  line_score<double>(x, keep, centre, r, w, b, score);
}

extern "C" __global__ void ls_line_score_f32(const double* __restrict__ x, const unsigned char* __restrict__ keep,
                                             const double* __restrict__ centre, const float* __restrict__ r,
                                             int w, int b, double* __restrict__ score) {
  line_score<float>(x, keep, centre, r, w, b, score);
}
"""

SOURCES: dict[str, str] = {"ls_line": LINESCAN_SOURCE, "rx_mahalanobis": MAHALANOBIS_SOURCE}
#: The extern "C" kernels each source defines.
KERNELS: dict[str, tuple[str, ...]] = {
    "ls_line": ("ls_line_gram", "ls_line_sums", "ls_line_score_f64", "ls_line_score_f32"),
    "rx_mahalanobis": ("rx_mahalanobis",),
}


def unavailable_reason() -> str | None:
    return _cuda.unavailable_reason()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class LineModel:
    """Line-scan RX model on the GPU (NVRTC kernels); see ``reference.LineModel`` for the
    semantics. numpy in, numpy out."""

    def __init__(self, bands: int, *, forgetting: float = 1.0, window: int = 0, ridge: float = 0.0,
                 rcond: float = DEFAULT_RCOND, dtype: str = "float64", max_cond: float = MAX_COND):
        check_options(bands, forgetting, window, ridge, rcond, dtype)
        self.bands, self.forgetting, self.window = int(bands), float(forgetting), int(window)
        self.ridge, self.rcond, self.dtype, self.max_cond = float(ridge), float(rcond), dtype, float(max_cond)
        self._stats = RunningStatistics(np.zeros(self.bands), np.zeros((self.bands,) * 2), self.forgetting,
                                        self.window)
        self._inverse: np.ndarray | None = None  # R = L^-1 (compute dtype), or None
        self._whitening: tuple[np.ndarray, np.ndarray] | None = None  # pinv path (V, 1 / w)
        self.lines = 0

    def step(self, line: Any, valid: Any = None, update_threshold: float = np.inf,
             want_scores: bool = True) -> np.ndarray:
        line, mask = check_line(line, self.bands, valid)
        x, keep = self._stage(line, mask)
        if self._stats.count == 0 and keep.any():  # first line: centre on its own mean
            self._stats.mean = x[keep.astype(bool)].mean(axis=0)
        scoring = want_scores or np.isfinite(update_threshold)
        with KernelCall(x) as call:
            dx = call.input(x, np.float64)
            scores = self._score(call, dx, x, keep) if scoring else np.full(len(x), np.nan)
            if np.isfinite(update_threshold):
                with np.errstate(invalid="ignore"):
                    keep = (keep.astype(bool) & ~(scores > update_threshold)).astype(np.uint8)
            gram, sums = self._gram(call, dx, keep)
        self._stats.add(float(keep.sum()), sums, gram)
        self._refactor()
        self.lines += 1
        return scores

    def score(self, line: Any, valid: Any = None) -> np.ndarray:
        line, mask = check_line(line, self.bands, valid)
        x, keep = self._stage(line, mask)
        with KernelCall(x) as call:
            return self._score(call, call.input(x, np.float64), x, keep)

    def statistics(self) -> tuple[float, np.ndarray, np.ndarray]:
        cov = self._stats.covariance()
        return self._stats.count, self._stats.mean.copy(), np.full((self.bands,) * 2, np.nan) if cov is None else cov

    def info(self) -> dict[str, Any]:
        return {"tier": "cuda", "lines": self.lines, "window_recombinations": self._stats.recombinations}

    # ------------------------------------------------------------------------ steps
    @staticmethod
    def _stage(line: Any, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(line, dtype=np.float64)
        keep = np.ones(len(x), np.uint8) if mask is None else mask.astype(np.uint8)
        return x, keep

    def _gram(self, call: KernelCall, dx: Any, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w, b = len(keep), self.bands
        dkeep, centre = call.upload(keep), call.upload(np.ascontiguousarray(self._stats.mean))
        gram, sums = call.scratch((b, b), np.float64), call.scratch((b,), np.float64)
        call.launch(LINESCAN_SOURCE, "ls_line_gram", (_cdiv(b, 16), _cdiv(b, 16)), (16, 16),
                    [(dx, None), (dkeep, None), (centre, None), (w, c_int), (b, c_int), (gram, None)])
        call.launch(LINESCAN_SOURCE, "ls_line_sums", (_cdiv(b, 64),), (64,),
                    [(dx, None), (dkeep, None), (centre, None), (w, c_int), (b, c_int), (sums, None)])
        return call.host(gram), call.host(sums)

    def _score(self, call: KernelCall, dx: Any, x: np.ndarray, keep: np.ndarray) -> np.ndarray:
        w, b = len(keep), self.bands
        if self._inverse is not None:
            dkeep, centre = call.upload(keep), call.upload(np.ascontiguousarray(self._stats.mean))
            dr, out = call.upload(self._inverse), call.scratch((w,), np.float64)
            name = "ls_line_score_f32" if self._inverse.dtype == np.float32 else "ls_line_score_f64"
            call.launch(LINESCAN_SOURCE, name, (_cdiv(w, 16),), (16, 16),
                        [(dx, None), (dkeep, None), (centre, None), (dr, None), (w, c_int), (b, c_int), (out, None)])
            return call.host(out)
        if self._whitening is None:
            return np.full(w, np.nan)
        vectors, inv_values = self._whitening
        if vectors.shape[1] == 0:  # zero covariance: pinv is 0
            return np.where(keep.astype(bool), 0.0, np.nan)
        safe = np.where(keep.astype(bool)[:, None], x, self._stats.mean)  # masked pixels may hold NaN
        ds, dm = call.upload(np.ascontiguousarray(safe)), call.upload(np.ascontiguousarray(self._stats.mean))
        dv, dw = call.upload(np.ascontiguousarray(vectors)), call.upload(np.ascontiguousarray(inv_values))
        out = call.scratch((w,), np.float64)
        call.launch(MAHALANOBIS_SOURCE, "rx_mahalanobis", (_cdiv(w, 16),), (16, 16),
                    [(ds, None), (dm, None), (dv, None), (dw, None), (w, c_long), (b, c_int),
                     (vectors.shape[1], c_int), (out, None)])
        return np.where(keep.astype(bool), call.host(out), np.nan)

    def _refactor(self) -> None:
        self._inverse, self._whitening = None, None
        cov, singular = self._stats.to_factor(self.bands, self.ridge, _regularize)
        if cov is None:
            return
        if singular:
            values = whitening(cov, self.rcond, self._stats.max_rank(self.ridge))
            self._whitening = (values[0], 1.0 / values[1])
            return
        top = float(np.diag(cov).max())
        try:
            chol = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            chol = None
        if chol is not None and top > 0 and float(np.diag(chol).min() ** 2) > top / self.max_cond:
            inverse = np.linalg.solve(chol, np.eye(self.bands))  # R = L^-1 (lower: solve keeps it)
            self._inverse = np.ascontiguousarray(np.tril(inverse), dtype=np.float32 if self.dtype == "float32"
                                                 else np.float64)
        else:
            values = whitening(cov, self.rcond, self._stats.max_rank(self.ridge))
            self._whitening = (values[0], 1.0 / values[1])
