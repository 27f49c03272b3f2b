"""Delivery to the line's systems: a real mosquitto broker, the Prometheus endpoint, SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

import edgesentry
from edgesentry.stream import IterableSource, RawFrame, Source, Stream

from .helpers import MeanDetector, check_accounting, frame_image, mean_score, read_jsonl

ROOT = Path(__file__).resolve().parents[2]


def test_results_delivered_through_mosquitto(mosquitto: int, tmp_path: Path) -> None:
    mqtt = pytest.importorskip("paho.mqtt.client")
    received: list[dict] = []
    subscribed = threading.Event()
    done = threading.Event()
    n = 20

    def on_connect(client, userdata, flags, reason_code, properties):
        client.subscribe("line/7/results", qos=1)

    def on_message(client, userdata, msg):
        received.append(json.loads(msg.payload))
        if len(received) == n:
            done.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="edgesentry-test-subscriber")
    sub.on_connect = on_connect
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_message = on_message
    sub.connect("127.0.0.1", mosquitto)
    sub.loop_start()
    try:
        assert subscribed.wait(10), "subscriber did not get SUBACK"
        frames = [frame_image(i) if i != 4 else RawFrame("cam#4", error="decode: bad frame") for i in range(n)]
        target = f"127.0.0.1:{mosquitto}/line/7/results"
        summary = edgesentry.stream(MeanDetector(), IterableSource(frames), mqtt=target,
                                    jsonl=tmp_path / "r.jsonl", handle_signals=False)
        assert done.wait(10), f"subscriber got {len(received)} of {n} messages"
    finally:
        sub.loop_stop()
        sub.disconnect()
    d = summary.to_dict()
    assert d["exit_code"] == 0 and d["sinks"]["mqtt"] == {
        "broker": f"127.0.0.1:{mosquitto}", "topic": "line/7/results", "qos": 1,
        "published": n, "acked": n, "unacked": 0}
    assert sorted(r["frame"] for r in received) == list(range(n))
    assert received == read_jsonl(tmp_path / "r.jsonl")  # the same records, in the same order
    for rec in received:
        if rec["frame"] == 4:
            assert rec["status"] == "failed"
        else:
            assert rec["score"] == pytest.approx(mean_score(frames[rec["frame"]]), rel=1e-6)


class _GatedSource(Source):
    """Yields frames only while ``gate`` is set, so the test can scrape a stream mid-run."""

    name = "gated"

    def __init__(self, n: int, gate: threading.Event):
        self.n, self.gate, self.i = n, gate, 0

    def read(self):
        if self.i >= self.n:
            return None
        if self.i == self.n // 2 and not self.gate.is_set():
            time.sleep(0.01)
            from edgesentry.stream.sources import IDLE
            return IDLE
        self.i += 1
        return RawFrame(f"g#{self.i - 1}", image=frame_image(self.i - 1))


def _scrape(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_prometheus_endpoint_scraped_mid_run() -> None:
    pytest.importorskip("prometheus_client")
    gate = threading.Event()
    stream = Stream(MeanDetector(), _GatedSource(20, gate), metrics_port=0)
    stream.start()
    try:
        url = f"http://127.0.0.1:{stream.metrics.port}/metrics"
        deadline = time.monotonic() + 10
        while True:  # wait until the first half has gone through
            m = _scrape(url)
            if m["edgesentry_stream_frames_processed_total"] == 10 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert m["edgesentry_stream_frames_produced_total"] == 10
        assert m["edgesentry_stream_frames_processed_total"] == 10
        assert m["edgesentry_stream_frames_failed_total"] == 0
        assert m['edgesentry_stream_frames_dropped_total{reason="queue_full"}'] == 0
        assert m["edgesentry_stream_frames_pending"] == 0
        assert m['edgesentry_stream_queue_depth{queue="capture"}'] == 0
        assert 'edgesentry_stream_latency_seconds{quantile="0.99"}' in m
    finally:
        gate.set()
        summary = stream.join(10)
    assert summary is not None and summary.processed == 20
    with pytest.raises(OSError):  # the endpoint is closed with the stream
        urllib.request.urlopen(url, timeout=2)


def test_sigint_drains_flushes_and_prints_summary(tmp_path: Path) -> None:
    """``edgesentry watch`` in a subprocess on a hot folder that never ends; SIGINT stops it."""
    folder = tmp_path / "in"
    folder.mkdir()
    from PIL import Image

    for i in range(12):
        Image.fromarray(frame_image(i)).save(folder / f"f{i:03d}.png")
    jsonl, summary_path = tmp_path / "r.jsonl", tmp_path / "s.json"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgesentry.cli", "watch", "rx", str(folder), "--jsonl", str(jsonl),
         "--summary", str(summary_path), "--status-interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until all 12 files are processed
            if jsonl.exists() and jsonl.read_text().count("\n") >= 12:
                break
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    summary = json.loads(summary_path.read_text())
    check_accounting(read_jsonl(jsonl), summary)
    assert summary["exit_reason"] == "stopped" and summary["produced"] == 12 and summary["processed"] == 12
    assert "stopped: produced 12 = processed 12 + dropped 0 + failed 0" in out
    assert "fps" in err and "queue" in err  # status lines went to stderr
