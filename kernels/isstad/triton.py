"""ISSTAD fusion, Triton tier: three row kernels, no host round trip between them.

Specification: ``reference.py``. One program per image row in each kernel:

1. ``_prob_error_kernel``: P (fused sigmoid(l1 - l0) mean over the K heads, or a copy of
   a given P), R = channel-mean squared error, and the row's min/max of R.
2. ``_hblur_kernel``: the horizontal 33-tap pass of P, R and P*R (half-sample-symmetric
   borders by index arithmetic; neighbours come from L1/L2).
3. ``_vblur_kernel``: the vertical pass and the epilogue. Blur is linear and the min-max
   affine, so G(P * Rn) = (G(P*R) - m G(P)) / (M - m) and G(Rn) = (G(R) - m) / (M - m):
   each program reduces the image's row minima/maxima itself (H values) and writes the
   selected pixel map plus its row's partial sum of the image score (float32 per row,
   summed over rows in float64 by torch). The weighted score's top-p means use
   ``torch.topk`` on G(P), G(R).

Accumulation is float32 throughout (33 taps; ~1e-7 relative to the float64 reference).
Outputs are allocated NaN-filled, so an element the grid never writes cannot pass.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import triton
import triton.language as tl

from edgesentry.kernels import _triton
from edgesentry.kernels._triton import to_like, to_tensor
from edgesentry.kernels.isstad.reference import IMAGE_MODES, PIXEL_MODES, RADIUS, SCORINGS, gaussian_weights


def unavailable_reason() -> str | None:
    return _triton.unavailable_reason()


@triton.jit
def _reflect(k, n):
    """scipy 'reflect' (half-sample symmetric) index for any offset (period 2n)."""
    period = 2 * n
    k = ((k % period) + period) % period
    return tl.where(k >= n, period - 1 - k, k)


@triton.jit
def _prob_error_kernel(
    heads_ptr,  # pointer to logits (B, K, 2, H, W) or probability (B, H, W), float32
    recon_ptr,  # pointer to reconstruction (B, C, H, W), float32
    image_ptr,  # pointer to normalised image (B, C, H, W), float32
    p_ptr,  # pointer to output P (B, H, W)
    r_ptr,  # pointer to output R (B, H, W)
    rmin_ptr,  # pointer to row minima of R (B * H,)
    rmax_ptr,  # pointer to row maxima of R (B * H,)
    K, C, H, W, HW,  # HW = H * W (host int: no .to() on arguments Triton may specialise to 1)
    LOGITS: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    b = row // H
    i = row % H
    hw = HW
    cols = tl.arange(0, BLOCK_W)
    mask = cols < W
    off = i * W + cols
    if LOGITS:
        acc = tl.zeros((BLOCK_W,), dtype=tl.float32)
        for k in range(K):
            base = heads_ptr + (b * K + k) * 2 * hw
            l0 = tl.load(base + off, mask=mask, other=0.0)
            l1 = tl.load(base + hw + off, mask=mask, other=0.0)
            acc += tl.sigmoid(l1 - l0)  # the 2-class softmax's channel 1
        p = acc / K
    else:
        p = tl.load(heads_ptr + b * hw + off, mask=mask, other=0.0)
    err = tl.zeros((BLOCK_W,), dtype=tl.float32)
    for c in range(C):
        plane = (b * C + c) * hw
        a = tl.load(recon_ptr + plane + off, mask=mask, other=0.0)
        d = a - tl.load(image_ptr + plane + off, mask=mask, other=0.0)
        err += d * d
    err = err / C
    tl.store(p_ptr + b * hw + off, p, mask=mask)
    tl.store(r_ptr + b * hw + off, err, mask=mask)
    # other=+/-inf so padded lanes never win the min/max.
    tl.store(rmin_ptr + row, tl.min(tl.where(mask, err, float("inf")), axis=0))
    tl.store(rmax_ptr + row, tl.max(tl.where(mask, err, float("-inf")), axis=0))


@triton.jit
def _hblur_kernel(
    p_ptr,  # pointer to P (B, H, W)
    r_ptr,  # pointer to R (B, H, W)
    taps_ptr,  # pointer to the 2 * RADIUS + 1 Gaussian taps, float32
    hp_ptr,  # pointer to output: P blurred along W (B, H, W)
    hr_ptr,  # pointer to output: R blurred along W
    hpr_ptr,  # pointer to output: P*R blurred along W (untouched unless NEED_PR)
    W,
    NEED_PR: tl.constexpr,
    RADIUS_: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    base = row * W
    cols = tl.arange(0, BLOCK_W)
    mask = cols < W
    acc_p = tl.zeros((BLOCK_W,), dtype=tl.float32)
    acc_r = tl.zeros((BLOCK_W,), dtype=tl.float32)
    acc_pr = tl.zeros((BLOCK_W,), dtype=tl.float32)
    for t in range(2 * RADIUS_ + 1):  # not unrolled: 33 taps of loads hoisted at once spill wide rows
        src = _reflect(cols + (t - RADIUS_), W)
        wt = tl.load(taps_ptr + t)
        pv = tl.load(p_ptr + base + src, mask=mask, other=0.0)
        rv = tl.load(r_ptr + base + src, mask=mask, other=0.0)
        acc_p += wt * pv
        acc_r += wt * rv
        if NEED_PR:
            acc_pr += wt * (pv * rv)
    tl.store(hp_ptr + base + cols, acc_p, mask=mask)
    tl.store(hr_ptr + base + cols, acc_r, mask=mask)
    if NEED_PR:
        tl.store(hpr_ptr + base + cols, acc_pr, mask=mask)


@triton.jit
def _vblur_kernel(
    hp_ptr, hr_ptr, hpr_ptr,  # pointers to the horizontal passes (B, H, W)
    taps_ptr,  # pointer to the Gaussian taps
    rmin_ptr, rmax_ptr,  # pointers to the row minima / maxima of R (B * H,)
    pix_ptr,  # pointer to output pixel map (B, H, W)
    pb_ptr, rb_ptr,  # pointers to outputs G(P), G(R) (written when STORE_BLURRED)
    rowsum_ptr,  # pointer to output per-row partial sums of the image score (B * H,)
    H, W,
    PIXEL_MODE: tl.constexpr,  # 0 original (x255), 1 ham, 2 alpha, 3 max
    IMAGE_MODE: tl.constexpr,  # 0 mean(Pb * Rb), 1 mean(alpha), 2 weighted (host)
    STORE_BLURRED: tl.constexpr,
    RADIUS_: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    b = row // H
    i = row % H
    cols = tl.arange(0, BLOCK_W)
    mask = cols < W
    # min/max of R over the whole image, from the row extrema of kernel 1.
    hs = tl.arange(0, BLOCK_H)
    hmask = hs < H
    m = tl.min(tl.load(rmin_ptr + b * H + hs, mask=hmask, other=float("inf")), axis=0)
    mx = tl.max(tl.load(rmax_ptr + b * H + hs, mask=hmask, other=float("-inf")), axis=0)
    span = mx - m
    inv_span = tl.where(span > 0, 1.0 / tl.where(span > 0, span, 1.0), 0.0)  # constant R: Rn = 0
    acc_p = tl.zeros((BLOCK_W,), dtype=tl.float32)
    acc_r = tl.zeros((BLOCK_W,), dtype=tl.float32)
    acc_pr = tl.zeros((BLOCK_W,), dtype=tl.float32)
    img = b * H
    for t in range(2 * RADIUS_ + 1):  # not unrolled (see _hblur_kernel)
        src = (img + _reflect(i + (t - RADIUS_), H)) * W + cols
        wt = tl.load(taps_ptr + t)
        acc_p += wt * tl.load(hp_ptr + src, mask=mask, other=0.0)
        acc_r += wt * tl.load(hr_ptr + src, mask=mask, other=0.0)
        if PIXEL_MODE <= 1:
            acc_pr += wt * tl.load(hpr_ptr + src, mask=mask, other=0.0)
    rnb = (acc_r - m) * inv_span
    if PIXEL_MODE == 0:
        pixel = 255.0 * ((acc_pr - m * acc_p) * inv_span)
    elif PIXEL_MODE == 1:
        pixel = (acc_pr - m * acc_p) * inv_span
    elif PIXEL_MODE == 2:
        pixel = 0.5 * acc_p + 0.5 * rnb
    else:
        pixel = tl.maximum(acc_p, rnb)
    out = row * W + cols
    tl.store(pix_ptr + out, pixel, mask=mask)
    if STORE_BLURRED:
        tl.store(pb_ptr + out, acc_p, mask=mask)
        tl.store(rb_ptr + out, acc_r, mask=mask)
    if IMAGE_MODE == 0:
        tl.store(rowsum_ptr + row, tl.sum(tl.where(mask, acc_p * acc_r, 0.0), axis=0))
    elif IMAGE_MODE == 1:
        tl.store(rowsum_ptr + row, tl.sum(tl.where(mask, 0.5 * acc_p + 0.5 * rnb, 0.0), axis=0))


_TAPS = gaussian_weights().astype(np.float32)


def row_settings(w: int) -> tuple[int, int]:
    """Block size and warps of the row kernels: ``calculate_settings``, but 4 warps up to 4096-pixel
    rows (at 8 warps ptxas aimed at 32 registers for 2048-pixel rows and spilled)."""
    block_w, num_warps = _triton.calculate_settings(w)
    return block_w, 4 if block_w <= 4096 else num_warps


def isstad_fusion(heads: Any, recon: Any, image: Any, *, scoring: str = "original", top_p: float = 0.1,
                  w_m: float = 1.0, w_r: float = 1.0) -> dict[str, Any]:
    """See ``reference.isstad_fusion``; numpy in -> numpy out, CUDA tensors in -> tensors out."""
    import torch

    pixel_mode = PIXEL_MODES.index(SCORINGS[scoring][0])
    image_mode = IMAGE_MODES.index(SCORINGS[scoring][1])
    h_t, r_t, i_t = (to_tensor(a, torch.float32) for a in (heads, recon, image))
    b, c, h, w = r_t.shape
    logits = h_t.ndim == 5
    k = h_t.shape[1] if logits else 1
    dev = r_t.device
    block_w, num_warps = row_settings(w)
    block_h = _triton.next_power_of_2(h)
    prob, rerr, pixel = (_triton.empty((b, h, w), torch.float32, dev) for _ in range(3))  # no NaN fill on the hot path
    rmin = torch.empty(b * h, dtype=torch.float32, device=dev)
    rmax = torch.empty_like(rmin)
    need_pr = pixel_mode <= 1
    hp, hr = torch.empty_like(prob), torch.empty_like(prob)
    hpr = torch.empty_like(prob) if need_pr else hp  # never written when not needed
    weighted = image_mode == 2
    pb = torch.empty_like(prob) if weighted else prob
    rb = torch.empty_like(prob) if weighted else prob
    rowsum = _triton.empty((b * h,), torch.float32, dev)
    taps = torch.from_numpy(_TAPS).to(dev)
    grid = (b * h,)
    _prob_error_kernel[grid](h_t, r_t, i_t, prob, rerr, rmin, rmax, k, c, h, w, h * w, LOGITS=logits, BLOCK_W=block_w,
                             num_warps=num_warps)
    _hblur_kernel[grid](prob, rerr, taps, hp, hr, hpr, w, NEED_PR=need_pr, RADIUS_=RADIUS, BLOCK_W=block_w,
                        num_warps=num_warps)
    _vblur_kernel[grid](hp, hr, hpr, taps, rmin, rmax, pixel, pb, rb, rowsum, h, w, PIXEL_MODE=pixel_mode,
                        IMAGE_MODE=image_mode, STORE_BLURRED=weighted, RADIUS_=RADIUS, BLOCK_W=block_w,
                        BLOCK_H=block_h, num_warps=num_warps)
    if weighted:
        n = min(h * w, max(1, math.ceil(top_p * h * w)))
        tp = torch.topk(pb.reshape(b, -1), n, dim=1).values.double().mean(dim=1)
        tr = torch.topk(rb.reshape(b, -1), n, dim=1).values.double().mean(dim=1)
        score = (1.0 + tp) ** w_m * (1.0 + tr) ** w_r
    else:
        score = rowsum.reshape(b, h).double().sum(dim=1) / (h * w)
    return {"probability": to_like(prob, recon), "recon_error": to_like(rerr, recon),
            "pixel_map": to_like(pixel, recon), "score": to_like(score, recon)}


def _aot_configs() -> list[_triton.AotConfig]:
    """The kernels at their launch settings for the model's 224-pixel rows and for 2048-pixel line-camera
    rows (``calculate_settings``), every scoring's modes: the ahead-of-time spill test."""
    f32 = "*fp32"
    out = []
    for width, height in ((224, 224), (2048, 512)):
        block_w, warps = row_settings(width)
        for logits in (True, False):
            out.append(_triton.AotConfig(
                "_prob_error_kernel", {**dict.fromkeys(("heads_ptr", "recon_ptr", "image_ptr", "p_ptr", "r_ptr",
                                                        "rmin_ptr", "rmax_ptr"), f32),
                                       **dict.fromkeys(("K", "C", "H", "W", "HW"), "i32")},
                {"LOGITS": logits, "BLOCK_W": block_w}, warps))
        for need_pr in (True, False):
            out.append(_triton.AotConfig(
                "_hblur_kernel", {**dict.fromkeys(("p_ptr", "r_ptr", "taps_ptr", "hp_ptr", "hr_ptr", "hpr_ptr"), f32),
                                  "W": "i32"}, {"NEED_PR": need_pr, "RADIUS_": RADIUS, "BLOCK_W": block_w}, warps))
        for pixel_mode, image_mode in sorted({(PIXEL_MODES.index(p), IMAGE_MODES.index(i))
                                              for p, i in SCORINGS.values()}):
            out.append(_triton.AotConfig(
                "_vblur_kernel", {**dict.fromkeys(("hp_ptr", "hr_ptr", "hpr_ptr", "taps_ptr", "rmin_ptr", "rmax_ptr",
                                                   "pix_ptr", "pb_ptr", "rb_ptr", "rowsum_ptr"), f32),
                                  "H": "i32", "W": "i32"},
                {"PIXEL_MODE": pixel_mode, "IMAGE_MODE": image_mode, "STORE_BLURRED": image_mode == 2,
                 "RADIUS_": RADIUS, "BLOCK_W": block_w, "BLOCK_H": _triton.next_power_of_2(height)}, warps))
    return out


AOT_CONFIGS = _aot_configs()
