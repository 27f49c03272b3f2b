"""Thresholds and score normalisation learned from normal samples.

Rule (stated, so users can reason about false alarms): with ``s`` the raw scores of the
normal samples, ``q_hi`` their ``quantile`` (default 0.99) and ``q_mid`` their median,

    threshold = q_hi + margin * (q_hi - q_mid)          (margin defaults to 0.1)

and the same rule over all pixel values of the normal anomaly maps (``pixel_quantile``,
default 0.999) gives the pixel threshold behind ``Result.mask``. Normalised scores follow
anomalib's convention: ``clip((s - threshold) / (max(s) - min(s)) + 0.5, 0, 1)``, so the
threshold sits at 0.5. A calibrated detector reports ``Result.score`` and its ``threshold`` on
that normalised scale (``raw_score`` and ``raw_threshold`` on the seed's); anomaly maps, masks
and ``pixel_threshold`` stay on the map's own (raw) scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgesentry.errors import ConfigError, InputError


@dataclass(frozen=True)
class Calibration:
    threshold: float
    pixel_threshold: float | None
    score_min: float
    score_max: float
    quantile: float
    pixel_quantile: float | None
    margin: float
    n_samples: int

    @property
    def span(self) -> float:
        """``max - min`` of the normal scores (``|threshold|`` when they were all equal)."""
        span = self.score_max - self.score_min
        if not np.isfinite(span) or span <= 0:
            span = max(abs(self.threshold), 1e-12)
        return float(span)

    def normalize(self, raw: float) -> float:
        """Raw score -> normalised score in [0, 1] (the threshold maps to 0.5)."""
        return float(np.clip(self.normalize_unclipped(raw), 0.0, 1.0))

    def normalize_unclipped(self, raw: float) -> float:
        """The normalising line without the clip: where ``raw`` sits on the normalised scale."""
        return (float(raw) - self.threshold) / self.span + 0.5

    def denormalize(self, value: float) -> float:
        """A value on the normalised scale -> the raw score that maps to it (inverse line)."""
        return self.threshold + (float(value) - 0.5) * self.span

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        """A calibration record (``meta.json``'s ``calibration``), every field type-checked.

        Raises:
            ConfigError: a missing field, or a value that is not a finite number (``n_samples``:
                a non-negative integer; ``pixel_threshold`` / ``pixel_quantile`` may be null).
        """
        if not isinstance(data, dict):
            raise ConfigError(f"calibration record must be a mapping; got {type(data).__name__}")
        try:
            values = {k: data[k] for k in cls.__dataclass_fields__}
        except KeyError as exc:
            raise ConfigError(f"calibration record lacks {exc.args[0]!r}; got keys {sorted(map(str, data))}") from None
        for key, value in values.items():
            if key == "n_samples":
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            else:
                ok = (value is None and key in ("pixel_threshold", "pixel_quantile")) or (
                    isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))
            if not ok:
                raise ConfigError(f"calibration field {key!r} must be a finite number; got {str(value)[:60]!r}")
        return cls(**values)


def _threshold(values: np.ndarray, quantile: float, margin: float) -> float:
    hi = float(np.quantile(values, quantile))
    mid = float(np.median(values))
    return hi + margin * (hi - mid)


def fit_calibration(
    scores: Sequence[float],
    maps: Sequence[np.ndarray] | None = None,
    *,
    quantile: float = 0.99,
    pixel_quantile: float = 0.999,
    margin: float = 0.1,
) -> Calibration:
    """Fit thresholds and normalisation from raw scores (and maps) of normal samples."""
    if not 0.5 <= quantile <= 1.0 or not 0.5 <= pixel_quantile <= 1.0:
        raise ConfigError(f"quantiles must lie in [0.5, 1]; got quantile={quantile}, pixel_quantile={pixel_quantile}")
    if margin < 0:
        raise ConfigError(f"margin must be >= 0; got {margin}")
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise InputError("calibrate() needs at least one normal sample; got none")
    if not np.all(np.isfinite(s)):
        raise InputError(f"calibration scores contain {np.count_nonzero(~np.isfinite(s))} NaN/Inf values")
    pixel_threshold = None
    if maps:
        pixels = np.concatenate([np.asarray(m, dtype=np.float64).ravel() for m in maps])
        pixel_threshold = _threshold(pixels, pixel_quantile, margin)
    return Calibration(
        threshold=_threshold(s, quantile, margin),
        pixel_threshold=pixel_threshold,
        score_min=float(s.min()),
        score_max=float(s.max()),
        quantile=quantile,
        pixel_quantile=pixel_quantile if maps else None,
        margin=margin,
        n_samples=int(s.size),
    )
