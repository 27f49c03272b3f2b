"""``Result``: what every detector returns.

Field names map one to one onto anomalib's ``InferenceBatch`` for users who know it:
``anomaly_map`` <-> ``anomaly_map``, ``score`` <-> ``pred_score``, ``label`` <->
``pred_label``, ``mask`` <-> ``pred_mask``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgesentry.errors import InputError


@dataclass
class Result:
    """Output of one ``Detector.predict`` call.

    Attributes:
        anomaly_map: (H, W) float32 per-pixel anomaly map at the input's resolution, larger =
            more anomalous; ``None`` for families without a spatial map (mavd, mdmf).
        score: the sample's score. Raw (the seed's own scale) unless the detector was
            calibrated, in which case it is normalised to [0, 1] with the threshold at 0.5.
        raw_score: the seed's score before any normalisation.
        label: ``score`` at or above the threshold, when a threshold is set; else ``None``.
        mask: (H, W) bool, ``anomaly_map >= pixel threshold``, when one is set; else ``None``.
        extras: family-specific arrays (documented by each family: ``frame_scores``,
            ``logits``, ``probability`` ...).
        timings: seconds spent per pipeline stage (``preprocess``, ``graph``,
            ``postprocess``, ``total``).
        info: small JSON-able facts about how the result was produced (backend, kernel tier).
    """

    score: float
    anomaly_map: np.ndarray | None = None
    raw_score: float | None = None
    label: bool | None = None
    mask: np.ndarray | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.score = float(self.score)
        if self.raw_score is None:
            self.raw_score = self.score
        if self.anomaly_map is not None:
            amap = np.asarray(self.anomaly_map)
            if amap.ndim != 2:
                raise InputError(f"anomaly_map must be (H, W); got shape {amap.shape}")
            self.anomaly_map = amap.astype(np.float32, copy=False)
        if self.mask is not None:
            mask = np.asarray(self.mask)
            if self.anomaly_map is None or mask.shape != self.anomaly_map.shape:
                want = None if self.anomaly_map is None else self.anomaly_map.shape
                raise InputError(f"mask must have the anomaly_map's shape {want}; got {mask.shape}")
            self.mask = mask.astype(bool, copy=False)
        if self.label is not None:
            self.label = bool(self.label)

    @property
    def shape(self) -> tuple[int, ...] | None:
        return None if self.anomaly_map is None else tuple(self.anomaly_map.shape)

    def summary(self) -> dict[str, Any]:
        """JSON-able summary without the large arrays (shapes are given instead)."""
        out: dict[str, Any] = {
            "score": _json_float(self.score),
            "raw_score": _json_float(self.raw_score),
            "label": self.label,
            "shape": list(self.shape) if self.shape else None,
            "timings": {k: round(v, 6) for k, v in self.timings.items()},
            "info": dict(self.info),
        }
        if self.mask is not None:
            out["mask_pixels"] = int(self.mask.sum())
        scalars = {k: v for k, v in self.extras.items() if np.ndim(v) == 0}
        if scalars:
            out["extras"] = {k: _json_value(v) for k, v in scalars.items()}
        arrays = {k: list(np.shape(v)) for k, v in self.extras.items() if np.ndim(v) > 0}
        if arrays:
            out["extras_shapes"] = arrays
        return out


def _json_float(x: float | None) -> float | None:
    if x is None or not math.isfinite(float(x)):
        return None
    return float(x)


def _json_value(v: Any) -> Any:
    if isinstance(v, (np.floating, float)):
        return _json_float(float(v))
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    return v
