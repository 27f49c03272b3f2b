"""Line-scan (push-broom) RX: the numpy float64 reference, the specification of every tier.

A push-broom camera delivers one line of W pixels x B bands at a time and never a whole
cube. Line-scan RX scores every pixel of a line by its squared Mahalanobis distance to a
background model of the lines before it, and only then lets the line join the model
(causal: a score never depends on the line itself or on later lines). Two background models:

- exponential statistics with forgetting factor ``lam`` in (0, 1]: when line t arrives, a
  pixel of line s < t weighs ``lam ** (t - 1 - s)`` (the newest line weighs 1); ``lam = 1``
  keeps every line with equal weight;
- a sliding window: the pixels of the last ``window`` lines, each with weight 1.

With N the sum of the weights, ``mean = sum w x / N`` and
``C = sum w (x - mean)(x - mean)^T / (N - 1)`` (the N - 1 divisor of ``np.cov``, so a window
that covers a whole scene gives global RX exactly), a pixel x scores
``(x - mean)^T pinv(C + ridge * tr(C) / B * I, rcond) (x - mean)``: the RX family's
semantics (``kernels/rx/reference.py``), so rank-deficient models (the first lines of a
scan, dead or duplicated bands) give finite scores. A model of n pixels without ridge keeps at
most its n - 1 largest singular values: its covariance has rank n - 1 at most, and the
directions beyond hold round-off (~1e-16 relative, close to the cutoff: whether the cutoff
alone removed them would depend on the CPU's summation order). While the model weighs at most
1 pixel (N <= 1) there is no covariance and every score is NaN.

Which pixels join: the ``valid`` ones (the caller's mask, e.g. finite pixels) whose score is
not above ``update_threshold`` (so that targets do not teach the background); a pixel that
is not valid scores NaN. ``dtype`` is accepted for the tiers' common signature; the
reference always computes in float64.

This reference keeps every kept pixel and recomputes the statistics from them for every line
(O(t) per line): slow, obviously right.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgesentry.errors import ConfigError, InputError
from edgesentry.kernels.rx.reference import DEFAULT_RCOND, _regularize

DTYPES = ("float64", "float32")


def check_options(bands: int, forgetting: float, window: int, ridge: float, rcond: float, dtype: str) -> None:
    """Raise ``ConfigError`` naming the first bad model option."""
    if not (isinstance(bands, (int, np.integer)) and bands >= 1):
        raise ConfigError(f"bands must be an integer >= 1; got {bands!r}")
    if not (isinstance(forgetting, (int, float)) and 0.0 < forgetting <= 1.0):
        raise ConfigError(f"forgetting must lie in (0, 1]; got {forgetting!r}")
    if not (isinstance(window, (int, np.integer)) and window >= 0):
        raise ConfigError(f"window must be an integer >= 0 (0: exponential statistics); got {window!r}")
    if window and forgetting != 1.0:
        raise ConfigError(f"a sliding window keeps its lines with equal weight; use forgetting=1 with window={window}")
    if not (np.isfinite(ridge) and ridge >= 0):
        raise ConfigError(f"ridge must be a finite number >= 0; got {ridge}")
    if not 0 < rcond < 1:
        raise ConfigError(f"rcond must lie in (0, 1); got {rcond}")
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {list(DTYPES)}; got {dtype!r}")


def check_line(line: Any, bands: int, valid: Any = None) -> tuple[Any, np.ndarray | None]:
    """Validate a (W, B) line and its optional (W,) mask; return them (the mask as bool)."""
    shape = tuple(getattr(line, "shape", ()))
    if len(shape) != 2 or shape[1] != bands or shape[0] < 1:
        raise InputError(f"a line must be (W, {bands}) with W >= 1 (pixels x bands); got shape {shape}")
    if valid is None:
        return line, None
    mask = np.asarray(valid)
    if mask.shape != (shape[0],):
        raise InputError(f"valid must be a ({shape[0]},) mask for a line of {shape[0]} pixels; got {mask.shape}")
    return line, mask.astype(bool, copy=False)


def pinv(cov: np.ndarray, rcond: float, rank: int | None = None) -> np.ndarray:
    """``np.linalg.pinv(cov, rcond)`` keeping at most the ``rank`` largest singular values."""
    u, s, vt = np.linalg.svd(cov)
    keep = s > rcond * s[0] if s.size and s[0] > 0 else np.zeros(s.shape, bool)
    if rank is not None:
        keep[max(rank, 0):] = False  # s is sorted descending
    return (vt[keep].T / s[keep]) @ u[:, keep].T


class LineModel:
    """Line-scan RX background model, numpy float64 (the specification).

    Args:
        bands: B, the number of bands of every line.
        forgetting: exponential forgetting factor in (0, 1] (1: every line counts equally).
        window: keep only the last ``window`` lines (0: exponential statistics).
        ridge: relative diagonal loading, ``ridge * tr(C) / B`` (0: plain pseudo-inverse).
        rcond: pseudo-inverse cutoff relative to the largest singular value.
        dtype: compute dtype of the fast tiers (the reference is always float64).
    """

    def __init__(self, bands: int, *, forgetting: float = 1.0, window: int = 0, ridge: float = 0.0,
                 rcond: float = DEFAULT_RCOND, dtype: str = "float64"):
        check_options(bands, forgetting, window, ridge, rcond, dtype)
        self.bands, self.forgetting, self.window = int(bands), float(forgetting), int(window)
        self.ridge, self.rcond, self.dtype = float(ridge), float(rcond), dtype
        self._kept: list[np.ndarray] = []  # kept pixels of every line (float64), oldest first
        self.lines = 0

    def pixels(self) -> int:
        """The number of pixels in the model (each with a weight > 0)."""
        return sum(len(x) for x in self._model_lines())

    def _model_lines(self) -> list[np.ndarray]:
        return self._kept[-self.window:] if self.window else self._kept

    def statistics(self) -> tuple[float, np.ndarray, np.ndarray]:
        """(N, mean (B,), covariance (B, B) without ridge) of the current model, float64."""
        kept = self._model_lines()
        ages = np.arange(len(kept))[::-1]
        weights = [np.full(len(x), self.forgetting ** age) for x, age in zip(kept, ages)]
        x = np.concatenate(kept) if kept else np.zeros((0, self.bands))
        w = np.concatenate(weights) if weights else np.zeros(0)
        count = float(w.sum())
        if count == 0:
            return 0.0, np.zeros(self.bands), np.zeros((self.bands, self.bands))
        mean = w @ x / count
        z = x - mean
        cov = (z * w[:, None]).T @ z / (count - 1) if count > 1 else np.full((self.bands, self.bands), np.nan)
        return count, mean, cov

    def score(self, line: Any, valid: Any = None) -> np.ndarray:
        """(W,) float64 scores of a line against the current model (the model does not change)."""
        line, mask = check_line(line, self.bands, valid)
        x = np.asarray(line, dtype=np.float64)
        count, mean, cov = self.statistics()
        if count <= 1:
            return np.full(len(x), np.nan)
        precision = pinv(_regularize(cov, self.ridge), self.rcond, None if self.ridge else self.pixels() - 1)
        z = x - mean
        with np.errstate(invalid="ignore"):  # invalid pixels may hold NaN; they score NaN anyway
            scores = np.einsum("nb,bc,nc->n", z, precision, z)
        if mask is not None:
            scores[~mask] = np.nan
        return scores

    def step(self, line: Any, valid: Any = None, update_threshold: float = np.inf,
             want_scores: bool = True) -> np.ndarray:
        """Score a line against the model, then add its kept pixels.

        Args:
            line: (W, B) pixels, any real dtype.
            valid: (W,) bool, the pixels that may be scored and join (default: all).
            update_threshold: pixels scoring above it do not join the model.
            want_scores: False when the caller needs no scores (look-ahead feeding); the
                scores are then NaN unless the threshold needed them.

        Returns:
            (W,) float64 scores against the model before this line (NaN: not scored).
        """
        line, mask = check_line(line, self.bands, valid)
        x = np.asarray(line, dtype=np.float64)
        keep = np.ones(len(x), bool) if mask is None else mask.copy()
        scores = self.score(x, keep) if want_scores or np.isfinite(update_threshold) else np.full(len(x), np.nan)
        with np.errstate(invalid="ignore"):
            keep &= ~(scores > update_threshold)
        self._kept.append(x[keep])
        if self.window:
            del self._kept[:-self.window]
        self.lines += 1
        return scores

    def info(self) -> dict[str, Any]:
        return {"tier": "reference", "lines": self.lines}
