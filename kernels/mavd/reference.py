"""MAVD kernels, reference tier: the specification (numpy, float64).

Align-and-fuse (``align_fuse``): for each snippet row ``n`` of the crops x time grid,

    va  = ReLU(W2 ReLU(W1 ReLU(W0 a + b0) + b1) + b2)          # audio -> RGB space, 32-d
    vf  = same three layers on f                                 # flow  -> RGB space, 64-d
    h   = ReLU(We1 [v | va | vf] + be1)                          # 224 -> 112
    emb = ReLU(We2 h + be2)                                      # 112 -> 64

with ``v`` (N, 128), ``f`` (N, 64) and audio rows ``a[n % M]`` (M = T when the audio is
given once per video and broadcast to the crops, M = N when it is given per crop).

Positional attention (``positional``): ``A2 @ t`` along the time axis with the fixed
MAVD matrix ``A2[i, j] = K[i, j] / sum_k K[j, k]``, ``K[i, j] = exp(-|i - j| / e)``. The
reference builds the T x T matrix as the official code does; the fast tiers use two scans.

``fusion_head``: the causal TCN (kernel 2, dilations 1/2/4) and the MIL head on ``emb``;
it is small (64-d) and stays in numpy for every tier.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

#: names of the align-and-fuse parameters, in the order the compiled tiers take them
ALIGN_FUSE_PARAMS = (
    "va0.w", "va0.b", "va1.w", "va1.b", "va2.w", "va2.b",
    "vf0.w", "vf0.b", "vf1.w", "vf1.b", "vf2.w", "vf2.b",
    "e1.w", "e1.b", "e2.w", "e2.b",
)  # fmt: skip
POS_DECAY = math.exp(-1.0 / math.e)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def _mlp3(x: np.ndarray, p: Mapping[str, np.ndarray], prefix: str) -> np.ndarray:
    for i in range(3):
        x = _relu(x @ p[f"{prefix}{i}.w"].T.astype(np.float64) + p[f"{prefix}{i}.b"])
    return x


def align_fuse(
    v: np.ndarray, a: np.ndarray, f: np.ndarray, params: Mapping[str, np.ndarray], out: np.ndarray | None = None
) -> np.ndarray:
    """(N,128) v, (M,32) a (row ``n % M``), (N,64) f -> (N,64) float32 fusion embedding
    (written into ``out`` when given, as every tier does)."""
    v64, f64 = np.asarray(v, np.float64), np.asarray(f, np.float64)
    a64 = np.asarray(a, np.float64)[np.arange(v64.shape[0]) % a.shape[0]]
    mix = np.concatenate([v64, _mlp3(a64, params, "va"), _mlp3(f64, params, "vf")], axis=1)
    h = _relu(mix @ params["e1.w"].T.astype(np.float64) + params["e1.b"])
    return _into(out, _relu(h @ params["e2.w"].T.astype(np.float64) + params["e2.b"]))


def _into(out: np.ndarray | None, value: np.ndarray) -> np.ndarray:
    if out is None:
        return value.astype(np.float32)
    out[...] = value
    return out


def positional_matrix(n: int) -> np.ndarray:
    """A2 (n, n) float64, as the official ``K / K.sum(-1)`` (column j divided by row sum j)."""
    pos = np.arange(1, n + 1, dtype=np.float64)
    k = np.exp(-np.abs(pos[:, None] - pos[None, :]) / math.e)
    return k / k.sum(-1)


def positional(t: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``A2 @ t`` over axis -2 of (..., T, C) -> float32 of the same shape (T x T form)."""
    t64 = np.asarray(t, np.float64)
    return _into(out, np.matmul(positional_matrix(t64.shape[-2]), t64))


def positional_row_sums(n: int) -> np.ndarray:
    """Closed-form row sums of K: ``s_j = (1 - r^(j+1) + 1 - r^(n-j)) / (1 - r) - 1`` (0-based j)."""
    r = POS_DECAY
    j = np.arange(n, dtype=np.float64)
    return ((1 - r ** (j + 1)) + (1 - r ** (n - j))) / (1 - r) - 1


# ------------------------------------------------------------------------- fusion head
def _causal_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, dilation: int) -> np.ndarray:
    """Kernel-2 causal conv over axis 1 of (B, T, C): ``y[t] = W0 x[t-d] + W1 x[t] + b``
    (in ``x``'s dtype), as one (B*T, 2C) x (2C, C_out) product of ``[x[t-d] | x[t]]``."""
    bsz, t, c = x.shape
    both = np.zeros((bsz, t, 2 * c), x.dtype)
    both[:, dilation:, :c] = x[:, : max(t - dilation, 0)]
    both[:, :, c:] = x
    w = np.asarray(w)
    stacked = np.ascontiguousarray(np.concatenate([w[:, :, 0], w[:, :, 1]], axis=1).T, dtype=x.dtype)
    out = both.reshape(bsz * t, 2 * c) @ stacked
    return out.reshape(bsz, t, -1) + np.asarray(b).astype(x.dtype, copy=False)


def fusion_head(emb: np.ndarray, params: Mapping[str, np.ndarray], dtype: type = np.float64) -> np.ndarray:
    """Causal TCN (3 residual blocks, dilations 1/2/4) + MIL head: (B, T, 64) -> logits (B, T).

    ``params`` holds ``tcn{i}.conv{1,2}.{w,b}`` (weight norm folded) and ``mil{0,1,2}.{w,b}``.
    ``dtype``: float64 is the specification; the fast tiers pass float32 (~1e-6 relative on
    the logits, ~7x less time: at T = 182 x 5 crops the float64 head cost 3 ms, as much as
    the rest of the post-processing).
    """
    x = np.asarray(emb, dtype)

    def p(name: str) -> np.ndarray:
        return np.asarray(params[name]).astype(dtype, copy=False)

    for i in range(3):
        d = 2**i
        h = _relu(_causal_conv(x, params[f"tcn{i}.conv1.w"], params[f"tcn{i}.conv1.b"], d))
        h = _relu(_causal_conv(h, params[f"tcn{i}.conv2.w"], params[f"tcn{i}.conv2.b"], d))
        x = _relu(h + x)
    h = _relu(x @ p("mil0.w").T + p("mil0.b"))
    h = h @ p("mil1.w").T + p("mil1.b")
    return (h @ p("mil2.w").T + p("mil2.b"))[..., 0].astype(np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)
