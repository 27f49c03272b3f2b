"""RX, Triton tier: fp64 statistics and a fused Mahalanobis kernel on the GPU.

Specification: ``reference.py`` (same arguments, same border rule, same pinv semantics).

Global RX (design: ``shared/briefs/fers.md`` section 5):

1. ``_column_sum_kernel``: per-band sums (pass A), float64 accumulation, the pixel axis
   split over programs (partials summed by torch, so the result is deterministic).
2. ``_centred_gram_kernel``: centred Gram ``Z^T Z`` tile by tile (pass B), float64.
3. Host side of torch, float64: ``eigh`` of the covariance, keep ``|w| > rcond * max|w|``
   exactly as ``cpu.whitening`` does (the singular values of a symmetric matrix are
   ``|w|``), so singular scenes get the reference pseudo-inverse answer.
4. ``_mahalanobis_kernel``: ``score_n = sum_k (z_n . V_k)^2 / w_k``; the epilogue squares
   and row-reduces each (pixels x k) tile, so the N x k projection never reaches memory.

Why float64 and no ``tl.dot``: the pseudo-inverse cutoff is 1e-15 relative; an fp32 (or
TF32) Gram puts the zero eigenvalues of a singular scene at ~1e-7 relative, far above the
cutoff, and the scores of those scenes become noise. ``tl.dot`` on float64 is not lowered
on every NVIDIA target by every Triton release, so the products are broadcast-multiply-sum
in float64 (CUDA cores; RX is latency-bound at these sizes anyway, fers.md section 5).

Local RX: the background sums of ``x`` and ``x x^T`` come from integral images (torch
``cumsum`` in float64 on the device, over bands of output rows so memory stays bounded);
``_window_cov_kernel`` turns the 2 x 4 box corners of each pixel into its ring covariance;
then a batched ``torch.linalg.cholesky_ex`` (float64) and a batched triangular solve give
``|L^-1 z|^2``. Pixels whose Cholesky fails or has a pivot below ``_PIVOT_TOL`` x the
largest diagonal entry (the contract of ``cpu.py``) take the pseudo-inverse path (eigh with
the pinv cutoff). The data are centred by the scene mean first: it removes the
cancellation of raw radiances in ``M - s s^T / n``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton
import triton.language as tl

from edgesentry.kernels import _triton
from edgesentry.kernels._triton import to_like, to_tensor

from .reference import DEFAULT_RCOND

_PIVOT_TOL = 1e-12
#: Bytes the integral images of one band of output rows may take (local RX).
LOCAL_CHUNK_BYTES = 1 << 30
#: Rows handled per program in the reductions (a multiple of the row tiles below).
_ROWS_PER_PROGRAM = 1024


def unavailable_reason() -> str | None:
    return _triton.unavailable_reason()


# ----------------------------------------------------------------------------- kernels
@triton.jit
def _column_sum_kernel(x_ptr, out_ptr, n, b, rows_per_prog, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr):
    """out[s, c] = sum of x[r, c] over this program's slice s of rows (float64)."""
    pid_b = tl.program_id(0)
    pid_s = tl.program_id(1)
    cols = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    col_ok = cols < b
    acc = tl.zeros((BLOCK_B,), dtype=tl.float64)
    start = pid_s * rows_per_prog
    for r0 in range(start, start + rows_per_prog, BLOCK_N):
        rows = r0 + tl.arange(0, BLOCK_N)
        mask = (rows[:, None] < n) & col_ok[None, :]
        v = tl.load(x_ptr + rows[:, None].to(tl.int64) * b + cols[None, :], mask=mask, other=0.0)
        acc += tl.sum(v.to(tl.float64), axis=0)
    tl.store(out_ptr + pid_s * b + cols, acc, mask=col_ok)


@triton.jit
def _centred_gram_kernel(x_ptr, mean_ptr, out_ptr, n, b, rows_per_prog,
                         BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr):
    """out[s, i, j] = sum over slice s of (x[r, i] - mean[i]) (x[r, j] - mean[j]) (float64)."""
    pid_i = tl.program_id(0)
    pid_j = tl.program_id(1)
    pid_s = tl.program_id(2)
    ci = pid_i * BLOCK_B + tl.arange(0, BLOCK_B)
    cj = pid_j * BLOCK_B + tl.arange(0, BLOCK_B)
    mean_i = tl.load(mean_ptr + ci, mask=ci < b, other=0.0)
    mean_j = tl.load(mean_ptr + cj, mask=cj < b, other=0.0)
    acc = tl.zeros((BLOCK_B, BLOCK_B), dtype=tl.float64)
    start = pid_s * rows_per_prog
    for r0 in range(start, start + rows_per_prog, BLOCK_N):
        rows = r0 + tl.arange(0, BLOCK_N)
        base = rows[:, None].to(tl.int64) * b
        mask_i = (rows[:, None] < n) & (ci[None, :] < b)
        mask_j = (rows[:, None] < n) & (cj[None, :] < b)
        zi = tl.load(x_ptr + base + ci[None, :], mask=mask_i, other=0.0).to(tl.float64) - mean_i[None, :]
        zj = tl.load(x_ptr + base + cj[None, :], mask=mask_j, other=0.0).to(tl.float64) - mean_j[None, :]
        zi = tl.where(mask_i, zi, 0.0)
        zj = tl.where(mask_j, zj, 0.0)
        acc += tl.sum(zi[:, :, None] * zj[:, None, :], axis=0)
    out = out_ptr + pid_s * b * b + ci[:, None] * b + cj[None, :]
    tl.store(out, acc, mask=(ci[:, None] < b) & (cj[None, :] < b))


@triton.jit
def _mahalanobis_kernel(x_ptr, mean_ptr, v_ptr, invw_ptr, out_ptr, n, b, k,
                        BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr):
    """out[r] = sum_k ((x[r] - mean) . V[:, k])^2 * invw[k]; the projection stays on chip."""
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n
    base = rows[:, None].to(tl.int64) * b
    score = tl.zeros((BLOCK_N,), dtype=tl.float64)
    for k0 in range(0, k, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        proj = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float64)
        for b0 in range(0, b, BLOCK_B):
            cs = b0 + tl.arange(0, BLOCK_B)
            mean = tl.load(mean_ptr + cs, mask=cs < b, other=0.0)
            zmask = row_ok[:, None] & (cs[None, :] < b)
            z = tl.load(x_ptr + base + cs[None, :], mask=zmask, other=0.0).to(tl.float64) - mean[None, :]
            z = tl.where(zmask, z, 0.0)
            vmask = (cs[:, None] < b) & (ks[None, :] < k)
            v = tl.load(v_ptr + cs[:, None] * k + ks[None, :], mask=vmask, other=0.0)
            proj += tl.sum(z[:, :, None] * v[None, :, :], axis=1)
        invw = tl.load(invw_ptr + ks, mask=ks < k, other=0.0)
        score += tl.sum(proj * proj * invw[None, :], axis=1)
    tl.store(out_ptr + rows, score, mask=row_ok)


@triton.jit
def _window_cov_kernel(mom_ptr, sum_ptr, corner_ptr, out_ptr, b, wp, n_bg,
                       BLOCK_B: tl.constexpr):
    """Ring covariance of one pixel (program 0) for one (i, j) tile of bands.

    ``mom`` (R+1, W+1, B, B) and ``sum`` (R+1, W+1, B) are integral images; ``corner``
    holds per pixel the outer then inner box as (r0, r1, c0, c1) in integral coordinates.
    cov = ((M_outer - M_inner) - s s^T / n) / (n - 1) with s = S_outer - S_inner.
    """
    p = tl.program_id(0)
    ci = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    cj = tl.program_id(2) * BLOCK_B + tl.arange(0, BLOCK_B)
    mi = ci < b
    mj = cj < b
    mask = mi[:, None] & mj[None, :]
    tile = ci[:, None] * b + cj[None, :]
    m = tl.zeros((BLOCK_B, BLOCK_B), dtype=tl.float64)
    si = tl.zeros((BLOCK_B,), dtype=tl.float64)
    sj = tl.zeros((BLOCK_B,), dtype=tl.float64)
    for box in tl.static_range(2):
        sign = 1.0 - 2.0 * box  # outer box adds, inner (guard) box subtracts
        r0 = tl.load(corner_ptr + p * 8 + box * 4 + 0).to(tl.int64)
        r1 = tl.load(corner_ptr + p * 8 + box * 4 + 1).to(tl.int64)
        c0 = tl.load(corner_ptr + p * 8 + box * 4 + 2).to(tl.int64)
        c1 = tl.load(corner_ptr + p * 8 + box * 4 + 3).to(tl.int64)
        for corner in tl.static_range(4):
            r = r1 if corner < 2 else r0
            c = c1 if corner % 2 == 0 else c0
            s = sign if corner % 3 == 0 else -sign  # ++ at (r1, c1) and (r0, c0)
            cell = r * wp + c
            m += s * tl.load(mom_ptr + cell * b * b + tile, mask=mask, other=0.0)
            si += s * tl.load(sum_ptr + cell * b + ci, mask=mi, other=0.0)
            sj += s * tl.load(sum_ptr + cell * b + cj, mask=mj, other=0.0)
    cov = (m - si[:, None] * sj[None, :] / n_bg) / (n_bg - 1.0)
    tl.store(out_ptr + p.to(tl.int64) * b * b + tile, cov, mask=mask)


#: Kernel -> (signature, constexprs) as the launchers below use them (float32 input), for
#: ahead-of-time compilation without a GPU (``compile_for``).
KERNEL_SIGNATURES: dict[str, tuple[dict[str, str], dict[str, int]]] = {
    "_column_sum_kernel": (
        {"x_ptr": "*fp32", "out_ptr": "*fp64", "n": "i32", "b": "i32", "rows_per_prog": "i32",
         "BLOCK_N": "constexpr", "BLOCK_B": "constexpr"},
        {"BLOCK_N": 32, "BLOCK_B": 64},
    ),
    "_centred_gram_kernel": (
        {"x_ptr": "*fp32", "mean_ptr": "*fp64", "out_ptr": "*fp64", "n": "i32", "b": "i32",
         "rows_per_prog": "i32", "BLOCK_N": "constexpr", "BLOCK_B": "constexpr"},
        {"BLOCK_N": 16, "BLOCK_B": 16},
    ),
    "_mahalanobis_kernel": (
        {"x_ptr": "*fp32", "mean_ptr": "*fp64", "v_ptr": "*fp64", "invw_ptr": "*fp64", "out_ptr": "*fp64",
         "n": "i32", "b": "i32", "k": "i32", "BLOCK_N": "constexpr", "BLOCK_B": "constexpr",
         "BLOCK_K": "constexpr"},
        {"BLOCK_N": 32, "BLOCK_B": 16, "BLOCK_K": 16},
    ),
    "_window_cov_kernel": (
        {"mom_ptr": "*fp64", "sum_ptr": "*fp64", "corner_ptr": "*i32", "out_ptr": "*fp64", "b": "i32",
         "wp": "i32", "n_bg": "fp64", "BLOCK_B": "constexpr"},
        {"BLOCK_B": 16},
    ),
}


def compile_for(arch: str) -> dict[str, bytes]:
    """Compile every kernel ahead of time for ``arch`` (``"sm_90"``) -> name -> cubin.

    Needs no GPU (Triton ships ptxas), but does need the real compiler: it cannot run in a
    process where ``TRITON_INTERPRET=1`` (the interpreter replaces the kernels).
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if _triton.interpreting():
        raise RuntimeError("compile_for needs a process without TRITON_INTERPRET=1")
    capability = int(arch.removeprefix("sm_"))
    out = {}
    for name, (signature, constexprs) in KERNEL_SIGNATURES.items():
        source = ASTSource(fn=globals()[name], signature=signature, constexprs=constexprs)
        out[name] = triton.compile(source, target=GPUTarget("cuda", capability, 32)).asm["cubin"]
    return out


# ----------------------------------------------------------------------------- global
def _staged_pixels(pixels: Any) -> Any:
    """Pixels on the device; float32/float64 are kept (kernels upcast), others -> float64."""
    import torch

    t = to_tensor(pixels)
    if t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float64)
    return t.contiguous()


def _splits(n: int) -> tuple[int, int]:
    rows = _ROWS_PER_PROGRAM
    return triton.cdiv(n, rows), rows


def column_mean(x: Any) -> Any:
    """(N, B) -> (B,) float64 mean (pass A)."""
    import torch

    n, b = x.shape
    splits, rows = _splits(n)
    partial = torch.full((splits, b), float("nan"), dtype=torch.float64, device=x.device)
    block_b = min(64, _triton.next_power_of_2(b))
    _column_sum_kernel[(triton.cdiv(b, block_b), splits)](x, partial, n, b, rows, BLOCK_N=32, BLOCK_B=block_b)
    return partial.sum(dim=0) / n


def centred_gram(x: Any, mean: Any) -> Any:
    """(N, B), (B,) -> (B, B) float64 ``(x - mean)^T (x - mean)`` (pass B)."""
    import torch

    n, b = x.shape
    splits, rows = _splits(n)
    partial = torch.full((splits, b, b), float("nan"), dtype=torch.float64, device=x.device)
    block_b = min(16, _triton.next_power_of_2(b))
    grid = (triton.cdiv(b, block_b), triton.cdiv(b, block_b), splits)
    _centred_gram_kernel[grid](x, mean, partial, n, b, rows, BLOCK_N=16, BLOCK_B=block_b)
    return partial.sum(dim=0)


def regularize(cov: Any, ridge: float) -> Any:
    """``reference._regularize`` in torch (batched over leading dimensions)."""
    import torch

    if ridge <= 0:
        return cov
    b = cov.shape[-1]
    load = ridge * torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1) / b
    return cov + load[..., None, None] * torch.eye(b, dtype=cov.dtype, device=cov.device)


def whitening(cov: Any, rcond: float) -> tuple[Any, Any]:
    """Eigenvectors (B, k) and 1 / eigenvalues (k,) kept by the pinv cutoff (cpu.whitening)."""
    import torch

    w, v = torch.linalg.eigh(cov)
    top = w.abs().max() if w.numel() else torch.zeros((), dtype=w.dtype, device=w.device)
    keep = (w.abs() > rcond * top) if float(top) > 0 else torch.zeros_like(w, dtype=torch.bool)
    return v[:, keep].contiguous(), (1.0 / w[keep]).contiguous()


def mahalanobis(x: Any, mean: Any, vectors: Any, inv_values: Any) -> Any:
    """(N,) float64 ``sum_k ((x_n - mean) . V_k)^2 * inv_values_k``, fused."""
    import torch

    n, b = x.shape
    k = vectors.shape[1]
    if k == 0:  # zero covariance: the pseudo-inverse is 0, so is every score
        return torch.zeros(n, dtype=torch.float64, device=x.device)
    out = torch.full((n,), float("nan"), dtype=torch.float64, device=x.device)
    block_b = min(16, _triton.next_power_of_2(b))
    block_k = min(16, _triton.next_power_of_2(k))
    _mahalanobis_kernel[(triton.cdiv(n, 32),)](
        x, mean, vectors, inv_values, out, n, b, k, BLOCK_N=32, BLOCK_B=block_b, BLOCK_K=block_k
    )
    return out


def global_rx(pixels: Any, *, ridge: float = 0.0, rcond: float = DEFAULT_RCOND) -> Any:
    """Global RX; see ``reference.global_rx``. numpy in -> numpy out, CUDA tensor in -> tensor."""
    x = _staged_pixels(pixels)
    n = x.shape[0]
    mean = column_mean(x)
    cov = regularize(centred_gram(x, mean) / (n - 1), ridge)
    vectors, inv_values = whitening(cov, rcond)
    return to_like(mahalanobis(x, mean, vectors, inv_values), pixels)


# ----------------------------------------------------------------------------- local
def window_starts(size: int, window: int, length: int) -> np.ndarray:
    """``reference.window_bounds`` start for every index (vectorised)."""
    return np.clip(np.arange(size) - window // 2, 0, length - window)


def _integral_images(z: Any) -> tuple[Any, Any]:
    """Zero-padded integral images of z (R, W, B) and of z z^T: (R+1, W+1, B[, B]) float64."""
    import torch

    r, w, b = z.shape
    sums = torch.zeros((r + 1, w + 1, b), dtype=torch.float64, device=z.device)
    sums[1:, 1:] = z
    sums.cumsum_(0).cumsum_(1)
    moments = torch.zeros((r + 1, w + 1, b, b), dtype=torch.float64, device=z.device)
    moments[1:, 1:] = z[..., :, None] * z[..., None, :]
    moments.cumsum_(0).cumsum_(1)
    return sums, moments


def _rows_per_chunk(h: int, w: int, b: int, outer: int, budget: int) -> int:
    per_row = (w + 1) * b * (b + 1) * 8 * 2  # integral images + the product being scanned
    return max(1, min(h, budget // max(per_row, 1) - outer))


def _ring_scores(cov: Any, z: Any, rcond: float) -> Any:
    """|L^-1 z|^2 per pixel, with the pinv (eigh) path for unsafe factorisations."""
    import torch

    chol, info = torch.linalg.cholesky_ex(cov)
    max_diag = torch.diagonal(cov, dim1=-2, dim2=-1).amax(-1)
    pivots = torch.diagonal(chol, dim1=-2, dim2=-1).square()
    ok = (info == 0) & (max_diag > 0) & (pivots > _PIVOT_TOL * max_diag[:, None]).all(-1)
    scores = torch.full(z.shape[:1], float("nan"), dtype=torch.float64, device=z.device)
    if bool(ok.any()):
        u = torch.linalg.solve_triangular(chol[ok], z[ok].unsqueeze(-1), upper=False)
        scores[ok] = u.square().sum(dim=(-2, -1))
    bad = ~ok
    if bool(bad.any()):
        w, v = torch.linalg.eigh(cov[bad])
        top = w.abs().amax(-1, keepdim=True)
        keep = (w.abs() > rcond * top) & (top > 0)
        inv = torch.where(keep, 1.0 / torch.where(keep, w, torch.ones_like(w)), torch.zeros_like(w))
        proj = (v.transpose(-2, -1) @ z[bad].unsqueeze(-1)).squeeze(-1)
        scores[bad] = (proj.square() * inv).sum(-1)
    return scores


def local_rx(cube: Any, *, inner: int, outer: int, ridge: float = 0.0, rcond: float = DEFAULT_RCOND,
             chunk_bytes: int | None = None) -> Any:
    """Local dual-window RX; see ``reference.local_rx`` for the arguments and border rule."""
    import torch

    x = to_tensor(cube, torch.float64)
    h, w, b = x.shape
    z = x - x.reshape(-1, b).mean(dim=0)
    n_bg = float(outer * outer - inner * inner)
    ro, ri = window_starts(h, outer, h), window_starts(h, inner, h)
    co, ci = window_starts(w, outer, w), window_starts(w, inner, w)
    step = _rows_per_chunk(h, w, b, outer, LOCAL_CHUNK_BYTES if chunk_bytes is None else chunk_bytes)
    out = torch.full((h, w), float("nan"), dtype=torch.float64, device=x.device)
    block_b = min(16, _triton.next_power_of_2(b))
    for i0 in range(0, h, step):
        i1 = min(h, i0 + step)
        lo, hi = int(ro[i0]), int(ro[i1 - 1]) + outer  # the inner box lies inside the outer one
        sums, moments = _integral_images(z[lo:hi])
        corners = _corners(ro[i0:i1] - lo, ri[i0:i1] - lo, co, ci, outer, inner)
        npix = corners.shape[0]
        cov = torch.full((npix, b, b), float("nan"), dtype=torch.float64, device=x.device)
        corner_t = torch.from_numpy(corners).to(x.device)
        grid = (npix, triton.cdiv(b, block_b), triton.cdiv(b, block_b))
        _window_cov_kernel[grid](moments, sums, corner_t, cov, b, w + 1, n_bg, BLOCK_B=block_b)
        cov = regularize(cov, ridge)
        ring_sum = _box(sums, corner_t[:, 0:4]) - _box(sums, corner_t[:, 4:8])
        centre = z[i0:i1].reshape(-1, b) - ring_sum / n_bg
        out[i0:i1] = _ring_scores(cov, centre, rcond).reshape(i1 - i0, w)
    return to_like(out, cube)


def _corners(ro: np.ndarray, ri: np.ndarray, co: np.ndarray, ci: np.ndarray, outer: int,
             inner: int) -> np.ndarray:
    """(rows x cols, 8) int32: outer (r0, r1, c0, c1) then inner, in integral-image coordinates."""
    rows, cols = len(ro), len(co)
    out = np.empty((rows, cols, 8), dtype=np.int32)
    out[..., 0], out[..., 1] = ro[:, None], ro[:, None] + outer
    out[..., 2], out[..., 3] = co[None, :], co[None, :] + outer
    out[..., 4], out[..., 5] = ri[:, None], ri[:, None] + inner
    out[..., 6], out[..., 7] = ci[None, :], ci[None, :] + inner
    return out.reshape(rows * cols, 8)


def _box(integral: Any, box: Any) -> Any:
    """Box sums (P, B) of an integral image (R+1, W+1, B) for boxes (P, 4) = (r0, r1, c0, c1)."""
    r0, r1, c0, c1 = (box[:, i].long() for i in range(4))
    return integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
