"""Accuracy against the paper's line-scan peers (../shared/peers/hyperad, run from there) and
global RX, on the ABU scenes scanned top to bottom (real data with ground truth).

The bounds are the issue's: edgesentry's line scan with all bands within 0.01 of global RX's
mean AUC over the scenes, and at ERX's dimension (5) at least ERX's mean AUC. ERX draws its
sparse random projection from numpy's global generator: seeded, so the run repeats (the
benchmark uses the same seed: 0.8927 mean).
"""

from __future__ import annotations

import numpy as np
import pytest

import edgesentry
from edgesentry.io.hsi import read_cube, read_ground_truth
from edgesentry.metrics import roc_auc

pytestmark = [pytest.mark.slow, pytest.mark.shared]


@pytest.fixture(scope="module")
def scenes(shared):
    paths = sorted((shared / "data" / "abu").glob("*.mat"))
    if len(paths) < 11:
        pytest.skip(f"the 11 ABU scenes are not all in {shared / 'data' / 'abu'}")
    return [(p.stem, read_cube(p).astype(np.float64), read_ground_truth(p)) for p in paths]


@pytest.fixture(scope="module")
def peers(shared):
    pytest.importorskip("sklearn", reason="the ERX peer needs scikit-learn")
    pytest.importorskip("tqdm", reason="the peers' simulator module imports tqdm")
    import sys

    folder = shared / "peers" / "hyperad"
    if not folder.is_dir():
        pytest.skip(f"peers not found at {folder}")
    sys.path.insert(0, str(folder))
    try:
        from detectors import erx, rx_baseline
    finally:
        sys.path.remove(str(folder))
    return erx, rx_baseline


def _peer_scores(detector, cube: np.ndarray) -> np.ndarray:
    """Lines the peer leaves unscored (its buffer) stay 0, as its own simulator leaves them."""
    out = np.zeros(cube.shape[:2])
    for i, line in enumerate(cube):
        scores = detector.forward(line)
        if scores is not None:
            out[i] = scores
    return out


def _ours(cube: np.ndarray, **options) -> np.ndarray:
    return np.nan_to_num(edgesentry.load("rx", mode="linescan", **options).predict(cube).extras["scores"])


def test_abu_line_scan_against_global_rx_and_erx(scenes, peers):
    erx = peers[0]
    auc = {"all bands": [], "5 dims": [], "global": [], "erx": []}
    for _, cube, truth in scenes:
        h, w, b = cube.shape
        auc["all bands"].append(roc_auc(truth, _ours(cube, warmup=10)))
        auc["5 dims"].append(roc_auc(truth, _ours(cube, warmup=10, dims=5)))
        auc["global"].append(roc_auc(truth, edgesentry.load("rx").predict(cube).extras["scores"]))
        np.random.seed(0)  # noqa: NPY002 - the peer's projection comes from the legacy global generator
        auc["erx"].append(roc_auc(truth, _peer_scores(erx.ERX(n_bands=b, n_pixels=w, buffer_len=10), cube)))
    mean = {k: float(np.mean(v)) for k, v in auc.items()}
    assert mean["global"] == pytest.approx(0.9395, abs=5e-4)  # mean of shared/data/abu/README.md
    assert mean["all bands"] >= mean["global"] - 0.01, mean
    assert mean["5 dims"] >= mean["erx"], mean


def test_rx_baseline_peer_on_the_same_scan(scenes, peers):
    """The paper's RX baseline (a 10-line window, np.linalg.inv) side by side on one scene."""
    name, cube, truth = next(s for s in scenes if s[0] == "abu-airport-2")
    h, w, b = cube.shape
    baseline = roc_auc(truth, _peer_scores(peers[1].RXBaseline(n_bands=b, n_pixels=w, buffer_len=10), cube))
    ours = roc_auc(truth, _ours(cube, warmup=10))
    windowed = roc_auc(truth, _ours(cube, warmup=10, window=10))  # the same 10-line memory, causal
    assert baseline == pytest.approx(0.8612, abs=1e-3)
    assert ours > baseline and windowed > 0.8
