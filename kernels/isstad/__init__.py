"""ISSTAD anomaly-score fusion: head logits (or P) + reconstruction + image -> maps and score.

One op, ``isstad_fusion``, with four tiers (``reference`` = the seed's scipy path, ``cpu`` =
compiled C++, ``triton``, ``cuda``); see ``reference.py`` for the formulas (``SCORINGS``).

    out, tier = isstad_fusion(prob, recon, image, scoring="original")
    out["probability"], out["recon_error"], out["pixel_map"]   # (B, H, W) float32
    out["score"]                                               # (B,) float64
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np

from edgesentry.errors import ConfigError, InputError, describe
from edgesentry.kernels._dispatch import KernelOp, on_device
from edgesentry.kernels.isstad import cpu, cuda, reference
from edgesentry.kernels.isstad.reference import IMAGE_MODES, PIXEL_MODES, RADIUS, SCORINGS, SIGMA, gaussian_weights

__all__ = ["ISSTAD_FUSION", "SCORINGS", "PIXEL_MODES", "IMAGE_MODES", "SIGMA", "RADIUS", "gaussian_weights",
           "isstad_fusion", "check_fusion_inputs"]

def _triton() -> ModuleType:
    from edgesentry.kernels.isstad import triton

    return triton


#: tier -> module. reference, cpu and cuda import numpy only (the compiled extension and
#: cuda-python load on first call); triton imports the triton package, so it loads on request.
TIER_MODULES = {"reference": reference, "cpu": cpu, "triton": _triton, "cuda": cuda}

ISSTAD_FUSION = KernelOp("isstad_fusion", "isstad_fusion", TIER_MODULES)


def check_fusion_inputs(heads: Any, recon: Any, image: Any, *, scoring: str, top_p: float, w_m: float,
                        w_r: float) -> None:
    """Raise ``ConfigError`` / ``InputError`` naming what was expected and what came."""
    if scoring not in SCORINGS:
        raise ConfigError(f"unknown scoring {scoring!r}; expected one of {list(SCORINGS)}")
    if not (0 < float(top_p) <= 1):
        raise ConfigError(f"top_p must lie in (0, 1]; got {top_p}")
    for name, value in (("w_m", w_m), ("w_r", w_r)):
        if not math.isfinite(float(value)):
            raise ConfigError(f"{name} must be finite; got {value}")
    for name, arr in (("heads", heads), ("recon", recon), ("image", image)):
        if not hasattr(arr, "shape") or not hasattr(arr, "dtype"):
            raise InputError(f"isstad_fusion: {name} must be an array; got {describe(arr)}")
    rs, ims = tuple(recon.shape), tuple(image.shape)
    if len(rs) != 4 or rs != ims or min(rs) < 1:
        raise InputError(f"isstad_fusion: recon and image must be equal (B, C, H, W) shapes; got {rs} and {ims}")
    b, _, h, w = rs
    hs = tuple(heads.shape)
    ok = (len(hs) == 3 and hs == (b, h, w)) or (len(hs) == 5 and hs[0] == b and hs[1] >= 1 and hs[2:] == (2, h, w))
    if not ok:
        raise InputError(
            f"isstad_fusion: heads must be (B, K, 2, H, W) logits or (B, H, W) probability with B, H, W = "
            f"{b}, {h}, {w}; got {hs}")


def isstad_fusion(heads: Any, recon: Any, image: Any, *, scoring: str = "original", top_p: float = 0.1,
                  w_m: float = 1.0, w_r: float = 1.0, tier: str = "auto") -> tuple[dict[str, Any], str]:
    """Fused ISSTAD post-processing; returns (outputs, tier used).

    Args:
        heads: (B, K, 2, H, W) head logits or (B, H, W) probability P, float32.
        recon: (B, C, H, W) reconstruction (normalised space).
        image: (B, C, H, W) normalised input.
        scoring: ``original`` (default) | ``ham`` | ``alpha`` | ``max`` | ``weighted``.
        top_p, w_m, w_r: the ``weighted`` score's parameters (E's per-class p, w_m, w_r).
        tier: ``auto`` | ``reference`` | ``cpu`` | ``triton`` | ``cuda``.

    Returns:
        ``{"probability", "recon_error", "pixel_map"}`` (B, H, W) float32 and ``"score"`` (B,)
        float64 (numpy for numpy inputs; torch tensors from the triton tier on tensors).
    """
    check_fusion_inputs(heads, recon, image, scoring=scoring, top_p=top_p, w_m=w_m, w_r=w_r)
    used, fn = ISSTAD_FUSION.resolve(tier, device=on_device(recon))
    if isinstance(recon, np.ndarray):
        heads, recon, image = (np.ascontiguousarray(a, dtype=np.float32) for a in (heads, recon, image))
    return fn(heads, recon, image, scoring=scoring, top_p=float(top_p), w_m=float(w_m), w_r=float(w_r)), used
