"""``Result``: what every detector returns.

Field names map one to one onto anomalib's ``InferenceBatch`` for users who know it:
``anomaly_map`` <-> ``anomaly_map``, ``score`` <-> ``pred_score``, ``label`` <->
``pred_label``, ``mask`` <-> ``pred_mask``.

    res = det.predict("part.png")
    res                          # Result(isstad, score=0.8731, label=True, map 512x512, mask 1234 px, 23.1 ms)
    res.plot()                   # (H, W, 3) uint8 panel: image | heat map | mask | contours
    res.save("part_panel.png")   # .png panel, .npy anomaly map, .json summary
    res.to_json()
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
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
        info: small JSON-able facts about how the result was produced (backend, kernel tier,
            and the ``threshold`` / ``pixel_threshold`` that made ``label`` / ``mask``).

    ``score`` and the detector's ``threshold`` share one scale (``label = score >= threshold``);
    ``raw_score`` is always the seed's scale, ``anomaly_map`` and ``mask`` the map's own.
    """

    score: float
    anomaly_map: np.ndarray | None = None
    raw_score: float | None = None
    label: bool | None = None
    mask: np.ndarray | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    #: the (H, W, 3) uint8 RGB input, when the detector kept it (``keep_rgb=True``); ``plot`` draws on it
    image: np.ndarray | None = field(default=None, repr=False, compare=False)

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

    def __repr__(self) -> str:
        parts = [str(self.info.get("family", "?")), f"score={self.score:.4g}"]
        if self.raw_score is not None and self.raw_score != self.score:
            parts.append(f"raw_score={self.raw_score:.4g}")
        if self.label is not None:
            parts.append(f"label={self.label}")
        if self.anomaly_map is not None:
            parts.append("map {}x{}".format(*self.anomaly_map.shape))
        if self.mask is not None:
            parts.append(f"mask {int(self.mask.sum())} px")
        if "label" in self.info and isinstance(self.info["label"], str):
            parts.append(f"class={self.info['label']!r}")
        if "total" in self.timings:
            parts.append(f"{1e3 * self.timings['total']:.1f} ms")
        return f"Result({', '.join(parts)})"

    def plot(self, image: np.ndarray | None = None, *, tile: int = 256) -> np.ndarray:
        """The picture of this result as an (H, W, 3) uint8 RGB array.

        A result with an anomaly map gets ``edgesentry.viz.anomaly_panel`` (image | heat map on
        the pixel threshold's colour scale | binary mask | contours, titled "Anomalous 0.87" /
        "Good 0.12"), drawn on ``image`` ((H, W, 3) uint8 RGB array or PIL image) or the kept
        input (``Result.image``); MAVD results a chart of snippet scores, MDMF ones of class
        probabilities, with the threshold where one is set.
        """
        from edgesentry.viz import anomaly_panel, score_chart

        if image is not None and not isinstance(image, np.ndarray):
            image = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
        image = image if image is not None else self.image
        if self.anomaly_map is not None:
            if image is not None and tuple(np.shape(image)[:2]) != self.anomaly_map.shape:
                raise InputError(f"plot() image must be ({self.anomaly_map.shape[0]}, {self.anomaly_map.shape[1]}, 3) "
                                 f"like the anomaly map; got shape {np.shape(image)}")
            picture = anomaly_panel(self.anomaly_map, image=image, mask=self.mask,
                                    pixel_threshold=self.info.get("pixel_threshold"), score=self.score,
                                    label=self.label, tile=tile)
        elif "snippet_scores" in self.extras:
            picture = score_chart(self.extras["snippet_scores"], threshold=self.info.get("raw_threshold"),
                                  title=f"snippet scores (max {self.raw_score:.3f})")
        elif "probs" in self.extras:
            picture = score_chart(np.asarray(self.extras["probs"])[0], labels=list(self.info.get("labels", [])),
                                  title=f"class probabilities: {self.info.get('label', '?')}")
        else:
            raise InputError("this result has no anomaly map or score series to plot")
        return np.asarray(picture)

    def save(self, path: str | os.PathLike) -> Path:
        """Write this result by the file's suffix: ``.png`` / ``.jpg`` the ``plot()`` picture,
        ``.npy`` the anomaly map (float32), ``.json`` ``to_json()``. Returns the path."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix in (".png", ".jpg", ".jpeg"):
            from PIL import Image

            options = {"compress_level": 1} if suffix == ".png" else {"quality": 90}
            Image.fromarray(self.plot()).save(path, **options)
        elif suffix == ".npy":
            if self.anomaly_map is None:
                raise InputError(f"this {self.info.get('family', '')} result has no anomaly map to write to {path}")
            np.save(path, self.anomaly_map)
        elif suffix == ".json":
            path.write_text(self.to_json() + "\n")
        else:
            raise InputError(f"Result.save() writes .png, .jpg, .npy or .json; got {str(path)!r}")
        return path

    def to_json(self) -> str:
        """``summary()`` as JSON text (arrays as their shapes)."""
        return json.dumps(self.summary(), indent=2, default=_json_value)

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
    if isinstance(v, np.ndarray):
        return {"shape": list(v.shape), "dtype": str(v.dtype)}
    if isinstance(v, Path):
        return str(v)
    return v
