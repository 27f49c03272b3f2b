"""Fused post-processing kernels, one specification and several tiers.

| tier        | runs on                                          | role                         |
|-------------|--------------------------------------------------|------------------------------|
| reference   | numpy (float64 where the seed is)                | the specification            |
| cpu         | compiled C++ (pybind11, OpenMP) or BLAS numpy    | fast path on x86 / ARM CPUs  |
| triton      | torch tensors, CUDA (or ``TRITON_INTERPRET=1``)  | GPU servers                  |
| cuda        | CUDA C compiled at run time with NVRTC           | Jetson, torch-free runtimes  |

Every op lives in its own sub-package (``edgesentry.kernels.rx`` ...) with one module per
tier. ``tier="auto"`` picks the fastest tier that can run on the data's device and falls
back quietly; an explicitly requested tier that cannot run raises
``KernelUnavailableError``. The environment variable ``EDGESENTRY_KERNELS`` forces a tier
for every ``auto`` call (same contract: a forced tier that fails raises).
"""

from __future__ import annotations

from edgesentry.kernels._dispatch import ENV_VAR, TIERS, KernelOp, resolve_tier, tier_status, validate_tier

__all__ = ["ENV_VAR", "TIERS", "KernelOp", "resolve_tier", "tier_status", "validate_tier"]
