"""Soft-OTAM fusion, CUDA tier: NVRTC-compiled CUDA C, launched through the driver API.

One thread block per (query, class) pair. Its warps compute the 2 x T x T frame dot products
and the 4 x T frame norms of both views (lanes stride over D, warp-shuffle reduction) into
shared memory; then four threads run the four OTAM DPs (2 views x 2 directions) with two
rolling rows of T + 2 cells and a max-subtracted log-sum-exp softmin, and thread 0 writes
the fused logit. One launch for every pair replaces the seed's ~2.5k tiny launches. The DP
rows live in shared memory (no stack frame, no local-memory traffic).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgesentry.errors import InputError
from edgesentry.kernels import _cuda
from edgesentry.kernels._cuda import KernelCall, c_float, c_int
from edgesentry.kernels.otam.reference import COS_EPS, LAMBDA

MAX_T = 64
THREADS = 128

SOURCES: dict[str, str] = {
    "otam_fuse": r"""
#define MAX_T 64

__device__ __forceinline__ float softmin2(float a, float b, float lam) {
  const float m = fminf(a, b);
  return m - lam * logf(expf((m - a) / lam) + expf((m - b) / lam));
}

__device__ __forceinline__ float softmin3(float a, float b, float c, float lam) {
  const float m = fminf(a, fminf(b, c));
  return m - lam * logf(expf((m - a) / lam) + expf((m - b) / lam) + expf((m - c) / lam));
}

// delta(l, j) = 1 - sim[l*rs + j*cs] / (an[l] * bn[j] + eps): rows l index `an`, columns `bn`.
// prev / cur: two rolling DP rows of T + 2 cells in shared memory (not local arrays on the stack).
__device__ float otam_dp(const float* sim, const float* an, const float* bn, int T, int rs, int cs,
                         float eps, float lam, float* prev, float* cur) {
  const int last = T + 1;
  prev[0] = 0.0f;
  for (int m = 1; m <= T; ++m) prev[m] = prev[m - 1] + (1.0f - sim[(m - 1) * cs] / (an[0] * bn[m - 1] + eps));
  prev[last] = prev[T];
  for (int l = 1; l < T; ++l) {
    cur[0] = 0.0f;
    cur[1] = (1.0f - sim[l * rs] / (an[l] * bn[0] + eps)) + softmin3(prev[0], prev[1], cur[0], lam);
    for (int m = 2; m <= T; ++m) {
      const float d = 1.0f - sim[l * rs + (m - 1) * cs] / (an[l] * bn[m - 1] + eps);
      cur[m] = d + softmin2(prev[m - 1], cur[m - 1], lam);
    }
    cur[last] = softmin3(prev[T], prev[last], cur[T], lam);
    for (int m = 0; m <= last; ++m) prev[m] = cur[m];
  }
  return prev[last];
}

extern "C" __global__ void otam_fuse(const float* __restrict__ zl, const float* __restrict__ pl,
                                     const float* __restrict__ zg, const float* __restrict__ pg,
                                     float* __restrict__ dists, float* __restrict__ logits,
                                     int Q, int N, int T, int D, float eps, float lam) {
  extern __shared__ float smem[];
  float* sim = smem;                 // [2][T][T]
  float* qn = sim + 2 * T * T;       // [2][T]
  float* pn = qn + 2 * T;            // [2][T]
  __shared__ float res[4];
  __shared__ float rows[4][2][MAX_T + 2];  // the rolling DP rows of the four DPs
  const int pair = blockIdx.x;
  const int q = pair / N, n = pair % N;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int jobs = T * T + 2 * T;
  for (int v = 0; v < 2; ++v) {
    const float* z = (v == 0 ? zl : zg) + (long long)q * T * D;
    const float* p = (v == 0 ? pl : pg) + (long long)n * T * D;
    for (int k = warp; k < jobs; k += warps) {
      const float* a;
      const float* b;
      if (k < T * T) { a = z + (long long)(k / T) * D; b = p + (long long)(k % T) * D; }
      else if (k < T * T + T) { a = z + (long long)(k - T * T) * D; b = a; }
      else { a = p + (long long)(k - T * T - T) * D; b = a; }
      float acc = 0.0f;
      for (int d = lane; d < D; d += 32) acc = fmaf(a[d], b[d], acc);
      for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
      if (lane == 0) {
        if (k < T * T) sim[v * T * T + k] = acc;
        else if (k < T * T + T) qn[v * T + k - T * T] = sqrtf(acc);
        else pn[v * T + k - T * T - T] = sqrtf(acc);
      }
    }
  }
  __syncthreads();
  if (threadIdx.x < 4) {
    const int v = threadIdx.x >> 1, dir = threadIdx.x & 1;
    const float* s = sim + v * T * T;
    float* prev = rows[threadIdx.x][0];
    float* cur = rows[threadIdx.x][1];
    res[threadIdx.x] = dir == 0 ? otam_dp(s, qn + v * T, pn + v * T, T, T, 1, eps, lam, prev, cur)
                                : otam_dp(s, pn + v * T, qn + v * T, T, 1, T, eps, lam, prev, cur);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const int pairs = Q * N;
    for (int i = 0; i < 4; ++i) dists[i * pairs + pair] = res[i];
    logits[pair] = -((res[0] + res[1]) + (res[2] + res[3]));
  }
}
""",
}


#: The extern "C" kernels each source defines.
KERNELS: dict[str, tuple[str, ...]] = {"otam_fuse": ("otam_fuse",)}


def unavailable_reason() -> str | None:
    return _cuda.unavailable_reason()


def compile_all(arch: str) -> dict[str, bytes]:
    """Compile every kernel of this tier for ``arch`` (works without a GPU)."""
    return {name: _cuda.compile_cubin(src, arch=arch) for name, src in SOURCES.items()}


def shared_bytes(t: int) -> int:
    return (2 * t * t + 4 * t) * 4


def fuse(z_local: Any, p_local: Any, z_global: Any, p_global: Any, *, lam: float = LAMBDA,
         eps: float = COS_EPS, out: tuple[Any, Any] | None = None) -> tuple[Any, Any]:
    """(dists [4, Q, N], logits [Q, N]) float32.

    numpy in -> numpy out; device arrays (CUDA tensors, ``__cuda_array_interface__``) in ->
    device out, launched on the caller's stream. ``out`` may pass preallocated outputs.
    """
    inputs = (z_local, p_local, z_global, p_global)
    t = int(z_local.shape[1])
    if t > MAX_T:
        raise InputError(f"the cuda OTAM kernel handles up to T = {MAX_T} frames; got T = {t}")
    q, d = int(z_local.shape[0]), int(z_local.shape[2])
    n = int(p_local.shape[0])
    scalars = [(q, c_int), (n, c_int), (t, c_int), (d, c_int), (float(eps), c_float), (float(lam), c_float)]
    with KernelCall(*inputs) as call:
        staged = [call.input(x, np.float32) for x in inputs]
        dists, logits = call.output((4, q, n), np.float32), call.output((q, n), np.float32)
        call.launch(SOURCES["otam_fuse"], "otam_fuse", (q * n,), (THREADS,),
                    [(a, None) for a in (*staged, dists, logits)] + scalars, shared_bytes=shared_bytes(t))
        if out is None:
            return call.result(dists), call.result(logits)
        for dest, res in zip(out, (dists, logits)):
            _copy_into(dest, call, res)
        return out


def _copy_into(dest: Any, call: KernelCall, res: Any) -> None:
    if isinstance(dest, np.ndarray):
        dest[...] = call.host(res)
    elif hasattr(res, "copy_") or not hasattr(dest, "copy_"):
        dest.copy_(res)
    else:
        import torch

        dest.copy_(torch.from_numpy(call.host(res)).to(dest.device))
