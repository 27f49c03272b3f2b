"""``edgesentry watch`` / ``edgesentry.stream`` end to end, with injected faults.

Real inputs: an MJPG video encoded with OpenCV in the test (two frames corrupted on disk),
a hot folder filled while the stream runs (with truncated and non-image files), a source
that disconnects twice, a slow sink, a detector that rejects some frames. Every test checks
the accounting identity and that every frame index appears exactly once in the JSON Lines.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import edgesentry
from edgesentry.cli import main
from edgesentry.errors import ConfigError
from edgesentry.stream import (
    EXIT_SOURCE_LOST,
    CallbackSink,
    IterableSource,
    JsonlSink,
    RawFrame,
    Stream,
)

from .helpers import FlakySource, MeanDetector, check_accounting, frame_image, mean_score, read_jsonl

cv2 = pytest.importorskip("cv2")

N_VIDEO = 24
CORRUPT = (5, 13)


def write_video(path: Path, n: int = N_VIDEO, corrupt: tuple[int, ...] = CORRUPT) -> Path:
    """An MJPG AVI of ``n`` frames; the JPEG data of frames ``corrupt`` overwritten on disk."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    assert writer.isOpened()
    for i in range(n):
        writer.write(cv2.cvtColor(frame_image(i), cv2.COLOR_RGB2BGR))
    writer.release()
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    assert len(starts) == n
    for k in corrupt:
        # A JPEG whose first segment (APP0) claims 65535 bytes, then zeros: undecodable.
        bad = b"\xff\xd8\xff\xe0\xff\xff" + bytes(300)
        data[starts[k]:starts[k] + len(bad)] = bad
    path.write_bytes(bytes(data))
    return path


def decoded_frames(path: Path) -> list[np.ndarray | None]:
    """Independent decode of the video (OpenCV directly), None where the decoder refuses."""
    cap = cv2.VideoCapture(str(path))
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    out: list[np.ndarray | None] = []
    while len(out) < count:
        ok, bgr = cap.read()
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if ok else None)
    cap.release()
    return out


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "line.avi")


def test_video_block_corrupt_frames_batched(video: Path, tmp_path: Path) -> None:
    det = MeanDetector()
    summary = edgesentry.stream(det, str(video), jsonl=tmp_path / "r.jsonl", summary=tmp_path / "s.json",
                                batch_size=4, latency_budget_ms=500, handle_signals=False)
    written = json.loads((tmp_path / "s.json").read_text())
    records = read_jsonl(tmp_path / "r.jsonl")
    check_accounting(records, written)
    assert written["produced"] == N_VIDEO and written["dropped"] == 0 and written["policy"] == "block"
    assert written["failed"] == len(CORRUPT) and written["failed_by_reason"] == {"decode": len(CORRUPT)}
    assert summary.exit_code == 0 and summary.to_dict()["processed"] == written["processed"]
    oracle = decoded_frames(video)
    for rec in records:
        if rec["frame"] in CORRUPT:
            assert rec["status"] == "failed" and "could not decode frame" in rec["error"]
        else:
            assert rec["status"] == "ok"
            assert rec["score"] == pytest.approx(mean_score(oracle[rec["frame"]]), rel=1e-6)
    # Micro-batching: with a generous budget the detector saw full batches of decodable frames.
    assert max(det.batch_sizes) == 4 and sum(det.batch_sizes) == N_VIDEO - len(CORRUPT)


def test_cli_watch_rx_on_video(video: Path, tmp_path: Path, capsys) -> None:
    """The real CLI with a real weight-free detector (global RX on the 3 colour bands)."""
    code = main(["watch", "rx", str(video), "--jsonl", str(tmp_path / "r.jsonl"), "--summary",
                 str(tmp_path / "s.json"), "--batch", "3", "--quiet"])
    assert code == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    records = read_jsonl(tmp_path / "r.jsonl")
    check_accounting(records, summary)
    assert "produced 24 = processed 22 + dropped 0 + failed 2" in capsys.readouterr().out
    rx = edgesentry.load("rx")
    oracle = decoded_frames(video)
    for rec in records:
        if rec["status"] == "ok":
            assert rec["score"] == pytest.approx(rx.predict(oracle[rec["frame"]]).score, rel=1e-6)


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    tmp = path.with_name("." + path.name)  # write-then-rename, as the docs tell producers to
    Image.fromarray(image).save(tmp, format="PNG")
    os.replace(tmp, path)


def test_hot_folder_with_corrupt_files(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    images = {f"a{i:02d}.png": frame_image(i) for i in range(6)}
    for name, img in images.items():
        _write_png(folder / name, img)
    good = (folder / "a00.png").read_bytes()
    (folder / "b_truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "b_empty.png").write_bytes(b"")
    (folder / "b_text.jpg").write_bytes(b"not an image at all\n")
    (folder / "notes.txt").write_text("ignored: not an image suffix")

    def late_arrivals() -> None:  # files that appear while the stream runs
        for i in range(6, 10):
            time.sleep(0.05)
            images[f"c{i:02d}.png"] = frame_image(i)
            _write_png(folder / f"c{i:02d}.png", images[f"c{i:02d}.png"])

    writer = threading.Thread(target=late_arrivals)
    writer.start()
    summary = edgesentry.stream(MeanDetector(), folder, jsonl=tmp_path / "r.jsonl", summary=tmp_path / "s.json",
                                idle_timeout=1.0, handle_signals=False, batch_size=2)
    writer.join()
    written = json.loads((tmp_path / "s.json").read_text())
    records = read_jsonl(tmp_path / "r.jsonl")
    check_accounting(records, written)
    assert summary.exit_code == 0 and written["dropped"] == 0
    assert written["produced"] == 13 and written["failed"] == 3
    by_name = {r["source"]: r for r in records}
    assert set(by_name) == set(images) | {"b_truncated.png", "b_empty.png", "b_text.jpg"}
    for name, img in images.items():
        assert by_name[name]["score"] == pytest.approx(mean_score(img), rel=1e-6)
    for name in ("b_truncated.png", "b_empty.png", "b_text.jpg"):
        assert by_name[name]["status"] == "failed" and by_name[name]["error"].startswith("decode: cannot read image")


def test_source_disconnects_twice_and_recovers(tmp_path: Path) -> None:
    source = FlakySource(30, disconnect_at=(8, 19), refuse_reopen=1)
    summary = edgesentry.stream(MeanDetector(), source, jsonl=tmp_path / "r.jsonl", policy="block",
                                backoff_s=(0.01, 0.05), max_retries=3, handle_signals=False)
    records = read_jsonl(tmp_path / "r.jsonl")
    d = summary.to_dict()
    check_accounting(records, d)
    assert source.disconnects == 2 and source.opens == 3
    assert d["reconnects"] == 4  # two disconnects, each followed by one refused reopen
    assert d["exit_code"] == 0 and d["processed"] == 30
    for rec in records:
        assert rec["score"] == pytest.approx(mean_score(frame_image(rec["frame"])), rel=1e-6)


def test_source_lost_gives_clear_exit_code(tmp_path: Path) -> None:
    source = FlakySource(30, lost_after=5)
    summary = edgesentry.stream(MeanDetector(), source, jsonl=tmp_path / "r.jsonl", summary=tmp_path / "s.json",
                                backoff_s=(0.01, 0.02), max_retries=2, handle_signals=False)
    written = json.loads((tmp_path / "s.json").read_text())
    check_accounting(read_jsonl(tmp_path / "r.jsonl"), written)
    assert summary.exit_code == EXIT_SOURCE_LOST == written["exit_code"] == 3
    assert written["exit_reason"] == "source_lost" and written["processed"] == 5 and written["reconnects"] == 2


def _slow(seconds: float, seen: list) -> CallbackSink:
    def write(record, result):
        seen.append(record)
        time.sleep(seconds)
    return CallbackSink(write, name="slow")


def test_slow_sink_block_never_drops(tmp_path: Path) -> None:
    seen: list = []
    frames = [frame_image(i) for i in range(25)]
    summary = edgesentry.stream(MeanDetector(), IterableSource(frames, live=True), policy="block", queue_size=2,
                                jsonl=tmp_path / "r.jsonl", sinks=[_slow(0.01, seen)], handle_signals=False)
    d = summary.to_dict()
    check_accounting(read_jsonl(tmp_path / "r.jsonl"), d)
    assert d["dropped"] == 0 and d["processed"] == 25 and len(seen) == 25


def test_slow_sink_drop_oldest_counts_every_drop(tmp_path: Path) -> None:
    """A fast live source, a sink that takes 20 ms a frame: drops happen and are all reported."""
    det = MeanDetector()
    snapshots = []
    runner: list[Stream] = []

    def slow(record, result):
        if runner:
            snapshots.append(runner[0].snapshot())
        time.sleep(0.02)

    frames = [frame_image(i) for i in range(60)]
    stream = Stream(det, IterableSource(frames, live=True), sinks=[JsonlSink(tmp_path / "r.jsonl"),
                    CallbackSink(slow)], queue_size=2, batch_size=1)
    runner.append(stream)
    summary = stream.run(handle_signals=False)
    d = summary.to_dict()
    records = read_jsonl(tmp_path / "r.jsonl")
    check_accounting(records, d)
    assert d["policy"] == "drop-oldest" and d["produced"] == 60
    assert d["dropped"] > 0 and d["dropped_by_reason"] == {"queue_full": d["dropped"]}
    assert all(r["reason"] == "queue_full" for r in records if r["status"] == "dropped")
    # Mid-run snapshots: the identity with pending, and pending bounded by the queues' capacity.
    bound = stream.capture_q.maxsize + stream.output_q.maxsize + 64 + 2
    for snap in snapshots:
        assert snap.produced == snap.processed + snap.dropped + snap.failed + snap.pending
        assert 0 <= snap.pending <= bound


def test_scoring_failures_isolated_within_a_batch(tmp_path: Path) -> None:
    """Frames the detector rejects fail alone; their batch-mates are scored."""
    frames = [frame_image(i) if i % 4 != 2 else frame_image(i)[:, :, 0] for i in range(16)]
    summary = edgesentry.stream(MeanDetector(), IterableSource(frames), jsonl=tmp_path / "r.jsonl", batch_size=4,
                                latency_budget_ms=500, handle_signals=False)
    records = read_jsonl(tmp_path / "r.jsonl")
    d = summary.to_dict()
    check_accounting(records, d)
    assert d["failed"] == 4 and d["failed_by_reason"] == {"InputError": 4}
    for rec in records:
        if rec["frame"] % 4 == 2:
            assert rec["status"] == "failed" and "expected an (H, W, 3) uint8 RGB image" in rec["error"]
            assert "shape (24, 32)" in rec["error"]
        else:
            assert rec["score"] == pytest.approx(mean_score(frames[rec["frame"]]), rel=1e-6)


def test_overlays_for_frames_above_threshold(tmp_path: Path) -> None:
    from PIL import Image

    frames = [np.full((24, 32, 3), v, np.uint8) for v in (10, 200, 30, 250)]
    det = MeanDetector(threshold=0.5)
    edgesentry.stream(det, IterableSource(frames), jsonl=tmp_path / "r.jsonl", overlays=tmp_path / "ov",
                      handle_signals=False)
    written = sorted(p.name for p in (tmp_path / "ov").iterdir())
    assert written == ["frame_00000001.png", "frame_00000003.png"]
    records = read_jsonl(tmp_path / "r.jsonl")
    assert [r.get("overlay") is not None for r in records] == [False, True, False, True]
    assert np.asarray(Image.open(tmp_path / "ov" / written[0])).shape == (24, 32, 3)


def test_jsonl_repairs_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"frame": 0, "status": "ok"}\n{"frame": 1, "sta')  # a crash mid-line
    sink = JsonlSink(path)
    sink.write({"frame": 7, "status": "ok", "score": float("nan")}, None, None)
    sink.close()
    assert read_jsonl(path) == [{"frame": 0, "status": "ok"}, {"frame": 7, "status": "ok", "score": None}]


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="policy must be one of .*got 'sometimes'"):
        Stream(MeanDetector(), [frame_image(0)], policy="sometimes")
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 1; got 0"):
        Stream(MeanDetector(), [frame_image(0)], batch_size=0)
    with pytest.raises(ConfigError, match="not a camera index, URL.*existing video file"):
        Stream(MeanDetector(), "/nonexistent/video.mp4")
    with pytest.raises(ConfigError, match="--mqtt must be HOST"):
        edgesentry.stream(MeanDetector(), [frame_image(0)], mqtt="localhost:1883")


def test_raw_frame_errors_from_custom_sources_are_failures(tmp_path: Path) -> None:
    items = [frame_image(0), RawFrame("cam#1", error="decode: checksum mismatch in frame"), frame_image(2)]
    summary = edgesentry.stream(MeanDetector(), IterableSource(items), jsonl=tmp_path / "r.jsonl",
                                handle_signals=False)
    records = read_jsonl(tmp_path / "r.jsonl")
    check_accounting(records, summary.to_dict())
    assert [r["status"] for r in sorted(records, key=lambda r: r["frame"])] == ["ok", "failed", "ok"]


class _StuckSource(FlakySource):
    """Delivers ``n`` frames, then blocks inside ``read`` like a hung camera driver."""

    def __init__(self, n: int):
        super().__init__(n)
        self.release = threading.Event()

    def read(self):
        if self.pos >= self.n:
            self.release.wait(30)
            return None
        return super().read()


def test_stop_with_a_source_stuck_in_read_still_finishes(tmp_path: Path) -> None:
    source = _StuckSource(6)
    stream = Stream(MeanDetector(), source, sinks=[JsonlSink(tmp_path / "r.jsonl")])
    stream.stop_grace_s = 0.3
    stream.start()
    deadline = time.monotonic() + 10
    while stream.snapshot().processed < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    stream.stop()
    summary = stream.join(10)
    source.release.set()
    assert summary is not None, "stream did not finish while its source was stuck"
    check_accounting(read_jsonl(tmp_path / "r.jsonl"), summary.to_dict())
    assert summary.exit_reason == "stopped" and summary.processed == 6


def test_abort_drops_queued_frames_as_shutdown(tmp_path: Path) -> None:
    """``stop(drain=False)`` (second SIGINT): queued frames are dropped, and reported."""
    gate = threading.Event()

    def slow(record, result):
        gate.wait(5)

    frames = [frame_image(i) for i in range(40)]
    stream = Stream(MeanDetector(), IterableSource(frames), sinks=[JsonlSink(tmp_path / "r.jsonl"), CallbackSink(slow)],
                    queue_size=4, policy="block")
    stream.start()
    deadline = time.monotonic() + 10
    while len(stream.capture_q) < 4 and time.monotonic() < deadline:  # the pipeline is full
        time.sleep(0.01)
    stream.stop(drain=False)
    gate.set()
    summary = stream.join(10)
    assert summary is not None
    d = summary.to_dict()
    check_accounting(read_jsonl(tmp_path / "r.jsonl"), d)
    assert d["dropped"] >= 4 and set(d["dropped_by_reason"]) == {"shutdown"} and d["produced"] < 40


def test_mqtt_without_broker_reports_unacked(tmp_path: Path) -> None:
    pytest.importorskip("paho.mqtt.client")
    from edgesentry.stream import EXIT_SINK_ERRORS, MqttSink

    from .conftest import free_port

    sink = MqttSink("127.0.0.1", free_port(), "line/results", connect_timeout=0.1, flush_timeout=0.3)
    summary = edgesentry.stream(MeanDetector(), IterableSource([frame_image(i) for i in range(3)]), sinks=[sink],
                                jsonl=tmp_path / "r.jsonl", handle_signals=False)
    d = summary.to_dict()
    assert d["sinks"]["mqtt"]["published"] == 3 and d["sinks"]["mqtt"]["unacked"] == 3
    assert d["sink_errors"] == {"mqtt": 3} and summary.exit_code == EXIT_SINK_ERRORS
    assert len(read_jsonl(tmp_path / "r.jsonl")) == 3  # the other sinks still got everything


def test_http_stream_source_then_server_gone(tmp_path: Path) -> None:
    """A real network source (HTTP on loopback, read by OpenCV's FFmpeg backend) whose server
    disappears: every frame it sent is scored, then bounded reconnects end with exit code 3."""
    import functools
    import http.server

    clean = write_video(tmp_path / "clean.avi", n=10, corrupt=())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *a: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{clean.name}"
    seen: list[int] = []

    def stop_server_after_last_frame(record, result):
        seen.append(record["frame"])
        if len(seen) == 10:
            server.shutdown()
            server.server_close()

    summary = edgesentry.stream(MeanDetector(), url, jsonl=tmp_path / "r.jsonl", policy="block", max_retries=2,
                                backoff_s=(0.05, 0.1), on_result=stop_server_after_last_frame, handle_signals=False)
    d = summary.to_dict()
    records = read_jsonl(tmp_path / "r.jsonl")
    check_accounting(records, d)
    assert d["exit_code"] == EXIT_SOURCE_LOST and d["exit_reason"] == "source_lost"
    assert d["processed"] >= 10 and d["reconnects"] >= 2
    oracle = decoded_frames(clean)
    for rec in records[:10]:
        assert rec["score"] == pytest.approx(mean_score(oracle[rec["frame"]]), rel=1e-6)
