"""Drift monitoring of passed-part scores: PSI against an independent oracle, and the line with a
video whose brightness shifts halfway (alert within the window) vs the same video unshifted
(no alert over a long run; the false alarm rate is printed)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from edgesentry.line import LineRuntime
from edgesentry.line.drift import DriftMonitor, DriftSettings, psi
from tests.line.helpers import read_jsonl, write_video
from tests.stream.helpers import MeanDetector

SHAPE = (24, 32)
#: small windows so the test is quick; PSI of two same-distribution samples of 200 and 100 is
#: about (bins - 1) * (1/200 + 1/100) = 0.135 on average, hence the higher thresholds
SETTINGS = {"reference": 200, "window": 100, "min_samples": 100, "every": 5, "bins": 10,
            "psi_warn": 0.2, "psi_alert": 0.3, "ks_warn": 0.01, "ks_alert": 0.0001, "confirm": 3}


def psi_oracle(reference: list[float], window: list[float], bins: int) -> float:
    """PSI written plainly: bins cut at the reference's deciles, proportions floored at 1e-4."""
    ref = sorted(reference)
    cuts = sorted(set(float(np.quantile(ref, k / bins)) for k in range(1, bins)))

    def shares(values: list[float]) -> list[float]:
        counts = [0] * (len(cuts) + 1)
        for v in values:
            counts[sum(v >= c for c in cuts)] += 1
        return [max(c / len(values), 1e-4) for c in counts]

    return sum((w - r) * math.log(w / r) for r, w in zip(shares(reference), shares(window), strict=True))


def test_psi_matches_the_oracle_on_fresh_samples() -> None:
    rng = np.random.default_rng()
    for shift in (0.0, 0.3, 2.0):
        ref, win = rng.normal(0, 1, 300), rng.normal(shift, 1, 120)
        assert psi(ref, win, 10) == pytest.approx(psi_oracle(list(ref), list(win), 10), rel=1e-9, abs=1e-12)


def test_monitor_alerts_on_a_shift_and_stays_quiet_without() -> None:
    rng = np.random.default_rng(7)
    settings = DriftSettings.from_dict(SETTINGS)
    quiet = DriftMonitor("a", settings)
    changes = [quiet.add(float(v)) for v in rng.normal(0.5, 0.05, 5000)]
    assert quiet.evaluations > 900 and quiet.alerts == 0
    assert all(c is None or c["state"] != "alert" for c in changes)
    moved = DriftMonitor("b", settings, reference=list(rng.normal(0.5, 0.05, 200)))
    states = [moved.add(float(v)) for v in rng.normal(0.6, 0.05, 150)]
    assert moved.state == "alert" and any(c and c["state"] == "alert" for c in states)


def _frames(n: int, shift_at: int | None, seed: int) -> list[np.ndarray]:
    """A textured frame per index with a random brightness; from ``shift_at`` on, 40 levels brighter."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        level = 110 + rng.normal(0, 8) + (40 if shift_at is not None and k >= shift_at else 0)
        frames.append(np.clip(rng.normal(level, 20, (*SHAPE, 3)), 0, 255).astype(np.uint8))
    return frames


def _run_line(tmp: Path, frames: list[np.ndarray]) -> tuple[dict, list[dict]]:
    write_video(tmp / "cam.avi", frames, fps=30, n=len(frames))
    settings = "\n".join(f"{k} = {v}" for k, v in SETTINGS.items())
    (tmp / "line.toml").write_text(f"""
[line]
name = "drift"
deadline_ms = 600000

[detectors.mean]
bundle = "unused"

[[cameras]]
id = "cam"
detector = "mean"
policy = "block"
source = {{ kind = "video", path = "cam.avi", realtime = false }}

[[stations]]
id = "st"
cameras = ["cam"]
rule = {{ kind = "max", threshold = 2.0 }}

[[triggers]]
station = "st"
kind = "free_run"

[drift]
{settings}

[outputs]
audit = "audit.jsonl"
""")
    from edgesentry.line import load_line_file

    cfg = load_line_file(tmp / "line.toml", check_bundles=False)
    runtime = LineRuntime(cfg, detectors={"mean": MeanDetector()}).start()
    summary = runtime.join(300)
    assert summary is not None and summary["identity_holds"]
    return summary, read_jsonl(tmp / "audit.jsonl")


def test_line_alerts_within_the_window_after_a_brightness_shift(tmp_path: Path) -> None:
    n, shift_at = 500, 300
    summary, records = _run_line(tmp_path, _frames(n, shift_at, seed=11))
    parts = [r for r in records if "decision" in r]
    drift = [r for r in records if "drift" in r]
    assert len(parts) == n and all(p["decision"] == "accept" for p in parts)
    alerts = [r for r in drift if r["state"] == "alert"]
    assert alerts, f"no alert after the shift; drift records: {drift}"
    first = alerts[0]
    assert shift_at <= first["part"] < shift_at + SETTINGS["window"], first
    assert all(r["state"] != "alert" for r in drift if r["part"] < shift_at)
    assert first["window_mean"] > first["reference_mean"]
    assert summary["drift"]["cam"]["state"] == "alert"


def test_line_without_a_shift_raises_no_alert_over_a_long_run(tmp_path: Path) -> None:
    n = 3000
    summary, records = _run_line(tmp_path, _frames(n, None, seed=12))
    drift = [r for r in records if "drift" in r]
    evaluations = (n - SETTINGS["reference"] - SETTINGS["min_samples"]) // SETTINGS["every"] + 1
    warns = sum(r["state"] == "warn" for r in drift)
    print(f"\nunshifted {n} frames: {evaluations} drift evaluations, 0 alerts expected; "
          f"state changes: {len(drift)} ({warns} to warn)")
    assert all(r["state"] != "alert" for r in drift)
    assert summary["drift"]["cam"]["state"] != "alert"
