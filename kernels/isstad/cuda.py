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

float32 accumulation (as the other tiers), accurate ``expf`` (no fast math). Inputs come
through ``KernelCall``: device arrays in place, host arrays by pinned staging; nothing is
NaN-filled on the hot path (``EDGESENTRY_POISON=1`` poisons outputs and scratch in tests).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgesentry.errors import InputError
from edgesentry.kernels import _cuda
from edgesentry.kernels._cuda import DEVICE_HELPERS, KernelCall, c_int
from edgesentry.kernels.isstad.reference import IMAGE_MODES, PIXEL_MODES, RADIUS, SCORINGS, gaussian_weights

THREADS = 256

FUSION_SOURCE = r"""
// Threads per block; the launcher passes the same number (tests lower both together).
#ifndef THREADS
#define THREADS 256
#endif
""" + DEVICE_HELPERS + r"""

// scipy 'reflect' (half-sample symmetric) for any offset: period 2n.
__device__ __forceinline__ int reflect_index(int k, int n) {
  const int period = 2 * n;
  k %= period;
  if (k < 0) k += period;
  return k < n ? k : period - 1 - k;
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
  es_block_min_max<THREADS>(lo, hi);
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
  es_block_min_max<THREADS>(lo, hi);
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
  const float total = es_block_sum<THREADS>(part);
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


def _top_mean(x: np.ndarray, k: int) -> float:
    flat = x.ravel()
    return float(np.partition(flat, flat.size - k)[flat.size - k:].astype(np.float64).mean())


def isstad_fusion(heads: Any, recon: Any, image: Any, *, scoring: str = "original", top_p: float = 0.1,
                  w_m: float = 1.0, w_r: float = 1.0) -> dict[str, Any]:
    """See ``reference.isstad_fusion``; numpy in -> numpy out, device arrays in -> device maps
    (the score is always host float64: it needs the image-wide partial sums)."""
    pixel_mode = PIXEL_MODES.index(SCORINGS[scoring][0])
    image_mode = IMAGE_MODES.index(SCORINGS[scoring][1])
    b, c, h, w = (int(s) for s in recon.shape)
    logits = len(heads.shape) == 5
    k = int(heads.shape[1]) if logits else 1
    rows = b * h
    if 2 * w * 4 > 48 * 1024:
        raise InputError(f"cuda tier stages a row in shared memory: width must be <= 6144; got {w}")
    source, threads = FUSION_SOURCE, _threads()
    with KernelCall(heads, recon, image) as call:
        d_heads, d_recon, d_image = (call.input(x, np.float32) for x in (heads, recon, image))
        d_taps = call.constant(_TAPS, np.float32)
        prob, rerr, pixel = (call.output((b, h, w), np.float32) for _ in range(3))
        d_rmin, d_rmax = call.scratch((rows,), np.float32), call.scratch((rows,), np.float32)
        need_pr = pixel_mode <= 1
        d_hp, d_hr = call.scratch((b, h, w), np.float32), call.scratch((b, h, w), np.float32)
        d_hpr = call.scratch((b, h, w) if need_pr else (1,), np.float32)
        weighted = image_mode == 2
        d_pb = call.scratch((b, h, w) if weighted else (1,), np.float32)
        d_rb = call.scratch((b, h, w) if weighted else (1,), np.float32)
        d_rowsum = call.scratch((rows,), np.float32)
        call.launch(source, "isstad_prob_error", (rows,), (threads,),
                    [(d_heads, None), (d_recon, None), (d_image, None), (prob, None), (rerr, None), (d_rmin, None),
                     (d_rmax, None), (k, c_int), (c, c_int), (h, c_int), (w, c_int), (int(logits), c_int)])
        call.launch(source, "isstad_hblur", (rows,), (threads,),
                    [(prob, None), (rerr, None), (d_taps, None), (d_hp, None), (d_hr, None), (d_hpr, None),
                     (w, c_int), (RADIUS, c_int), (int(need_pr), c_int)], shared_bytes=2 * w * 4)
        call.launch(source, "isstad_vblur", (rows,), (threads,),
                    [(d_hp, None), (d_hr, None), (d_hpr, None), (d_taps, None), (d_rmin, None), (d_rmax, None),
                     (pixel, None), (d_pb, None), (d_rb, None), (d_rowsum, None), (h, c_int), (w, c_int),
                     (RADIUS, c_int), (pixel_mode, c_int), (image_mode, c_int)])
        if weighted:
            pb, rb = call.host(d_pb), call.host(d_rb)
            n = min(h * w, max(1, math.ceil(top_p * h * w)))
            score = np.array([(1.0 + _top_mean(pb[i], n)) ** w_m * (1.0 + _top_mean(rb[i], n)) ** w_r
                              for i in range(b)])
        else:
            score = call.host(d_rowsum).reshape(b, h).astype(np.float64).sum(axis=1) / (h * w)
        return {"probability": call.result(prob), "recon_error": call.result(rerr),
                "pixel_map": call.result(pixel), "score": score}
