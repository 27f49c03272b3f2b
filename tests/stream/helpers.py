"""Small detectors and sources for the stream tests (numpy only, so they run anywhere)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry.detector import Detector
from edgesentry.errors import InputError, describe
from edgesentry.result import Result
from edgesentry.stream import RawFrame, Source, SourceDisconnected, SourceUnavailable


class MeanDetector(Detector):
    """Scores an (H, W, 3) uint8 RGB image by its mean brightness; map = per-pixel grey."""

    family = "test-mean"
    map_shares_score_scale = True

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.batch_sizes: list[int] = []
        self._lock = threading.Lock()

    def preprocess(self, x: Any) -> np.ndarray:
        if not isinstance(x, np.ndarray) or x.ndim != 3 or x.shape[2] != 3 or x.dtype != np.uint8:
            raise InputError(f"expected an (H, W, 3) uint8 RGB image; got {describe(x)}")
        return x

    def postprocess(self, raw: np.ndarray, prepared: np.ndarray) -> Result:
        grey = prepared.astype(np.float64).mean(axis=2) / 255.0
        return Result(score=float(grey.mean()), anomaly_map=grey.astype(np.float32))

    def predict_batch(self, xs):
        items = list(xs)
        with self._lock:
            self.batch_sizes.append(len(items))
        return super().predict_batch(items)


def mean_score(rgb: np.ndarray) -> float:
    """The oracle for ``MeanDetector``: written independently of it."""
    return float(np.mean(rgb, dtype=np.float64) / 255.0)


class NoOpDetector(Detector):
    """Returns score 0 without looking at the pixels (measures the runtime alone)."""

    family = "test-noop"

    def preprocess(self, x: Any) -> Any:
        return x

    def postprocess(self, raw: Any, prepared: Any) -> Result:
        return Result(score=0.0)


class FlakySource(Source):
    """``n`` synthetic frames; disconnects before the reads listed in ``disconnect_at``.

    After each disconnect the first ``refuse_reopen`` calls to ``open`` fail too (a camera
    that takes a moment to come back). ``lost_after`` makes it never come back.
    """

    live = True

    def __init__(self, n: int, disconnect_at=(), refuse_reopen: int = 0, lost_after: int | None = None,
                 shape=(24, 32)):
        self.name = "flaky"
        self.n = n
        self.disconnect_at = set(disconnect_at)
        self.refuse_reopen = refuse_reopen
        self.lost_after = lost_after
        self.shape = shape
        self.pos = 0
        self.opens = 0
        self.refusals_left = 0
        self.disconnects = 0

    def open(self) -> None:
        if self.lost_after is not None and self.disconnects > 0:
            raise SourceUnavailable("camera gone for good")
        if self.refusals_left > 0:
            self.refusals_left -= 1
            raise SourceUnavailable("camera not ready")
        self.opens += 1

    def read(self):
        if self.pos >= self.n:
            return None
        if self.pos in self.disconnect_at or (self.lost_after is not None and self.pos == self.lost_after):
            self.disconnect_at.discard(self.pos)
            self.disconnects += 1
            self.refusals_left = self.refuse_reopen
            if self.lost_after is not None:
                self.lost_after = -1
            raise SourceDisconnected(f"link down before frame {self.pos}")
        image = frame_image(self.pos, self.shape)
        self.pos += 1
        return RawFrame(f"flaky#{self.pos - 1}", image=image)


def frame_image(i: int, shape=(24, 32)) -> np.ndarray:
    """Deterministic test frame ``i``: a brightness ramp so every frame scores differently."""
    h, w = shape
    base = (np.arange(h * w * 3, dtype=np.int64).reshape(h, w, 3) * 7 + 13 * i) % 200
    return (base + i % 50).astype(np.uint8)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Parse every line strictly: a torn or partial line fails the test here."""
    text = Path(path).read_text()
    assert text == "" or text.endswith("\n"), "JSONL file ends with a partial line"
    return [json.loads(line) for line in text.splitlines()]


def check_accounting(records: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """Every produced index appears exactly once, and the counts match the summary's."""
    frames = [r["frame"] for r in records]
    assert sorted(frames) == list(range(summary["produced"])), "a frame index is missing or repeated"
    by_status = {s: sum(r["status"] == s for r in records) for s in ("ok", "failed", "dropped")}
    assert by_status == {"ok": summary["processed"], "failed": summary["failed"], "dropped": summary["dropped"]}
    assert summary["produced"] == summary["processed"] + summary["dropped"] + summary["failed"]
    assert summary["pending"] == 0 and summary["identity_holds"] is True
