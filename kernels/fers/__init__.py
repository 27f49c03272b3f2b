"""FERS RX-on-features kernels: fused feature sum + global min-max + covariance + Mahalanobis.

``fers_rx(x, spe, spa)`` is the official default detector, RX of ``spa + spe + x``;
``fers_ham(x, spe, spa)`` the official 50-band product of two min-max'd torch-style RX maps.
Inputs are the network layout, (B, H, W) or (1, B, H, W) float32 (numpy, or CUDA torch
tensors for the GPU tiers); outputs are (H, W) float64 maps. The GPU tiers never build the
fused cube: every pass reads the three feature tensors and sums them on the fly. See
``reference.py`` for the specification.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from edgesentry.errors import ConfigError, InputError
from edgesentry.kernels._dispatch import KernelOp, on_device
from edgesentry.kernels.fers import cpu, cuda, reference
from edgesentry.kernels.fers.reference import DEFAULT_RCOND

__all__ = ["FERS_RX", "FERS_HAM", "DEFAULT_RCOND", "fers_rx", "fers_ham", "check_features"]

def _triton() -> ModuleType:
    from edgesentry.kernels.fers import triton

    return triton


#: tier -> module. reference, cpu and cuda import numpy only (the compiled extension and
#: cuda-python load on first call); triton imports the triton package, so it loads on request.
TIER_MODULES = {"reference": reference, "cpu": cpu, "triton": _triton, "cuda": cuda}

FERS_RX = KernelOp("fers_rx", "fers_rx", TIER_MODULES)
FERS_HAM = KernelOp("fers_ham", "fers_ham", {"reference": reference, "cpu": cpu})


def check_features(x: Any, spe: Any, spa: Any = None) -> tuple[int, int, int]:
    """Validate the three feature tensors; return (B, H, W)."""
    shapes = {"x": tuple(x.shape), "spe": tuple(spe.shape)}
    if spa is not None:
        shapes["spa"] = tuple(spa.shape)
    for name, shape in shapes.items():
        if len(shape) not in (3, 4) or (len(shape) == 4 and shape[0] != 1):
            raise InputError(f"{name} must be (B, H, W) or (1, B, H, W); got shape {shape}")
    core = {name: shape[-3:] for name, shape in shapes.items()}
    if len(set(core.values())) != 1:
        raise InputError(f"x, spe and spa must share (B, H, W); got {core}")
    bands, rows, cols = core["x"]
    if rows * cols < 2 or bands < 1:
        raise InputError(f"RX needs at least 2 pixels and 1 band; got (B, H, W) = {core['x']}")
    return bands, rows, cols


def fers_rx(x: Any, spe: Any, spa: Any = None, *, rcond: float = DEFAULT_RCOND,
            tier: str = "auto") -> tuple[Any, str]:
    """RX of the fused cube ``spa + spe + x`` -> ((H, W) float64 scores, tier used)."""
    if not 0 < rcond < 1:
        raise ConfigError(f"rcond must lie in (0, 1); got {rcond}")
    check_features(x, spe, spa)
    used, fn = FERS_RX.resolve(tier, device=on_device(x))
    return fn(x, spe, spa, rcond=rcond), used


def fers_ham(x: Any, spe: Any, spa: Any = None, *, tier: str = "auto") -> tuple[Any, str]:
    """The official 50-band "ham" product map -> ((H, W) float64, tier used)."""
    check_features(x, spe, spa)
    used, fn = FERS_HAM.resolve(tier, device=False)
    return fn(_host(x), _host(spe), _host(spa)), used


def _host(a: Any) -> Any:
    if a is None or not hasattr(a, "detach"):
        return a
    return a.detach().cpu().numpy()
