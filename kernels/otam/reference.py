"""Soft-OTAM distance fusion of CLIP-MDMF: the numpy references, the specification of every tier.

CLIP-MDMF (Guo et al., KBS 2024; github.com/cofly2014/CLIP-MDMF, ``OTAM_cum_dist_v2``) scores
a query video against a class prototype per view by the bidirectional soft-OTAM
(Cao et al., CVPR 2020) of the frame-to-frame cosine distances:

    cos(a, b)       = a.b / (|a| |b| + eps)                 eps = 0.01, everywhere
    delta[i, j]     = 1 - cos(Z[q, i], P[n, j])              i query frame, j prototype frame
    d_view[q, n]    = otam(delta) + otam(delta^T)            both directions
    logits[q, n]    = -(d_local[q, n] + d_global[q, n])      unweighted view fusion

``otam`` pads ``delta`` [R, M] with a zero column on each side (D~ [R, M + 2]) and runs

    C[0, m]       = sum_{j <= m} D~[0, j]
    C[l, 0]       = 0
    C[l, 1]       = D~[l, 1] + softmin(C[l-1, 0], C[l-1, 1], C[l, 0])
    C[l, m]       = D~[l, m] + softmin(C[l-1, m-1], C[l, m-1])            2 <= m <= M
    C[l, M + 1]   = softmin(C[l-1, M], C[l-1, M + 1], C[l, M])
    otam(delta)   = C[R - 1, M + 1]

with ``softmin(x...) = -lam * log(sum(exp(-x / lam)))`` and ``lam = 0.5``.

Two formulations live here:

- ``otam_official`` / ``fuse_official``: the seed's formulation, float32 and *without*
  max-subtraction, a Python double loop over the DP cells vectorised over the (q, n) pairs.
  ``exp(-C / 0.5)`` underflows once every argument of a softmin passes ~52 (float32; ~8 in
  float16) and the result becomes ``+inf``. Kept as the seed-faithful baseline (tests,
  benchmarks), not used for inference.
- ``otam_stable`` / ``fuse_reference``: float64 with the minimum subtracted inside the
  log-sum-exp (``m - lam * log(sum(exp(-(x - m) / lam)))``). Mathematically identical, so it
  equals the official one wherever that is finite, and it stays finite for any finite input.
  This is the specification the cpu / triton / cuda tiers are tested against.

Fused output layout (every tier): ``dists`` [4, Q, N] float32 = (local q->s, local s->q,
global q->s, global s->q) and ``logits`` [Q, N] float32.
"""

from __future__ import annotations

import numpy as np

LAMBDA = 0.5
COS_EPS = 0.01


# ----------------------------------------------------------------------------- cosine
def cosine_distance(z: np.ndarray, p: np.ndarray, eps: float = COS_EPS,
                    dtype: type = np.float64) -> np.ndarray:
    """``1 - cos`` of every query frame against every prototype frame.

    Args:
        z: [Q, T, D] query frame features.
        p: [N, T, D] prototype frame features.
    Returns:
        [Q, N, T, T] with ``[q, n, i, j] = 1 - z[q, i].p[n, j] / (|z[q, i]| |p[n, j]| + eps)``.
    """
    z = np.asarray(z, dtype)
    p = np.asarray(p, dtype)
    dots = np.einsum("qid,njd->qnij", z, p)
    nz = np.sqrt(np.einsum("qid,qid->qi", z, z))
    npn = np.sqrt(np.einsum("njd,njd->nj", p, p))
    den = nz[:, None, :, None] * npn[None, :, None, :] + dtype(eps)
    return (dtype(1) - dots / den).astype(dtype)


# ------------------------------------------------------------------ official (float32)
def otam_official(delta: np.ndarray, lam: float = LAMBDA, dtype: type = np.float32) -> np.ndarray:
    """The seed's soft-OTAM over the last two axes, no max-subtraction (may be inf).

    ``dtype`` float32 is the seed; float16 shows the fp16 failure; float64 underflows only past
    C ~ 372 and so serves as an independent check of the stabilised form between 52 and 372.
    """
    d = np.asarray(delta, dtype)
    pad = np.zeros((*d.shape[:-1], 1), dtype)
    d = np.concatenate([pad, d, pad], axis=-1)
    rows, cols = d.shape[-2], d.shape[-1]
    lam32 = dtype(lam)
    cum = np.zeros_like(d)
    cum[..., 0, :] = np.cumsum(d[..., 0, :], axis=-1)

    def softmin(*xs: np.ndarray) -> np.ndarray:
        total = sum(np.exp(-x / lam32) for x in xs)
        return -lam32 * np.log(total)

    with np.errstate(under="ignore", divide="ignore", over="ignore"):
        for r in range(1, rows):
            cum[..., r, 1] = d[..., r, 1] + softmin(cum[..., r - 1, 0], cum[..., r - 1, 1], cum[..., r, 0])
            for m in range(2, cols - 1):
                cum[..., r, m] = d[..., r, m] + softmin(cum[..., r - 1, m - 1], cum[..., r, m - 1])
            cum[..., r, cols - 1] = d[..., r, cols - 1] + softmin(
                cum[..., r - 1, cols - 2], cum[..., r - 1, cols - 1], cum[..., r, cols - 2])
    return cum[..., -1, -1]


def fuse_official(z_local: np.ndarray, p_local: np.ndarray, z_global: np.ndarray, p_global: np.ndarray,
                  lam: float = LAMBDA, eps: float = COS_EPS) -> tuple[np.ndarray, np.ndarray]:
    """Seed-faithful float32 fusion: cosine, 4 official OTAM loops, ``-(d_local + d_global)``."""
    parts = []
    for z, p in ((z_local, p_local), (z_global, p_global)):
        delta = cosine_distance(z, p, eps, np.float32)
        parts += [otam_official(delta, lam), otam_official(np.swapaxes(delta, -1, -2), lam)]
    dists = np.stack(parts).astype(np.float32)
    logits = -((dists[0] + dists[1]) + (dists[2] + dists[3]))
    return dists, logits.astype(np.float32)


# ------------------------------------------------------------------- stable (float64)
def _softmin(lam: float, *xs: np.ndarray) -> np.ndarray:
    m = np.minimum.reduce(xs)
    return m - lam * np.log(sum(np.exp(-(x - m) / lam) for x in xs))


def otam_stable(delta: np.ndarray, lam: float = LAMBDA) -> np.ndarray:
    """Soft-OTAM over the last two axes in float64 with a max-subtracted log-sum-exp."""
    d = np.asarray(delta, np.float64)
    rows, m_cols = d.shape[-2], d.shape[-1]
    cols = m_cols + 2
    dp = np.zeros((*d.shape[:-1], 1), np.float64)
    dt = np.concatenate([dp, d, dp], axis=-1)
    cum = np.zeros_like(dt)
    cum[..., 0, :] = np.cumsum(dt[..., 0, :], axis=-1)
    for r in range(1, rows):
        cum[..., r, 1] = dt[..., r, 1] + _softmin(lam, cum[..., r - 1, 0], cum[..., r - 1, 1], cum[..., r, 0])
        for m in range(2, cols - 1):
            cum[..., r, m] = dt[..., r, m] + _softmin(lam, cum[..., r - 1, m - 1], cum[..., r, m - 1])
        cum[..., r, cols - 1] = _softmin(lam, cum[..., r - 1, cols - 2], cum[..., r - 1, cols - 1],
                                         cum[..., r, cols - 2])
    return cum[..., -1, -1]


def fuse_reference(z_local: np.ndarray, p_local: np.ndarray, z_global: np.ndarray, p_global: np.ndarray,
                   lam: float = LAMBDA, eps: float = COS_EPS) -> tuple[np.ndarray, np.ndarray]:
    """The specification: float64 cosine and stabilised OTAM -> (dists [4,Q,N], logits [Q,N]) float64."""
    parts = []
    for z, p in ((z_local, p_local), (z_global, p_global)):
        delta = cosine_distance(z, p, eps, np.float64)
        parts += [otam_stable(delta, lam), otam_stable(np.swapaxes(delta, -1, -2), lam)]
    dists = np.stack(parts)
    return dists, -(dists[0] + dists[1] + dists[2] + dists[3])


#: the op's name as every tier spells it (``edgesentry.kernels.otam.FUSE`` looks it up)
fuse = fuse_reference
