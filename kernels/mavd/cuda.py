"""MAVD kernels, CUDA tier: CUDA C compiled with NVRTC, launched through the driver API.

``mavd_align_fuse``: one block of 128 threads per tile of ``ROWS`` snippet rows. The tile's
inputs are staged in shared memory; thread ``o`` computes output channel ``o`` of every row
of the tile (weight element read once per tile, ``ROWS`` accumulators in registers). The
layers run va, vf, the split-K fusion layer and the output layer with the intermediate
activations only in shared memory; only the 64-d embedding goes to global memory.

``mavd_positional``: one thread per (sequence, channel): a forward exponential scan into
the output, then a backward scan that adds the tail and removes the doubly counted diagonal.
Consecutive threads take consecutive channels, so loads and stores coalesce.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edgesentry.kernels import _cuda
from edgesentry.kernels._cuda import DeviceArray, c_float, c_long, get_function, launch

from .reference import ALIGN_FUSE_PARAMS, POS_DECAY, positional_row_sums

ROWS = 16
THREADS = 128

ALIGN_FUSE_SRC = r"""
#define ROWS 16
template <int IN, int OUT>
__device__ __forceinline__ void dense_relu(const float* x, float* y, const float* __restrict__ w,
                                           const float* __restrict__ b) {
  const int o = threadIdx.x;
  if (o < OUT) {
    float acc[ROWS];
    const float bias = b[o];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) acc[r] = bias;
    for (int i = 0; i < IN; ++i) {
      const float wi = w[o * IN + i];
#pragma unroll
      for (int r = 0; r < ROWS; ++r) acc[r] = fmaf(x[r * IN + i], wi, acc[r]);
    }
#pragma unroll
    for (int r = 0; r < ROWS; ++r) y[r * OUT + o] = fmaxf(acc[r], 0.0f);
  }
}

extern "C" __global__ void mavd_align_fuse(
    const float* __restrict__ v, const float* __restrict__ a, const float* __restrict__ f,
    float* __restrict__ out,
    const float* wa0, const float* ba0, const float* wa1, const float* ba1,
    const float* wa2, const float* ba2,
    const float* wf0, const float* bf0, const float* wf1, const float* bf1,
    const float* wf2, const float* bf2,
    const float* __restrict__ we1, const float* __restrict__ be1, const float* we2, const float* be2,
    long long n_rows, long long a_rows) {
  __shared__ float sv[ROWS * 128];
  __shared__ float sa[ROWS * 32], sa2[ROWS * 32];
  __shared__ float sf[ROWS * 64], sf2[ROWS * 64];
  __shared__ float sh[ROWS * 112];
  const long long r0 = (long long)blockIdx.x * ROWS;
  const int tid = threadIdx.x;
  for (int idx = tid; idx < ROWS * 128; idx += blockDim.x) {
    const long long r = r0 + idx / 128;
    sv[idx] = r < n_rows ? v[r * 128 + idx % 128] : 0.0f;
  }
  for (int idx = tid; idx < ROWS * 64; idx += blockDim.x) {
    const long long r = r0 + idx / 64;
    sf[idx] = r < n_rows ? f[r * 64 + idx % 64] : 0.0f;
  }
  for (int idx = tid; idx < ROWS * 32; idx += blockDim.x) {
    const long long r = r0 + idx / 32;
    sa[idx] = r < n_rows ? a[(r % a_rows) * 32 + idx % 32] : 0.0f;
  }
  __syncthreads();
  dense_relu<32, 32>(sa, sa2, wa0, ba0);
  dense_relu<64, 64>(sf, sf2, wf0, bf0);
  __syncthreads();
  dense_relu<32, 32>(sa2, sa, wa1, ba1);
  dense_relu<64, 64>(sf2, sf, wf1, bf1);
  __syncthreads();
  dense_relu<32, 32>(sa, sa2, wa2, ba2);
  dense_relu<64, 64>(sf, sf2, wf2, bf2);
  __syncthreads();
  // fusion layer 224 -> 112 on the virtual concat [v | va | vf] (split K, never formed)
  if (tid < 112) {
    float acc[ROWS];
    const float bias = be1[tid];
    const float* w = we1 + tid * 224;
#pragma unroll
    for (int r = 0; r < ROWS; ++r) acc[r] = bias;
    for (int i = 0; i < 128; ++i) {
      const float wi = w[i];
#pragma unroll
      for (int r = 0; r < ROWS; ++r) acc[r] = fmaf(sv[r * 128 + i], wi, acc[r]);
    }
    for (int i = 0; i < 32; ++i) {
      const float wi = w[128 + i];
#pragma unroll
      for (int r = 0; r < ROWS; ++r) acc[r] = fmaf(sa2[r * 32 + i], wi, acc[r]);
    }
    for (int i = 0; i < 64; ++i) {
      const float wi = w[160 + i];
#pragma unroll
      for (int r = 0; r < ROWS; ++r) acc[r] = fmaf(sf2[r * 64 + i], wi, acc[r]);
    }
#pragma unroll
    for (int r = 0; r < ROWS; ++r) sh[r * 112 + tid] = fmaxf(acc[r], 0.0f);
  }
  __syncthreads();
  if (tid < 64) {
    float acc[ROWS];
    const float bias = be2[tid];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) acc[r] = bias;
    for (int i = 0; i < 112; ++i) {
      const float wi = we2[tid * 112 + i];
#pragma unroll
      for (int r = 0; r < ROWS; ++r) acc[r] = fmaf(sh[r * 112 + i], wi, acc[r]);
    }
    for (int r = 0; r < ROWS; ++r) {
      if (r0 + r < n_rows) out[(r0 + r) * 64 + tid] = fmaxf(acc[r], 0.0f);
    }
  }
}
"""

POSITIONAL_SRC = r"""
extern "C" __global__ void mavd_positional(const float* __restrict__ t, const float* __restrict__ inv_s,
                                           float* __restrict__ out, long long n_seq, long long n_len,
                                           long long n_ch, float decay) {
  const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= n_seq * n_ch) return;
  const long long seq = idx / n_ch, c = idx % n_ch;
  const float* x = t + seq * n_len * n_ch + c;
  float* y = out + seq * n_len * n_ch + c;
  float acc = 0.0f;
  for (long long i = 0; i < n_len; ++i) {
    acc = fmaf(acc, decay, x[i * n_ch] * inv_s[i]);
    y[i * n_ch] = acc;
  }
  acc = 0.0f;
  for (long long i = n_len - 1; i >= 0; --i) {
    const float u = x[i * n_ch] * inv_s[i];
    acc = fmaf(acc, decay, u);
    y[i * n_ch] = y[i * n_ch] + acc - u;
  }
}
"""

#: kernel name -> CUDA C source (compiled for every TARGET_ARCHS in the tests)
SOURCES = {"mavd_align_fuse": ALIGN_FUSE_SRC, "mavd_positional": POSITIONAL_SRC}


def unavailable_reason() -> str | None:
    return _cuda.unavailable_reason()


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _stage(x: Any, keep: list[Any]) -> Any:
    """A device pointer for ``x`` (numpy is uploaded; the buffer is kept alive in ``keep``)."""
    if _is_torch(x):
        t = x.float().contiguous()
        keep.append(t)
        return _cuda.pointer(t)
    dev = DeviceArray.from_host(np.ascontiguousarray(x, np.float32))
    keep.append(dev)
    return dev.ptr


def _output(shape: tuple[int, ...], like: Any, keep: list[Any]) -> tuple[Any, Any]:
    if _is_torch(like):
        import torch

        out = torch.full(shape, float("nan"), dtype=torch.float32, device=like.device)
        return out, _cuda.pointer(out)
    dev = DeviceArray(shape, np.float32).fill_nan()
    keep.append(dev)
    return dev, dev.ptr


def _finish(out: Any, keep: list[Any], dest: Any = None) -> Any:
    result = out if _is_torch(out) else out.to_host()
    if _is_torch(out):
        from cuda.bindings import driver

        _cuda._check(driver.cuCtxSynchronize())
    for item in keep:
        if not _is_torch(item):
            item.free()
    if dest is None:
        return result
    if isinstance(dest, np.ndarray):
        dest[...] = result if isinstance(result, np.ndarray) else result.cpu().numpy()
    else:
        dest.copy_(result if not isinstance(result, np.ndarray) else dest.new_tensor(result))
    return dest


def align_fuse(v: Any, a: Any, f: Any, params: Mapping[str, Any], out: Any = None) -> Any:
    """See ``reference.align_fuse``."""
    keep: list[Any] = []
    n, m = int(v.shape[0]), int(a.shape[0])
    ptrs = [_stage(x, keep) for x in (v, a, f)]
    wptrs = [_stage(params[k], keep) for k in ALIGN_FUSE_PARAMS]
    res, out_ptr = _output((n, 64), v, keep)
    if n:
        fn = get_function(ALIGN_FUSE_SRC, "mavd_align_fuse")
        args = [(p, None) for p in (*ptrs, out_ptr, *wptrs)] + [(n, c_long), (m, c_long)]
        launch(fn, ((n + ROWS - 1) // ROWS,), (THREADS,), args)
    return _finish(res, keep, out)


def positional(t: Any, out: Any = None) -> Any:
    """See ``reference.positional``: (..., T, C) -> same shape."""
    keep: list[Any] = []
    shape = tuple(int(s) for s in t.shape)
    n, c = shape[-2:]
    seqs = int(np.prod(shape[:-2], dtype=np.int64))
    t_ptr = _stage(t, keep)
    s_ptr = _stage((1.0 / positional_row_sums(n)).astype(np.float32), keep)
    res, out_ptr = _output(shape, t, keep)
    total = seqs * c
    if total:
        fn = get_function(POSITIONAL_SRC, "mavd_positional")
        args = [
            (t_ptr, None),
            (s_ptr, None),
            (out_ptr, None),
            (seqs, c_long),
            (n, c_long),
            (c, c_long),
            (POS_DECAY, c_float),
        ]
        launch(fn, ((total + 127) // 128,), (128,), args)
    return _finish(res, keep, out)
