"""FERS RX-on-features, Triton tier: four passes that never build the fused cube.

Every pass reads ``x``, ``spe`` and (optionally) ``spa`` and forms the fused value
``f = (spa + spe) + x`` in registers, in the official float32 order:

1. ``_minmax_kernel``: per-program min / max of f -> partials (reduced by torch).
2. ``_band_sum_kernel``: per-band float64 sums of the min-max normalised f -> mean.
3. ``_gram_kernel``: centred float64 Gram tiles ``sum_n z_i z_j`` over a split of the
   pixels (split-K partials, summed in float64; deterministic, no atomics).
4. host: ``eigh`` of the float64 covariance, the eigenvectors and signed ``1 / w`` with the
   pseudo-inverse cutoff (eigenvalues at or below ``rcond * max|w|`` get weight 0), no host sync.
5. ``_mahalanobis_kernel``: ``score_n = sum_k (v_k . z_n)^2 / w_k`` with float64 accumulation,
   the (k x N) product never written out. ``1 / w`` keeps its sign, as the pinv does (a scaled
   ``diag(|w|^-1/2) V^T`` would count a kept negative eigenvalue as positive).

Float64 everywhere after the float32 normalisation because Sigma of the fused features is
badly conditioned (~3e10 at 200 bands); no TF32. Inputs: (B, H, W) or (1, B, H, W) float32
CUDA tensors (numpy is staged to the device); output (H, W) float64 (numpy in, numpy out).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import triton
import triton.language as tl

from edgesentry.kernels import _triton
from edgesentry.kernels._triton import to_like, to_tensor
from edgesentry.kernels.fers.reference import DEFAULT_RCOND


def unavailable_reason() -> str | None:
    return _triton.unavailable_reason()


@triton.jit
def _fused_value(x_ptr, spe_ptr, spa_ptr, offs, mask, HAS_SPA: tl.constexpr):
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    spe = tl.load(spe_ptr + offs, mask=mask, other=0.0)
    if HAS_SPA:
        spa = tl.load(spa_ptr + offs, mask=mask, other=0.0)
        return (spa + spe) + x  # official order: spa_f + spe_f + data
    return spe + x


@triton.jit
def _minmax_kernel(
    x_ptr,  # pointer to x, shape (B * N,) float32
    spe_ptr,  # pointer to spe_f, shape (B * N,) float32
    spa_ptr,  # pointer to spa_f, shape (B * N,) float32 (unused unless HAS_SPA)
    part_ptr,  # pointer to partials, shape (2, n_programs) float32: min row, max row
    total,  # B * N
    n_programs,
    HAS_SPA: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    f = _fused_value(x_ptr, spe_ptr, spa_ptr, offs, mask, HAS_SPA)
    # masked lanes get +inf / -inf so they never win
    lo = tl.min(tl.where(mask, f, float("inf")), axis=0)
    hi = tl.max(tl.where(mask, f, float("-inf")), axis=0)
    tl.store(part_ptr + pid, lo)
    tl.store(part_ptr + n_programs + pid, hi)


@triton.jit
def _normalised(x_ptr, spe_ptr, spa_ptr, stats_ptr, offs, mask, HAS_SPA: tl.constexpr):
    """Min-max normalised fused value, float32 division rounded to nearest as numpy does."""
    lo = tl.load(stats_ptr)
    hi = tl.load(stats_ptr + 1)
    f = _fused_value(x_ptr, spe_ptr, spa_ptr, offs, mask, HAS_SPA)
    return tl.math.div_rn(f - lo, hi - lo)


@triton.jit
def _band_sum_kernel(
    x_ptr, spe_ptr, spa_ptr,  # fused inputs, each (B, N) float32
    stats_ptr,  # pointer to (min, max), shape (2,) float32
    part_ptr,  # pointer to partial sums, shape (n_chunks, B) float64
    B, N,
    HAS_SPA: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CHUNK: tl.constexpr,  # pixels per program (a multiple of BLOCK_N)
):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1).to(tl.int64)
    bands = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    acc = tl.zeros((BLOCK_B,), dtype=tl.float64)
    for start in range(0, CHUNK, BLOCK_N):
        pix = pid_n * CHUNK + start + tl.arange(0, BLOCK_N)
        mask = (bands[:, None] < B) & (pix[None, :] < N)
        offs = bands[:, None] * N + pix[None, :]
        v = _normalised(x_ptr, spe_ptr, spa_ptr, stats_ptr, offs, mask, HAS_SPA).to(tl.float64)
        acc += tl.sum(tl.where(mask, v, 0.0), axis=1)
    tl.store(part_ptr + pid_n * B + bands, acc, mask=bands < B)


@triton.jit
def _centred(x_ptr, spe_ptr, spa_ptr, stats_ptr, mean_ptr, bands, pix, B, N, HAS_SPA: tl.constexpr):
    """(len(bands), len(pix)) float64 tile of z = normalised f - band mean (0 outside)."""
    mask = (bands[:, None] < B) & (pix[None, :] < N)
    offs = bands[:, None] * N + pix[None, :]
    v = _normalised(x_ptr, spe_ptr, spa_ptr, stats_ptr, offs, mask, HAS_SPA).to(tl.float64)
    mu = tl.load(mean_ptr + bands, mask=bands < B, other=0.0)
    return tl.where(mask, v - mu[:, None], 0.0)


@triton.jit
def _gram_kernel(
    x_ptr, spe_ptr, spa_ptr,  # fused inputs, each (B, N) float32
    stats_ptr,  # (2,) float32 min, max
    mean_ptr,  # (B,) float64 band means of the normalised cube
    part_ptr,  # pointer to partial Grams, shape (SPLIT, B, B) float64
    B, N,
    HAS_SPA: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CHUNK: tl.constexpr,
):
    pid_i = tl.program_id(0).to(tl.int64)
    pid_j = tl.program_id(1).to(tl.int64)
    pid_s = tl.program_id(2).to(tl.int64)
    bi = pid_i * BLOCK_B + tl.arange(0, BLOCK_B)
    bj = pid_j * BLOCK_B + tl.arange(0, BLOCK_B)
    acc = tl.zeros((BLOCK_B, BLOCK_B), dtype=tl.float64)
    for start in range(0, CHUNK, BLOCK_N):
        pix = pid_s * CHUNK + start + tl.arange(0, BLOCK_N)
        zi = _centred(x_ptr, spe_ptr, spa_ptr, stats_ptr, mean_ptr, bi, pix, B, N, HAS_SPA)
        zj = _centred(x_ptr, spe_ptr, spa_ptr, stats_ptr, mean_ptr, bj, pix, B, N, HAS_SPA)
        # float64 FMA by broadcasting (tl.dot has no portable float64 path)
        acc += tl.sum(zi[:, None, :] * zj[None, :, :], axis=2)
    mask = (bi[:, None] < B) & (bj[None, :] < B)
    tl.store(part_ptr + pid_s * B * B + bi[:, None] * B + bj[None, :], acc, mask=mask)


@triton.jit
def _mahalanobis_kernel(
    x_ptr, spe_ptr, spa_ptr,  # fused inputs, each (B, N) float32
    stats_ptr,  # (2,) float32 min, max
    mean_ptr,  # (B,) float64
    v_ptr,  # pointer to the eigenvectors as rows, shape (B, B) float64
    invw_ptr,  # pointer to 1 / eigenvalue (signed; 0 past the pinv cutoff), shape (B,) float64
    out_ptr,  # pointer to scores, shape (N,) float64
    B, N,
    HAS_SPA: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    pix = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    score = tl.zeros((BLOCK_N,), dtype=tl.float64)
    for k0 in range(0, B, BLOCK_K):
        rows = k0 + tl.arange(0, BLOCK_K)
        proj = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float64)
        for b0 in range(0, B, BLOCK_B):
            cols = b0 + tl.arange(0, BLOCK_B)
            v = tl.load(v_ptr + rows[:, None] * B + cols[None, :],
                        mask=(rows[:, None] < B) & (cols[None, :] < B), other=0.0)
            z = _centred(x_ptr, spe_ptr, spa_ptr, stats_ptr, mean_ptr, cols, pix, B, N, HAS_SPA)
            proj += tl.sum(v[:, :, None] * z[None, :, :], axis=1)
        invw = tl.load(invw_ptr + rows, mask=rows < B, other=0.0)
        score += tl.sum(proj * proj * invw[:, None], axis=0)
    tl.store(out_ptr + pix, score, mask=pix < N)


def _settings(bands: int, pixels: int) -> dict[str, int]:
    """Tile sizes: tiny under the interpreter (it runs every lane in numpy)."""
    if _triton.interpreting():
        return {"BLOCK": 256, "BLOCK_B": 8, "BLOCK_N": 16, "BLOCK_K": 8, "CHUNK": 64}
    return {"BLOCK": 2048, "BLOCK_B": 16, "BLOCK_N": 32, "BLOCK_K": 16, "CHUNK": 512}


def whitening(cov: Any, rcond: float) -> tuple[Any, Any]:
    """Eigenvectors as rows (B, B) and signed ``1 / w`` (0 past the cutoff ``|w| <= rcond * max|w|``).

    ``sum_k (v_k . z)^2 / w_k`` is the pseudo-inverse quadratic form of the symmetric ``cov``:
    its singular values are ``|w|``, and the pinv keeps the sign of each eigenvalue (the other
    tiers use ``rx.cpu.whitening`` the same way), so a kept negative eigenvalue subtracts.
    """
    w, v = torch.linalg.eigh(cov)
    absw = w.abs()
    keep = absw > rcond * absw.max()
    inv = torch.where(keep, 1.0 / torch.where(keep, w, torch.ones_like(w)), torch.zeros_like(w))
    return v.T.contiguous(), inv.contiguous()


def _stage(x: Any, spe: Any, spa: Any) -> tuple[list[Any], bool, tuple[int, int, int]]:
    """The (B, N) float32 feature tensors on the device (spe stands in for an absent spa)."""
    xt = to_tensor(x, torch.float32)
    bands, rows, cols = (int(s) for s in xt.shape[-3:])
    n = rows * cols
    tensors = [t.reshape(bands, n) for t in (xt, to_tensor(spe, torch.float32))]
    has_spa = spa is not None
    tensors.append(to_tensor(spa, torch.float32).reshape(bands, n) if has_spa else tensors[1])
    return tensors, has_spa, (bands, rows, cols)


def _minmax(tensors: list[Any], has_spa: bool, total: int, s: dict[str, int]) -> Any:
    """(2,) float32 min and max of the fused cube (pass 1)."""
    n_prog = triton.cdiv(total, s["BLOCK"])
    part = torch.empty((2, n_prog), dtype=torch.float32, device=tensors[0].device)
    _minmax_kernel[(n_prog,)](*tensors, part, total, n_prog, HAS_SPA=has_spa, BLOCK=s["BLOCK"])
    return torch.stack([part[0].min(), part[1].max()]).contiguous()


def _statistics(tensors: list[Any], has_spa: bool, stats: Any, bands: int, n: int,
                s: dict[str, int]) -> tuple[Any, Any]:
    """Band means (B,) and covariance (B, B), float64, of the normalised fused cube (passes 2 and 3)."""
    dev = tensors[0].device
    n_chunks = triton.cdiv(n, s["CHUNK"])
    sums = torch.empty((n_chunks, bands), dtype=torch.float64, device=dev)
    _band_sum_kernel[(triton.cdiv(bands, s["BLOCK_B"]), n_chunks)](
        *tensors, stats, sums, bands, n, HAS_SPA=has_spa, BLOCK_B=s["BLOCK_B"], BLOCK_N=s["BLOCK_N"],
        CHUNK=s["CHUNK"])
    mean = (sums.sum(dim=0) / n).contiguous()
    tiles = triton.cdiv(bands, s["BLOCK_B"])
    grams = torch.empty((n_chunks, bands, bands), dtype=torch.float64, device=dev)
    _gram_kernel[(tiles, tiles, n_chunks)](
        *tensors, stats, mean, grams, bands, n, HAS_SPA=has_spa, BLOCK_B=s["BLOCK_B"], BLOCK_N=s["BLOCK_N"],
        CHUNK=s["CHUNK"])
    return mean, grams.sum(dim=0) / (n - 1)


def _scores(tensors: list[Any], has_spa: bool, stats: Any, mean: Any, cov: Any, rcond: float, bands: int, n: int,
            s: dict[str, int]) -> Any:
    """(N,) float64 pseudo-inverse Mahalanobis scores (pass 4)."""
    directions, inv_values = whitening(cov, rcond)
    out = _triton.empty((n,), torch.float64, tensors[0].device)
    _mahalanobis_kernel[(triton.cdiv(n, s["BLOCK_N"]),)](
        *tensors, stats, mean, directions, inv_values, out, bands, n, HAS_SPA=has_spa, BLOCK_K=s["BLOCK_K"],
        BLOCK_B=s["BLOCK_B"], BLOCK_N=s["BLOCK_N"])
    return out


def fers_rx(x: Any, spe: Any, spa: Any = None, *, rcond: float = DEFAULT_RCOND) -> Any:
    """See ``reference.fers_rx``; (H, W) float64, numpy if ``x`` was numpy."""
    tensors, has_spa, (bands, rows, cols) = _stage(x, spe, spa)
    n = rows * cols
    s = _settings(bands, n)
    stats = _minmax(tensors, has_spa, bands * n, s)
    mean, cov = _statistics(tensors, has_spa, stats, bands, n, s)
    result = _scores(tensors, has_spa, stats, mean, cov, rcond, bands, n, s).reshape(rows, cols)
    return result.cpu().numpy() if isinstance(x, np.ndarray) else to_like(result, x)


def _aot_configs() -> list[_triton.AotConfig]:
    """The kernels at the GPU launch settings (``_settings``), with and without spa, for the
    ahead-of-time spill test (sm_87 / sm_90, no GPU needed)."""
    p32, p64 = "*fp32", "*fp64"
    feats = {"x_ptr": p32, "spe_ptr": p32, "spa_ptr": p32}
    s = {"BLOCK": 2048, "BLOCK_B": 16, "BLOCK_N": 32, "BLOCK_K": 16, "CHUNK": 512}
    tiles = {k: s[k] for k in ("BLOCK_B", "BLOCK_N", "CHUNK")}
    kernels = [
        ("_minmax_kernel", {**feats, "part_ptr": p32, "total": "i32", "n_programs": "i32"}, {"BLOCK": s["BLOCK"]}),
        ("_band_sum_kernel", {**feats, "stats_ptr": p32, "part_ptr": p64, "B": "i32", "N": "i32"}, tiles),
        ("_gram_kernel", {**feats, "stats_ptr": p32, "mean_ptr": p64, "part_ptr": p64, "B": "i32", "N": "i32"},
         tiles),
        ("_mahalanobis_kernel", {**feats, "stats_ptr": p32, "mean_ptr": p64, "v_ptr": p64, "invw_ptr": p64,
                                 "out_ptr": p64, "B": "i32", "N": "i32"},
         {k: s[k] for k in ("BLOCK_K", "BLOCK_B", "BLOCK_N")}),
    ]
    return [_triton.AotConfig(name, args, {"HAS_SPA": has_spa, **consts})
            for name, args, consts in kernels for has_spa in (False, True)]


AOT_CONFIGS = _aot_configs()
