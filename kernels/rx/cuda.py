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

Local RX (border rule of ``reference.local_rx``), no integral images: per pixel the C = B +
B(B+1)/2 "channels" z and the packed lower triangle of z z^T (column-major, the layout of
the packed covariance), z = x - scene mean (``rx_column_sums`` + ``rx_mean`` on the device;
removes the cancellation in ``M - s s^T / n`` for raw radiances).
  ``rx_ring_rows``    running column sums of the outer and inner window rows (w x C each):
                      built once, then each output row adds the row entering the window and
                      subtracts the one leaving it, so every image row is formed ~4 times in
                      all instead of ~outer times per output row.
  ``rx_ring_box``     the box sums along the row (two running sums per channel) -> the ring
                      moments of each pixel of a batch of output rows (pixel-major, C each).
  ``rx_local_score``  one block per pixel: moments -> covariance -> ridge -> left-looking
                      Cholesky, all in place in the pixel's packed moments (the rows of a
                      column update read consecutive addresses), forward solve,
                      ``|L^-1 (z - ring mean)|^2``. A pivot below ``_PIVOT_TOL`` x the largest
                      diagonal entry flags the pixel; the host recomputes flagged pixels with
                      the reference pseudo-inverse (the contract of ``cpu.py``).
Working memory is 2 w C doubles plus w C per output row of a batch (``local_plan.plan_local``),
within ``LOCAL_CHUNK_BYTES`` for scenes up to 1024 x 1024 x 200.

Inputs come through ``KernelCall``: device arrays in place, host arrays by pinned staging,
every launch on the caller's stream.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgesentry.errors import InputError
from edgesentry.kernels import _cuda
from edgesentry.kernels._cuda import DEVICE_HELPERS, KernelCall, c_double, c_int, c_long
from edgesentry.kernels.rx.cpu import whitening
from edgesentry.kernels.rx.local_plan import packed_pairs, plan_local, ring_channels, window_moves, window_starts
from edgesentry.kernels.rx.reference import DEFAULT_RCOND, _regularize, background_mask

_PIVOT_TOL = 1e-12
#: Pixels per block slice in the global reductions.
_ROWS_PER_BLOCK = 1024
#: Working memory local RX may take (running column sums + ring moments of a batch of rows).
LOCAL_CHUNK_BYTES = 1 << 30
_LOCAL_THREADS = 128

STATS_SOURCE = DEVICE_HELPERS + r"""

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

struct RowLoad {  // x[r][c] of the row-major (n, b) pixels, for es_centred_gram_tile
  const double* x;
  int b;
  __device__ double operator()(long long r, int c) const { return x[r * b + c]; }
};

// Centred Gram partials: block (16, 16), grid (ceil(b / 16), ceil(b / 16), slices).
// gram[s][i][j] = sum over slice s of (x[r][i] - mean[i]) (x[r][j] - mean[j]).
extern "C" __global__ void rx_centred_gram(const double* __restrict__ x, const double* __restrict__ sums,
                                           int slices, long long n, int b, int rows_per_block,
                                           double* __restrict__ gram) {
  const int i0 = blockIdx.x * ES_TILE, j0 = blockIdx.y * ES_TILE;
  const long long r0 = (long long)blockIdx.z * rows_per_block;
  const double acc = es_centred_gram_tile<false>(RowLoad{x, b}, sums, slices, n, b, r0, min(n, r0 + rows_per_block),
                                                 i0, j0);
  if (i0 + threadIdx.y < b && j0 + threadIdx.x < b) {
    gram[(long long)blockIdx.z * b * b + (long long)(i0 + threadIdx.y) * b + j0 + threadIdx.x] = acc;
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
// Ring (outer box minus inner guard box) moments without integral images. Channel ch of a pixel
// is z[ch] (ch < b) or z[pi[t]] * z[pj[t]] (ch = b + t), with (pi, pj) the lower triangle in
// column-major order, so that the moments of one pixel are its covariance packed column by
// column: element (r, k), r >= k, at k * b - k * (k - 1) / 2 + (r - k). z = x - mean (scene mean).

__device__ __forceinline__ double ring_channel(const double* __restrict__ x, const double* __restrict__ mean,
                                               const int* __restrict__ pi, const int* __restrict__ pj, int b,
                                               long long pixel, int ch) {
  const double* px = x + pixel * b;
  if (ch < b) return px[ch] - mean[ch];
  const int a = pi[ch - b], c = pj[ch - b];
  return (px[a] - mean[a]) * (px[c] - mean[c]);
}

// Column sums of the window rows: v[c][ch] = (accumulate ? v[c][ch] : 0) + sum over rows [r0, r1)
// minus sum over rows [s0, s1) of channel ch of pixel (row, c). Grid (ceil(C / 128), w), block 128:
// consecutive threads write consecutive channels of one column.
extern "C" __global__ void rx_ring_rows(const double* __restrict__ x, const double* __restrict__ mean,
                                        const int* __restrict__ pi, const int* __restrict__ pj, int w, int b,
                                        int channels, int r0, int r1, int s0, int s1, int accumulate,
                                        double* __restrict__ v) {
  const int ch = blockIdx.x * blockDim.x + threadIdx.x;
  const int c = blockIdx.y;
  if (ch >= channels) return;
  double acc = 0.0;
  for (int r = r0; r < r1; ++r) acc += ring_channel(x, mean, pi, pj, b, (long long)r * w + c, ch);
  for (int r = s0; r < s1; ++r) acc -= ring_channel(x, mean, pi, pj, b, (long long)r * w + c, ch);
  double* dst = v + (long long)c * channels + ch;
  *dst = accumulate ? *dst + acc : acc;
}

// Box sums along the row: ring[j][ch] = sum of vo[c][ch] over c in [co[j], co[j] + outer) minus
// sum of vi[c][ch] over c in [ci[j], ci[j] + inner), for the columns j of one segment. The window
// starts are non-decreasing by at most one per column (border rule), so each thread slides two
// running sums along its segment. Grid (ceil(C / 128), ceil(w / seg)), block 128.
extern "C" __global__ void rx_ring_box(const double* __restrict__ vo, const double* __restrict__ vi,
                                       const int* __restrict__ co, const int* __restrict__ ci, int w,
                                       int channels, int outer, int inner, int seg, double* __restrict__ ring) {
  const int ch = blockIdx.x * blockDim.x + threadIdx.x;
  if (ch >= channels) return;
  const int j0 = blockIdx.y * seg, j1 = min(w, j0 + seg);
  const long long C = channels;
  int oc = co[j0], ic = ci[j0];
  double so = 0.0, si = 0.0;
  for (int c = oc; c < oc + outer; ++c) so += vo[c * C + ch];
  for (int c = ic; c < ic + inner; ++c) si += vi[c * C + ch];
  for (int j = j0; j < j1; ++j) {
    for (; oc < co[j]; ++oc) so += vo[(oc + outer) * C + ch] - vo[oc * C + ch];
    for (; ic < ci[j]; ++ic) si += vi[(ic + inner) * C + ch] - vi[ic * C + ch];
    ring[j * C + ch] = so - si;
  }
}

// One block per pixel p of a batch of output rows starting at row i0 (p = (i - i0) * w + j).
// ring[p] holds the pixel's C ring moments; they become its covariance (packed, column-major, in
// place), then its Cholesky factor (left-looking, one column per step: the pivot by a warp
// reduction, the rows below in parallel with coalesced loads), then the forward solve gives
// |L^-1 (z - ring mean)|^2. A pivot at or below tol x the largest diagonal entry flags the pixel
// (NaN score, failed = 1) for the host's pseudo-inverse. Dynamic shared memory: 2 b doubles.
extern "C" __global__ void rx_local_score(const double* __restrict__ x, const double* __restrict__ mean,
                                          double* __restrict__ ring, int i0, int w, int b, int channels,
                                          double n_bg, double ridge, double tol, double* __restrict__ out,
                                          unsigned char* __restrict__ failed) {
  extern __shared__ double sh[];
  double* rmean = sh;  // b: ring mean of z
  double* u = sh + b;  // b: z - ring mean, then the forward-solve solution
  __shared__ double s_pivot;
  __shared__ double s_floor;
  const int tid = threadIdx.x, nt = blockDim.x;
  const long long p = blockIdx.x;
  const long long pixel = (long long)i0 * w + p;
  double* m = ring + p * channels;
  double* a = m + b;  // packed covariance / factor
  const double* px = x + pixel * b;
  for (int c = tid; c < b; c += nt) {
    rmean[c] = m[c] / n_bg;
    u[c] = (px[c] - mean[c]) - rmean[c];
  }
  __syncthreads();
  // moments -> covariance, walking the packed columns: (r, k) for r >= k
  for (int k = 0; k < b; ++k) {
    const long long off = (long long)k * b - (long long)k * (k - 1) / 2 - k;
    for (int r = k + tid; r < b; r += nt) a[off + r] = (a[off + r] - n_bg * rmean[r] * rmean[k]) / (n_bg - 1.0);
  }
  __syncthreads();
  if (tid == 0) {  // ridge (relative to trace / b, before loading) and the pivot floor (after)
    double trace = 0.0;
    for (int c = 0; c < b; ++c) trace += a[(long long)c * b - (long long)c * (c - 1) / 2];
    const double load = ridge > 0.0 ? ridge * trace / b : 0.0;
    double max_diag = 0.0;
    for (int c = 0; c < b; ++c) {
      double* d = a + (long long)c * b - (long long)c * (c - 1) / 2;
      *d += load;
      max_diag = fmax(max_diag, *d);
    }
    s_floor = max_diag > 0.0 ? tol * max_diag : -1.0;  // -1: zero covariance, flag below
  }
  __syncthreads();
  const double floor_ = s_floor;
  const int lane = tid & 31;
  for (int jc = 0; jc < b; ++jc) {
    const long long col = (long long)jc * b - (long long)jc * (jc - 1) / 2 - jc;  // (r, jc) at col + r
    if (tid < 32) {  // pivot: a[jc][jc] - sum_k<jc L[jc][k]^2, warp reduction
      double d = 0.0;
      for (int k = lane; k < jc; k += 32) {
        const double l = a[(long long)k * b - (long long)k * (k - 1) / 2 - k + jc];
        d += l * l;
      }
      for (int off = 16; off > 0; off >>= 1) d += __shfl_down_sync(0xffffffffu, d, off);
      if (lane == 0) {
        const double pivot = a[col + jc] - d;
        s_pivot = pivot;
        if (floor_ >= 0.0 && pivot > floor_) a[col + jc] = sqrt(pivot);
      }
    }
    __syncthreads();
    if (!(floor_ >= 0.0 && s_pivot > floor_)) {  // uniform across the block: all leave together
      if (tid == 0) {
        failed[p] = 1;
        out[pixel] = __longlong_as_double(0x7ff8000000000000LL);  // NaN: the host fills it
      }
      return;
    }
    const double djj = a[col + jc];
    for (int r = jc + 1 + tid; r < b; r += nt) {
      double d = a[col + r];
      for (int k = 0; k < jc; ++k) {
        const long long ck = (long long)k * b - (long long)k * (k - 1) / 2 - k;
        d -= a[ck + r] * a[ck + jc];  // consecutive r: consecutive addresses
      }
      a[col + r] = d / djj;
    }
    __syncthreads();
  }
  // Forward solve L y = z - ring mean, score = |y|^2.
  double score = 0.0;
  for (int jc = 0; jc < b; ++jc) {
    const long long col = (long long)jc * b - (long long)jc * (jc - 1) / 2 - jc;
    if (tid == 0) {
      const double y = u[jc] / a[col + jc];
      u[jc] = y;
      score += y * y;
    }
    __syncthreads();
    const double y = u[jc];
    for (int r = jc + 1 + tid; r < b; r += nt) u[r] -= a[col + r] * y;
    __syncthreads();
  }
  if (tid == 0) {
    out[pixel] = score;
    failed[p] = 0;
  }
}

// mean[c] = sum_s sums[s][c] / n (the scene mean from the column-sum partials).
extern "C" __global__ void rx_mean(const double* __restrict__ sums, int slices, long long n, int b,
                                   double* __restrict__ mean) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= b) return;
  double s = 0.0;
  for (int k = 0; k < slices; ++k) s += sums[(long long)k * b + c];
  mean[c] = s / (double)n;
}
""" + STATS_SOURCE

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
    "rx_local": ("rx_ring_rows", "rx_ring_box", "rx_local_score", "rx_mean", "rx_column_sums", "rx_centred_gram",
                 "rx_finish_stats"),
}


def unavailable_reason() -> str | None:
    return _cuda.unavailable_reason()


def compile_all(arch: str) -> dict[str, bytes]:
    """Compile every source for ``arch`` (no GPU needed): name -> cubin."""
    return {name: _cuda.compile_cubin(src, arch=arch) for name, src in SOURCES.items()}


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _column_means(call: KernelCall, x: Any, n: int, b: int, source: str) -> tuple[Any, Any, int]:
    """Pass A on the device: per-slice band sums (slices, b) and the scene mean (b,)."""
    slices = _cdiv(n, _ROWS_PER_BLOCK)
    sums = call.scratch((slices, b), np.float64)
    call.launch(source, "rx_column_sums", (_cdiv(b, 32), slices), (32, 8),
                [(x, None), (n, c_long), (b, c_int), (_ROWS_PER_BLOCK, c_int), (sums, None)])
    return sums, slices


# ----------------------------------------------------------------------------- global
def global_rx(pixels: Any, *, ridge: float = 0.0, rcond: float = DEFAULT_RCOND) -> Any:
    """Global RX; see ``reference.global_rx``. numpy in -> numpy out, device array in -> device out."""
    n, b = (int(s) for s in pixels.shape)
    with KernelCall(pixels) as call:
        x = call.input(pixels, np.float64)
        sums, slices = _column_means(call, x, n, b, STATS_SOURCE)
        gram = call.scratch((slices, b, b), np.float64)
        mean, cov = call.scratch((b,), np.float64), call.scratch((b, b), np.float64)
        call.launch(STATS_SOURCE, "rx_centred_gram", (_cdiv(b, 16), _cdiv(b, 16), slices), (16, 16),
                    [(x, None), (sums, None), (slices, c_int), (n, c_long), (b, c_int), (_ROWS_PER_BLOCK, c_int),
                     (gram, None)])
        call.launch(STATS_SOURCE, "rx_finish_stats", (_cdiv(b * b, 256),), (256,),
                    [(sums, None), (gram, None), (slices, c_int), (n, c_long), (b, c_int), (mean, None),
                     (cov, None)])
        # B^3 on the host (one small round trip each way): cheaper than a device eigensolver here
        vectors, values = whitening(_regularize(call.host(cov), ridge), rcond)
        out = call.output((n,), np.float64)
        if vectors.shape[1] == 0:  # zero covariance: pinv is 0, so is every score
            call.zero(out)
            return call.result(out)
        dv = call.upload(np.ascontiguousarray(vectors))
        dw = call.upload(np.ascontiguousarray(1.0 / values))  # signed: the pinv keeps negative w too
        call.launch(MAHALANOBIS_SOURCE, "rx_mahalanobis", (_cdiv(n, 16),), (16, 16),
                    [(x, None), (mean, None), (dv, None), (dw, None), (n, c_long), (b, c_int),
                     (vectors.shape[1], c_int), (out, None)])
        return call.result(out)


# ----------------------------------------------------------------------------- local
def local_rx(cube: Any, *, inner: int, outer: int, ridge: float = 0.0, rcond: float = DEFAULT_RCOND,
             chunk_bytes: int | None = None) -> Any:
    """Local dual-window RX; see ``reference.local_rx`` for the arguments and border rule.

    numpy in -> numpy out; a device array in -> the map on the device. Working memory is
    bounded by ``chunk_bytes`` (default ``LOCAL_CHUNK_BYTES``) besides the cube and the map.
    """
    h, w, b = (int(s) for s in cube.shape)
    if 2 * b * 8 > 48 * 1024:
        raise InputError(f"cuda local RX supports up to 3072 bands (shared memory); got {b}")
    channels = ring_channels(b)
    plan = plan_local(h, w, b, inner, outer, LOCAL_CHUNK_BYTES if chunk_bytes is None else chunk_bytes)
    ro, ri = window_starts(h, outer), window_starts(h, inner)
    co, ci = window_starts(w, outer), window_starts(w, inner)
    pi, pj = packed_pairs(b)
    n_bg = float(outer * outer - inner * inner)
    src = LOCAL_SOURCE
    seg = 64
    with KernelCall(cube) as call:
        x = call.input(cube, np.float64, (h * w, b))
        sums, slices = _column_means(call, x, h * w, b, src)
        mean = call.scratch((b,), np.float64)
        call.launch(src, "rx_mean", (_cdiv(b, 128),), (128,),
                    [(sums, None), (slices, c_int), (h * w, c_long), (b, c_int), (mean, None)])
        dpi, dpj, dco, dci = (call.constant(a, np.int32) for a in (pi, pj, co, ci))
        vo, vi = call.scratch((w, channels), np.float64), call.scratch((w, channels), np.float64)
        ring = call.scratch((plan.rows * w, channels), np.float64)
        failed = call.scratch((plan.rows * w,), np.uint8)
        out = call.output((h, w), np.float64)
        grid_rows = (_cdiv(channels, 128), w)
        common = [(x, None), (mean, None), (dpi, None), (dpj, None), (w, c_int), (b, c_int), (channels, c_int)]

        def rows(v: Any, add: tuple[int, int], sub: tuple[int, int], accumulate: int) -> None:
            call.launch(src, "rx_ring_rows", grid_rows, (128,),
                        [*common, (add[0], c_int), (add[1], c_int), (sub[0], c_int), (sub[1], c_int),
                         (accumulate, c_int), (v, None)])

        rows(vo, (int(ro[0]), int(ro[0]) + outer), (0, 0), 0)
        rows(vi, (int(ri[0]), int(ri[0]) + inner), (0, 0), 0)
        moves = ((vo, window_moves(h, outer)), (vi, window_moves(h, inner)))
        flagged: list[tuple[int, int]] = []
        for i0 in range(0, h, plan.rows):
            i1 = min(h, i0 + plan.rows)
            for i in range(i0, i1):
                for v, moved in moves:
                    if i in moved:  # one image row enters the window, one leaves
                        rows(v, (moved[i][0], moved[i][0] + 1), (moved[i][1], moved[i][1] + 1), 1)
                call.launch(src, "rx_ring_box", (_cdiv(channels, 128), _cdiv(w, seg)), (128,),
                            [(vo, None), (vi, None), (dco, None), (dci, None), (w, c_int), (channels, c_int),
                             (outer, c_int), (inner, c_int), (seg, c_int),
                             (_offset(ring, (i - i0) * w * channels * 8), None)])
            call.launch(src, "rx_local_score", ((i1 - i0) * w,), (_LOCAL_THREADS,),
                        [(x, None), (mean, None), (ring, None), (i0, c_int), (w, c_int), (b, c_int),
                         (channels, c_int), (n_bg, c_double), (float(ridge), c_double), (_PIVOT_TOL, c_double),
                         (out, None), (failed, None)], shared_bytes=2 * b * 8)
            flags = call.host(failed)[: (i1 - i0) * w]
            flagged.extend((i0 + int(p) // w, int(p) % w) for p in np.flatnonzero(flags))
        if not flagged:
            return call.result(out)
        # Windows whose covariance is (near) singular take the reference pseudo-inverse path.
        scores = call.host(out)
        host = (call.host(x) if call.device else KernelCall._host_array(cube, np.float64)).reshape(h, w, b)
    centred = host - host.reshape(-1, b).mean(axis=0)
    for i, j in flagged:
        background = centred[background_mask(i, j, (h, w), inner, outer)]
        cov = _regularize(np.cov(background, rowvar=False).reshape(b, b), ridge)
        z = centred[i, j] - background.mean(axis=0)
        scores[i, j] = z @ np.linalg.pinv(cov, rcond=rcond) @ z
    return _like(scores, cube)


def _offset(buf: Any, nbytes: int) -> int:
    """Device address ``nbytes`` into ``buf``."""
    return _cuda.address(buf) + nbytes


def _like(scores: np.ndarray, cube: Any) -> Any:
    """Host scores in the caller's kind (a tensor on the cube's device for device inputs)."""
    if not _cuda.is_device_array(cube):
        return scores
    if type(cube).__module__.startswith("torch"):
        import torch

        return torch.from_numpy(scores).to(cube.device)
    return _cuda.DeviceArray.from_host(scores)
