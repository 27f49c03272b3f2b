"""RX, CUDA tier: CUDA C kernels (NVRTC) in float64, launched through the driver API.

Specification: ``reference.py``. No torch needed (the Jetson / torch-free GPU path).

Global RX:
  ``rx_column_sums``   per-band partial sums over slices of pixels (pass A, double).
  ``rx_centred_gram``  16 x 16 tiles of the centred Gram per pixel slice (pass B, double);
                       each block derives the mean from the pass-A partials itself.
  ``rx_finish_stats``  sums the slice partials: mean (B) and covariance (B x B, N-1).
  host (numpy)         eigh in float64 and the pinv cutoff ``|w| > rcond * max|w|``
                       (``cpu.whitening``); B^3 is tiny and cheaper than a round trip of
                       work through a device solver.
  ``rx_mahalanobis``   score_n = sum_k ((x_n - mean) . V_k)^2 / w_k. A block owns 16 pixels,
                       loops over 16-wide tiles of k and of bands (both staged in shared
                       memory), squares and reduces in registers: the N x k projection is
                       never stored. ``1 / w_k`` is kept apart from ``V`` (instead of
                       ``V / sqrt(w)``) because the pinv keeps tiny negative eigenvalues too.

Local RX (border rule of ``reference.local_rx``):
  ``rx_row_prefix`` / ``rx_col_prefix`` build integral images of ``z`` and of the packed
  lower triangle of ``z z^T`` (C = B + B(B+1)/2 channels) for a band of rows; memory is
  bounded by processing the image in bands of output rows.
  ``rx_local_score``  one block per pixel: ring mean and covariance from 2 x 4 box corners,
                      ridge, a left-looking Cholesky in double in global scratch (one column
                      per step, rows in parallel, pivot by a warp reduction), forward solve,
                      ``|L^-1 z|^2``. A pivot below ``_PIVOT_TOL`` x the largest diagonal
                      entry flags the pixel; the host recomputes flagged pixels with the
                      reference pseudo-inverse (the contract of ``cpu.py``).
Data are centred by the scene mean on the host first (removes the cancellation in
``M - s s^T / n`` for raw radiances).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgesentry.errors import InputError
from edgesentry.kernels import _cuda
from edgesentry.kernels._cuda import DeviceArray, DeviceBuffers, c_double, c_int, c_long, get_function, launch

from .cpu import whitening
from .reference import DEFAULT_RCOND, _regularize, background_mask

_PIVOT_TOL = 1e-12
#: Pixels per block slice in the global reductions.
_ROWS_PER_BLOCK = 1024
#: Bytes the integral images + Cholesky scratch of one band of rows may take (local RX).
LOCAL_CHUNK_BYTES = 1 << 30
_LOCAL_THREADS = 128

STATS_SOURCE = r"""
#define TILE 16

// Partial band sums: block (32, 8), grid (ceil(b / 32), slices). sums[s * b + c].
extern "C" __global__ void rx_column_sums(const double* __restrict__ x, long long n, int b,
                                          int rows_per_block, double* __restrict__ sums) {
  __shared__ double part[8][33];
  const int c = blockIdx.x * 32 + threadIdx.x;
  const long long r0 = (long long)blockIdx.y * rows_per_block;
  const long long r1 = min(n, r0 + rows_per_block);
  double acc = 0.0;
  if (c < b) {
    for (long long r = r0 + threadIdx.y; r < r1; r += 8) acc += x[r * b + c];
  }
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < b) {
    double s = 0.0;
    for (int k = 0; k < 8; ++k) s += part[k][threadIdx.x];
    sums[(long long)blockIdx.y * b + c] = s;
  }
}

// Centred Gram partials: block (16, 16), grid (ceil(b / 16), ceil(b / 16), slices).
// gram[s][i][j] = sum over slice s of (x[r][i] - mean[i]) (x[r][j] - mean[j]).
extern "C" __global__ void rx_centred_gram(const double* __restrict__ x, const double* __restrict__ sums,
                                           int slices, long long n, int b, int rows_per_block,
                                           double* __restrict__ gram) {
  __shared__ double zi[TILE][TILE + 1];
  __shared__ double zj[TILE][TILE + 1];
  __shared__ double mean_i[TILE];
  __shared__ double mean_j[TILE];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int i0 = blockIdx.x * TILE, j0 = blockIdx.y * TILE;
  if (ty < 2) {
    const int c = (ty == 0 ? i0 : j0) + tx;
    double s = 0.0;
    if (c < b) {
      for (int k = 0; k < slices; ++k) s += sums[(long long)k * b + c];
    }
    (ty == 0 ? mean_i : mean_j)[tx] = s / (double)n;
  }
  __syncthreads();
  const long long r0 = (long long)blockIdx.z * rows_per_block;
  const long long r1 = min(n, r0 + rows_per_block);
  double acc = 0.0;
  for (long long rb = r0; rb < r1; rb += TILE) {
    const long long r = rb + ty;
    zi[ty][tx] = (r < r1 && i0 + tx < b) ? x[r * b + i0 + tx] - mean_i[tx] : 0.0;
    zj[ty][tx] = (r < r1 && j0 + tx < b) ? x[r * b + j0 + tx] - mean_j[tx] : 0.0;
    __syncthreads();
#pragma unroll
    for (int t = 0; t < TILE; ++t) acc += zi[t][ty] * zj[t][tx];
    __syncthreads();
  }
  if (i0 + ty < b && j0 + tx < b) {
    gram[(long long)blockIdx.z * b * b + (long long)(i0 + ty) * b + j0 + tx] = acc;
  }
}

"""

# Shared with the FERS fused kernel (kernels/fers/cuda.py), which reduces the same partials.
FINISH_STATS_SOURCE = r"""
// mean[c] = sum_s sums[s][c] / n; cov[e] = sum_s gram[s][e] / (n - 1). One thread per element.
extern "C" __global__ void rx_finish_stats(const double* __restrict__ sums, const double* __restrict__ gram,
                                           int slices, long long n, int b, double* __restrict__ mean,
                                           double* __restrict__ cov) {
  const long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long bb = (long long)b * b;
  if (e < bb) {
    double s = 0.0;
    for (int k = 0; k < slices; ++k) s += gram[k * bb + e];
    cov[e] = s / (double)(n - 1);
  }
  if (e < b) {
    double s = 0.0;
    for (int k = 0; k < slices; ++k) s += sums[(long long)k * b + e];
    mean[e] = s / (double)n;
  }
}
"""

STATS_SOURCE = STATS_SOURCE + FINISH_STATS_SOURCE


MAHALANOBIS_SOURCE = r"""
#define TILE 16

// score[p] = sum_k ((x[p] - mean) . v[:, k])^2 * invw[k]. Block (16, 16) owns 16 pixels
// (threadIdx.y) and walks 16-wide tiles of k (threadIdx.x) and of bands; grid ceil(n / 16).
extern "C" __global__ void rx_mahalanobis(const double* __restrict__ x, const double* __restrict__ mean,
                                          const double* __restrict__ v, const double* __restrict__ invw,
                                          long long n, int b, int k, double* __restrict__ score) {
  __shared__ double zs[TILE][TILE + 1];  // pixel x band
  __shared__ double vs[TILE][TILE + 1];  // band x k
  __shared__ double red[TILE][TILE + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const long long p = (long long)blockIdx.x * TILE + ty;
  double acc = 0.0;
  for (int k0 = 0; k0 < k; k0 += TILE) {
    double dot = 0.0;
    for (int b0 = 0; b0 < b; b0 += TILE) {
      zs[ty][tx] = (p < n && b0 + tx < b) ? x[p * b + b0 + tx] - mean[b0 + tx] : 0.0;
      vs[ty][tx] = (b0 + ty < b && k0 + tx < k) ? v[(long long)(b0 + ty) * k + k0 + tx] : 0.0;
      __syncthreads();
#pragma unroll
      for (int t = 0; t < TILE; ++t) dot += zs[ty][t] * vs[t][tx];
      __syncthreads();
    }
    if (k0 + tx < k) acc += dot * dot * invw[k0 + tx];
  }
  red[ty][tx] = acc;
  __syncthreads();
  if (tx == 0 && p < n) {
    double s = 0.0;
    for (int t = 0; t < TILE; ++t) s += red[ty][t];
    score[p] = s;
  }
}
"""

LOCAL_SOURCE = r"""
// Integral images of one band of rows [lo, lo + rows) of the centred cube z (h, w, b):
// integ is (rows + 1, w + 1, C), channel ch < b is z[..., ch], channel b + t is
// z[..., pi[t]] * z[..., pj[t]] (packed lower triangle). Row pass: grid (ceil(C / 128), rows).
extern "C" __global__ void rx_row_prefix(const double* __restrict__ z, int lo, int rows, int w, int b,
                                         int channels, const int* __restrict__ pi, const int* __restrict__ pj,
                                         double* __restrict__ integ) {
  const int ch = blockIdx.x * blockDim.x + threadIdx.x;
  const int r = blockIdx.y;
  if (ch >= channels || r >= rows) return;
  const int a = ch < b ? ch : pi[ch - b];
  const int c2 = ch < b ? -1 : pj[ch - b];
  const long long wp = w + 1;
  double* dst = integ + (long long)(r + 1) * wp * channels + ch;
  const double* src = z + (long long)(lo + r) * w * b;
  dst[0] = 0.0;
  double acc = 0.0;
  for (int c = 0; c < w; ++c) {
    const double* px = src + (long long)c * b;
    acc += c2 < 0 ? px[a] : px[a] * px[c2];
    dst[(long long)(c + 1) * channels] = acc;
  }
}

// Column pass (in place) and the zero first row: grid (ceil(C / 128), w + 1).
extern "C" __global__ void rx_col_prefix(double* __restrict__ integ, int rows, int w, int channels) {
  const int ch = blockIdx.x * blockDim.x + threadIdx.x;
  const int c = blockIdx.y;
  if (ch >= channels || c > w) return;
  const long long stride = (long long)(w + 1) * channels;
  double* col = integ + (long long)c * channels + ch;
  col[0] = 0.0;
  double acc = 0.0;
  for (int r = 1; r <= rows; ++r) {
    acc += col[r * stride];
    col[r * stride] = acc;
  }
}

__device__ __forceinline__ double box_sum(const double* __restrict__ integ, long long wp, int channels,
                                          int ch, int r0, int r1, int c0, int c1) {
  return integ[((long long)r1 * wp + c1) * channels + ch] - integ[((long long)r0 * wp + c1) * channels + ch] -
         integ[((long long)r1 * wp + c0) * channels + ch] + integ[((long long)r0 * wp + c0) * channels + ch];
}

// One block per pixel of output rows [i0, i0 + gridDim.x / w). Dynamic shared memory: 2 b doubles.
// ro/ri/co/ci: window starts (reference.window_bounds) per row/column of the whole image;
// scratch: (pixels, b, b) doubles; out: (h, w); failed: (pixels,) flags.
extern "C" __global__ void rx_local_score(const double* __restrict__ integ, const double* __restrict__ z,
                                          const int* __restrict__ pi, const int* __restrict__ pj,
                                          const int* __restrict__ ro, const int* __restrict__ ri,
                                          const int* __restrict__ co, const int* __restrict__ ci,
                                          int i0, int lo, int w, int b, int channels, int outer, int inner,
                                          double ridge, double tol, double* __restrict__ scratch,
                                          double* __restrict__ out, unsigned char* __restrict__ failed) {
  extern __shared__ double sh[];
  double* mean = sh;      // b
  double* u = sh + b;     // b: z - mean, then the forward-solve solution
  __shared__ double s_pivot;
  __shared__ double s_floor;
  const int tid = threadIdx.x, nt = blockDim.x;
  const long long p = blockIdx.x;
  const int i = i0 + (int)(p / w), j = (int)(p % w);
  const long long wp = w + 1;
  const int or0 = ro[i] - lo, or1 = or0 + outer, oc0 = co[j], oc1 = oc0 + outer;
  const int ir0 = ri[i] - lo, ir1 = ir0 + inner, ic0 = ci[j], ic1 = ic0 + inner;
  const double nbg = (double)outer * outer - (double)inner * inner;
  double* a = scratch + p * b * b;
  const double* zp = z + ((long long)i * w + j) * b;

  for (int c = tid; c < b; c += nt) {
    const double s = box_sum(integ, wp, channels, c, or0, or1, oc0, oc1) -
                     box_sum(integ, wp, channels, c, ir0, ir1, ic0, ic1);
    mean[c] = s / nbg;
    u[c] = zp[c] - mean[c];
  }
  __syncthreads();
  const int pairs = b * (b + 1) / 2;
  for (int t = tid; t < pairs; t += nt) {
    const int ch = b + t;
    const double m = box_sum(integ, wp, channels, ch, or0, or1, oc0, oc1) -
                     box_sum(integ, wp, channels, ch, ir0, ir1, ic0, ic1);
    a[(long long)pi[t] * b + pj[t]] = (m - nbg * mean[pi[t]] * mean[pj[t]]) / (nbg - 1.0);
  }
  __syncthreads();
  if (tid == 0) {  // ridge (relative to trace / b, before loading) and the pivot floor (after)
    double trace = 0.0;
    for (int c = 0; c < b; ++c) trace += a[(long long)c * b + c];
    const double load = ridge > 0.0 ? ridge * trace / b : 0.0;
    double max_diag = 0.0;
    for (int c = 0; c < b; ++c) {
      a[(long long)c * b + c] += load;
      max_diag = fmax(max_diag, a[(long long)c * b + c]);
    }
    s_floor = max_diag > 0.0 ? tol * max_diag : -1.0;  // -1: zero covariance, flag below
  }
  __syncthreads();
  const double floor_ = s_floor;
  const int lane = tid & 31;
  for (int jc = 0; jc < b; ++jc) {
    double* aj = a + (long long)jc * b;
    if (tid < 32) {  // pivot: a[jc][jc] - sum_k<jc a[jc][k]^2, warp reduction
      double d = 0.0;
      for (int k = lane; k < jc; k += 32) d += aj[k] * aj[k];
      for (int off = 16; off > 0; off >>= 1) d += __shfl_down_sync(0xffffffffu, d, off);
      if (lane == 0) {
        const double pivot = aj[jc] - d;
        s_pivot = pivot;
        if (floor_ >= 0.0 && pivot > floor_) aj[jc] = sqrt(pivot);
      }
    }
    __syncthreads();
    if (!(floor_ >= 0.0 && s_pivot > floor_)) {  // uniform across the block: all leave together
      if (tid == 0) {
        failed[p] = 1;
        out[(long long)i * w + j] = __longlong_as_double(0x7ff8000000000000LL);  // NaN: host fills it
      }
      return;
    }
    const double djj = aj[jc];
    for (int r = jc + 1 + tid; r < b; r += nt) {
      double* ar = a + (long long)r * b;
      double d = ar[jc];
      for (int k = 0; k < jc; ++k) d -= ar[k] * aj[k];
      ar[jc] = d / djj;
    }
    __syncthreads();
  }
  // Forward solve L y = z - mean, score = |y|^2.
  double score = 0.0;
  for (int jc = 0; jc < b; ++jc) {
    if (tid == 0) {
      const double y = u[jc] / a[(long long)jc * b + jc];
      u[jc] = y;
      score += y * y;
    }
    __syncthreads();
    const double y = u[jc];
    for (int r = jc + 1 + tid; r < b; r += nt) u[r] -= a[(long long)r * b + jc] * y;
    __syncthreads();
  }
  if (tid == 0) {
    out[(long long)i * w + j] = score;
    failed[p] = 0;
  }
}
"""

#: Every CUDA source of this op (name -> source), compiled by tests and gpu_check.
SOURCES: dict[str, str] = {
    "rx_stats": STATS_SOURCE,
    "rx_mahalanobis": MAHALANOBIS_SOURCE,
    "rx_local": LOCAL_SOURCE,
}
#: The extern "C" kernels each source defines.
KERNELS: dict[str, tuple[str, ...]] = {
    "rx_stats": ("rx_column_sums", "rx_centred_gram", "rx_finish_stats"),
    "rx_mahalanobis": ("rx_mahalanobis",),
    "rx_local": ("rx_row_prefix", "rx_col_prefix", "rx_local_score"),
}


def unavailable_reason() -> str | None:
    return _cuda.unavailable_reason()


def compile_all(arch: str) -> dict[str, bytes]:
    """Compile every source for ``arch`` (no GPU needed): name -> cubin."""
    return {name: _cuda.compile_cubin(src, arch=arch) for name, src in SOURCES.items()}


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _host(x: Any) -> tuple[np.ndarray, Any]:
    """float64 numpy copy of ``x`` and a function giving results back in ``x``'s kind."""
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(x, dtype=np.float64), lambda out: out
    if hasattr(x, "detach"):  # torch tensor: compute from host memory, answer on its device
        device = x.device
        host = np.ascontiguousarray(x.detach().cpu().double().numpy())

        def back(out: np.ndarray) -> Any:
            import torch

            return torch.from_numpy(out).to(device)

        return host, back
    raise InputError(f"cuda tier takes numpy arrays or torch tensors; got {type(x).__name__}")


# ----------------------------------------------------------------------------- global
def global_rx(pixels: Any, *, ridge: float = 0.0, rcond: float = DEFAULT_RCOND) -> Any:
    """Global RX; see ``reference.global_rx``. numpy in -> numpy out."""
    x, back = _host(pixels)
    n, b = x.shape
    slices = _cdiv(n, _ROWS_PER_BLOCK)
    with DeviceBuffers(DeviceArray) as bufs:
        dx = bufs.upload(x)
        sums = bufs.new((slices, b))
        gram = bufs.new((slices, b, b))
        mean = bufs.new((b,))
        cov = bufs.new((b, b))
        launch(get_function(STATS_SOURCE, "rx_column_sums"), (_cdiv(b, 32), slices), (32, 8),
               [(dx.ptr, None), (n, c_long), (b, c_int), (_ROWS_PER_BLOCK, c_int), (sums.ptr, None)])
        launch(get_function(STATS_SOURCE, "rx_centred_gram"), (_cdiv(b, 16), _cdiv(b, 16), slices), (16, 16),
               [(dx.ptr, None), (sums.ptr, None), (slices, c_int), (n, c_long), (b, c_int),
                (_ROWS_PER_BLOCK, c_int), (gram.ptr, None)])
        launch(get_function(STATS_SOURCE, "rx_finish_stats"), (_cdiv(b * b, 256),), (256,),
               [(sums.ptr, None), (gram.ptr, None), (slices, c_int), (n, c_long), (b, c_int),
                (mean.ptr, None), (cov.ptr, None)])
        covariance = _regularize(cov.to_host(), ridge)
        vectors, values = whitening(covariance, rcond)
        if vectors.shape[1] == 0:  # zero covariance: pinv is 0, so is every score
            return back(np.zeros(n))
        dv = bufs.upload(np.ascontiguousarray(vectors))
        dw = bufs.upload(np.ascontiguousarray(1.0 / values))
        out = bufs.new((n,))
        launch(get_function(MAHALANOBIS_SOURCE, "rx_mahalanobis"), (_cdiv(n, 16),), (16, 16),
               [(dx.ptr, None), (mean.ptr, None), (dv.ptr, None), (dw.ptr, None), (n, c_long), (b, c_int),
                (vectors.shape[1], c_int), (out.ptr, None)])
        return back(out.to_host())


# ----------------------------------------------------------------------------- local
def _window_starts(size: int, window: int) -> np.ndarray:
    return np.clip(np.arange(size) - window // 2, 0, size - window).astype(np.int32)


def _rows_per_chunk(h: int, w: int, b: int, outer: int, budget: int) -> int:
    channels = b + b * (b + 1) // 2
    integral_row = (w + 1) * channels * 8
    scratch_row = w * b * b * 8
    return max(1, min(h, (budget - (outer + 1) * integral_row) // (integral_row + scratch_row)))


def local_rx(cube: Any, *, inner: int, outer: int, ridge: float = 0.0, rcond: float = DEFAULT_RCOND,
             chunk_bytes: int | None = None) -> Any:
    """Local dual-window RX; see ``reference.local_rx`` for the arguments and border rule."""
    x, back = _host(cube)
    h, w, b = x.shape
    if 2 * b * 8 > 48 * 1024:
        raise InputError(f"cuda local RX supports up to 3072 bands (shared memory); got {b}")
    centred = np.ascontiguousarray(x - x.reshape(-1, b).mean(axis=0))
    channels = b + b * (b + 1) // 2
    pi, pj = (a.astype(np.int32) for a in np.tril_indices(b))  # row-major packed lower triangle
    ro, ri = _window_starts(h, outer), _window_starts(h, inner)
    co, ci = _window_starts(w, outer), _window_starts(w, inner)
    step = _rows_per_chunk(h, w, b, outer, LOCAL_CHUNK_BYTES if chunk_bytes is None else chunk_bytes)
    row_prefix = get_function(LOCAL_SOURCE, "rx_row_prefix")
    col_prefix = get_function(LOCAL_SOURCE, "rx_col_prefix")
    score = get_function(LOCAL_SOURCE, "rx_local_score")
    with DeviceBuffers(DeviceArray) as bufs:
        dz = bufs.upload(centred)
        dpi, dpj = bufs.upload(pi), bufs.upload(pj)
        dro, dri, dco, dci = (bufs.upload(a) for a in (ro, ri, co, ci))
        out = bufs.new((h, w))
        max_rows = min(h, step + outer)
        integ = bufs.new((max_rows + 1, w + 1, channels))
        scratch = bufs.new((step * w, b, b))
        failed = bufs.new((step * w,), np.uint8)
        flagged = []
        for i0 in range(0, h, step):
            i1 = min(h, i0 + step)
            lo, hi = int(ro[i0]), int(ro[i1 - 1]) + outer  # the inner box lies inside the outer one
            rows = hi - lo
            launch(row_prefix, (_cdiv(channels, 128), rows), (128,),
                   [(dz.ptr, None), (lo, c_int), (rows, c_int), (w, c_int), (b, c_int), (channels, c_int),
                    (dpi.ptr, None), (dpj.ptr, None), (integ.ptr, None)])
            launch(col_prefix, (_cdiv(channels, 128), w + 1), (128,),
                   [(integ.ptr, None), (rows, c_int), (w, c_int), (channels, c_int)])
            launch(score, ((i1 - i0) * w,), (_LOCAL_THREADS,),
                   [(integ.ptr, None), (dz.ptr, None), (dpi.ptr, None), (dpj.ptr, None), (dro.ptr, None),
                    (dri.ptr, None), (dco.ptr, None), (dci.ptr, None), (i0, c_int), (lo, c_int), (w, c_int),
                    (b, c_int), (channels, c_int), (int(outer), c_int), (int(inner), c_int),
                    (float(ridge), c_double), (_PIVOT_TOL, c_double), (scratch.ptr, None), (out.ptr, None),
                    (failed.ptr, None)], shared_bytes=2 * b * 8)
            flags = failed.to_host()[: (i1 - i0) * w]
            flagged.extend((i0 + int(p) // w, int(p) % w) for p in np.flatnonzero(flags))
        scores = out.to_host()
    # Windows whose covariance is (near) singular take the reference pseudo-inverse path.
    for i, j in flagged:
        background = centred[background_mask(i, j, (h, w), inner, outer)]
        cov = _regularize(np.cov(background, rowvar=False).reshape(b, b), ridge)
        z = centred[i, j] - background.mean(axis=0)
        scores[i, j] = z @ np.linalg.pinv(cov, rcond=rcond) @ z
    return back(scores)
