"""``edgesentry watch`` with the ISSTAD image detector (tiny reference weights) on a real video."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edgesentry
from edgesentry.cli import main
from tests.reliability.isstad_bundle import convert_tiny

from .helpers import check_accounting, read_jsonl

cv2 = pytest.importorskip("cv2")


def test_watch_isstad_bundle_on_video(shared: Path, tmp_path: Path, torch_one_thread) -> None:
    if not Path(edgesentry.__file__).with_name("detectors").joinpath("isstad.py").exists():
        pytest.skip("isstad family not in this checkout")
    bundle = convert_tiny(shared, tmp_path / "isstad")
    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(5)]
    frames[3][10:30, 20:40] = (255, 0, 0)  # a red defect: colour order matters for the score
    video = tmp_path / "line.avi"
    # Lossless codec so the oracle sees exactly the pixels the runtime decodes.
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"FFV1"), 5, (64, 48))
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()

    code = main(["watch", str(bundle), str(video), "--jsonl", str(tmp_path / "r.jsonl"), "--summary",
                 str(tmp_path / "s.json"), "--batch", "3", "--latency-budget", "1000", "--quiet",
                 "--overlays", str(tmp_path / "ov"), "--overlay-threshold=-1e9"])
    assert code == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    records = read_jsonl(tmp_path / "r.jsonl")
    check_accounting(records, summary)
    assert summary["processed"] == 5 and summary["failed"] == 0 and summary["dropped"] == 0
    assert summary["mean_batch"] > 1  # frames went through ISSTAD's batched graph
    det = edgesentry.load(bundle)
    for rec in records:
        oracle = det.predict(frames[rec["frame"]]).score  # RGB, unbatched
        assert rec["score"] == pytest.approx(oracle, rel=1e-5, abs=1e-7)
    assert len(list((tmp_path / "ov").glob("frame_*.png"))) == 5
