"""MAVD kernels, Triton tier (CUDA tensors; ``TRITON_INTERPRET=1`` on CPU machines).

``align_fuse``: one program per tile of ``BLOCK_M`` snippet rows; every layer is a
``tl.dot`` on register tiles (fp32, ``input_precision="ieee"`` so no TF32 rounding), the
224-wide concatenation is never formed (split-K dots into the 112-wide layer: the RGB part
in four 32-column chunks, then audio and flow; padded to 128 with masked weight loads), and
only the 64-d embedding is stored.

``positional``: one program per (sequence, channel block); a forward and a backward
exponential scan over time with the closed-form row sums, accumulated in fp32.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import triton
import triton.language as tl

from edgesentry.kernels import _triton

from .reference import ALIGN_FUSE_PARAMS, POS_DECAY, positional_row_sums


def unavailable_reason() -> str | None:
    return _triton.unavailable_reason()


@triton.jit
def _dense(
    x,
    w_ptr,
    b_ptr,
    w_stride,
    col0,
    IN: tl.constexpr,
    IN_PAD: tl.constexpr,
    OUT: tl.constexpr,
    OUT_PAD: tl.constexpr,
    HAS_BIAS: tl.constexpr,
):
    """x (BM, IN_PAD) @ W[:, col0:col0+IN]^T (+ b) -> (BM, OUT_PAD); padded lanes are zero."""
    i = tl.arange(0, IN_PAD)
    o = tl.arange(0, OUT_PAD)
    mask = (i[:, None] < IN) & (o[None, :] < OUT)
    wt = tl.load(w_ptr + o[None, :] * w_stride + col0 + i[:, None], mask=mask, other=0.0)
    y = tl.dot(x, wt, input_precision="ieee")
    if HAS_BIAS:
        y += tl.load(b_ptr + o, mask=o < OUT, other=0.0)[None, :]
    return y


@triton.jit
def _align_fuse_kernel(
    v_ptr,
    a_ptr,
    f_ptr,
    out_ptr,
    wa0,
    ba0,
    wa1,
    ba1,
    wa2,
    ba2,
    wf0,
    bf0,
    wf1,
    bf1,
    wf2,
    bf2,
    we1,
    be1,
    we2,
    be2,
    n_rows,
    a_rows,
    BLOCK_M: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    live = rows < n_rows
    c32 = tl.arange(0, 32)
    c64 = tl.arange(0, 64)
    c128 = tl.arange(0, 128)
    arow = rows % a_rows
    a = tl.load(a_ptr + arow[:, None] * 32 + c32[None, :], mask=live[:, None], other=0.0)
    a = tl.maximum(_dense(a, wa0, ba0, 32, 0, 32, 32, 32, 32, True), 0.0)
    a = tl.maximum(_dense(a, wa1, ba1, 32, 0, 32, 32, 32, 32, True), 0.0)
    a = tl.maximum(_dense(a, wa2, ba2, 32, 0, 32, 32, 32, 32, True), 0.0)
    f = tl.load(f_ptr + rows[:, None] * 64 + c64[None, :], mask=live[:, None], other=0.0)
    f = tl.maximum(_dense(f, wf0, bf0, 64, 0, 64, 64, 64, 64, True), 0.0)
    f = tl.maximum(_dense(f, wf1, bf1, 64, 0, 64, 64, 64, 64, True), 0.0)
    f = tl.maximum(_dense(f, wf2, bf2, 64, 0, 64, 64, 64, 64, True), 0.0)
    # RGB part of the fusion layer in four K-chunks of 32 columns: keeps each dot operand at
    # 32 x 128 (a full 128 x 128 fp32 weight tile would crowd registers / shared memory)
    h = tl.zeros((BLOCK_M, 128), dtype=tl.float32)
    h += tl.load(be1 + c128, mask=c128 < 112, other=0.0)[None, :]
    for k0 in tl.static_range(0, 128, 32):
        vk = tl.load(v_ptr + rows[:, None] * 128 + k0 + c32[None, :], mask=live[:, None], other=0.0)
        h += _dense(vk, we1, be1, 224, k0, 32, 32, 112, 128, False)
    h += _dense(a, we1, be1, 224, 128, 32, 32, 112, 128, False)
    h += _dense(f, we1, be1, 224, 160, 64, 64, 112, 128, False)
    h = tl.maximum(h, 0.0)
    e = tl.maximum(_dense(h, we2, be2, 112, 0, 112, 128, 64, 64, True), 0.0)
    tl.store(out_ptr + rows[:, None] * 64 + c64[None, :], e, mask=live[:, None])


@triton.jit
def _positional_kernel(t_ptr, inv_s_ptr, out_ptr, n_len, n_ch, decay, BLOCK_C: tl.constexpr):
    seq = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < n_ch
    base = seq * n_len * n_ch
    acc = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for i in range(0, n_len):
        u = tl.load(t_ptr + base + i * n_ch + c, mask=cm, other=0.0) * tl.load(inv_s_ptr + i)
        acc = acc * decay + u
        tl.store(out_ptr + base + i * n_ch + c, acc, mask=cm)  # forward scan, finished below
    acc = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for k in range(0, n_len):
        i = n_len - 1 - k
        u = tl.load(t_ptr + base + i * n_ch + c, mask=cm, other=0.0) * tl.load(inv_s_ptr + i)
        acc = acc * decay + u
        fwd = tl.load(out_ptr + base + i * n_ch + c, mask=cm, other=0.0)
        tl.store(out_ptr + base + i * n_ch + c, fwd + acc - u, mask=cm)


def align_fuse(v: Any, a: Any, f: Any, params: Mapping[str, Any], out: Any = None, *, block_m: int = 32) -> Any:
    """See ``reference.align_fuse`` (numpy in -> numpy out, CUDA tensors in -> tensor out)."""
    import torch

    vt, at, ft = (_triton.to_tensor(x, torch.float32) for x in (v, a, f))
    ps = [_triton.to_tensor(params[k], torch.float32) for k in ALIGN_FUSE_PARAMS]
    n = vt.shape[0]
    res = torch.full((n, 64), float("nan"), dtype=torch.float32, device=vt.device)  # unwritten rows stay NaN
    if n:
        _align_fuse_kernel[(triton.cdiv(n, block_m),)](
            vt, at, ft, res, *ps, n, at.shape[0], BLOCK_M=block_m, num_warps=4
        )
    return _deliver(res, v, out)


def positional(t: Any, out: Any = None, *, block_c: int = 64) -> Any:
    """See ``reference.positional``: (..., T, C) -> same shape."""
    import torch

    x = _triton.to_tensor(t, torch.float32)
    lead, (n, c) = tuple(x.shape[:-2]), tuple(x.shape[-2:])
    x = x.reshape(-1, n, c)
    inv_s = torch.from_numpy((1.0 / positional_row_sums(n)).astype(np.float32)).to(x.device)
    res = torch.full_like(x, float("nan"))
    block = min(block_c, _triton.next_power_of_2(c))
    _positional_kernel[(x.shape[0], triton.cdiv(c, block))](
        x, inv_s, res, n, c, POS_DECAY, BLOCK_C=block, num_warps=1 if block <= 32 else 2
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
