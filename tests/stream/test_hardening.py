"""The runtime never dies of one input, loses a frame or destroys a file (issue 21, findings 2, 3,
4, 5, 9).

Faults are injected for real: a decompression bomb dropped into a hot folder, worker threads
killed mid-run (an exception escaping the detector, and ``SystemExit`` raised asynchronously into
the inference thread while it is inside ``predict``), a file written in two bursts, a foreign
file or a FIFO where the JSON Lines go, a summary folder that disappears, a broker that refuses
the password. After each, every produced index appears exactly once in the JSON Lines and
``produced == processed + dropped + failed``.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import edgesentry
from edgesentry.cli import main
from edgesentry.errors import ConfigError
from edgesentry.result import Result
from edgesentry.stream import (
    EXIT_INTERNAL_ERROR,
    EXIT_SINK_ERRORS,
    IterableSource,
    JsonlSink,
    RawFrame,
    Source,
    Stream,
)
from tests.hostile import png_bytes
from tests.utils import one_error_line

from .helpers import MeanDetector, check_accounting, frame_image, mean_score, read_jsonl

ROOT = Path(__file__).resolve().parents[2]


def _png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    tmp = path.with_name("." + path.name)
    Image.fromarray(image).save(tmp, format="PNG")
    os.replace(tmp, path)


def _run(det, source, tmp_path: Path, **kw):
    summary = edgesentry.stream(det, source, jsonl=tmp_path / "r.jsonl", summary=tmp_path / "s.json",
                                handle_signals=False, **kw)
    written = json.loads((tmp_path / "s.json").read_text())
    records = read_jsonl(tmp_path / "r.jsonl")
    check_accounting(records, written)
    return summary, written, {r["frame"]: r for r in records}


# --------------------------------------------------------------------- finding 2: one bad image
def test_decompression_bomb_in_a_hot_folder_is_one_failed_frame(tmp_path: Path) -> None:
    """Finding 2: a PNG claiming 30000x30000 killed the capture thread: exit 70, a frame already
    read lost, later files never read. Now it is one failed record and the folder goes on."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        _png(folder / f"a{i}.png", frame_image(i))
    (folder / "b_bomb.png").write_bytes(png_bytes(30_000, 30_000))
    for i in range(3, 6):
        _png(folder / f"c{i}.png", frame_image(i))
    summary, written, by_frame = _run(MeanDetector(), folder, tmp_path, once=True)
    assert summary.exit_code == 0 and written["produced"] == 7
    assert written["processed"] == 6 and written["failed"] == 1 and written["failed_by_reason"] == {"decode": 1}
    (bomb,) = [r for r in by_frame.values() if r["status"] == "failed"]
    assert bomb["source"] == "b_bomb.png" and "declares 900000000 pixels" in bomb["error"]
    for rec in by_frame.values():
        if rec["status"] == "ok":
            i = int(rec["source"][1])
            assert rec["score"] == pytest.approx(mean_score(frame_image(i)), rel=1e-6)


def test_cli_watch_survives_a_bomb_in_the_hot_folder(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _png(folder / "a.png", frame_image(0))
    (folder / "bomb.png").write_bytes(png_bytes(30_000, 30_000))
    _png(folder / "c.png", frame_image(1))
    code = main(["watch", "rx", str(folder), "--once", "--quiet",
                 "--jsonl", str(tmp_path / "r.jsonl"), "--summary", str(tmp_path / "s.json")])
    assert code == 0, capsys.readouterr().err
    check_accounting(read_jsonl(tmp_path / "r.jsonl"), json.loads((tmp_path / "s.json").read_text()))
    assert "produced 3 = processed 2 + dropped 0 + failed 1" in capsys.readouterr().out


class _RaisingSource(Source):
    """Frames, except that some reads raise an arbitrary exception (a driver bug, a decoder crash)."""

    name = "raising"

    def __init__(self, n: int, bad: set[int]):
        self.n, self.bad, self.i = n, bad, 0

    def read(self):
        if self.i >= self.n:
            return None
        self.i += 1
        if self.i - 1 in self.bad:
            raise ValueError(f"driver hiccup on read {self.i - 1}")
        return RawFrame(f"raising#{self.i - 1}", image=frame_image(self.i - 1))


def test_any_exception_in_read_is_a_failed_frame(tmp_path: Path) -> None:
    summary, written, by_frame = _run(MeanDetector(), _RaisingSource(10, {2, 7}), tmp_path)
    assert summary.exit_code == 0 and written["produced"] == 10 and written["failed_by_reason"] == {"read": 2}
    assert [by_frame[i]["status"] for i in range(10)].count("failed") == 2
    assert "ValueError: driver hiccup on read 2" in by_frame[2]["error"]


# -------------------------------------------------------------------- workers killed mid-run
class _KillingDetector(MeanDetector):
    """Raises ``SystemExit`` (what killing a thread looks like) while scoring the frames in ``kill_at``."""

    def __init__(self, kill_at: set[int], **kwargs):
        super().__init__(**kwargs)
        self.kill_at = kill_at
        self.calls = 0

    def predict_batch(self, xs):
        items = list(xs)
        self.calls += 1
        if self.calls in self.kill_at:
            raise SystemExit("inference worker killed")
        return super().predict_batch(items)


def test_inference_worker_killed_mid_run_keeps_accounting_and_jsonl(tmp_path: Path) -> None:
    """Must show: a worker killed mid-run. Its batch fails (``internal_error``), it is restarted,
    every other frame is scored, the JSON Lines hold every index once, the exit code says 70."""
    frames = [frame_image(i) for i in range(20)]
    det = _KillingDetector({3, 9})
    summary, written, by_frame = _run(det, IterableSource(frames), tmp_path, batch_size=1)
    assert written["worker_crashes"] == {"inference": 2} and summary.exit_code == EXIT_INTERNAL_ERROR
    assert written["produced"] == 20 and written["failed"] == 2 and written["failed_by_reason"] == {"internal_error": 2}
    for i, rec in by_frame.items():
        if rec["status"] == "ok":
            assert rec["score"] == pytest.approx(mean_score(frames[i]), rel=1e-6)
        else:
            assert "inference worker crashed: SystemExit: inference worker killed" in rec["error"]


def test_worker_killed_for_good_stops_with_every_frame_accounted(tmp_path: Path) -> None:
    """A worker that crashes more than ``max_restarts`` times stops the stream; nothing is lost."""
    frames = [frame_image(i) for i in range(40)]
    det = _KillingDetector(set(range(1, 1000)))
    summary, written, by_frame = _run(det, IterableSource(frames), tmp_path, max_restarts=2, queue_size=4)
    assert summary.exit_code == EXIT_INTERNAL_ERROR and written["exit_reason"] == "internal_error"
    assert written["worker_crashes"] == {"inference": 3} and written["processed"] == 0
    assert written["produced"] == written["failed"] + written["dropped"]


class _BlockingDetector(MeanDetector):
    """Blocks inside ``predict_batch`` on frame ``at`` until killed (short sleeps, so an
    asynchronous exception is delivered)."""

    def __init__(self, at: int, **kwargs):
        super().__init__(**kwargs)
        self.at, self.seen = at, 0
        self.inside = threading.Event()

    def predict_batch(self, xs):
        items = list(xs)
        self.seen += len(items)
        if self.seen - 1 == self.at and not self.inside.is_set():
            self.inside.set()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                time.sleep(0.001)
        return super().predict_batch(items)


def _kill_thread(thread: threading.Thread) -> None:
    """Raise ``SystemExit`` inside ``thread`` at its next bytecode (CPython's async exception)."""
    n = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(SystemExit))
    assert n == 1, "the thread to kill was not found"


def test_inference_thread_killed_asynchronously(tmp_path: Path) -> None:
    """Must show: the inference thread is killed from outside while it is inside ``predict``."""
    frames = [frame_image(i) for i in range(12)]
    det = _BlockingDetector(at=5)
    stream = Stream(det, IterableSource(frames), sinks=[JsonlSink(tmp_path / "r.jsonl")],
                    summary_path=tmp_path / "s.json", batch_size=1)
    stream.start()
    assert det.inside.wait(20), "the detector never reached the frame to kill at"
    (inference,) = [t for t in threading.enumerate() if t.name == "edgesentry-stream-inference"]
    _kill_thread(inference)
    summary = stream.join(30)
    assert summary is not None, "the stream did not finish after its inference thread was killed"
    written = json.loads((tmp_path / "s.json").read_text())
    by_frame = {r["frame"]: r for r in read_jsonl(tmp_path / "r.jsonl")}
    check_accounting(list(by_frame.values()), written)
    assert written["produced"] == 12 and written["processed"] == 11 and written["worker_crashes"] == {"inference": 1}
    assert by_frame[5]["status"] == "failed" and by_frame[5]["reason"] == "internal_error"


class _SystemExitSource(_RaisingSource):
    """Its 4th read raises ``SystemExit``: the capture worker dies and must be restarted."""

    def read(self):
        if self.i == 4 and not getattr(self, "_killed", False):
            self._killed = True
            raise SystemExit("capture worker killed")
        return super().read()


def test_capture_worker_killed_is_restarted(tmp_path: Path) -> None:
    summary, written, by_frame = _run(MeanDetector(), _SystemExitSource(10, set()), tmp_path)
    assert written["worker_crashes"] == {"capture": 1} and written["produced"] == 10
    assert written["processed"] == 10 and summary.exit_code == EXIT_INTERNAL_ERROR


class _BadSummary(Result):
    def summary(self):
        raise RuntimeError("cannot summarise")


class _BadResultDetector(MeanDetector):
    def postprocess(self, raw, prepared):
        good = super().postprocess(raw, prepared)
        if int(prepared[0, 0, 0]) == int(frame_image(6)[0, 0, 0]):
            return _BadSummary(score=good.score, anomaly_map=good.anomaly_map)
        return good


def test_output_worker_crash_fails_only_its_frame(tmp_path: Path) -> None:
    frames = [frame_image(i) for i in range(10)]
    summary, written, by_frame = _run(_BadResultDetector(), IterableSource(frames), tmp_path)
    assert written["worker_crashes"] == {"output": 1} and written["processed"] == 9 and written["failed"] == 1
    assert by_frame[6]["reason"] == "internal_error" and "RuntimeError: cannot summarise" in by_frame[6]["error"]


# ----------------------------------------------------------------- finding 3: sinks never destroy
def test_jsonl_refuses_a_foreign_file_and_leaves_it_untouched(tmp_path: Path, capsys) -> None:
    """Finding 3: ``--jsonl`` on a 3 MB non-JSONL file cut it to 0 bytes and exited 0."""
    path = tmp_path / "precious.dat"
    data = np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()
    path.write_bytes(data)
    with pytest.raises(ConfigError, match="holds something other than edgesentry JSON Lines"):
        JsonlSink(path)
    folder = tmp_path / "in"
    folder.mkdir()
    code = main(["watch", "rx", str(folder), "--once", "--jsonl", str(path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and one_error_line(err) and "--jsonl" in err and "Traceback" not in err
    assert path.read_bytes() == data


@pytest.mark.parametrize("content", [
    b"a,b,c\n1,2,3\n",  # a CSV
    b'{"frame": 0, "status": "ok"}\n{"other": "tool"}\n',  # last line not ours
    b'{"frame": 0, "status": "ok"}\nnot json at all',  # torn tail that is not a line of ours
    b"x" * 70_000,  # one long line, no newline
], ids=["csv", "foreign-last-line", "foreign-tail", "no-newline"])
def test_jsonl_refuses_content_not_its_own(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="it is left untouched"):
        JsonlSink(path)
    assert path.read_bytes() == content


def test_jsonl_appends_to_its_own_file_and_repairs_only_its_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"frame":0,"status":"ok"}\n{"frame":1,"status":"ok"}\n{"frame":2,"sta')
    sink = JsonlSink(path)
    sink.write({"frame": 3, "status": "ok"}, None, None)
    sink.close()
    assert [r["frame"] for r in read_jsonl(path)] == [0, 1, 3]


def test_fifo_jsonl_is_refused_without_blocking(tmp_path: Path) -> None:
    """Finding 9: a FIFO ``--jsonl`` with no reader hung ``watch`` before signals were handled."""
    fifo = tmp_path / "r.jsonl"
    os.mkfifo(fifo)
    folder = tmp_path / "in"
    folder.mkdir()
    proc = subprocess.run([sys.executable, "-m", "edgesentry.cli", "watch", "rx", str(folder), "--once",
                           "--jsonl", str(fifo), "--quiet"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 1 and "FIFO, socket or device" in proc.stderr and "Traceback" not in proc.stderr


def test_summary_that_cannot_be_written_is_an_error(tmp_path: Path) -> None:
    """Finding 9: an unwritable ``--summary`` still exited 0. Here its folder vanishes mid-run."""
    out = tmp_path / "out"
    out.mkdir()

    def vanish(record, result):
        if record["frame"] == 2 and out.is_dir():
            for p in out.iterdir():
                p.unlink()
            out.rmdir()
            out.write_text("now a file")

    summary = edgesentry.stream(MeanDetector(), IterableSource([frame_image(i) for i in range(5)]),
                                summary=out / "s.json", on_result=vanish, handle_signals=False)
    assert summary.exit_code == EXIT_SINK_ERRORS and summary.to_dict()["sink_errors"] == {"summary": 1}


# -------------------------------------------------------------------- finding 4: hot folder files
def _two_bursts(path: Path, data: bytes, pause: float) -> threading.Thread:
    def write() -> None:
        with open(path, "wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
            time.sleep(pause)
            fh.write(data[len(data) // 2:])
    thread = threading.Thread(target=write)
    thread.start()
    return thread


def _png_bytes_of(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def test_file_written_in_two_bursts_waits_for_the_second(tmp_path: Path) -> None:
    """Finding 4: a file written in two bursts was read half-written after one 0.1 s poll,
    marked failed and never retried. With a settle time longer than the pause it is read once,
    complete."""
    folder = tmp_path / "in"
    folder.mkdir()
    image = frame_image(3, shape=(64, 80))
    writer = _two_bursts(folder / "part.png", _png_bytes_of(image), pause=0.3)  # 1.2 s of margin for a busy box
    summary, written, by_frame = _run(MeanDetector(), folder, tmp_path, idle_timeout=3.0, settle_s=1.5)
    writer.join()
    assert written["produced"] == 1 and written["processed"] == 1 and written["failed"] == 0
    assert by_frame[0]["score"] == pytest.approx(mean_score(image), rel=1e-6)


def test_file_that_failed_while_incomplete_is_retried_when_it_changes(tmp_path: Path) -> None:
    """A pause longer than the settle time (the default, 0.5 s): the half file fails (it was
    unchanged), and when the second burst lands the file is read again and scored."""
    folder = tmp_path / "in"
    folder.mkdir()
    image = frame_image(4, shape=(64, 80))
    writer = _two_bursts(folder / "part.png", _png_bytes_of(image), pause=1.5)  # 1 s of margin
    summary, written, by_frame = _run(MeanDetector(), folder, tmp_path, idle_timeout=3.0)
    writer.join()
    assert [by_frame[i]["status"] for i in sorted(by_frame)] == ["failed", "ok"]
    assert by_frame[1]["source"] == "part.png" and by_frame[1]["score"] == pytest.approx(mean_score(image), rel=1e-6)


# --------------------------------------------------------------------- finding 9: options first
@pytest.mark.parametrize("extra, match", [
    (["--status-interval", "0"], r"--status-interval must be a finite number >= 0\.05; got 0\.0"),
    (["--max-frames", "-3"], r"--max-frames must be an integer >= 1 \(or unset\); got -3"),
    (["--metrics-port", "70000"], r"--metrics-port must be an integer >= 0 and <= 65535 \(or unset\); got 70000"),
    (["--batch", "0"], r"--batch must be an integer >= 1; got 0"),
    (["--settle", "-1"], r"--settle must be a finite number >= 0; got -1\.0"),
    (["--backoff", "5,1"], r"--backoff must be two finite numbers 0 <= FIRST <= MAX; got \(5\.0, 1\.0\)"),
    (["--mqtt", "127.0.0.1:70000/line/results"], r"--mqtt port must be in 1\.\.65535; got 70000"),
    (["--mqtt", "127.0.0.1/line/+/results"], r"--mqtt topic must be a topic to publish to \(no '\+' or '#'"),
    (["--mqtt-user", "bob"], r"--mqtt-user, --mqtt-password-file and the TLS flags need --mqtt"),
    (["--summary", "FILE/s.json"], r"--summary: folder '.*FILE' is not a directory"),
    (["--jsonl", "FILE/r.jsonl"], r"--jsonl: folder '.*FILE' is not a directory"),
    (["--overlays", "FILE/ov"], r"--overlays: cannot create folder"),
], ids=["status-interval", "max-frames", "metrics-port", "batch", "settle", "backoff", "mqtt-port", "mqtt-wildcard",
        "mqtt-user-alone", "summary-unwritable", "jsonl-unwritable", "overlays-unwritable"])
def test_bad_options_are_one_line_before_anything_starts(tmp_path: Path, capsys, extra, match) -> None:
    """Findings 5 and 9: these ran (50 000 status lines in 2 s, a negative frame limit, a port
    that failed later) or ended in a traceback. Each is now one line and exit code 1."""
    import re

    folder = tmp_path / "in"
    folder.mkdir()
    _png(folder / "a.png", frame_image(0))
    (tmp_path / "FILE").write_text("a file, not a folder")
    args = [a.replace("FILE", str(tmp_path / "FILE")) for a in extra]
    code = main(["watch", "rx", str(folder), "--once", "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and one_error_line(err), err
    assert re.search(match, err), err
    assert not (tmp_path / "r.jsonl").exists()


# ------------------------------------------------------------ finding 9: MQTT credentials and TLS
def test_broker_refusing_authentication_is_named_as_such(secure_mosquitto: dict, capsys) -> None:
    """Finding 9: a broker refusing authentication was reported as "not reachable" and the run
    went on publishing into the void. Now it is a one-line error before anything starts."""
    pytest.importorskip("paho.mqtt.client")
    target = f"127.0.0.1:{secure_mosquitto['port']}/line/results"
    with pytest.raises(ConfigError, match=r"refused authentication: Not authorized"):
        edgesentry.stream(MeanDetector(), IterableSource([frame_image(0)]), mqtt=target, handle_signals=False)
    wrong = secure_mosquitto["dir"] / "wrong"
    wrong.write_text("not-the-password\n")
    folder = secure_mosquitto["dir"] / "in"
    folder.mkdir()
    code = main(["watch", "rx", str(folder), "--once", "--quiet", "--mqtt", target, "--mqtt-user", "alice",
                 "--mqtt-password-file", str(wrong)])
    err = capsys.readouterr().err
    assert code == 1 and one_error_line(err) and "refused authentication" in err


def _subscribe(port: int, topic: str, n: int, **tls):
    import paho.mqtt.client as mqtt

    got: list[dict] = []
    ready, done = threading.Event(), threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edgesentry-test-sub-{port}")
    sub.username_pw_set("alice", "s3cret")
    if tls:
        sub.tls_set(**tls)
    sub.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
    sub.on_subscribe = lambda *a: ready.set()

    def on_message(client, userdata, msg):
        got.append(json.loads(msg.payload))
        if len(got) == n:
            done.set()
    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    assert ready.wait(10), "subscriber did not get SUBACK"
    return sub, got, done


def test_mqtt_password_from_the_environment(secure_mosquitto: dict, monkeypatch, tmp_path: Path) -> None:
    pytest.importorskip("paho.mqtt.client")
    port = secure_mosquitto["port"]
    sub, got, done = _subscribe(port, "line/env", 4)
    try:
        monkeypatch.setenv("EDGESENTRY_MQTT_USERNAME", "alice")
        monkeypatch.setenv("EDGESENTRY_MQTT_PASSWORD", "s3cret")
        summary = edgesentry.stream(MeanDetector(), IterableSource([frame_image(i) for i in range(4)]),
                                    mqtt=f"127.0.0.1:{port}/line/env", jsonl=tmp_path / "r.jsonl",
                                    handle_signals=False)
        assert done.wait(10), f"got {len(got)} of 4"
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert summary.exit_code == 0 and summary.to_dict()["sinks"]["mqtt"]["acked"] == 4
    assert got == read_jsonl(tmp_path / "r.jsonl")


def test_cli_mqtt_over_tls_with_a_password_file(secure_mosquitto: dict, tmp_path: Path, capsys) -> None:
    pytest.importorskip("paho.mqtt.client")
    port, ca = secure_mosquitto["tls_port"], str(secure_mosquitto["ca"])
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        _png(folder / f"f{i}.png", frame_image(i))
    sub, got, done = _subscribe(port, "line/tls", 3, ca_certs=ca)
    try:
        code = main(["watch", "rx", str(folder), "--once", "--settle", "0", "--quiet",
                     "--jsonl", str(tmp_path / "r.jsonl"), "--mqtt", f"127.0.0.1:{port}/line/tls",
                     "--mqtt-user", "alice", "--mqtt-password-file", str(pw), "--mqtt-cafile", ca])
        assert done.wait(10), f"got {len(got)} of 3"
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert code == 0, capsys.readouterr().err
    assert sorted(r["frame"] for r in got) == [0, 1, 2] and got == read_jsonl(tmp_path / "r.jsonl")
