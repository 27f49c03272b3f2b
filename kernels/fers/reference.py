"""FERS RX-on-features: the numpy reference, seed-faithful (the specification of every tier).

FERS (github.com/xjpp2016/FERS, ``utils/utils.py::get_admap`` and ``utils/RX.py``) scores a
scene by RX on the **sum** of the normalised cube and the two network features:

- default path (HAD100 with 100/200 bands, all of ABU): ``RX(spa_f + spe_f + x)``, summed
  in float32 in exactly that order, where ``RX`` is GatorSense ``md_anomaly``: global
  min-max of the whole cube to [0, 1] in float32 (no epsilon), pixels flattened in
  column-major order, float32 band mean, **float64** ``np.cov`` (own mean, N-1),
  ``z = X - mu`` in float32, ``np.linalg.pinv`` (SVD, cutoff 1e-15 x sigma_max, no ridge) and
  a per-pixel float64 quadratic form. Output: (H, W) float64 squared Mahalanobis distances.
- "ham" path (HAD100 with 50 bands): ``S2One(RX_Torch(spa_f + x)) * S2One(RX_Torch(spe_f + x))``.
  ``RX_Torch`` is float32 throughout: min-max with +1e-10, ``Sigma = z z^T / (N-1)``,
  ``torch.linalg.pinv`` with its default cutoff ``B * eps_float32 * sigma_max`` (far more
  aggressive than numpy's: on the urban-1 oracle it keeps 16 of 50 directions), and an einsum
  quadratic form. ``S2One`` is a plain min-max to [0, 1]. It is emulated here in numpy float32.

Without a spatial branch (spa_fen.pt is not available upstream) ``spa`` is ``None`` and is
treated as the official zero stand-in: ``0 + spe_f + x`` equals ``spe_f + x`` bit for bit.

Inputs of every function: ``x``, ``spe``, ``spa``: (B, H, W) or (1, B, H, W) float32 arrays
(the network layout). The fused cube exists only in this tier and the cpu tier.
"""

from __future__ import annotations

import numpy as np

DEFAULT_RCOND = 1e-15
EPS_F32 = float(np.finfo(np.float32).eps)


def as_bhw(a: np.ndarray) -> np.ndarray:
    """(1, B, H, W) or (B, H, W) -> (B, H, W) float32."""
    a = np.asarray(a)
    if a.ndim == 4:
        a = a[0]
    return np.asarray(a, dtype=np.float32)


def fuse(x: np.ndarray, spe: np.ndarray, spa: np.ndarray | None = None) -> np.ndarray:
    """The fused cube in the official float32 order: ``(spa + spe) + x`` (``spe + x`` without spa)."""
    x, spe = as_bhw(x), as_bhw(spe)
    if spa is None:
        return spe + x
    return (as_bhw(spa) + spe) + x


def md_anomaly(cube: np.ndarray, rcond: float = DEFAULT_RCOND) -> np.ndarray:
    """Official ``RX`` (GatorSense md_anomaly) of a (B, H, W) float32 cube -> (H, W) float64."""
    img = as_bhw(cube).transpose(1, 2, 0)  # (H, W, B) view, as the seed's .numpy().transpose(1, 2, 0)
    img = (img - np.min(img)) / (np.max(img) - np.min(img))
    rows, cols, bands = img.shape
    n = rows * cols
    data = np.reshape(img, (n, bands), order="F").T  # pixel n = row + H * col
    mu = np.mean(data, 1)
    sigma = np.cov(data.T, rowvar=False).reshape(bands, bands)
    z = data - mu[:, np.newaxis]
    sig_inv = np.linalg.pinv(sigma, rcond=rcond)
    dist = np.empty(n)
    for i in range(n):  # the seed's per-pixel loop (float32 z against the float64 pinv)
        dist[i] = z[:, i].T @ sig_inv @ z[:, i]
    return dist.reshape([cols, rows]).T


def rx_torch(cube: np.ndarray) -> np.ndarray:
    """Official ``RX_Torch`` of one (B, H, W) cube, emulated in numpy float32 -> (H, W) float32."""
    c = as_bhw(cube)
    bands, rows, cols = c.shape
    n = rows * cols
    lo, hi = c.min(), c.max()
    data = ((c - lo) / (hi - lo + np.float32(1e-10))).reshape(bands, n)
    z = data - data.mean(axis=1, keepdims=True, dtype=np.float32)
    sigma = (z @ z.T) / np.float32(n - 1)
    u, s, vt = np.linalg.svd(sigma, full_matrices=False)
    keep = s > bands * EPS_F32 * s.max()  # torch.linalg.pinv default rtol = max(m, n) * eps
    inv_s = np.where(keep, 1.0 / np.where(keep, s, 1), 0).astype(np.float32)
    sig_inv = (vt.T * inv_s) @ u.T
    dist = np.einsum("in,ij,jn->n", z, sig_inv, z)
    return dist.reshape(rows, cols).astype(np.float32)


def s2one(m: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] (the seed's ``S2One``; no epsilon)."""
    return (m - m.min()) / (m.max() - m.min())


def fers_rx(x: np.ndarray, spe: np.ndarray, spa: np.ndarray | None = None, *,
            rcond: float = DEFAULT_RCOND) -> np.ndarray:
    """FERS default detector: md_anomaly RX of the fused cube -> (H, W) float64."""
    return md_anomaly(fuse(x, spe, spa), rcond)


def fers_ham(x: np.ndarray, spe: np.ndarray, spa: np.ndarray | None = None) -> np.ndarray:
    """FERS 50-band detector: S2One(RX_Torch(spa + x)) * S2One(RX_Torch(spe + x)) -> (H, W) float64."""
    x = as_bhw(x)
    spatial = x if spa is None else as_bhw(spa) + x  # the official zero stand-in: 0 + x == x
    return (s2one(rx_torch(spatial)) * s2one(rx_torch(as_bhw(spe) + x))).astype(np.float64)
