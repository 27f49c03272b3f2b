"""MAVD kernels: the fused align-and-fuse MLP and the O(T) positional attention.

``align_fuse(v, a, f, params)`` is the product's "sparse alignment" step at inference: per
snippet, the audio (va) and flow (vf) alignment MLPs, the concatenation with the RGB feature
and the fusion embedding MLP, in one pass. ``positional(t)`` is ``A2 @ t`` for MAVD's fixed,
column-normalised exponential attention. ``fusion_head`` (TCN + MIL, numpy) completes the
fused score. See ``reference.py`` for the specification.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

from edgesentry.errors import InputError
from edgesentry.kernels._dispatch import KernelOp, on_device
from edgesentry.kernels.mavd import cpu, cuda, reference
from edgesentry.kernels.mavd.reference import ALIGN_FUSE_PARAMS, POS_DECAY, fusion_head, positional_matrix, sigmoid

__all__ = [
    "ALIGN_FUSE",
    "POSITIONAL",
    "ALIGN_FUSE_PARAMS",
    "POS_DECAY",
    "align_fuse",
    "positional",
    "fusion_head",
    "FUSION_HEAD",
    "fast_fusion_head",
    "positional_matrix",
    "sigmoid",
]

def _triton() -> ModuleType:
    from edgesentry.kernels.mavd import triton

    return triton


#: tier -> module. reference, cpu and cuda import numpy only (the compiled extension and
#: cuda-python load on first call); triton imports the triton package, so it loads on request.
TIER_MODULES = {"reference": reference, "cpu": cpu, "triton": _triton, "cuda": cuda}

ALIGN_FUSE = KernelOp("mavd_align_fuse", "align_fuse", TIER_MODULES)
POSITIONAL = KernelOp("mavd_positional", "positional", TIER_MODULES)

#: the TCN + MIL head (small: numpy float64 as the specification, C++ float32 for speed)
FUSION_HEAD = KernelOp("mavd_fusion_head", "fusion_head", {"reference": reference, "cpu": cpu})


def fast_fusion_head(emb: Any, params: Mapping[str, Any]) -> tuple[Any, str]:
    """The head for every fast tier: compiled C++ when built, else numpy in float32.

    At T = 182 x 5 crops the float64 numpy head took ~3 ms, as long as everything else after
    the graph; C++ float32 (~1e-6 relative on the logits) takes a fraction of that.
    """
    import numpy as np

    from edgesentry.errors import KernelUnavailableError

    try:
        return FUSION_HEAD.load("cpu")(emb, params), "cpu"
    except KernelUnavailableError:
        return fusion_head(np.asarray(emb), params, dtype=np.float32), "reference float32"


def align_fuse(
    v: Any, a: Any, f: Any, params: Mapping[str, Any], *, out: Any = None, tier: str = "auto"
) -> tuple[Any, str]:
    """(N,128) RGB, (M,32) audio (row ``n % M``), (N,64) flow features -> ((N,64) embedding, tier)."""
    n = v.shape[0] if len(v.shape) == 2 else -1
    if len(v.shape) != 2 or v.shape[1] != 128:
        raise InputError(f"align_fuse expects v of shape (N, 128); got {tuple(v.shape)}")
    if len(f.shape) != 2 or tuple(f.shape) != (n, 64):
        raise InputError(f"align_fuse expects f of shape ({n}, 64); got {tuple(f.shape)}")
    if len(a.shape) != 2 or a.shape[1] != 32 or a.shape[0] == 0 or (n and n % a.shape[0]):
        raise InputError(f"align_fuse expects a of shape (M, 32) with M dividing N={n}; got {tuple(a.shape)}")
    missing = [k for k in ALIGN_FUSE_PARAMS if k not in params]
    if missing:
        raise InputError(f"align_fuse params lack {missing}")
    used, fn = ALIGN_FUSE.resolve(tier, device=on_device(v))
    return fn(v, a, f, params, out), used


def positional(t: Any, *, out: Any = None, tier: str = "auto") -> tuple[Any, str]:
    """``A2 @ t`` over axis -2 of a (..., T, C) array -> (same shape, tier)."""
    if len(t.shape) < 2 or t.shape[-2] < 1:
        raise InputError(f"positional expects (..., T, C) with T >= 1; got {tuple(t.shape)}")
    used, fn = POSITIONAL.resolve(tier, device=on_device(t))
    return fn(t, out), used
