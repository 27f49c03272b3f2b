"""Detection metrics with the semantics the seed repositories use.

``roc_auc`` matches ``sklearn.metrics.roc_auc_score`` (ties get half credit: it is the
Mann-Whitney U statistic). ``pr_auc`` matches MAVD's frame-level AP: the area under the
precision-recall curve by the trapezoid rule over recall, as
``sklearn.metrics.auc(recall, precision)`` after ``precision_recall_curve``. ``pro_auc`` is
MVTec AD's per-region overlap (anomalib's AUPRO) up to a false-positive rate of 0.3.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from edgesentry.errors import InputError

__all__ = ["roc_auc", "pr_auc", "pro_auc", "roc_curve", "precision_recall_curve"]


def _validate(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.size != s.size:
        raise InputError(f"labels and scores must have the same size; got {y.size} labels and {s.size} scores")
    if y.size == 0:
        raise InputError("labels and scores are empty")
    if not np.all(np.isfinite(s)):
        raise InputError(f"scores contain {np.count_nonzero(~np.isfinite(s))} NaN/Inf values")
    uniq = np.unique(y)
    if not np.all(np.isin(uniq, [0, 1, False, True])):
        raise InputError(f"labels must be binary (0/1 or bool); got values {uniq[:10].tolist()}")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise InputError("labels contain a single class; AUC is undefined")
    return y, s


def _binary_clf_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative true/false positives at each distinct score, highest score first."""
    order = np.argsort(s, kind="mergesort")[::-1]
    s, y = s[order], y[order]
    distinct = np.flatnonzero(np.diff(s)) if s.size > 1 else np.array([], dtype=np.intp)
    thresh_idx = np.r_[distinct, y.size - 1]
    tps = np.cumsum(y)[thresh_idx].astype(np.float64)
    fps = (1 + thresh_idx - tps).astype(np.float64)
    return fps, tps, s[thresh_idx]


def roc_curve(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rate, true-positive rate and thresholds, starting at (0, 0)."""
    y, s = _validate(labels, scores)
    fps, tps, thr = _binary_clf_curve(y, s)
    fpr = np.r_[0.0, fps / fps[-1]]
    tpr = np.r_[0.0, tps / tps[-1]]
    return fpr, tpr, np.r_[np.inf, thr]


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve (trapezoid over the full curve, ties counted half).

    Args:
        labels: binary ground truth, any shape (flattened), 1/True = anomaly.
        scores: anomaly scores of the same size, higher = more anomalous.
    """
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(np.trapezoid(tpr, fpr))


def precision_recall_curve(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and thresholds as ``sklearn.metrics.precision_recall_curve``.

    Precision and recall run from the highest recall to (recall 0, precision 1); the
    curve stops at the threshold where full recall is first reached.
    """
    y, s = _validate(labels, scores)
    fps, tps, thr = _binary_clf_curve(y, s)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    last = int(np.searchsorted(tps, tps[-1]))  # first index reaching full recall
    keep = slice(last, None, -1)
    return np.r_[precision[keep], 1.0], np.r_[recall[keep], 0.0], thr[keep]


def pr_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the precision-recall curve by trapezoids over recall (MAVD's AP).

    This is ``auc(recall, precision)`` of the official MAVD ``test()``; it is not the
    step-wise ``average_precision_score``.
    """
    precision, recall, _ = precision_recall_curve(labels, scores)
    # recall decreases along the arrays; integrate in increasing order
    return float(np.trapezoid(precision[::-1], recall[::-1]))


def pro_auc(masks: Sequence[ArrayLike], maps: Sequence[ArrayLike], *, max_fpr: float = 0.3) -> float:
    """Area under the per-region-overlap curve up to ``max_fpr``, divided by ``max_fpr``.

    The MVTec AD protocol (Bergmann et al. 2021; anomalib's AUPRO): the regions are the
    8-connected components of every ground-truth mask; at a threshold ``t`` the PRO is the mean,
    over all regions of all images, of the fraction of the region's pixels with map ``>= t``, and
    the FPR is the fraction of normal pixels (mask 0, every image) with map ``>= t``. The curve
    through every distinct map value, from (0, 0) and linear in between, is integrated by
    trapezoids up to ``FPR = max_fpr`` (interpolated there). Computed exactly from one sort of
    all pixels: each anomalous pixel adds ``1 / (regions x its region's size)`` to the PRO.

    Args:
        masks: per image, an (H, W) ground truth (nonzero = anomaly; all zero for good images).
        maps: per image, the (H, W) anomaly map (higher = more anomalous).
        max_fpr: the false-positive rate the curve is integrated to (0.3 in MVTec AD).
    """
    from scipy import ndimage

    if len(masks) != len(maps) or not masks:
        raise InputError(f"pro_auc needs one mask per map; got {len(masks)} masks and {len(maps)} maps")
    if not 0.0 < max_fpr <= 1.0:
        raise InputError(f"max_fpr must lie in (0, 1]; got {max_fpr}")
    scores, weights, normal, sizes = [], [], [], []
    for i, (mask, amap) in enumerate(zip(masks, maps)):
        m, a = np.asarray(mask) > 0, np.asarray(amap, dtype=np.float64)
        if m.shape != a.shape:
            raise InputError(f"image {i}: mask shape {m.shape} differs from the map's {a.shape}")
        labels, count = ndimage.label(m, structure=np.ones((3, 3), bool))
        size = np.bincount(labels.ravel()).astype(np.float64)
        size[0] = np.inf  # background pixels carry no PRO weight
        scores.append(a.ravel())
        weights.append(1.0 / size[labels.ravel()])
        normal.append(~m.ravel())
        sizes.append(count)
    regions = sum(sizes)
    s, w, n = np.concatenate(scores), np.concatenate(weights) / max(regions, 1), np.concatenate(normal)
    if regions == 0 or n.all():
        raise InputError("pro_auc needs at least one anomalous region in the masks")
    if not n.any():
        raise InputError("pro_auc needs normal pixels (mask 0) to measure false positives")
    if not np.all(np.isfinite(s)):
        raise InputError(f"maps contain {np.count_nonzero(~np.isfinite(s))} NaN/Inf values")
    order = np.argsort(s, kind="mergesort")[::-1]
    s, w, n = s[order], w[order], n[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # the last pixel of each distinct value
    fpr = np.r_[0.0, np.cumsum(n)[last] / n.sum()]
    pro = np.r_[0.0, np.cumsum(w)[last]]
    k = int(np.searchsorted(fpr, max_fpr, side="right"))
    fpr_c, pro_c = fpr[:k], pro[:k]
    if k < fpr.size and fpr_c[-1] < max_fpr:  # the segment crossing max_fpr, cut there
        frac = (max_fpr - fpr[k - 1]) / (fpr[k] - fpr[k - 1])
        fpr_c, pro_c = np.r_[fpr_c, max_fpr], np.r_[pro_c, pro[k - 1] + frac * (pro[k] - pro[k - 1])]
    return float(np.trapezoid(pro_c, fpr_c) / max_fpr)
