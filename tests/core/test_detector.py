"""The one pipeline of ``Detector``: chunked, timed ``predict_batch``; the kernel tier resolved once."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import edgesentry
from edgesentry.detector import Detector
from edgesentry.errors import InputError, KernelUnavailableError
from edgesentry.kernels import rx as rx_kernels
from edgesentry.result import Result


class Stacking(Detector):
    """A family whose graph takes a stacked chunk: records every graph call."""

    family = "stacking"
    batches_graph = True

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size = batch_size
        self.graph_calls: list[int] = []

    def preprocess(self, x: Any, scale: float = 1.0) -> np.ndarray:
        return np.asarray(x, np.float64) * scale

    def forward_batch(self, prepared: list[np.ndarray]) -> np.ndarray:
        self.graph_calls.append(len(prepared))
        return np.stack(prepared).sum(axis=1)

    def postprocess_batch(self, raw: np.ndarray, prepared: list[np.ndarray]) -> list[Result]:
        return [Result(score=float(s)) for s in raw]


def test_predict_batch_runs_chunks_of_batch_size_and_shares_the_stage_times():
    det = Stacking(batch_size=3)
    xs = [np.full(4, i) for i in range(7)]  # 3 + 3 + 1: the last chunk is ragged
    results = det.predict_batch(xs, scale=2.0)
    assert det.graph_calls == [3, 3, 1]
    assert [r.score for r in results] == [8.0 * i for i in range(7)]
    assert [r.info["batch"] for r in results] == [3, 3, 3, 3, 3, 3, 1]
    for r in results:
        assert set(r.timings) == {"preprocess", "graph", "postprocess", "total"}
        assert r.timings["total"] == pytest.approx(sum(r.timings[k] for k in ("preprocess", "graph", "postprocess")))
    one = det.predict(np.ones(4), scale=3.0)  # predict is a batch of one through the same loop
    assert one.score == 12.0 and one.info["batch"] == 1 and det.graph_calls[-1] == 1
    with pytest.raises(InputError, match="empty sequence"):
        det.predict_batch([])


def test_kernel_tier_is_resolved_at_construction(monkeypatch):
    tiers = rx_kernels.GLOBAL_RX.available()
    want = "cpu" if tiers["cpu"] is None else "reference"
    det = edgesentry.load("rx")
    assert det.kernels == want and det.info()["kernels"] == want
    assert det.predict(np.random.default_rng(0).normal(size=(6, 5, 3))).info["kernel_tier"] == want
    monkeypatch.setenv("EDGESENTRY_KERNELS", "reference")
    forced = edgesentry.load("rx")
    monkeypatch.delenv("EDGESENTRY_KERNELS")  # read once, at construction
    assert forced.info()["kernels"] == "reference"
    assert forced.predict(np.random.default_rng(0).normal(size=(6, 5, 3))).info["kernel_tier"] == "reference"


def test_an_explicit_tier_that_cannot_run_fails_at_load():
    reason = rx_kernels.GLOBAL_RX.available()["cuda"]
    if reason is None:
        pytest.skip("the cuda tier can run here")
    with pytest.raises(KernelUnavailableError, match="cuda"):
        edgesentry.load("rx", kernels="cuda")
