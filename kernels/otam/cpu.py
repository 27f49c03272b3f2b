"""Soft-OTAM fusion, CPU tier: one call into compiled C++ (``kernels/cpu/otam.cpp``).

The kernel computes the frame norms; the frame dot products in blocks of ~32 query frames x ~32
prototype frames (register blocks of 2 x 4 rows with AVX2 + FMA or NEON, 4 x 4 with AVX-512,
chosen at run time; both blocks stay in L2, so a gallery's frames are read a few times per call
rather than once per pair: the frame-similarity GEMM near BLAS speed, without BLAS threads to
fight the kernel's own); the cosine-distance tiles; the four OTAM DPs per pair in float32 with a
stabilised soft-min, eight DPs in lockstep across SIMD lanes; and the fusion. OpenMP over blocks
and DPs when the call is large enough to pay for waking the threads. ``otam`` (single
direction, any R x M) runs in float64.
"""

from __future__ import annotations

import numpy as np

from edgesentry.kernels.otam.reference import COS_EPS, LAMBDA


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
         lam: float = LAMBDA, eps: float = COS_EPS, threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(dists [4, Q, N], logits [Q, N]) float32; see ``reference.fuse_reference``.

    One compiled call for any episode or gallery. ``threads``: 0 lets the kernel decide by the
    amount of work (one thread for small episodes), else that many (benchmarks compare them).
    """
    from edgesentry.kernels import _cpu_otam

    z_l, p_l, z_g, p_g = (_host(a) for a in (z_local, p_local, z_global, p_global))
    return _cpu_otam.fuse(z_l, p_l, z_g, p_g, float(lam), float(eps), int(threads))


def otam(delta: np.ndarray, *, lam: float = LAMBDA) -> np.ndarray:
    """Stabilised single-direction OTAM of [..., R, M] cost matrices -> [...] float64."""
    from edgesentry.kernels import _cpu_otam

    d = np.asarray(delta, np.float64)
    lead = d.shape[:-2]
    out = _cpu_otam.otam(np.ascontiguousarray(d.reshape(-1, *d.shape[-2:])), float(lam))
    return out.reshape(lead)
