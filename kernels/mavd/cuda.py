"""MAVD kernels, CUDA tier: CUDA C compiled with NVRTC, launched through the driver API.

``mavd_align_fuse``: one block of 128 threads per tile of ``ROWS`` snippet rows. The tile's
inputs are staged in shared memory; thread ``o`` computes output channel ``o`` of every row
of the tile (weight element read once per tile, ``ROWS`` accumulators in registers). The
layers run va, vf, the split-K fusion layer and the output layer with the intermediate
activations only in shared memory; only the 64-d embedding goes to global memory.

``mavd_positional``: a chunked scan. Time is cut into ``POS_CHUNKS`` chunks per (sequence,
32-channel tile); each thread reduces its chunk to its forward and backward states, the
states are carried across chunks (``decay ** length``), and each chunk is rescanned from its
carry. The dependent chain is one chunk long instead of 2T steps (40 sequences gave 40 blocks
of a 2T chain before). Consecutive threads take consecutive channels, so loads coalesce.

Both take numpy (answers numpy) or device arrays (CUDA tensors, ``__cuda_array_interface__``
arrays: answers on the device, launched on the caller's stream); CPU tensors are staged
through pinned host memory, never passed as device pointers (``kernels/_cuda.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edgesentry.kernels import _cuda
from edgesentry.kernels._cuda import KernelCall, c_float, c_long
from edgesentry.kernels.mavd.reference import ALIGN_FUSE_PARAMS, POS_DECAY, positional_row_sums

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
#define POS_CHANNELS 32
#define POS_CHUNKS 16

// y = A2 x along time for one sequence: y_i = sum_j d^|i - j| u_j, u_j = x_j / s_j, computed as a
// forward plus a backward exponential scan (minus the doubly counted u_i). Block (POS_CHANNELS,
// POS_CHUNKS), grid (sequences, ceil(C / POS_CHANNELS)): thread (c, k) owns channel c of the
// k-th chunk of time, so the dependent chain is one chunk long, not 2T. Pass 1 reduces each chunk
// to its forward and backward partial states, pass 2 carries them across chunks (d^len per
// chunk), pass 3 rescans each chunk from its carry. Consecutive threads read consecutive channels.
extern "C" __global__ void mavd_positional(const float* __restrict__ t, const float* __restrict__ inv_s,
                                           float* __restrict__ out, long long n_len, long long n_ch,
                                           float decay) {
  __shared__ float fwd[POS_CHUNKS][POS_CHANNELS];
  __shared__ float bwd[POS_CHUNKS][POS_CHANNELS];
  __shared__ float span[POS_CHUNKS];  // decay ** (chunk length)
  const int tc = threadIdx.x, k = threadIdx.y;
  const long long seq = blockIdx.x, c = (long long)blockIdx.y * POS_CHANNELS + tc;
  const long long chunk = (n_len + POS_CHUNKS - 1) / POS_CHUNKS;
  const long long t0 = min(n_len, k * chunk), t1 = min(n_len, t0 + chunk);
  const bool live = c < n_ch;
  const float* x = t + seq * n_len * n_ch + c;
  float* y = out + seq * n_len * n_ch + c;
  // pass 1: this chunk's forward state (carry 0) and backward state
  float f = 0.0f, g = 0.0f;
  if (live) {
    for (long long i = t0; i < t1; ++i) f = fmaf(f, decay, x[i * n_ch] * inv_s[i]);
    for (long long i = t1 - 1; i >= t0; --i) g = fmaf(g, decay, x[i * n_ch] * inv_s[i]);
  }
  fwd[k][tc] = f;
  bwd[k][tc] = g;
  if (tc == 0) span[k] = powf(decay, (float)(t1 - t0));
  __syncthreads();
  // pass 2: carries from the chunks before (forward) and after (backward) this one
  float carry_f = 0.0f, carry_b = 0.0f;
  for (int m = 0; m < k; ++m) carry_f = fmaf(carry_f, span[m], fwd[m][tc]);
  for (int m = POS_CHUNKS - 1; m > k; --m) carry_b = fmaf(carry_b, span[m], bwd[m][tc]);
  if (!live) return;
  // pass 3: rescan from the carries
  float acc = carry_f;
  for (long long i = t0; i < t1; ++i) {
    acc = fmaf(acc, decay, x[i * n_ch] * inv_s[i]);
    y[i * n_ch] = acc;
  }
  acc = carry_b;
  for (long long i = t1 - 1; i >= t0; --i) {
    const float u = x[i * n_ch] * inv_s[i];
    acc = fmaf(acc, decay, u);
    y[i * n_ch] = y[i * n_ch] + acc - u;
  }
}
"""

#: kernel name -> CUDA C source (compiled for every TARGET_ARCHS in the tests)
SOURCES = {"mavd_align_fuse": ALIGN_FUSE_SRC, "mavd_positional": POSITIONAL_SRC}
#: The extern "C" kernels each source defines.
KERNELS: dict[str, tuple[str, ...]] = {"mavd_align_fuse": ("mavd_align_fuse",),
                                       "mavd_positional": ("mavd_positional",)}
POS_CHANNELS, POS_CHUNKS = 32, 16


def unavailable_reason() -> str | None:
    return _cuda.unavailable_reason()


def compile_all(arch: str) -> dict[str, bytes]:
    """Compile every source for ``arch`` (no GPU needed): name -> cubin."""
    return {name: _cuda.compile_cubin(src, arch=arch) for name, src in SOURCES.items()}


def _deliver(call: KernelCall, res: Any, out: Any) -> Any:
    """``res`` in the caller's kind, or copied into the caller's ``out`` (numpy or tensor)."""
    if out is None:
        return call.result(res)
    if isinstance(out, np.ndarray):
        out[...] = call.host(res)
        return out
    import torch

    src = res if isinstance(res, torch.Tensor) else torch.from_numpy(call.host(res))
    out.copy_(src.to(out.device))
    return out


def align_fuse(v: Any, a: Any, f: Any, params: Mapping[str, Any], out: Any = None) -> Any:
    """See ``reference.align_fuse``: numpy in -> numpy out, device arrays in -> device out."""
    n, m = int(v.shape[0]), int(a.shape[0])
    with KernelCall(v, a, f) as call:
        inputs = [call.input(x, np.float32) for x in (v, a, f)]
        weights = [call.constant(params[k], np.float32) for k in ALIGN_FUSE_PARAMS]
        res = call.output((n, 64), np.float32)
        if n:
            args = [(p, None) for p in (*inputs, res, *weights)] + [(n, c_long), (m, c_long)]
            call.launch(ALIGN_FUSE_SRC, "mavd_align_fuse", (-(-n // ROWS),), (THREADS,), args)
        return _deliver(call, res, out)


def positional(t: Any, out: Any = None) -> Any:
    """See ``reference.positional``: (..., T, C) -> same shape."""
    shape = tuple(int(s) for s in t.shape)
    n, c = shape[-2:]
    seqs = int(np.prod(shape[:-2], dtype=np.int64))
    with KernelCall(t) as call:
        x = call.input(t, np.float32)
        inv_s = call.constant(1.0 / positional_row_sums(n), np.float32)
        res = call.output(shape, np.float32)
        if seqs * c:
            args = [(x, None), (inv_s, None), (res, None), (n, c_long), (c, c_long), (POS_DECAY, c_float)]
            call.launch(POSITIONAL_SRC, "mavd_positional", (seqs, -(-c // POS_CHANNELS)), (POS_CHANNELS, POS_CHUNKS),
                        args)
        return _deliver(call, res, out)
