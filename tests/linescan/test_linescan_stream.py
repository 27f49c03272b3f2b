"""Line-scan in the stream runtime: a cube replayed at a line rate, a camera callback, stalls,
bad lines, look-ahead delays, objects in the records, the CLI (convert, detect, watch)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

import edgesentry
from edgesentry import ConfigError
from edgesentry.cli import main
from edgesentry.stream.linescan import CallbackLineSource, CubeLineSource, open_line_source
from edgesentry.stream.sources import IDLE, SourceDisconnected
from tests.linescan.helpers import scan
from tests.stream.helpers import check_accounting, read_jsonl


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_cube_source_keeps_a_fixed_line_schedule(rng):
    cube = scan(rng, 5, 4, 3)
    clock = FakeClock()
    source = CubeLineSource(cube, line_rate=50.0, clock=clock, sleep=clock.sleep)
    source.open()
    first = source.read()
    clock.now += 0.005  # the consumer took 5 ms: the next line waits only the rest of its 20 ms
    second = source.read()
    clock.now += 0.05  # a slow consumer: lines already due come at once (no drift, no extra wait)
    third = source.read()
    assert clock.slept == pytest.approx([0.015])
    assert [f.name for f in (first, second, third)] == ["cube#0", "cube#1", "cube#2"]
    assert second.position_ms == pytest.approx(20.0) and np.array_equal(third.image, cube[2])
    source.close()
    source.open()  # a reopened source continues where it was
    assert source.read().name == "cube#3" and source.read().name == "cube#4" and source.read() is None


def test_open_line_source_kinds(rng, tmp_path):
    np.save(tmp_path / "scan.npy", scan(rng, 3, 4, 2))
    assert isinstance(open_line_source(str(tmp_path / "scan.npy"), line_rate=10), CubeLineSource)
    assert isinstance(open_line_source(lambda: None), CallbackLineSource)
    with pytest.raises(ConfigError, match="cube file"):
        open_line_source("movie.mp4")
    with pytest.raises(ConfigError, match="line rate"):
        CubeLineSource(tmp_path / "scan.npy", line_rate=0)


def _stream(detector, source, tmp_path: Path, **options):
    summary = edgesentry.stream(detector, source, jsonl=tmp_path / "r.jsonl", summary=tmp_path / "s.json",
                                handle_signals=False, **options)
    return summary, read_jsonl(tmp_path / "r.jsonl"), json.loads((tmp_path / "s.json").read_text())


def test_every_line_leaves_once_with_its_own_scores_after_its_delay(rng, tmp_path):
    cube = scan(rng, 30, 12, 4)
    cube[14:17, 3:5] += 400.0  # one target, 3 lines x 2 columns
    options = {"warmup": 5, "lookahead": 2, "update_threshold": 60.0, "pixel_threshold": 150.0}
    expected = edgesentry.load("rx", mode="linescan", **options).predict(cube).extras["scores"]
    summary, records, written = _stream(edgesentry.load("rx", mode="linescan", **options), cube, tmp_path,
                                        policy="block")
    check_accounting(records, written)
    assert summary.exit_code == 0 and written["processed"] == 30
    for rec in records:
        assert rec["line"] == rec["frame"] and rec["score"] == pytest.approx(np.nanmax(expected[rec["frame"]]))
        assert rec["delay_lines"] == (max(2, 4 - rec["frame"]) if rec["frame"] < 5 else min(2, 29 - rec["frame"]))
    objects = [o for rec in records for o in rec["objects"]]
    assert [(o["first_line"], o["first_col"], o["last_line"], o["last_col"], o["pixels"]) for o in objects] == [
        (14, 3, 16, 4, 6)]


def test_a_bad_line_fails_alone(rng, tmp_path):
    lines = list(scan(rng, 12, 8, 3))
    lines[6] = np.zeros((7, 3))  # a short line from a glitching camera
    lines[8] = lines[8].copy()
    lines[8][2, 1] = np.nan
    feed = iter(lines)

    def grab():
        try:
            return next(feed)
        except StopIteration:
            raise StopIteration from None

    det = edgesentry.load("rx", mode="linescan", warmup=3)
    summary, records, written = _stream(det, CallbackLineSource(grab), tmp_path, policy="block")
    check_accounting(records, written)
    failed = {r["frame"]: r["reason"] for r in records if r["status"] == "failed"}
    assert failed == {6: "InputError", 8: "InputError"} and written["processed"] == 10


def test_stalled_camera_is_reported_and_lost(rng, tmp_path):
    """The callback hangs after 4 lines: each read waits the stall timeout, the runtime counts a
    reconnect per stall and gives up after max_retries with exit code 3 (source_lost)."""
    lines = scan(rng, 4, 8, 3)
    hang = threading.Event()
    served = []

    def grab():
        if len(served) == len(lines):
            hang.wait(5.0)  # a camera driver stuck inside its grab call
            return None
        served.append(1)
        return lines[len(served) - 1]

    det = edgesentry.load("rx", mode="linescan")
    source = CallbackLineSource(grab, stall_timeout_s=0.05)
    summary, records, written = _stream(det, source, tmp_path, policy="block", max_retries=2,
                                        backoff_s=(0.01, 0.02))
    hang.set()
    check_accounting(records, written)
    assert summary.exit_code == 3 and written["exit_reason"] == "source_lost"
    assert written["processed"] == 4 and written["reconnects"] == 2


def test_a_camera_with_no_lines_ready_stalls_after_the_timeout():
    source = CallbackLineSource(lambda: None, stall_timeout_s=0.05)
    source.open()
    assert source.read() is IDLE
    with pytest.raises(SourceDisconnected, match="no line for 0.05 s"):
        for _ in range(1000):
            source.read()


def test_cli_convert_detect_and_watch(rng, tmp_path, capsys):
    cube = scan(rng, 20, 10, 4)
    np.save(tmp_path / "scan.npy", cube)
    assert main(["convert", "rx", "--linescan", "--warmup", "4", "--lookahead", "1", "-o",
                 str(tmp_path / "ls")]) == 0
    assert main(["detect", "rx", str(tmp_path / "scan.npy"), "--linescan", "--warmup", "4", "--lookahead", "1",
                 "--out", str(tmp_path / "out")]) == 0
    detected = np.load(tmp_path / "out" / "scan_scores.npy")
    assert main(["watch", str(tmp_path / "ls"), str(tmp_path / "scan.npy"), "--line-rate", "2000", "--policy",
                 "block", "--jsonl", str(tmp_path / "r.jsonl"), "--summary", str(tmp_path / "s.json"),
                 "--quiet"]) == 0
    records = read_jsonl(tmp_path / "r.jsonl")
    check_accounting(records, json.loads((tmp_path / "s.json").read_text()))
    for rec in records:
        assert rec["score"] == pytest.approx(np.nanmax(detected[rec["line"]]), rel=1e-12)
    assert "produced 20 = processed 20" in capsys.readouterr().out
    assert main(["detect", "rx", str(tmp_path / "scan.npy"), "--warmup", "4", "--out", str(tmp_path / "o")]) == 1
    assert main(["watch", "rx", str(tmp_path / "scan.npy"), "--line-rate", "10", "--quiet"]) == 1
