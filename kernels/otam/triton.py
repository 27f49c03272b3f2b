"""Soft-OTAM fusion, Triton tier: one program per (query, class) pair, all four DPs fused.

Each program accumulates the [T, T] frame dot products and the frame norms of both views
over D in ``BLOCK_D`` chunks, forms ``1 - a.b / (|a||b| + eps)`` and runs the OTAM DP of the
tile and of its transpose. The DP is evaluated column by column with the rows as a vector:
columns 2..T only look at the previous column, so they vectorise over the rows; the first
and last (padding) columns also look up one row and are run as a short scalar scan. The
softmin is a max-subtracted log-sum-exp in float32 (finite where the seed's underflows).
Inputs may be float32, float16 or bfloat16; all arithmetic is float32.
"""

from __future__ import annotations

from typing import Any

from edgesentry.kernels.otam.reference import COS_EPS, LAMBDA

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - tier reports itself unavailable
    triton = None


def unavailable_reason() -> str | None:
    from edgesentry.kernels import _triton

    return _triton.unavailable_reason()


if triton is not None:

    @triton.jit
    def _softmin2(a, b, lam):
        m = tl.minimum(a, b)
        return m - lam * tl.log(tl.exp((m - a) / lam) + tl.exp((m - b) / lam))

    @triton.jit
    def _softmin3(a, b, c, lam):
        m = tl.minimum(tl.minimum(a, b), c)
        return m - lam * tl.log(tl.exp((m - a) / lam) + tl.exp((m - b) / lam) + tl.exp((m - c) / lam))

    @triton.jit
    def _pick(vec, idx, at):
        # vec[at] as a scalar (Triton has no dynamic indexing of register vectors).
        return tl.sum(tl.where(idx == at, vec, 0.0), axis=0)

    @triton.jit
    def _otam_tile(tile, rows, cols, T, lam):
        """OTAM of tile[l, j] (l < T rows, j < T columns); padding entries must be 0."""
        first_col = tl.sum(tl.where(cols[None, :] == 0, tile, 0.0), axis=1)  # delta[:, 0]
        first_row = tl.sum(tl.where(rows[:, None] == 0, tile, 0.0), axis=0)  # delta[0, :]
        zero = tl.sum(first_col * 0.0, axis=0)
        # column 1: C[0,1] = delta[0,0]; C[l,1] = delta[l,0] + softmin(0, C[l-1,1], 0)
        c = _pick(first_col, rows, 0)
        col = tl.where(rows == 0, c, 0.0)
        for r in range(1, T):
            c = _pick(first_col, rows, r) + _softmin3(zero, c, zero, lam)
            col = tl.where(rows == r, c, col)
        # columns 2..T, vectorised over rows: C[l,m] = delta[l,m-1] + softmin(C[l-1,m-1], C[l,m-1]).
        # Column m-1 of the tile and the column shifted down one row are gathers (O(T) per column),
        # not masked T x T reductions (which made the DP O(T^3)).
        for m in range(2, T + 1):
            dm = tl.reshape(tl.gather(tile, tl.full((tile.shape[0], 1), m - 1, tl.int32), 1), (tile.shape[0],))
            up = tl.gather(col, tl.maximum(rows - 1, 0), 0)  # row 0 is replaced by `top` below
            top = tl.sum(tl.where(cols < m, first_row, 0.0), axis=0)
            col = tl.where(rows == 0, top, dm + _softmin2(up, col, lam))
        # last (padding) column: C[l,T+1] = softmin(C[l-1,T], C[l-1,T+1], C[l,T])
        e = _pick(col, rows, 0)
        for r in range(1, T):
            e = _softmin3(_pick(col, rows, r - 1), e, _pick(col, rows, r), lam)
        return e

    @triton.jit
    def _view_distances(z_ptr, p_ptr, q, n, T, D, eps, lam, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
        rows = tl.arange(0, BLOCK_T)
        cols = tl.arange(0, BLOCK_T)
        dk = tl.arange(0, BLOCK_D)
        acc = tl.zeros((BLOCK_T, BLOCK_T), dtype=tl.float32)
        nz = tl.zeros((BLOCK_T,), dtype=tl.float32)
        npn = tl.zeros((BLOCK_T,), dtype=tl.float32)
        z_base = z_ptr + q.to(tl.int64) * T * D
        p_base = p_ptr + n.to(tl.int64) * T * D
        for d0 in range(0, D, BLOCK_D):
            mask = (rows[:, None] < T) & (d0 + dk[None, :] < D)
            z = tl.load(z_base + rows[:, None] * D + d0 + dk[None, :], mask=mask, other=0.0).to(tl.float32)
            p = tl.load(p_base + rows[:, None] * D + d0 + dk[None, :], mask=mask, other=0.0).to(tl.float32)
            if BLOCK_T >= 16:  # a dot keeps one T x T accumulator (the broadcast below is T x T x BLOCK_D)
                acc = tl.dot(z, tl.trans(p), acc, input_precision="ieee")
            else:
                acc += tl.sum(z[:, None, :] * p[None, :, :], axis=2)
            nz += tl.sum(z * z, axis=1)
            npn += tl.sum(p * p, axis=1)
        den = tl.sqrt(nz)[:, None] * tl.sqrt(npn)[None, :] + eps
        valid = (rows[:, None] < T) & (cols[None, :] < T)
        delta = tl.where(valid, 1.0 - acc / den, 0.0)
        qs = _otam_tile(delta, rows, cols, T, lam)
        sq = _otam_tile(tl.trans(delta), rows, cols, T, lam)
        return qs, sq

    @triton.jit
    def _fuse_kernel(zl_ptr, pl_ptr, zg_ptr, pg_ptr, dist_ptr, logit_ptr, Q, N, T, D, eps, lam,
                     BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
        pair = tl.program_id(0)
        q = pair // N
        n = pair % N
        lqs, lsq = _view_distances(zl_ptr, pl_ptr, q, n, T, D, eps, lam, BLOCK_T, BLOCK_D)
        gqs, gsq = _view_distances(zg_ptr, pg_ptr, q, n, T, D, eps, lam, BLOCK_T, BLOCK_D)
        pairs = Q * N
        tl.store(dist_ptr + pair, lqs)
        tl.store(dist_ptr + pairs + pair, lsq)
        tl.store(dist_ptr + 2 * pairs + pair, gqs)
        tl.store(dist_ptr + 3 * pairs + pair, gsq)
        tl.store(logit_ptr + pair, -((lqs + lsq) + (gqs + gsq)))


def fuse(z_local: Any, p_local: Any, z_global: Any, p_global: Any, *, lam: float = LAMBDA,
         eps: float = COS_EPS, out: tuple[Any, Any] | None = None) -> tuple[Any, Any]:
    """(dists [4, Q, N], logits [Q, N]) float32, numpy in -> numpy out, tensors in -> tensors out.

    ``out`` may pass preallocated float32 tensors (tests poison them with NaN first).
    """
    import torch

    from edgesentry.kernels import _triton

    floats = (torch.float32, torch.float16, torch.bfloat16)
    tensors = [_triton.to_tensor(x) for x in (z_local, p_local, z_global, p_global)]
    zl, pl, zg, pg = (x if x.dtype in floats else x.float() for x in tensors)
    q, t, d = zl.shape
    n = pl.shape[0]
    if out is None:
        dists = _triton.empty((4, q, n), torch.float32, zl.device)
        logits = _triton.empty((q, n), torch.float32, zl.device)
    else:
        dists, logits = out
    block_t, block_d, num_warps = launch_settings(t, d)
    _fuse_kernel[(q * n,)](zl, pl, zg, pg, dists, logits, q, n, t, d, float(eps), float(lam),
                           BLOCK_T=block_t, BLOCK_D=block_d, num_warps=num_warps)
    return _triton.to_like(dists, z_local), _triton.to_like(logits, z_local)


def launch_settings(t: int, d: int) -> tuple[int, int, int]:
    """(BLOCK_T, BLOCK_D, num_warps) of ``_fuse_kernel`` for T frames of D features.

    The DP extracts scalars with block reductions: with one warp (T <= 8) they are shuffles, not
    shared-memory round trips. Below 16 frames the similarity is a [BLOCK_T, BLOCK_T, BLOCK_D]
    broadcast product kept at ~32 floats per thread; from 16 on (``tl.dot``'s minimum) a dot.
    """
    from edgesentry.kernels import _triton

    block_t = max(2, _triton.next_power_of_2(t))
    num_warps = 1 if block_t <= 8 else (2 if block_t <= 16 else (4 if block_t <= 32 else 8))
    if block_t >= 16:  # tl.dot over D chunks (see _view_distances): the operands are T x BLOCK_D
        return block_t, 32, num_warps
    block_d = max(16, min(_triton.next_power_of_2(d), 1024 * num_warps // (block_t * block_t)))
    return block_t, block_d, num_warps


def _aot_configs() -> list[Any]:
    """The kernel at its launch settings for T = 8 (the model), 16, 32 and 64 frames of 1024 features."""
    from edgesentry.kernels import _triton

    f32 = "*fp32"
    signature = {**dict.fromkeys(("zl_ptr", "pl_ptr", "zg_ptr", "pg_ptr", "dist_ptr", "logit_ptr"), f32),
                 **dict.fromkeys(("Q", "N", "T", "D"), "i32"), "eps": "fp32", "lam": "fp32"}
    out = []
    for t in (8, 16, 32, 64):
        block_t, block_d, warps = launch_settings(t, 1024)
        out.append(_triton.AotConfig("_fuse_kernel", signature, {"BLOCK_T": block_t, "BLOCK_D": block_d}, warps))
    return out


AOT_CONFIGS = _aot_configs() if triton is not None else []
