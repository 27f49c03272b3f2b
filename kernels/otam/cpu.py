"""Soft-OTAM fusion, CPU tier: one call into compiled C++ (``kernels/cpu/otam.cpp``).

The kernel computes the frame norms, the cosine-distance tiles of every (query, class) pair
with a vectorised dot product (AVX2/FMA clone on x86-64), the four OTAM DPs per pair in float32
with a stabilised soft-min, eight DPs in lockstep across SIMD lanes, and the fusion; OpenMP
over pairs for large galleries only. ``otam`` (single direction, any R x M) runs in float64.
"""

from __future__ import annotations

import numpy as np

from .reference import COS_EPS, LAMBDA


def unavailable_reason() -> str | None:
    try:
        from edgesentry.kernels import _cpu_otam  # noqa: F401
    except ImportError as exc:
        return f"compiled CPU kernels not built ({exc}); reinstall with `pip install -e .`"
    return None


def _host(x: object) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()  # type: ignore[union-attr]
    return np.ascontiguousarray(x, dtype=np.float32)


def fuse(z_local: np.ndarray, p_local: np.ndarray, z_global: np.ndarray, p_global: np.ndarray, *,
         lam: float = LAMBDA, eps: float = COS_EPS) -> tuple[np.ndarray, np.ndarray]:
    """(dists [4, Q, N], logits [Q, N]) float32; see ``reference.fuse_reference``."""
    from edgesentry.kernels import _cpu_otam

    return _cpu_otam.fuse(_host(z_local), _host(p_local), _host(z_global), _host(p_global), float(lam), float(eps))


def otam(delta: np.ndarray, *, lam: float = LAMBDA) -> np.ndarray:
    """Stabilised single-direction OTAM of [..., R, M] cost matrices -> [...] float64."""
    from edgesentry.kernels import _cpu_otam

    d = np.asarray(delta, np.float64)
    lead = d.shape[:-2]
    out = _cpu_otam.otam(np.ascontiguousarray(d.reshape(-1, *d.shape[-2:])), float(lam))
    return out.reshape(lead)
