"""MAVD kernels, Triton tier (CUDA tensors; ``TRITON_INTERPRET=1`` on CPU machines).

``align_fuse``: one program per tile of ``BLOCK_M`` snippet rows; every layer is a sum of
``tl.dot`` on register tiles no wider than 32 x 64 (fp32, ``input_precision="ieee"`` so no TF32
rounding): flow in two 32-column halves, the 112-wide fusion layer in four 32-column output
chunks, each consumed at once by the output layer, so neither the 224-wide concatenation nor
the hidden layer is ever formed whole. Only the 64-d embedding is stored. The layer loops are
dynamic, so each iteration loads only its own weights. (Full-width operands in unrolled
layers spilled ~41 KB per thread at sm_90; now 0 at 128-186 registers, ``AOT_CONFIGS``.)

``positional``: one program per (sequence, channel block); a forward and a backward
exponential scan over time with the closed-form row sums, accumulated in fp32, each as an
associative scan over tiles of ``POS_BLOCK_T`` steps with the carry passed between tiles
(T / 64 dependent steps instead of 2T).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import triton
import triton.language as tl

from edgesentry.kernels import _triton
from edgesentry.kernels.mavd.reference import ALIGN_FUSE_PARAMS, POS_DECAY, positional_row_sums

#: Time steps per scan tile, channels per program and warps of ``_positional_kernel``.
POS_BLOCK_T, POS_BLOCK_C, POS_WARPS = 64, 32, 4
#: Rows per program and warps of ``_align_fuse_kernel`` (no spills at sm_87 / sm_90: ``AOT_CONFIGS``).
BLOCK_M, ALIGN_WARPS = 16, 8


def unavailable_reason() -> str | None:
    return _triton.unavailable_reason()


#: fp32 products and sums on the CUDA cores: no TF32 rounding (tf32x3 also fits, at 135 registers).
PRECISION: tl.constexpr = tl.constexpr("ieee")


@triton.jit
def _dot(x, w_ptr, w_stride, out0, in0, OUT: tl.constexpr, IN: tl.constexpr, out_lim, in_lim):
    """x (BM, IN) @ W[out0:out0 + OUT, in0:in0 + IN]^T -> (BM, OUT); weights past the limits read as 0.

    fp32 with ``input_precision="ieee"`` (no TF32 rounding). Operands stay at most 32 x 64, so the
    FMA lowering of the dot keeps its tiles in registers (a 128-wide operand spilled ~40 KB).
    """
    i = in0 + tl.arange(0, IN)
    o = out0 + tl.arange(0, OUT)
    wt = tl.load(w_ptr + o[None, :] * w_stride + i[:, None], mask=(i[:, None] < in_lim) & (o[None, :] < out_lim),
                 other=0.0)
    return tl.dot(x, wt, input_precision=PRECISION)


@triton.jit
def _bias(b_ptr, out0, OUT: tl.constexpr, lim):
    o = out0 + tl.arange(0, OUT)
    return tl.load(b_ptr + o, mask=o < lim, other=0.0)[None, :]


@triton.jit
def _flow_layer(f0, f1, w_ptr, b_ptr):
    """relu(f W^T + b) of a 64 -> 64 layer on f held as two 32-column halves."""
    g0 = _dot(f0, w_ptr, 64, 0, 0, 32, 32, 64, 64) + _dot(f1, w_ptr, 64, 0, 32, 32, 32, 64, 64)
    g1 = _dot(f0, w_ptr, 64, 32, 0, 32, 32, 64, 64) + _dot(f1, w_ptr, 64, 32, 32, 32, 32, 64, 64)
    return tl.maximum(g0 + _bias(b_ptr, 0, 32, 64), 0.0), tl.maximum(g1 + _bias(b_ptr, 32, 32, 64), 0.0)


@triton.jit
def _audio_layer(a, w_ptr, b_ptr):
    return tl.maximum(_dot(a, w_ptr, 32, 0, 0, 32, 32, 32, 32) + _bias(b_ptr, 0, 32, 32), 0.0)


@triton.jit
def _align_fuse_kernel(
    v_ptr,  # pointer to RGB features, shape (N, 128) float32
    a_ptr,  # pointer to audio features, shape (M, 32) float32 (row r uses r % M)
    f_ptr,  # pointer to flow features, shape (N, 64) float32
    out_ptr,  # pointer to the embedding, shape (N, 64) float32
    wa0, ba0, wa1, ba1, wa2, ba2,  # audio MLP 32 -> 32 (x3)
    wf0, bf0, wf1, bf1, wf2, bf2,  # flow MLP 64 -> 64 (x3)
    we1, be1,  # fusion layer 224 -> 112 on [v | a | f]
    we2, be2,  # output layer 112 -> 64
    n_rows,
    a_rows,
    BLOCK_M: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    live = rows < n_rows
    c32 = tl.arange(0, 32)
    a = tl.load(a_ptr + (rows % a_rows)[:, None] * 32 + c32[None, :], mask=live[:, None], other=0.0)
    f0 = tl.load(f_ptr + rows[:, None] * 64 + c32[None, :], mask=live[:, None], other=0.0)
    f1 = tl.load(f_ptr + rows[:, None] * 64 + 32 + c32[None, :], mask=live[:, None], other=0.0)
    # Dynamic loops (not unrolled): each iteration loads only its own weights, so the compiler
    # cannot hoist every weight of the network into registers at once (that is what spilled).
    for layer in range(3):
        if layer == 0:
            wa, ba, wf, bf = wa0, ba0, wf0, bf0
        elif layer == 1:
            wa, ba, wf, bf = wa1, ba1, wf1, bf1
        else:
            wa, ba, wf, bf = wa2, ba2, wf2, bf2
        a = _audio_layer(a, wa, ba)
        f0, f1 = _flow_layer(f0, f1, wf, bf)
    # The 112-wide fusion layer in four 32-column chunks (the last one 16 wide, masked), each consumed
    # at once by the output layer: the 224-wide concatenation and the 112-wide hidden layer are never
    # formed whole, so no operand is wider than 64 columns.
    e = tl.zeros((BLOCK_M, 64), dtype=tl.float32) + _bias(be2, 0, 64, 64)
    for j in range(4):
        h = tl.zeros((BLOCK_M, 32), dtype=tl.float32) + _bias(be1, 32 * j, 32, 112)
        for k in range(4):  # the RGB part, 32 columns at a time
            vk = tl.load(v_ptr + rows[:, None] * 128 + 32 * k + c32[None, :], mask=live[:, None], other=0.0)
            h += _dot(vk, we1, 224, 32 * j, 32 * k, 32, 32, 112, 224)
        h += _dot(a, we1, 224, 32 * j, 128, 32, 32, 112, 224)
        h += _dot(f0, we1, 224, 32 * j, 160, 32, 32, 112, 224) + _dot(f1, we1, 224, 32 * j, 192, 32, 32, 112, 224)
        e += _dot(tl.maximum(h, 0.0), we2, 112, 0, 32 * j, 64, 32, 64, 112)
    e = tl.maximum(e, 0.0)
    tl.store(out_ptr + rows[:, None] * 64 + tl.arange(0, 64)[None, :], e, mask=live[:, None])


@triton.jit
def _linear_recurrence(a1, b1, a2, b2):
    """Compose y -> a1 y + b1 then y -> a2 y + b2 (associative: the scan of y_t = d y_(t-1) + u_t)."""
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _row_scale(inv_s_ptr, rows, n_len):
    return tl.load(inv_s_ptr + rows, mask=rows < n_len, other=0.0)[:, None]


@triton.jit
def _positional_kernel(
    t_ptr,  # pointer to the input, shape (S, T, C) float32
    inv_s_ptr,  # pointer to 1 / row sums, shape (T,) float32
    out_ptr,  # pointer to the output, shape (S, T, C) float32
    n_len,
    n_ch,
    decay,
    BLOCK_T: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """y_t = sum_j d^|t - j| u_j, u = x / s: a forward and a backward scan, each an associative
    scan over tiles of BLOCK_T steps with the carry passed between tiles (T / BLOCK_T dependent
    steps instead of T)."""
    seq = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < n_ch
    tt = tl.arange(0, BLOCK_T)
    base = seq * n_len * n_ch
    steps = tl.full((BLOCK_T, BLOCK_C), decay, tl.float32)
    log_d = tl.log(decay)
    carry_in = tl.exp((tt + 1).to(tl.float32) * log_d)  # d^(t+1): the previous tile's state, t steps on
    carry_back = tl.exp((BLOCK_T - tt).to(tl.float32) * log_d)  # d^(BLOCK_T-t): the next tile's state
    n_tiles = tl.cdiv(n_len, BLOCK_T)
    carry = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for k in range(0, n_tiles):
        rows = k * BLOCK_T + tt
        mask = (rows < n_len)[:, None] & cm[None, :]
        offs = base + rows[:, None] * n_ch + c[None, :]
        u = tl.load(t_ptr + offs, mask=mask, other=0.0) * _row_scale(inv_s_ptr, rows, n_len)
        _, y = tl.associative_scan((steps, u), 0, _linear_recurrence)
        y += carry[None, :] * carry_in[:, None]
        tl.store(out_ptr + offs, y, mask=mask)  # the forward scan; the backward pass finishes it
        last = tl.minimum(n_len - k * BLOCK_T, BLOCK_T) - 1
        carry = tl.sum(tl.where(tt[:, None] == last, y, 0.0), axis=0)
    carry = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for kk in range(0, n_tiles):
        k = n_tiles - 1 - kk
        rows = k * BLOCK_T + tt
        mask = (rows < n_len)[:, None] & cm[None, :]
        offs = base + rows[:, None] * n_ch + c[None, :]
        u = tl.load(t_ptr + offs, mask=mask, other=0.0) * _row_scale(inv_s_ptr, rows, n_len)
        _, g = tl.associative_scan((steps, u), 0, _linear_recurrence, reverse=True)
        g += carry[None, :] * carry_back[:, None]  # only full tiles precede a carried state
        fwd = tl.load(out_ptr + offs, mask=mask, other=0.0)
        tl.store(out_ptr + offs, fwd + g - u, mask=mask)
        carry = tl.sum(tl.where(tt[:, None] == 0, g, 0.0), axis=0)


def align_fuse(v: Any, a: Any, f: Any, params: Mapping[str, Any], out: Any = None, *, block_m: int = BLOCK_M) -> Any:
    """See ``reference.align_fuse`` (numpy in -> numpy out, CUDA tensors in -> tensor out)."""
    import torch

    vt, at, ft = (_triton.to_tensor(x, torch.float32) for x in (v, a, f))
    ps = [_triton.to_tensor(params[k], torch.float32) for k in ALIGN_FUSE_PARAMS]
    n = vt.shape[0]
    res = _triton.empty((n, 64), torch.float32, vt.device)
    if n:
        _align_fuse_kernel[(triton.cdiv(n, block_m),)](
            vt, at, ft, res, *ps, n, at.shape[0], BLOCK_M=block_m, num_warps=ALIGN_WARPS
        )
    return _deliver(res, v, out)


def positional(t: Any, out: Any = None, *, block_c: int = POS_BLOCK_C, block_t: int = POS_BLOCK_T) -> Any:
    """See ``reference.positional``: (..., T, C) -> same shape."""
    import torch

    x = _triton.to_tensor(t, torch.float32)
    lead, (n, c) = tuple(x.shape[:-2]), tuple(x.shape[-2:])
    x = x.reshape(-1, n, c)
    inv_s = torch.from_numpy((1.0 / positional_row_sums(n)).astype(np.float32)).to(x.device)
    res = _triton.empty(x.shape, torch.float32, x.device)
    block = min(block_c, _triton.next_power_of_2(c))
    _positional_kernel[(x.shape[0], triton.cdiv(c, block))](
        x, inv_s, res, n, c, POS_DECAY, BLOCK_T=block_t, BLOCK_C=block, num_warps=POS_WARPS
    )
    return _deliver(res.reshape(*lead, n, c), t, out)


def _deliver(res: Any, like: Any, out: Any) -> Any:
    """``res`` as ``like``'s type (numpy or tensor), or copied into the caller's ``out``."""
    if out is None:
        return _triton.to_like(res, like)
    if isinstance(out, np.ndarray):
        out[...] = res.detach().cpu().numpy()
    else:
        out.copy_(res)
    return out


_F32 = "*fp32"
#: The kernels at the launchers' settings, compiled ahead of time for sm_87 / sm_90 by the tests.
AOT_CONFIGS = [
    _triton.AotConfig("_align_fuse_kernel", {**{n: _F32 for n in ("v_ptr", "a_ptr", "f_ptr", "out_ptr", "wa0", "ba0",
                                                                  "wa1", "ba1", "wa2", "ba2", "wf0", "bf0", "wf1",
                                                                  "bf1", "wf2", "bf2", "we1", "be1", "we2", "be2")},
                                             "n_rows": "i32", "a_rows": "i32"},
                      {"BLOCK_M": BLOCK_M}, num_warps=ALIGN_WARPS),
    _triton.AotConfig("_positional_kernel", {"t_ptr": _F32, "inv_s_ptr": _F32, "out_ptr": _F32, "n_len": "i32",
                                             "n_ch": "i32", "decay": "fp32"},
                      {"BLOCK_T": POS_BLOCK_T, "BLOCK_C": POS_BLOCK_C}, num_warps=POS_WARPS),
]
