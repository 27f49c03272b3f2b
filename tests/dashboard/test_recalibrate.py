"""Recalibration round trip: a line run with the tiny ISSTAD bundle writes an audit log; `edgesentry
recalibrate` fits new thresholds from its accepted parts into a new bundle version with an audit
record; the old version is untouched and still loads; `info` shows the lineage; tampering with a
record (or the thresholds) is detected on load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import edgesentry
from edgesentry.bundle import Bundle
from edgesentry.cli import main
from edgesentry.errors import ChecksumError
from edgesentry.line import LineRuntime, load_line_file
from tests.line.helpers import base_images, read_jsonl, write_video

N_FRAMES = 40


def _calibrated_copy(isstad_bundle: Path, tmp: Path) -> Path:
    bundle = tmp / "isstad"
    shutil.copytree(isstad_bundle, bundle)
    det = edgesentry.load(bundle, backend="onnxruntime")
    rng = np.random.default_rng(5)
    normal = base_images()[::2] + [rng.integers(60, 200, (48, 64, 3), dtype=np.uint8) for _ in range(6)]
    det.calibrate(normal)
    det.save(bundle)
    return bundle


def _audit_log(bundle: Path, tmp: Path) -> Path:
    images = base_images()[::2]  # the defect-free ones
    write_video(tmp / "cam.avi", images, fps=30, n=N_FRAMES)
    (tmp / "line.toml").write_text(f"""
[line]
name = "recal"
deadline_ms = 600000
[detectors.isstad]
bundle = "{bundle}"
backend = "onnxruntime"
[[cameras]]
id = "cam"
detector = "isstad"
policy = "block"
source = {{ kind = "video", path = "cam.avi", realtime = false }}
[[stations]]
id = "st"
cameras = ["cam"]
rule = {{ kind = "max", threshold = 0.999 }}
[[triggers]]
station = "st"
kind = "free_run"
[outputs]
audit = "audit.jsonl"
""")
    summary = LineRuntime(load_line_file(tmp / "line.toml")).start().join(300)
    assert summary is not None and summary["identity_holds"] and summary["processed"] == N_FRAMES
    return tmp / "audit.jsonl"


def _oracle_raw_threshold(audit: Path, old: dict, quantile: float = 0.99, margin: float = 0.1) -> float:
    """The calibration rule, restated: accepted complete parts' scores back on the raw scale."""
    span = old["score_max"] - old["score_min"]
    raw = [old["threshold"] + (f["score"] - 0.5) * span
           for r in read_jsonl(audit) if r.get("decision") == "accept" and not r["degraded"] and not r["late"]
           for f in r["frames"] if f["status"] == "ok"]
    hi, mid = np.quantile(raw, quantile), np.median(raw)
    return float(hi + margin * (hi - mid))


def test_recalibration_round_trip_lineage_and_tampering(isstad_bundle: Path, tmp_path: Path, monkeypatch,
                                                         capsys) -> None:
    v1 = _calibrated_copy(isstad_bundle, tmp_path)
    audit = _audit_log(v1, tmp_path)
    v1_meta = (v1 / "meta.json").read_bytes()
    old = Bundle.open(v1).calibration

    monkeypatch.delenv("EDGESENTRY_TOKEN", raising=False)
    assert main(["recalibrate", str(v1), "--from-log", str(audit)]) == 1  # no token: refused
    assert "token" in capsys.readouterr().err
    (tmp_path / "token").write_text("alice:s3cret\n")
    assert main(["recalibrate", str(v1), "--from-log", str(audit), "--token-file", str(tmp_path / "token")]) == 0
    out = json.loads(capsys.readouterr().out.split("\ndone")[0].rsplit("\n}", 1)[0] + "\n}")
    v2 = tmp_path / "isstad.v2"
    assert out["bundle"] == str(v2) and out["version"] == 2 and out["who"] == "alice"
    assert (v1 / "meta.json").read_bytes() == v1_meta  # never in place

    expected = _oracle_raw_threshold(audit, old)
    record = Bundle.open(v2).meta["lineage"][-1]
    assert record["new"]["raw_threshold"] == pytest.approx(expected, rel=1e-9)
    assert record["old"]["raw_threshold"] == pytest.approx(old["threshold"], rel=1e-12)
    assert record["parts"]["count"] == sum(r["decision"] == "accept" for r in read_jsonl(audit))
    assert edgesentry.load(v2, backend="onnxruntime").raw_threshold == pytest.approx(expected, rel=1e-9)
    assert edgesentry.load(v1, backend="onnxruntime").raw_threshold == pytest.approx(old["threshold"], rel=1e-12)

    # a second recalibration from v2 chains onto the first record; the existing v2 is never overwritten
    monkeypatch.setenv("EDGESENTRY_TOKEN", "bob:other")
    assert main(["recalibrate", str(v2), "--from-log", str(audit), "--out", str(v2)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["recalibrate", str(v2), "--from-log", str(audit)]) == 0
    capsys.readouterr()
    v3 = tmp_path / "isstad.v3"
    lineage = Bundle.open(v3).meta["lineage"]
    assert [r["version"] for r in lineage] == [2, 3] and [r["who"] for r in lineage] == ["alice", "bob"]
    assert lineage[1]["prev"] == lineage[0]["digest"]

    assert main(["info", str(v3)]) == 0
    shown = capsys.readouterr().out
    assert "version 3" in shown and "v2 " in shown and "by alice" in shown and "v3 " in shown and "by bob" in shown

    meta = json.loads((v3 / "meta.json").read_text())
    for tamper, why in (
        (lambda m: m["lineage"][0].update(who="mallory"), "was modified"),
        (lambda m: m["lineage"].pop(0), "does not follow"),
        (lambda m: m["calibration"].update(threshold=m["calibration"]["threshold"] * 2), "without an audit record"),
    ):
        bad = json.loads(json.dumps(meta))
        tamper(bad)
        (v3 / "meta.json").write_text(json.dumps(bad))
        with pytest.raises(ChecksumError, match=why):
            Bundle.open(v3)
        assert main(["info", str(v3)]) == 1
        capsys.readouterr()
