"""Metrics: against scikit-learn on fresh random inputs and against the FERS golden AUCs."""

from __future__ import annotations

import re

import numpy as np
import pytest

from edgesentry import InputError
from edgesentry.metrics import pr_auc, roc_auc

sklearn_metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn is the peer these metrics must equal")


@pytest.mark.parametrize("n", [2, 17, 1000])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])  # ties get half credit
def test_roc_auc_matches_sklearn(rng, n, ties):
    labels = rng.integers(0, 2, n)
    labels[0], labels[-1] = 0, 1  # both classes present
    scores = rng.normal(size=n) + labels
    if ties:
        scores = np.round(scores, 1)
    assert roc_auc(labels, scores) == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize("n", [2, 50, 5000])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_pr_auc_is_trapezoid_over_recall(rng, n, ties):
    labels = rng.integers(0, 2, n)
    labels[0], labels[-1] = 0, 1
    scores = rng.random(n) + 0.5 * labels
    if ties:
        scores = np.round(scores, 1)
    precision, recall, _ = sklearn_metrics.precision_recall_curve(labels, scores)
    assert pr_auc(labels, scores) == pytest.approx(sklearn_metrics.auc(recall, precision), abs=1e-12)


def test_roc_auc_reproduces_fers_each_auc(shared):
    """The six FERS ABU score maps and ground-truth PNGs give each_auc.txt to 1e-12."""
    import scipy.io
    from PIL import Image

    root = shared / "reference/fers/abu_scores"
    names = [line.split(":")[1].strip() for line in (root / "test_list.txt").read_text().splitlines() if line.strip()]
    expected = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"aviris\\(\S+):([0-9.]+)", (root / "each_auc.txt").read_text())
    }
    assert len(names) == 6 and set(names) == set(expected)
    for i, name in enumerate(names, start=1):
        score = scipy.io.loadmat(root / f"scores/{i}score.mat")["result"][0]
        gt = np.asarray(Image.open(root / f"ground_truth/aviris/{name}.png")) > 0
        assert gt.shape == score.shape
        assert roc_auc(gt, score) == pytest.approx(expected[name], abs=1e-12), name


@pytest.mark.parametrize(
    "labels, scores, match",
    [
        ([0, 1], [0.1], "same size"),
        ([], [], "empty"),
        ([1, 1, 1], [0.1, 0.2, 0.3], "single class"),
        ([0, 1, 2], [0.1, 0.2, 0.3], "binary"),
        ([0, 1], [0.1, np.nan], "NaN"),
    ],
)
def test_metric_errors_name_the_problem(labels, scores, match):
    with pytest.raises(InputError, match=match):
        roc_auc(labels, scores)
    with pytest.raises(InputError, match=match):
        pr_auc(labels, scores)
