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

Local RX (``local_plan``): the ring (outer minus inner box) sums of ``z`` and ``z z^T`` (packed
lower triangle, column-major) without integral images: ``_ring_rows_kernel`` keeps running
column sums of the window rows (one row in, one out per output row), ``_ring_box_kernel``
slides the box along each output row into the pixels' ring moments, ``_ring_cov_kernel`` turns a
chunk of pixels' moments into covariances; then a batched ``torch.linalg.cholesky_ex``
(float64) and a batched triangular solve give ``|L^-1 z|^2``. Working memory stays within
``LOCAL_CHUNK_BYTES`` for scenes up to 1024 x 1024 x 200, and every image row is formed ~4 times
in all instead of ``outer`` times per output row. Pixels whose Cholesky fails or has a pivot below ``_PIVOT_TOL`` x the
largest diagonal entry (the contract of ``cpu.py``) take the pseudo-inverse path (eigh with
the pinv cutoff). The data are centred by the scene mean first: it removes the
cancellation of raw radiances in ``M - s s^T / n``.
"""

from __future__ import annotations

from typing import Any

import triton
import triton.language as tl

from edgesentry.kernels import _triton
from edgesentry.kernels._triton import to_like, to_tensor
from edgesentry.kernels.rx.local_plan import packed_pairs, plan_local, ring_channels, window_moves, window_starts
from edgesentry.kernels.rx.reference import DEFAULT_RCOND

_PIVOT_TOL = 1e-12
#: Working memory local RX may take: running column sums, ring moments of a batch of rows and the
#: B x B matrices of a chunk of pixels (``local_plan``).
LOCAL_CHUNK_BYTES = 1 << 30
#: Bytes per pixel of a factorisation chunk, per B^2: the covariance, its Cholesky factor, and
#: the eigh path's vectors for the pixels that need it (float64 each).
_PIXEL_BYTES_PER_BAND2 = 3 * 8
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
def _ring_channel(x_ptr, pixel, b, ia, ib, ma, mb, lin, valid):
    """Channel values of one pixel: z[ia] for the band sums, z[ia] z[ib] for the products (float64)."""
    px = x_ptr + pixel * b
    za = tl.load(px + ia, mask=valid, other=0.0).to(tl.float64) - ma
    zb = tl.load(px + ib, mask=valid, other=0.0).to(tl.float64) - mb
    return tl.where(lin, za, za * zb)


@triton.jit
def _ring_rows_kernel(
    x_ptr,  # pointer to the cube, shape (H, W, B) float32 or float64
    mean_ptr,  # pointer to the scene mean, shape (B,) float64
    pi_ptr, pj_ptr,  # pointers to the packed pairs (rows, cols), shape (B (B + 1) / 2,) int32
    v_ptr,  # pointer to the running column sums, shape (W, C) float64
    w, b, C, r0, r1, s0, s1,
    ACCUMULATE: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """v[c, ch] = (v[c, ch] if ACCUMULATE) + sum over rows [r0, r1) - sum over rows [s0, s1) of channel ch."""
    col = tl.program_id(1).to(tl.int64)
    ch = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    valid = ch < C
    lin = ch < b
    t = tl.where(lin, 0, ch - b)
    ia = tl.where(lin, ch, tl.load(pi_ptr + t, mask=valid & ~lin, other=0))
    ib = tl.where(lin, ch, tl.load(pj_ptr + t, mask=valid & ~lin, other=0))
    ma = tl.load(mean_ptr + ia, mask=valid, other=0.0)
    mb = tl.load(mean_ptr + ib, mask=valid, other=0.0)
    acc = tl.zeros((BLOCK_C,), dtype=tl.float64)
    for r in range(r0, r1):
        acc += _ring_channel(x_ptr, r * w + col, b, ia, ib, ma, mb, lin, valid)
    for r in range(s0, s1):
        acc -= _ring_channel(x_ptr, r * w + col, b, ia, ib, ma, mb, lin, valid)
    dst = v_ptr + col * C + ch
    if ACCUMULATE:
        acc += tl.load(dst, mask=valid, other=0.0)
    tl.store(dst, acc, mask=valid)


@triton.jit
def _ring_box_kernel(
    vo_ptr, vi_ptr,  # pointers to the outer / inner running column sums, shape (W, C) float64
    co_ptr, ci_ptr,  # pointers to the outer / inner window starts per column, shape (W,) int32
    ring_ptr,  # pointer to this output row's ring moments, shape (W, C) float64
    w, C, outer, inner,
    SEG: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """ring[j] = sum of vo over columns [co[j], co[j] + outer) - sum of vi over [ci[j], ci[j] + inner),
    for the SEG columns of this program: two running sums slide along the row (the window starts
    grow by at most one per column). Offsets are int32: ``local_plan`` keeps w x C below 2^31."""
    ch = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    valid = ch < C
    j0 = tl.program_id(1) * SEG
    oc = tl.load(co_ptr + j0)
    ic = tl.load(ci_ptr + j0)
    so = tl.zeros((BLOCK_C,), dtype=tl.float64)
    si = tl.zeros((BLOCK_C,), dtype=tl.float64)
    for c in range(oc, oc + outer):
        so += tl.load(vo_ptr + c * C + ch, mask=valid, other=0.0)
    for c in range(ic, ic + inner):
        si += tl.load(vi_ptr + c * C + ch, mask=valid, other=0.0)
    for j in range(j0, tl.minimum(j0 + SEG, w)):
        noc = tl.load(co_ptr + j)
        moved = valid & (noc > oc)
        so += (tl.load(vo_ptr + (oc + outer) * C + ch, mask=moved, other=0.0)
               - tl.load(vo_ptr + oc * C + ch, mask=moved, other=0.0))
        nic = tl.load(ci_ptr + j)
        moved = valid & (nic > ic)
        si += (tl.load(vi_ptr + (ic + inner) * C + ch, mask=moved, other=0.0)
               - tl.load(vi_ptr + ic * C + ch, mask=moved, other=0.0))
        oc, ic = noc, nic
        tl.store(ring_ptr + j * C + ch, so - si, mask=valid)


@triton.jit
def _ring_cov_kernel(
    ring_ptr,  # pointer to ring moments, shape (P, C) float64: B sums, then the packed products
    out_ptr,  # pointer to covariances, shape (P, B, B) float64
    b, C, n_bg,
    BLOCK_B: tl.constexpr,
):
    """cov = (M - s s^T / n) / (n - 1) for one (pixel, 16 x 16 band tile); M from the packed lower triangle."""
    p = tl.program_id(0).to(tl.int64)
    ci = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    cj = tl.program_id(2) * BLOCK_B + tl.arange(0, BLOCK_B)
    mask = (ci[:, None] < b) & (cj[None, :] < b)
    base = ring_ptr + p * C
    si = tl.load(base + ci, mask=ci < b, other=0.0)
    sj = tl.load(base + cj, mask=cj < b, other=0.0)
    r = tl.maximum(ci[:, None], cj[None, :])
    k = tl.minimum(ci[:, None], cj[None, :])
    m = tl.load(base + b + k * b - k * (k - 1) // 2 + (r - k), mask=mask, other=0.0)
    cov = (m - si[:, None] * sj[None, :] / n_bg) / (n_bg - 1.0)
    tl.store(out_ptr + p * b * b + ci[:, None] * b + cj[None, :], cov, mask=mask)


def _aot_configs() -> list[_triton.AotConfig]:
    """The kernels at the launchers' settings (float32 cubes), for the ahead-of-time spill test."""
    cfg = _triton.AotConfig
    f32, f64, i32 = "*fp32", "*fp64", "*i32"
    return [
        cfg("_column_sum_kernel", {"x_ptr": f32, "out_ptr": f64, "n": "i32", "b": "i32", "rows_per_prog": "i32"},
            {"BLOCK_N": 32, "BLOCK_B": 64}),
        cfg("_centred_gram_kernel", {"x_ptr": f32, "mean_ptr": f64, "out_ptr": f64, "n": "i32", "b": "i32",
                                     "rows_per_prog": "i32"}, {"BLOCK_N": 16, "BLOCK_B": 16}),
        cfg("_mahalanobis_kernel", {"x_ptr": f32, "mean_ptr": f64, "v_ptr": f64, "invw_ptr": f64, "out_ptr": f64,
                                    "n": "i32", "b": "i32", "k": "i32"}, {"BLOCK_N": 32, "BLOCK_B": 16, "BLOCK_K": 16}),
        *(cfg("_ring_rows_kernel", {"x_ptr": f32, "mean_ptr": f64, "pi_ptr": i32, "pj_ptr": i32, "v_ptr": f64,
                                    **dict.fromkeys(("w", "b", "C", "r0", "r1", "s0", "s1"), "i32")},
              {"ACCUMULATE": acc, "BLOCK_C": _RING_BLOCK}) for acc in (False, True)),
        cfg("_ring_box_kernel", {"vo_ptr": f64, "vi_ptr": f64, "co_ptr": i32, "ci_ptr": i32, "ring_ptr": f64,
                                 **dict.fromkeys(("w", "C", "outer", "inner"), "i32")},
            {"SEG": _RING_SEG, "BLOCK_C": _RING_BLOCK}),
        cfg("_ring_cov_kernel", {"ring_ptr": f64, "out_ptr": f64, "b": "i32", "C": "i32", "n_bg": "fp64"},
            {"BLOCK_B": 16}),
    ]


#: Channels per program and columns per segment of the ring kernels.
_RING_BLOCK, _RING_SEG = 128, 64
AOT_CONFIGS = _aot_configs()


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
    partial = _triton.empty((splits, b), torch.float64, x.device)
    block_b = min(64, _triton.next_power_of_2(b))
    _column_sum_kernel[(triton.cdiv(b, block_b), splits)](x, partial, n, b, rows, BLOCK_N=32, BLOCK_B=block_b)
    return partial.sum(dim=0) / n


def centred_gram(x: Any, mean: Any) -> Any:
    """(N, B), (B,) -> (B, B) float64 ``(x - mean)^T (x - mean)`` (pass B)."""
    import torch

    n, b = x.shape
    splits, rows = _splits(n)
    partial = _triton.empty((splits, b, b), torch.float64, x.device)
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


def whitening(cov: Any, rcond: float, rank: int | None = None) -> tuple[Any, Any]:
    """Eigenvectors (B, k) and 1 / eigenvalues (k,) kept by the pinv cutoff, at most ``rank``
    of them (cpu.whitening)."""
    import torch

    w, v = torch.linalg.eigh(cov)
    top = w.abs().max() if w.numel() else torch.zeros((), dtype=w.dtype, device=w.device)
    keep = (w.abs() > rcond * top) if float(top) > 0 else torch.zeros_like(w, dtype=torch.bool)
    if rank is not None:
        keep[torch.argsort(w.abs())[:max(w.numel() - rank, 0)]] = False
    return v[:, keep].contiguous(), (1.0 / w[keep]).contiguous()


def mahalanobis(x: Any, mean: Any, vectors: Any, inv_values: Any) -> Any:
    """(N,) float64 ``sum_k ((x_n - mean) . V_k)^2 * inv_values_k``, fused."""
    import torch

    n, b = x.shape
    k = vectors.shape[1]
    if k == 0:  # zero covariance: the pseudo-inverse is 0, so is every score
        return torch.zeros(n, dtype=torch.float64, device=x.device)
    out = _triton.empty((n,), torch.float64, x.device)
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
    """Local dual-window RX; see ``reference.local_rx`` for the arguments and border rule.

    Ring moments by running row and column sums (``local_plan``): working memory within
    ``chunk_bytes`` (default ``LOCAL_CHUNK_BYTES``) besides the cube and the map.
    """
    import torch

    x = _staged_pixels(cube)
    h, w, b = (int(s) for s in x.shape)
    dev = x.device
    channels = ring_channels(b)
    plan = plan_local(h, w, b, inner, outer, LOCAL_CHUNK_BYTES if chunk_bytes is None else chunk_bytes,
                      pixel_bytes=_PIXEL_BYTES_PER_BAND2 * b * b)
    mean = column_mean(x.reshape(h * w, b)).contiguous()
    pi, pj = (torch.from_numpy(a).to(dev) for a in packed_pairs(b))
    ro, ri = window_starts(h, outer), window_starts(h, inner)
    co, ci = (torch.from_numpy(window_starts(w, k)).to(dev) for k in (outer, inner))
    vo = torch.empty((w, channels), dtype=torch.float64, device=dev)
    vi = torch.empty_like(vo)
    ring = torch.empty((plan.rows * w, channels), dtype=torch.float64, device=dev)
    out = _triton.empty((h, w), torch.float64, dev)
    n_bg = float(outer * outer - inner * inner)
    block_b = min(16, _triton.next_power_of_2(b))
    grid_rows = (triton.cdiv(channels, _RING_BLOCK), w)

    def rows(v: Any, add: tuple[int, int], sub: tuple[int, int], accumulate: bool) -> None:
        _ring_rows_kernel[grid_rows](x, mean, pi, pj, v, w, b, channels, *add, *sub, ACCUMULATE=accumulate,
                                     BLOCK_C=_RING_BLOCK)

    rows(vo, (int(ro[0]), int(ro[0]) + outer), (0, 0), False)
    rows(vi, (int(ri[0]), int(ri[0]) + inner), (0, 0), False)
    moves = ((vo, window_moves(h, outer)), (vi, window_moves(h, inner)))
    flat = x.reshape(h * w, b)
    for i0 in range(0, h, plan.rows):
        i1 = min(h, i0 + plan.rows)
        for i in range(i0, i1):
            for v, moved in moves:
                if i in moved:  # one image row enters the window, one leaves
                    rows(v, (moved[i][0], moved[i][0] + 1), (moved[i][1], moved[i][1] + 1), True)
            _ring_box_kernel[(triton.cdiv(channels, _RING_BLOCK), triton.cdiv(w, _RING_SEG))](
                vo, vi, co, ci, ring[(i - i0) * w:], w, channels, outer, inner, SEG=_RING_SEG, BLOCK_C=_RING_BLOCK)
        npix = (i1 - i0) * w
        for p0 in range(0, npix, plan.pixels):  # factorisation chunks within the budget
            p1 = min(npix, p0 + plan.pixels)
            cov = torch.empty((p1 - p0, b, b), dtype=torch.float64, device=dev)
            grid = (p1 - p0, triton.cdiv(b, block_b), triton.cdiv(b, block_b))
            _ring_cov_kernel[grid](ring[p0:p1], cov, b, channels, n_bg, BLOCK_B=block_b)
            centre = flat[i0 * w + p0:i0 * w + p1].to(torch.float64) - mean - ring[p0:p1, :b] / n_bg
            out.view(-1)[i0 * w + p0:i0 * w + p1] = _ring_scores(regularize(cov, ridge), centre, rcond)
    return to_like(out, cube)
