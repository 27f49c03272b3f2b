"""RX kernels: global and dual-window local Reed-Xiaoli scores.

Public functions take numpy arrays (GPU tiers also take CUDA torch tensors) and a
``tier`` (``"auto"`` by default); see ``reference.py`` for the specification.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from edgesentry.errors import ConfigError, InputError
from edgesentry.kernels._dispatch import KernelOp, on_device
from edgesentry.kernels.rx import cpu, cuda, reference
from edgesentry.kernels.rx.reference import DEFAULT_RCOND


def _triton() -> ModuleType:
    from edgesentry.kernels.rx import triton

    return triton


#: tier -> module. reference, cpu and cuda import numpy only (the compiled extension and
#: cuda-python load on first call); triton imports the triton package, so it loads on request.
TIER_MODULES = {"reference": reference, "cpu": cpu, "triton": _triton, "cuda": cuda}

GLOBAL_RX = KernelOp("global_rx", "global_rx", TIER_MODULES)
LOCAL_RX = KernelOp("local_rx", "local_rx", TIER_MODULES)


def _check_common(ridge: float, rcond: float) -> None:
    if not (ridge >= 0 and np.isfinite(ridge)):
        raise ConfigError(f"ridge must be a finite number >= 0; got {ridge}")
    if not (0 < rcond < 1):
        raise ConfigError(f"rcond must lie in (0, 1); got {rcond}")


def global_rx(
    pixels: Any, *, ridge: float = 0.0, rcond: float = DEFAULT_RCOND, tier: str = "auto"
) -> tuple[Any, str]:
    """Global RX scores of (N, B) pixels -> ((N,) float64 scores, tier used).

    An (H, W, B) cube is also taken, scored as its H * W pixels in C order: the cpu tier
    reads it chunk by chunk in place (any dtype, any strides, a memory map), the other tiers
    get its (N, B) reshape.
    """
    _check_common(ridge, rcond)
    shape = tuple(pixels.shape)
    if len(shape) not in (2, 3) or int(np.prod(shape[:-1])) < 2 or shape[-1] < 1:
        raise InputError(f"global_rx expects (N, B) pixels (or an (H, W, B) cube) with N >= 2 and B >= 1; "
                         f"got shape {shape}")
    used, fn = GLOBAL_RX.resolve(tier, device=on_device(pixels))
    if len(shape) == 3 and used != "cpu":
        pixels = pixels.reshape(-1, shape[-1])
    return fn(pixels, ridge=ridge, rcond=rcond), used


def local_rx(
    cube: Any, *, inner: int, outer: int, ridge: float = 0.0, rcond: float = DEFAULT_RCOND, tier: str = "auto"
) -> tuple[Any, str]:
    """Dual-window local RX of an (H, W, B) cube -> ((H, W) float64 scores, tier used)."""
    _check_common(ridge, rcond)
    check_window(tuple(cube.shape), inner, outer)
    used, fn = LOCAL_RX.resolve(tier, device=on_device(cube))
    return fn(cube, inner=inner, outer=outer, ridge=ridge, rcond=rcond), used


def check_window(shape: tuple[int, ...], inner: int, outer: int) -> None:
    if len(shape) != 3:
        raise InputError(f"local RX expects an (H, W, B) cube; got shape {shape}")
    if not (isinstance(inner, (int, np.integer)) and isinstance(outer, (int, np.integer))):
        raise ConfigError(f"window sizes must be integers; got inner={inner!r}, outer={outer!r}")
    if not 1 <= inner < outer:
        raise ConfigError(f"window must satisfy 1 <= inner < outer; got inner={inner}, outer={outer}")
    if outer > min(shape[0], shape[1]):
        raise InputError(
            f"outer window {outer} does not fit the {shape[0]}x{shape[1]} image; use outer <= {min(shape[:2])}"
        )
