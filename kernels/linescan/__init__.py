"""Line-scan (push-broom) RX kernels: a background model that scores a line, then learns it.

``line_model(bands, ...)`` builds the model of one tier; every tier has the same methods
(``step``, ``score``, ``statistics``, ``info``, ``lines``) and the semantics of
``reference.LineModel``, the specification. Line-scan models are stateful, so a tier is a
class rather than a function; ``tier="auto"`` picks the fastest one that runs here.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Literal

from edgesentry.kernels._dispatch import KernelOp
from edgesentry.kernels.linescan import cpu, cuda, reference
from edgesentry.kernels.linescan.reference import DEFAULT_RCOND, DTYPES, check_line, check_options

__all__ = ["DEFAULT_RCOND", "DTYPES", "LINE_MODEL", "TIER_MODULES", "check_line", "line_model"]


def _triton() -> ModuleType:
    from edgesentry.kernels.linescan import triton

    return triton


#: tier -> module (as the other kernel packages: triton imports the triton package, so it
#: loads on request; the others need numpy only until their first call).
TIER_MODULES = {"reference": reference, "cpu": cpu, "triton": _triton, "cuda": cuda}

LINE_MODEL = KernelOp("line_model", "LineModel", TIER_MODULES)


def line_model(
    bands: int,
    *,
    forgetting: float = 1.0,
    window: int = 0,
    ridge: float = 0.0,
    rcond: float = DEFAULT_RCOND,
    dtype: Literal["float64", "float32"] = "float64",
    tier: str = "auto",
    device: bool = False,
) -> tuple[Any, str]:
    """A line-scan RX model of one tier -> (model, tier used).

    Args:
        bands: B, the bands of every line.
        forgetting: exponential forgetting factor in (0, 1] (1: all lines weigh the same).
        window: a sliding block of the last ``window`` lines instead (needs forgetting 1).
        ridge: relative diagonal loading ``ridge * tr(C) / B``.
        rcond: pseudo-inverse cutoff for rank-deficient models.
        dtype: compute dtype of the W x B^2 products (statistics stay float64).
        tier: ``"auto"`` or one of ``reference``, ``cpu``, ``triton``, ``cuda``.
        device: prefer the GPU tiers (lines arrive as CUDA tensors).
    """
    check_options(bands, forgetting, window, ridge, rcond, dtype)
    used, cls = LINE_MODEL.resolve(tier, device=device)
    return cls(bands, forgetting=forgetting, window=window, ridge=ridge, rcond=rcond, dtype=dtype), used
