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

from edgesentry.errors import InputError
from edgesentry.kernels import _cuda
from edgesentry.kernels._cuda import DeviceArray, DeviceBuffers, c_int, c_long, get_function, launch
from edgesentry.kernels.rx.cpu import whitening
from edgesentry.kernels.rx.cuda import FINISH_STATS_SOURCE

from .reference import DEFAULT_RCOND

#: Pixels per block slice in the per-band reductions.
_PIXELS_PER_SLICE = 1024
_REDUCE_THREADS = 256

FUSED_SOURCE = r"""
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

// Per-block min / max over a grid-stride range: grid (blocks), block THREADS.
extern "C" __global__ void fers_minmax_partial(const float* __restrict__ x, const float* __restrict__ spe,
                                               const float* __restrict__ spa, int has_spa, long long total,
                                               float* __restrict__ part_min, float* __restrict__ part_max) {
  __shared__ float smin[THREADS];
  __shared__ float smax[THREADS];
  float lo = __int_as_float(0x7f800000), hi = -__int_as_float(0x7f800000);  // +inf, -inf
  for (long long e = (long long)blockIdx.x * THREADS + threadIdx.x; e < total; e += (long long)gridDim.x * THREADS) {
    const float v = fused_value(x, spe, spa, has_spa, e);
    lo = fminf(lo, v);
    hi = fmaxf(hi, v);
  }
  smin[threadIdx.x] = lo;
  smax[threadIdx.x] = hi;
  __syncthreads();
  for (int s = THREADS / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      smin[threadIdx.x] = fminf(smin[threadIdx.x], smin[threadIdx.x + s]);
      smax[threadIdx.x] = fmaxf(smax[threadIdx.x], smax[threadIdx.x + s]);
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    part_min[blockIdx.x] = smin[0];
    part_max[blockIdx.x] = smax[0];
  }
}

// stats = (min, max) of the partials: one block of THREADS.
extern "C" __global__ void fers_minmax_final(const float* __restrict__ part_min, const float* __restrict__ part_max,
                                             int parts, float* __restrict__ stats) {
  __shared__ float smin[THREADS];
  __shared__ float smax[THREADS];
  float lo = __int_as_float(0x7f800000), hi = -__int_as_float(0x7f800000);
  for (int i = threadIdx.x; i < parts; i += THREADS) {
    lo = fminf(lo, part_min[i]);
    hi = fmaxf(hi, part_max[i]);
  }
  smin[threadIdx.x] = lo;
  smax[threadIdx.x] = hi;
  __syncthreads();
  for (int s = THREADS / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      smin[threadIdx.x] = fminf(smin[threadIdx.x], smin[threadIdx.x + s]);
      smax[threadIdx.x] = fmaxf(smax[threadIdx.x], smax[threadIdx.x + s]);
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    stats[0] = smin[0];
    stats[1] = smax[0];
  }
}

// sums[s * b + c] = sum of normalised f over pixels [s * pps, (s + 1) * pps) of band c.
// grid (b, slices), block THREADS; threads walk consecutive pixels (coalesced).
extern "C" __global__ void fers_band_sums(const float* __restrict__ x, const float* __restrict__ spe,
                                          const float* __restrict__ spa, int has_spa,
                                          const float* __restrict__ stats, long long n, int b, int pps,
                                          double* __restrict__ sums) {
  __shared__ double part[THREADS];
  const int c = blockIdx.x;
  const long long r0 = (long long)blockIdx.y * pps;
  const long long r1 = min(n, r0 + pps);
  double acc = 0.0;
  for (long long r = r0 + threadIdx.x; r < r1; r += THREADS) acc += normalised(x, spe, spa, has_spa, stats, c * n + r);
  part[threadIdx.x] = acc;
  __syncthreads();
  for (int s = THREADS / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) sums[(long long)blockIdx.y * b + c] = part[0];
}

// Centred Gram partials: block (16, 16), grid (ceil(b / 16), ceil(b / 16), slices).
// gram[s][i][j] = sum over the pixels of slice s of z_i z_j, z = normalised f - band mean.
extern "C" __global__ void fers_centred_gram(const float* __restrict__ x, const float* __restrict__ spe,
                                             const float* __restrict__ spa, int has_spa,
                                             const float* __restrict__ stats, const double* __restrict__ sums,
                                             int slices, long long n, int b, int pps, double* __restrict__ gram) {
  __shared__ double zi[TILE][TILE + 1];  // band x pixel
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
  const long long r0 = (long long)blockIdx.z * pps;
  const long long r1 = min(n, r0 + pps);
  double acc = 0.0;
  for (long long rb = r0; rb < r1; rb += TILE) {
    const long long r = rb + tx;  // consecutive threads read consecutive pixels
    const int ci = i0 + ty, cj = j0 + ty;
    zi[ty][tx] = (r < r1 && ci < b) ? normalised(x, spe, spa, has_spa, stats, ci * n + r) - mean_i[ty] : 0.0;
    zj[ty][tx] = (r < r1 && cj < b) ? normalised(x, spe, spa, has_spa, stats, cj * n + r) - mean_j[ty] : 0.0;
    __syncthreads();
#pragma unroll
    for (int t = 0; t < TILE; ++t) acc += zi[ty][t] * zj[tx][t];
    __syncthreads();
  }
  if (i0 + ty < b && j0 + tx < b) {
    gram[(long long)blockIdx.z * b * b + (long long)(i0 + ty) * b + j0 + tx] = acc;
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


class _FeatureBuffers(DeviceBuffers):
    """``DeviceBuffers`` that also take the (B, N) float32 features: CUDA tensors in place."""

    def feature(self, a: Any, bands: int, n: int) -> Any:
        """Device pointer of a (B, N) float32 feature: CUDA tensors in place, numpy uploaded."""
        if hasattr(a, "data_ptr") and getattr(a.device, "type", "") == "cuda":
            t = a.detach().reshape(bands, n).float().contiguous()
            self.keep(t)  # alive until the call ends
            return _cuda.pointer(t)
        if hasattr(a, "detach"):
            a = a.detach().cpu().numpy()
        if not isinstance(a, np.ndarray):
            raise InputError(f"cuda tier takes numpy arrays or torch tensors; got {type(a).__name__}")
        return self.upload(np.ascontiguousarray(a.reshape(bands, n), dtype=np.float32)).ptr


def fers_rx(x: Any, spe: Any, spa: Any = None, *, rcond: float = DEFAULT_RCOND) -> Any:
    """See ``reference.fers_rx``; (H, W) float64 (numpy, or a tensor on ``x``'s device)."""
    bands, rows, cols = (int(s) for s in x.shape[-3:])
    n = rows * cols
    total = bands * n
    slices = _cdiv(n, _PIXELS_PER_SLICE)
    fn = lambda name: get_function(FUSED_SOURCE, name)  # noqa: E731
    with _FeatureBuffers(DeviceArray) as bufs:
        px, pspe = bufs.feature(x, bands, n), bufs.feature(spe, bands, n)
        pspa = bufs.feature(spa, bands, n) if spa is not None else pspe
        has_spa = int(spa is not None)
        feats = [(px, None), (pspe, None), (pspa, None), (has_spa, c_int)]
        blocks = max(1, min(1024, _cdiv(total, _REDUCE_THREADS * 8)))
        pmin, pmax = bufs.new((blocks,), np.float32), bufs.new((blocks,), np.float32)
        stats = bufs.new((2,), np.float32)
        launch(fn("fers_minmax_partial"), (blocks,), (_REDUCE_THREADS,),
               [*feats, (total, c_long), (pmin.ptr, None), (pmax.ptr, None)])
        launch(fn("fers_minmax_final"), (1,), (_REDUCE_THREADS,),
               [(pmin.ptr, None), (pmax.ptr, None), (blocks, c_int), (stats.ptr, None)])
        sums = bufs.new((slices, bands))
        launch(fn("fers_band_sums"), (bands, slices), (_REDUCE_THREADS,),
               [*feats, (stats.ptr, None), (n, c_long), (bands, c_int), (_PIXELS_PER_SLICE, c_int),
                (sums.ptr, None)])
        gram = bufs.new((slices, bands, bands))
        launch(fn("fers_centred_gram"), (_cdiv(bands, 16), _cdiv(bands, 16), slices), (16, 16),
               [*feats, (stats.ptr, None), (sums.ptr, None), (slices, c_int), (n, c_long), (bands, c_int),
                (_PIXELS_PER_SLICE, c_int), (gram.ptr, None)])
        mean, cov = bufs.new((bands,)), bufs.new((bands, bands))
        launch(fn("rx_finish_stats"), (_cdiv(bands * bands, 256),), (256,),
               [(sums.ptr, None), (gram.ptr, None), (slices, c_int), (n, c_long), (bands, c_int),
                (mean.ptr, None), (cov.ptr, None)])
        vectors, values = whitening(cov.to_host(), rcond)
        if vectors.shape[1] == 0:  # constant cube: pinv is 0, so is every score
            scores = np.zeros(n)
        else:
            dv = bufs.upload(np.ascontiguousarray(vectors))
            dw = bufs.upload(np.ascontiguousarray(1.0 / values))
            out = bufs.new((n,))
            launch(fn("fers_mahalanobis"), (_cdiv(n, 16),), (16, 16),
                   [*feats, (stats.ptr, None), (mean.ptr, None), (dv.ptr, None), (dw.ptr, None), (n, c_long),
                    (bands, c_int), (vectors.shape[1], c_int), (out.ptr, None)])
            scores = out.to_host()
    result = scores.reshape(rows, cols)
    if hasattr(x, "detach"):
        import torch

        return torch.from_numpy(result).to(x.device)
    return result
