"""MAVD kernels, CPU tier: compiled C++ (``kernels/cpu/mavd.cpp``, OpenMP over row tiles)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edgesentry.errors import InputError
from edgesentry.kernels.mavd.reference import ALIGN_FUSE_PARAMS, POS_DECAY


def unavailable_reason() -> str | None:
    try:
        from edgesentry.kernels import _cpu_mavd  # noqa: F401
    except ImportError as exc:
        return f"compiled CPU kernels not built ({exc}); reinstall with `pip install -e .`"
    return None


def align_fuse(
    v: np.ndarray, a: np.ndarray, f: np.ndarray, params: Mapping[str, np.ndarray], out: np.ndarray | None = None
) -> np.ndarray:
    """See ``reference.align_fuse``; ``out`` (N, 64) float32 is written in place when given."""
    from edgesentry.kernels import _cpu_mavd

    flat = [np.ascontiguousarray(params[k], np.float32) for k in ALIGN_FUSE_PARAMS]
    out = np.empty((v.shape[0], 64), np.float32) if out is None else out
    _cpu_mavd.align_fuse(
        np.ascontiguousarray(v, np.float32),
        np.ascontiguousarray(a, np.float32),
        np.ascontiguousarray(f, np.float32),
        flat,
        out,
    )
    return out


#: parameter order of the compiled fusion head
HEAD_PARAMS = tuple(f"tcn{i}.conv{c}.{k}" for i in range(3) for c in (1, 2) for k in ("w", "b")) + tuple(
    f"mil{i}.{k}" for i in range(3) for k in ("w", "b")
)


def fusion_head(emb: np.ndarray, params: Mapping[str, np.ndarray], *, chunks: int = 0) -> np.ndarray:
    """See ``reference.fusion_head``: (B, T, 64) -> (B, T) logits, float32 in C++ (TCN + MIL).

    ``chunks``: time chunks per crop computed as separate tasks, each from 14 rows before its
    start (the TCN's reach), so they are exact; 0 picks enough to keep every thread busy.
    """
    from edgesentry.kernels import _cpu_mavd

    x = np.ascontiguousarray(emb, np.float32)
    if x.ndim != 3 or x.shape[2] != 64:
        raise InputError(f"fusion_head expects emb of shape (B, T, 64); got {x.shape}")
    flat = [np.ascontiguousarray(params[k], np.float32) for k in HEAD_PARAMS]
    return _cpu_mavd.fusion_head(x, flat, int(chunks))


def positional(t: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """See ``reference.positional``: (..., T, C) -> same shape, two scans in O(T)."""
    from edgesentry.kernels import _cpu_mavd

    x = np.ascontiguousarray(t, np.float32)
    n, c = x.shape[-2:]
    out = np.empty(x.shape, np.float32) if out is None else out
    if out.shape != x.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise InputError(f"positional out must be C-contiguous float32 {x.shape}; got {out.dtype} {out.shape}")
    _cpu_mavd.positional(x.reshape(-1, n, c), POS_DECAY, out.reshape(-1, n, c))
    return out
