"""ISSTAD fusion, CUDA tier: CUDA C (NVRTC) launched through the driver API, no torch.

Specification: ``reference.py``. Same plan as the Triton tier, one block per image row:

  ``isstad_prob_error``  P (sigmoid(l1 - l0) averaged over the K heads, or a copy of P),
                         R = channel-mean squared error, and the row min/max of R (block
                         reduction in shared memory).
  ``isstad_hblur``       the row of P and R staged in shared memory, then the horizontal
                         33-tap pass of P, R and P*R with scipy's half-sample-symmetric
                         borders (index arithmetic, any width).
  ``isstad_vblur``       the vertical pass (coalesced: threads walk the columns of the 33
                         source rows) and the epilogue: each block reduces the image's row
                         minima/maxima, applies the min-max by linearity
                         (G(P Rn) = (G(PR) - m G(P)) / (M - m)), writes the chosen pixel map
                         and its row's partial image-score sum.
  host (numpy)           the float64 sum of the row partials; for the weighted score the
                         top-p means of G(P), G(R) (``np.partition``).

float32 accumulation (as the other tiers), accurate ``expf`` (no fast math). Output
buffers are NaN-poisoned before the launches.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgesentry.errors import InputError
from edgesentry.kernels import _cuda
from edgesentry.kernels._cuda import DeviceArray, DeviceBuffers, c_int, get_function, launch

from .reference import IMAGE_MODES, PIXEL_MODES, RADIUS, SCORINGS, gaussian_weights

THREADS = 256

FUSION_SOURCE = r"""
// Threads per block; the launcher passes the same number (tests lower both together).
#ifndef THREADS
#define THREADS 256
#endif
#ifdef __CUDACC_RTC__
#define ES_INF __int_as_float(0x7f800000)
#else
#define ES_INF INFINITY
#endif

// scipy 'reflect' (half-sample symmetric) for any offset: period 2n.
__device__ __forceinline__ int reflect_index(int k, int n) {
  const int period = 2 * n;
  k %= period;
  if (k < 0) k += period;
  return k < n ? k : period - 1 - k;
}

__device__ __forceinline__ void block_min_max(float& lo, float& hi) {
  __shared__ float smin[THREADS];
  __shared__ float smax[THREADS];
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
  lo = smin[0];
  hi = smax[0];
  __syncthreads();
}

__device__ __forceinline__ float block_sum(float v) {
  __shared__ float ssum[THREADS];
  ssum[threadIdx.x] = v;
  __syncthreads();
  for (int s = THREADS / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) ssum[threadIdx.x] += ssum[threadIdx.x + s];
    __syncthreads();
  }
  const float out = ssum[0];
  __syncthreads();
  return out;
}

// Block (THREADS), grid (B * H). heads: (B, K, 2, H, W) logits when logits != 0, else (B, H, W).
extern "C" __global__ void isstad_prob_error(const float* __restrict__ heads, const float* __restrict__ recon,
                                             const float* __restrict__ image, float* __restrict__ prob,
                                             float* __restrict__ rerr, float* __restrict__ rmin,
                                             float* __restrict__ rmax, int K, int C, int H, int W, int logits) {
  const long long row = blockIdx.x;
  const long long b = row / H, i = row % H;
  const long long hw = (long long)H * W;
  float lo = ES_INF, hi = -ES_INF;
  for (int j = threadIdx.x; j < W; j += THREADS) {
    const long long off = i * W + j;
    float p = 0.0f;
    if (logits) {
      for (int k = 0; k < K; ++k) {
        const float* base = heads + (b * K + k) * 2 * hw + off;
        p += 1.0f / (1.0f + expf(base[0] - base[hw]));  // softmax(l0, l1)[1]
      }
      p /= (float)K;
    } else {
      p = heads[b * hw + off];
    }
    float r = 0.0f;
    for (int c = 0; c < C; ++c) {
      const long long plane = (b * C + c) * hw + off;
      const float d = recon[plane] - image[plane];
      r += d * d;
    }
    r /= (float)C;
    prob[b * hw + off] = p;
    rerr[b * hw + off] = r;
    lo = fminf(lo, r);
    hi = fmaxf(hi, r);
  }
  block_min_max(lo, hi);
  if (threadIdx.x == 0) {
    rmin[row] = lo;
    rmax[row] = hi;
  }
}

// Block (THREADS), grid (B * H), dynamic shared memory 2 * W floats (W <= 6144 for 48 KiB).
extern "C" __global__ void isstad_hblur(const float* __restrict__ prob, const float* __restrict__ rerr,
                                        const float* __restrict__ taps, float* __restrict__ hp,
                                        float* __restrict__ hr, float* __restrict__ hpr, int W, int radius,
                                        int need_pr) {
  extern __shared__ double sh[];  // dynamic: 2 * W floats
  float* sp = reinterpret_cast<float*>(sh);
  float* sr = sp + W;
  const long long base = (long long)blockIdx.x * W;
  for (int j = threadIdx.x; j < W; j += THREADS) {
    sp[j] = prob[base + j];
    sr[j] = rerr[base + j];
  }
  __syncthreads();
  for (int j = threadIdx.x; j < W; j += THREADS) {
    float ap = 0.0f, ar = 0.0f, apr = 0.0f;
    for (int t = -radius; t <= radius; ++t) {
      const int src = reflect_index(j + t, W);
      const float wt = taps[t + radius];
      const float pv = sp[src], rv = sr[src];
      ap += wt * pv;
      ar += wt * rv;
      apr += wt * (pv * rv);
    }
    hp[base + j] = ap;
    hr[base + j] = ar;
    if (need_pr) hpr[base + j] = apr;
  }
}

// Block (THREADS), grid (B * H). pixel_mode: 0 original (x255), 1 ham, 2 alpha, 3 max;
// image_mode: 0 mean(Pb Rb), 1 mean(alpha), 2 weighted (G(P), G(R) stored for the host).
extern "C" __global__ void isstad_vblur(const float* __restrict__ hp, const float* __restrict__ hr,
                                        const float* __restrict__ hpr, const float* __restrict__ taps,
                                        const float* __restrict__ rmin, const float* __restrict__ rmax,
                                        float* __restrict__ pixel, float* __restrict__ pb_out,
                                        float* __restrict__ rb_out, float* __restrict__ rowsum, int H, int W,
                                        int radius, int pixel_mode, int image_mode) {
  const long long row = blockIdx.x;
  const long long b = row / H;
  const int i = (int)(row % H);
  float lo = ES_INF, hi = -ES_INF;
  for (int r = threadIdx.x; r < H; r += THREADS) {
    lo = fminf(lo, rmin[b * H + r]);
    hi = fmaxf(hi, rmax[b * H + r]);
  }
  block_min_max(lo, hi);
  const float inv_span = hi > lo ? 1.0f / (hi - lo) : 0.0f;  // constant R: Rn = 0
  float part = 0.0f;
  for (int j = threadIdx.x; j < W; j += THREADS) {
    float ap = 0.0f, ar = 0.0f, apr = 0.0f;
    for (int t = -radius; t <= radius; ++t) {
      const long long src = (b * H + reflect_index(i + t, H)) * (long long)W + j;
      const float wt = taps[t + radius];
      ap += wt * hp[src];
      ar += wt * hr[src];
      if (pixel_mode <= 1) apr += wt * hpr[src];
    }
    const float rnb = (ar - lo) * inv_span;
    float value;
    if (pixel_mode == 0) value = 255.0f * ((apr - lo * ap) * inv_span);
    else if (pixel_mode == 1) value = (apr - lo * ap) * inv_span;
    else if (pixel_mode == 2) value = 0.5f * ap + 0.5f * rnb;
    else value = fmaxf(ap, rnb);
    const long long out = row * W + j;
    pixel[out] = value;
    if (image_mode == 2) {
      pb_out[out] = ap;
      rb_out[out] = ar;
    } else {
      part += image_mode == 0 ? ap * ar : 0.5f * ap + 0.5f * rnb;
    }
  }
  const float total = block_sum(part);
  if (threadIdx.x == 0) rowsum[row] = total;
}
"""

SOURCES: dict[str, str] = {"isstad_fusion": FUSION_SOURCE}
KERNELS: dict[str, tuple[str, ...]] = {"isstad_fusion": ("isstad_prob_error", "isstad_hblur", "isstad_vblur")}
_TAPS = gaussian_weights().astype(np.float32)


def _threads() -> int:
    # The block size compiled into FUSION_SOURCE (a "#define THREADS n" prefix overrides 256).
    first = FUSION_SOURCE.lstrip().splitlines()[0]
    return int(first.split()[2]) if first.startswith("#define THREADS") else THREADS


def unavailable_reason() -> str | None:
    return _cuda.unavailable_reason()


def compile_all(arch: str) -> dict[str, bytes]:
    """Compile every source for ``arch`` (no GPU needed): name -> cubin."""
    return {name: _cuda.compile_cubin(src, arch=arch) for name, src in SOURCES.items()}


def _host(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(x, dtype=np.float32)
    if hasattr(x, "detach"):
        return np.ascontiguousarray(x.detach().cpu().float().numpy())
    raise InputError(f"cuda tier takes numpy arrays or torch tensors; got {type(x).__name__}")


def _top_mean(x: np.ndarray, k: int) -> float:
    flat = x.ravel()
    return float(np.partition(flat, flat.size - k)[flat.size - k:].astype(np.float64).mean())


def isstad_fusion(heads: Any, recon: Any, image: Any, *, scoring: str = "original", top_p: float = 0.1,
                  w_m: float = 1.0, w_r: float = 1.0) -> dict[str, np.ndarray]:
    """See ``reference.isstad_fusion`` (numpy out; tensors are staged through the host)."""
    pixel_mode = PIXEL_MODES.index(SCORINGS[scoring][0])
    image_mode = IMAGE_MODES.index(SCORINGS[scoring][1])
    h_np, r_np, i_np = _host(heads), _host(recon), _host(image)
    b, c, h, w = r_np.shape
    logits = h_np.ndim == 5
    k = h_np.shape[1] if logits else 1
    rows = b * h
    if 2 * w * 4 > 48 * 1024:
        raise InputError(f"cuda tier stages a row in shared memory: width must be <= 6144; got {w}")
    prob_error = get_function(FUSION_SOURCE, "isstad_prob_error")
    hblur = get_function(FUSION_SOURCE, "isstad_hblur")
    vblur = get_function(FUSION_SOURCE, "isstad_vblur")
    with DeviceBuffers(DeviceArray, dtype=np.float32, upload_dtype=np.float32) as bufs:
        d_heads, d_recon, d_image = bufs.upload(h_np), bufs.upload(r_np), bufs.upload(i_np)
        d_taps = bufs.upload(_TAPS)
        d_prob, d_rerr, d_pixel = bufs.new((b, h, w)), bufs.new((b, h, w)), bufs.new((b, h, w))
        d_rmin, d_rmax = bufs.new((rows,)), bufs.new((rows,))
        d_hp, d_hr, d_hpr = bufs.new((b, h, w)), bufs.new((b, h, w)), bufs.new((b, h, w) if pixel_mode <= 1 else (1,))
        weighted = image_mode == 2
        d_pb, d_rb = bufs.new((b, h, w) if weighted else (1,)), bufs.new((b, h, w) if weighted else (1,))
        d_rowsum = bufs.new((rows,))
        launch(prob_error, (rows,), (_threads(),),
               [(d_heads.ptr, None), (d_recon.ptr, None), (d_image.ptr, None), (d_prob.ptr, None),
                (d_rerr.ptr, None), (d_rmin.ptr, None), (d_rmax.ptr, None), (k, c_int), (c, c_int), (h, c_int),
                (w, c_int), (int(logits), c_int)])
        launch(hblur, (rows,), (_threads(),),
               [(d_prob.ptr, None), (d_rerr.ptr, None), (d_taps.ptr, None), (d_hp.ptr, None), (d_hr.ptr, None),
                (d_hpr.ptr, None), (w, c_int), (RADIUS, c_int), (int(pixel_mode <= 1), c_int)],
               shared_bytes=2 * w * 4)
        launch(vblur, (rows,), (_threads(),),
               [(d_hp.ptr, None), (d_hr.ptr, None), (d_hpr.ptr, None), (d_taps.ptr, None), (d_rmin.ptr, None),
                (d_rmax.ptr, None), (d_pixel.ptr, None), (d_pb.ptr, None), (d_rb.ptr, None),
                (d_rowsum.ptr, None), (h, c_int), (w, c_int), (RADIUS, c_int), (pixel_mode, c_int),
                (image_mode, c_int)])
        prob, rerr, pixel = d_prob.to_host(), d_rerr.to_host(), d_pixel.to_host()
        if weighted:
            pb, rb = d_pb.to_host(), d_rb.to_host()
            n = min(h * w, max(1, math.ceil(top_p * h * w)))
            score = np.array([(1.0 + _top_mean(pb[i], n)) ** w_m * (1.0 + _top_mean(rb[i], n)) ** w_r
                              for i in range(b)])
        else:
            score = d_rowsum.to_host().reshape(b, h).astype(np.float64).sum(axis=1) / (h * w)
    return {"probability": prob, "recon_error": rerr, "pixel_map": pixel, "score": score}
