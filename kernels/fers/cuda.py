"""FERS RX-on-features, CUDA tier: CUDA C (NVRTC) kernels launched through the driver API.

Specification: ``reference.py``. Torch-free (Jetson path). Like the Triton tier, no pass
ever stores the fused cube: each one reads ``x``, ``spe`` and ``spa`` (float32, (B, N)
band-major) and forms ``f = (spa + spe) + x`` in registers, normalised as
``(f - min) / (max - min)`` in float32 (IEEE division: NVRTC runs without fast math).

  ``fers_minmax_partial`` / ``fers_minmax_final``  global min / max of f (two-level reduction).
  ``fers_band_sums``       per-band float64 sums over slices of pixels (coalesced along pixels).
  ``fers_centred_gram``    16 x 16 float64 tiles of the centred Gram per pixel slice; each block
                           derives the band means from the slice sums itself.
  ``rx_finish_stats``      mean (B) and covariance (B x B, N - 1) from the slice partials.
  host (numpy)             float64 ``eigh`` and the pinv cutoff (``rx.cpu.whitening``).
  ``fers_mahalanobis``     score_n = sum_k (z_n . v_k)^2 / w_k; a block owns 16 pixels and walks
                           16-wide tiles of k and bands in shared memory; the k x N projection
                           is never stored.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgesentry.kernels import _cuda
from edgesentry.kernels._cuda import DEVICE_HELPERS, KernelCall, c_int, c_long
from edgesentry.kernels.fers.reference import DEFAULT_RCOND
from edgesentry.kernels.rx.cpu import whitening
from edgesentry.kernels.rx.cuda import FINISH_STATS_SOURCE

#: Pixels per block slice in the per-band reductions.
_PIXELS_PER_SLICE = 1024
_REDUCE_THREADS = 256

FUSED_SOURCE = DEVICE_HELPERS + r"""
#define TILE 16
#define THREADS 256

// Fused value of element e of the (B, N) cube, in the official float32 order (spa + spe) + x.
__device__ __forceinline__ float fused_value(const float* __restrict__ x, const float* __restrict__ spe,
                                             const float* __restrict__ spa, int has_spa, long long e) {
  float v = spe[e];
  if (has_spa) v = spa[e] + v;
  return v + x[e];
}

__device__ __forceinline__ double normalised(const float* __restrict__ x, const float* __restrict__ spe,
                                             const float* __restrict__ spa, int has_spa,
                                             const float* __restrict__ stats, long long e) {
  const float lo = stats[0], hi = stats[1];
  return (double)((fused_value(x, spe, spa, has_spa, e) - lo) / (hi - lo));
}

struct FusedLoad {  // normalised fused value of (pixel r, band c) for es_centred_gram_tile
  const float* x;
  const float* spe;
  const float* spa;
  int has_spa;
  const float* stats;
  long long n;
  __device__ double operator()(long long r, int c) const { return normalised(x, spe, spa, has_spa, stats, c * n + r); }
};

// Per-block min / max over a grid-stride range: grid (blocks), block THREADS.
extern "C" __global__ void fers_minmax_partial(const float* __restrict__ x, const float* __restrict__ spe,
                                               const float* __restrict__ spa, int has_spa, long long total,
                                               float* __restrict__ part_min, float* __restrict__ part_max) {
  float lo = ES_INF, hi = -ES_INF;
  for (long long e = (long long)blockIdx.x * THREADS + threadIdx.x; e < total; e += (long long)gridDim.x * THREADS) {
    const float v = fused_value(x, spe, spa, has_spa, e);
    lo = fminf(lo, v);
    hi = fmaxf(hi, v);
  }
  es_block_min_max<THREADS>(lo, hi);
  if (threadIdx.x == 0) {
    part_min[blockIdx.x] = lo;
    part_max[blockIdx.x] = hi;
  }
}

// stats = (min, max) of the partials: one block of THREADS.
extern "C" __global__ void fers_minmax_final(const float* __restrict__ part_min, const float* __restrict__ part_max,
                                             int parts, float* __restrict__ stats) {
  float lo = ES_INF, hi = -ES_INF;
  for (int i = threadIdx.x; i < parts; i += THREADS) {
    lo = fminf(lo, part_min[i]);
    hi = fmaxf(hi, part_max[i]);
  }
  es_block_min_max<THREADS>(lo, hi);
  if (threadIdx.x == 0) {
    stats[0] = lo;
    stats[1] = hi;
  }
}

// sums[s * b + c] = sum of normalised f over pixels [s * pps, (s + 1) * pps) of band c.
// grid (b, slices), block THREADS; threads walk consecutive pixels (coalesced).
extern "C" __global__ void fers_band_sums(const float* __restrict__ x, const float* __restrict__ spe,
                                          const float* __restrict__ spa, int has_spa,
                                          const float* __restrict__ stats, long long n, int b, int pps,
                                          double* __restrict__ sums) {
  const int c = blockIdx.x;
  const long long r0 = (long long)blockIdx.y * pps;
  const long long r1 = min(n, r0 + pps);
  double acc = 0.0;
  for (long long r = r0 + threadIdx.x; r < r1; r += THREADS) acc += normalised(x, spe, spa, has_spa, stats, c * n + r);
  const double total = es_block_sum<THREADS>(acc);
  if (threadIdx.x == 0) sums[(long long)blockIdx.y * b + c] = total;
}

// Centred Gram partials: block (16, 16), grid (ceil(b / 16), ceil(b / 16), slices).
// gram[s][i][j] = sum over the pixels of slice s of z_i z_j, z = normalised f - band mean.
extern "C" __global__ void fers_centred_gram(const float* __restrict__ x, const float* __restrict__ spe,
                                             const float* __restrict__ spa, int has_spa,
                                             const float* __restrict__ stats, const double* __restrict__ sums,
                                             int slices, long long n, int b, int pps, double* __restrict__ gram) {
  const FusedLoad load{x, spe, spa, has_spa, stats, n};
  const int i0 = blockIdx.x * ES_TILE, j0 = blockIdx.y * ES_TILE;
  const long long r0 = (long long)blockIdx.z * pps;
  const double acc = es_centred_gram_tile<true>(load, sums, slices, n, b, r0, min(n, r0 + pps), i0, j0);
  if (i0 + threadIdx.y < b && j0 + threadIdx.x < b) {
    gram[(long long)blockIdx.z * b * b + (long long)(i0 + threadIdx.y) * b + j0 + threadIdx.x] = acc;
  }
}

// score[p] = sum_k (z_p . v[:, k])^2 * invw[k]. Block (16, 16) owns 16 pixels and walks
// 16-wide tiles of k and of bands, both staged in shared memory; grid ceil(n / 16).
extern "C" __global__ void fers_mahalanobis(const float* __restrict__ x, const float* __restrict__ spe,
                                            const float* __restrict__ spa, int has_spa,
                                            const float* __restrict__ stats, const double* __restrict__ mean,
                                            const double* __restrict__ v, const double* __restrict__ invw,
                                            long long n, int b, int k, double* __restrict__ score) {
  __shared__ double zs[TILE][TILE + 1];  // pixel x band
  __shared__ double vs[TILE][TILE + 1];  // band x k
  __shared__ double red[TILE][TILE + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const long long p0 = (long long)blockIdx.x * TILE;
  double acc = 0.0;
  for (int k0 = 0; k0 < k; k0 += TILE) {
    double dot = 0.0;
    for (int b0 = 0; b0 < b; b0 += TILE) {
      // thread (tx, ty) loads band b0 + ty of pixel p0 + tx: consecutive threads, consecutive pixels
      const long long p = p0 + tx;
      const int c = b0 + ty;
      zs[tx][ty] = (p < n && c < b) ? normalised(x, spe, spa, has_spa, stats, c * n + p) - mean[c] : 0.0;
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
  if (tx == 0 && p0 + ty < n) {
    double s = 0.0;
    for (int t = 0; t < TILE; ++t) s += red[ty][t];
    score[p0 + ty] = s;
  }
}
"""

FUSED_SOURCE = FUSED_SOURCE + FINISH_STATS_SOURCE  # rx_finish_stats: the same reduction as RX

SOURCES: dict[str, str] = {"fers_fused": FUSED_SOURCE}
#: The extern "C" kernels each source defines.
KERNELS: dict[str, tuple[str, ...]] = {
    "fers_fused": ("fers_minmax_partial", "fers_minmax_final", "fers_band_sums", "fers_centred_gram",
                   "rx_finish_stats", "fers_mahalanobis"),
}


def unavailable_reason() -> str | None:
    return _cuda.unavailable_reason()


def compile_all(arch: str) -> dict[str, bytes]:
    """Compile every source for ``arch`` (no GPU needed): name -> cubin."""
    return {name: _cuda.compile_cubin(src, arch=arch) for name, src in SOURCES.items()}


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def fers_rx(x: Any, spe: Any, spa: Any = None, *, rcond: float = DEFAULT_RCOND) -> Any:
    """See ``reference.fers_rx``; (H, W) float64: numpy for host inputs, on the device for device inputs."""
    bands, rows, cols = (int(s) for s in x.shape[-3:])
    n = rows * cols
    total = bands * n
    slices = _cdiv(n, _PIXELS_PER_SLICE)
    src = FUSED_SOURCE
    with KernelCall(x, spe, spa) as call:
        px, pspe = call.input(x, np.float32, (bands, n)), call.input(spe, np.float32, (bands, n))
        pspa = call.input(spa, np.float32, (bands, n)) if spa is not None else pspe
        feats = [(px, None), (pspe, None), (pspa, None), (int(spa is not None), c_int)]
        blocks = max(1, min(1024, _cdiv(total, _REDUCE_THREADS * 8)))
        pmin, pmax = call.scratch((blocks,), np.float32), call.scratch((blocks,), np.float32)
        stats = call.scratch((2,), np.float32)
        call.launch(src, "fers_minmax_partial", (blocks,), (_REDUCE_THREADS,),
                    [*feats, (total, c_long), (pmin, None), (pmax, None)])
        call.launch(src, "fers_minmax_final", (1,), (_REDUCE_THREADS,),
                    [(pmin, None), (pmax, None), (blocks, c_int), (stats, None)])
        sums = call.scratch((slices, bands), np.float64)
        call.launch(src, "fers_band_sums", (bands, slices), (_REDUCE_THREADS,),
                    [*feats, (stats, None), (n, c_long), (bands, c_int), (_PIXELS_PER_SLICE, c_int), (sums, None)])
        gram = call.scratch((slices, bands, bands), np.float64)
        call.launch(src, "fers_centred_gram", (_cdiv(bands, 16), _cdiv(bands, 16), slices), (16, 16),
                    [*feats, (stats, None), (sums, None), (slices, c_int), (n, c_long), (bands, c_int),
                     (_PIXELS_PER_SLICE, c_int), (gram, None)])
        mean, cov = call.scratch((bands,), np.float64), call.scratch((bands, bands), np.float64)
        call.launch(src, "rx_finish_stats", (_cdiv(bands * bands, 256),), (256,),
                    [(sums, None), (gram, None), (slices, c_int), (n, c_long), (bands, c_int), (mean, None),
                     (cov, None)])
        vectors, values = whitening(call.host(cov), rcond)  # B^3 on the host: one small round trip
        out = call.output((rows, cols), np.float64)
        if vectors.shape[1] == 0:  # constant cube: pinv is 0, so is every score
            call.zero(out)
        else:
            dv = call.upload(np.ascontiguousarray(vectors))
            dw = call.upload(np.ascontiguousarray(1.0 / values))  # signed: the pinv keeps negative w too
            call.launch(src, "fers_mahalanobis", (_cdiv(n, 16),), (16, 16),
                        [*feats, (stats, None), (mean, None), (dv, None), (dw, None), (n, c_long), (bands, c_int),
                         (vectors.shape[1], c_int), (out, None)])
        return call.result(out)
