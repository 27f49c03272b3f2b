"""ISSTAD fusion, CPU tier: compiled C++ (``kernels/cpu/isstad.cpp``, OpenMP over rows).

Two passes instead of the seed's ~6 scipy round trips: P/R/row-min-max plus the horizontal
33-tap pass while each row is in cache, then the vertical pass with the min-max applied by
linearity and the image score reduced in the epilogue.
"""

from __future__ import annotations

import os

import numpy as np

from edgesentry.kernels.isstad.reference import IMAGE_MODES, PIXEL_MODES, SCORINGS, gaussian_weights

_TAPS = gaussian_weights()


def threads() -> int:
    """OpenMP threads from ``EDGESENTRY_CPU_THREADS`` (default 0).

    0: all cores; batches run image-parallel, a single image row-parallel. N > 0: N threads.
    Set 1 on a machine whose cores are already busy: the row-parallel passes of one image
    meet at a barrier, which stalls when a thread is descheduled.
    """
    return int(os.environ.get("EDGESENTRY_CPU_THREADS", "0") or 0)


def unavailable_reason() -> str | None:
    try:
        from edgesentry.kernels import _cpu_isstad  # noqa: F401
    except ImportError as exc:
        return f"compiled CPU kernels not built ({exc}); reinstall with `pip install -e .`"
    return None


def isstad_fusion(heads: np.ndarray, recon: np.ndarray, image: np.ndarray, *, scoring: str = "original",
                  top_p: float = 0.1, w_m: float = 1.0, w_r: float = 1.0,
                  poison: bool = False) -> dict[str, np.ndarray]:
    """See ``reference.isstad_fusion``; ``poison=True`` NaN-fills the outputs first (tests)."""
    from edgesentry.kernels import _cpu_isstad

    pixel_mode, image_mode = SCORINGS[scoring]
    prob, rerr, pixel, score = _cpu_isstad.fusion(
        heads, recon, image, PIXEL_MODES.index(pixel_mode), IMAGE_MODES.index(image_mode),
        float(top_p), float(w_m), float(w_r), _TAPS, threads(), poison)
    return {"probability": prob, "recon_error": rerr, "pixel_map": pixel, "score": score}
