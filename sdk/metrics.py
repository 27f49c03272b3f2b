"""Detection metrics with the semantics the seed repositories use.

``roc_auc`` matches ``sklearn.metrics.roc_auc_score`` (ties get half credit: it is the
Mann-Whitney U statistic). ``pr_auc`` matches MAVD's frame-level AP: the area under the
precision-recall curve by the trapezoid rule over recall, as
``sklearn.metrics.auc(recall, precision)`` after ``precision_recall_curve``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from edgesentry.errors import InputError

__all__ = ["roc_auc", "pr_auc", "roc_curve", "precision_recall_curve"]


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
