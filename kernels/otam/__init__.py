"""Soft-OTAM distance fusion of CLIP-MDMF: cosine -> bidirectional soft-OTAM per view -> logits.

    dists, logits, tier = fuse(z_local, p_local, z_global, p_global)   # tier="auto"

``z_*`` [Q, T, D] are the query outputs of the local (conv) and global (TCN) views, ``p_*``
[N, T, D] the class prototypes. ``dists`` [4, Q, N] holds (local q->s, local s->q, global
q->s, global s->q) and ``logits = -(sum of the four)``. Every tier implements the stabilised
specification ``reference.fuse_reference``; ``reference.fuse_official`` is the seed's float32
loop formulation (may be inf past ~52), kept for tests and the benchmark baseline.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from edgesentry.errors import ConfigError, InputError
from edgesentry.kernels._dispatch import KernelOp, on_device
from edgesentry.kernels.otam import cpu, cuda, reference
from edgesentry.kernels.otam.reference import COS_EPS, LAMBDA


def _triton() -> ModuleType:
    from edgesentry.kernels.otam import triton

    return triton


#: tier -> module. reference, cpu and cuda import numpy only (the compiled extension and
#: cuda-python load on first call); triton imports the triton package, so it loads on request.
TIER_MODULES = {"reference": reference, "cpu": cpu, "triton": _triton, "cuda": cuda}

FUSE = KernelOp("otam_fuse", "fuse", TIER_MODULES)

__all__ = ["FUSE", "LAMBDA", "COS_EPS", "fuse", "check_inputs"]


def check_inputs(z_local: Any, p_local: Any, z_global: Any, p_global: Any) -> tuple[int, int, int, int]:
    """Validate shapes; return (Q, N, T, D)."""
    named = (("z_local", z_local), ("p_local", p_local), ("z_global", z_global), ("p_global", p_global))
    for name, x in named:
        if len(getattr(x, "shape", ())) != 3:
            got = getattr(x, "shape", type(x).__name__)
            raise InputError(f"{name} must be a 3-d array [batch, T, D]; got {got}")
    q, t, d = (int(s) for s in z_local.shape)
    n = int(p_local.shape[0])
    for name, x, lead in (("z_global", z_global, q), ("p_local", p_local, n), ("p_global", p_global, n)):
        if tuple(int(s) for s in x.shape) != (lead, t, d):
            raise InputError(f"{name} must have shape {(lead, t, d)} to match z_local "
                             f"{tuple(z_local.shape)}; got {tuple(x.shape)}")
    if min(q, n, t, d) == 0:
        raise InputError(f"OTAM needs Q, N, T, D >= 1; got Q={q}, N={n}, T={t}, D={d}")
    return q, n, t, d


def fuse(z_local: Any, p_local: Any, z_global: Any, p_global: Any, *, lam: float = LAMBDA,
         eps: float = COS_EPS, tier: str = "auto") -> tuple[Any, Any, str]:
    """Fused two-view bidirectional soft-OTAM -> (dists [4, Q, N], logits [Q, N], tier used)."""
    if not (lam > 0 and np.isfinite(lam)):
        raise ConfigError(f"lam must be a finite number > 0; got {lam}")
    if not (eps >= 0 and np.isfinite(eps)):
        raise ConfigError(f"eps must be a finite number >= 0; got {eps}")
    check_inputs(z_local, p_local, z_global, p_global)
    used, fn = FUSE.resolve(tier, device=on_device(z_local))
    dists, logits = fn(z_local, p_local, z_global, p_global, lam=lam, eps=eps)
    if used == "reference":
        dists, logits = np.asarray(dists, np.float32), np.asarray(logits, np.float32)
    return dists, logits, used
