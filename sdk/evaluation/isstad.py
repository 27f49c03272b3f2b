"""ISSTAD on an MVTec AD-layout folder: image AUROC, pixel AUROC and PRO.

    out = evaluate(det, "hazelnut")          # det = edgesentry.load(BUNDLE)
    out["image_auroc"], out["pixel_auroc"], out["pro"]

Layout (MVTec AD, also anomalib's Folder datasets): ``ROOT/test/<defect>/*.png|jpg`` with
``ROOT/test/good/`` for defect-free parts, and ``ROOT/ground_truth/<defect>/<stem>_mask.png``
(MVTec) or ``<stem>.png`` (anomalib's hazelnut_toy). Good images have all-zero masks.

- image AUROC: ``Result.raw_score`` against good (0) / defective (1);
- pixel AUROC: every pixel of every ``Result.anomaly_map`` (the input's resolution) against the
  masks;
- PRO: ``edgesentry.metrics.pro_auc`` up to FPR 0.3 (8-connected regions), the MVTec AD protocol.

The raw score and the raw map are used, so the numbers do not depend on calibration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry.detector import Detector
from edgesentry.errors import InputError
from edgesentry.io.files import expand
from edgesentry.io.hsi import read_ground_truth
from edgesentry.io.image import IMAGE_SUFFIXES
from edgesentry.metrics import pro_auc, roc_auc

GOOD = "good"


@dataclass(frozen=True)
class Sample:
    image: Path
    defect: str
    mask: Path | None  # None: a good image (all-zero mask)


def mvtec_samples(root: str | os.PathLike) -> list[Sample]:
    """The test images of an MVTec-layout folder with their masks (``root`` or ``root/test``)."""
    root = Path(root)
    if root.name == "test" and (root.parent / "ground_truth").is_dir():
        root = root.parent
    test = root / "test"
    if not test.is_dir():
        raise InputError(f"{str(root)!r} is not an MVTec-layout folder: {test} is missing "
                         "(expected test/<defect>/ images and ground_truth/<defect>/ masks)")
    samples = []
    for folder in sorted(p for p in test.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for image in expand(folder, IMAGE_SUFFIXES, what="test image"):
            mask = None if folder.name == GOOD else _mask_of(root, folder.name, image)
            samples.append(Sample(image, folder.name, mask))
    if not any(s.mask is None for s in samples) or all(s.mask is None for s in samples):
        raise InputError(f"{test} needs both good/ images and defect folders to measure AUROC")
    return samples


def _mask_of(root: Path, defect: str, image: Path) -> Path:
    folder = root / "ground_truth" / defect
    for stem in (f"{image.stem}_mask", image.stem):
        for suffix in (".png", ".bmp", ".tif", ".tiff", ".jpg"):
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
    raise InputError(f"no mask for {image}: expected {folder}/{image.stem}_mask.png or {image.stem}.png")


def evaluate(det: Detector, root: str | os.PathLike, *, max_fpr: float = 0.3, progress: Any = None) -> dict[str, Any]:
    """Run ``det`` over the test images of ``root``; return the metrics and what they came from.

    Returns a dict with ``image_auroc``, ``pixel_auroc``, ``pro`` (up to ``max_fpr``), counts
    (``images``, ``defective``, ``good``, ``regions``), and per image ``records`` (path,
    defect, raw score) plus ``scores``, ``labels``, ``maps``, ``masks`` (for further analysis).
    """
    from scipy import ndimage

    samples = mvtec_samples(root)
    maps, masks, scores, records = [], [], [], []
    step = max(1, int(det.batch_size))
    for start in range(0, len(samples), step):
        chunk = samples[start:start + step]
        for sample, res in zip(chunk, det.predict_batch([str(s.image) for s in chunk])):
            if res.anomaly_map is None:
                raise InputError(f"{det.family} gives no anomaly map; pixel metrics need one")
            mask = np.zeros(res.anomaly_map.shape, bool) if sample.mask is None else read_ground_truth(sample.mask)
            if mask.shape != res.anomaly_map.shape:
                raise InputError(f"mask {sample.mask} is {mask.shape}; the image's map is {res.anomaly_map.shape}")
            maps.append(res.anomaly_map)
            masks.append(mask)
            scores.append(res.raw_score)
            records.append({"image": str(sample.image), "defect": sample.defect, "raw_score": res.raw_score,
                            "score": res.score, "label": res.label})
        if progress is not None:
            progress(min(start + step, len(samples)), len(samples))
    labels = np.array([s.mask is not None for s in samples])
    regions = sum(ndimage.label(m, structure=np.ones((3, 3), bool))[1] for m in masks)
    return {
        "image_auroc": roc_auc(labels, scores),
        "pixel_auroc": roc_auc(np.concatenate([m.ravel() for m in masks]), np.concatenate([a.ravel() for a in maps])),
        "pro": pro_auc(masks, maps, max_fpr=max_fpr),
        "max_fpr": max_fpr,
        "images": len(samples), "defective": int(labels.sum()), "good": int((~labels).sum()), "regions": int(regions),
        "records": records, "scores": np.asarray(scores), "labels": labels, "maps": maps, "masks": masks,
    }
