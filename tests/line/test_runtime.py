"""The line runtime with small numpy detectors: deadlines and the fail-safe, a camera that drops
out (degraded station, reconnect), SIGTERM draining ``edgesentry line run``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from edgesentry.line import LineRuntime, load_line_file
from edgesentry.stream import IterableSource, PacedSource
from tests.stream.helpers import FlakySource, MeanDetector, frame_image, mean_score

from .helpers import (
    base_images,
    check_camera_accounting,
    check_parts_match_frames,
    read_jsonl,
    rule_verdict,
    wait_for,
    write_video,
)

ROOT = Path(__file__).resolve().parents[2]


class SlowDetector(MeanDetector):
    """``MeanDetector`` that takes ``delay`` seconds per batch (a detector slower than the deadline)."""

    def __init__(self, delay: float):
        super().__init__()
        self.delay = delay

    def predict_batch(self, xs):
        time.sleep(self.delay)
        return super().predict_batch(xs)


def _write(tmp: Path, text: str) -> Path:
    path = tmp / "line.toml"
    path.write_text(text)
    return path


def _paced(name: str, n: int, fps: float, offset: int = 0) -> PacedSource:
    return PacedSource(IterableSource([frame_image(i + offset) for i in range(n)], name=name, live=True), fps=fps)


DEADLINE_LINE = """
[line]
name = "deadline"
status_interval_s = 0.1

[detectors.slow]
bundle = "unused"
batch_size = 4
latency_budget_ms = 5

[detectors.quick]
bundle = "unused"
batch_size = 4
latency_budget_ms = 5

[[cameras]]
id = "a"
detector = "slow"
source = { kind = "video", path = "unused.avi" }

[[cameras]]
id = "b"
detector = "slow"
source = { kind = "video", path = "unused.avi" }

[[cameras]]
id = "c"
detector = "quick"
source = { kind = "video", path = "unused.avi" }

[[stations]]
id = "reject_late"
cameras = ["a"]
frames = 2
deadline_ms = 60
fail_safe = "reject"
rule = { kind = "mean", threshold = 0.0 }

[[stations]]
id = "accept_late"
cameras = ["b"]
frames = 2
deadline_ms = 60
fail_safe = "accept"
rule = { kind = "mean", threshold = 2.0 }

[[stations]]
id = "on_time"
cameras = ["c"]
frames = 2
deadline_ms = 30000
rule = { kind = "max", threshold = 0.45 }

[[triggers]]
station = "reject_late"
kind = "http"

[[triggers]]
station = "accept_late"
kind = "http"

[[triggers]]
station = "on_time"
kind = "http"

[http]
port = 0

[outputs]
audit = "audit.jsonl"
frames = "frames.jsonl"
"""


def test_deadline_flags_late_parts_and_applies_the_fail_safe(tmp_path: Path) -> None:
    cfg = load_line_file(_write(tmp_path, DEADLINE_LINE), check_bundles=False)
    slow = SlowDetector(0.25)  # > the 60 ms deadline for every part
    sources = {"a": _paced("a", 400, 40), "b": _paced("b", 400, 40, 7), "c": _paced("c", 400, 40, 13)}
    offsets = {"a": 0, "b": 7, "c": 13}
    runtime = LineRuntime(cfg, detectors={"slow": slow, "quick": MeanDetector()}, sources=sources).start()
    events = runtime.subscribe(kinds={"decision", "part"})
    n = 4
    try:
        for k in range(n):
            for station in ("reject_late", "accept_late", "on_time"):
                runtime.trigger(station)
            wait_for(lambda k=k: all(s.final > k for s in runtime.tracker.stats.values()), 30, "parts final")
    finally:
        runtime.stop()
        summary = runtime.join(60)
    audit = read_jsonl(tmp_path / "audit.jsonl")
    frames = read_jsonl(tmp_path / "frames.jsonl")
    check_camera_accounting(summary, frames)
    check_parts_match_frames(audit, frames)
    assert [r["part"] for r in audit] == list(range(3 * n))
    oracle = {(r["camera"], r["frame"]): mean_score(frame_image(r["frame"] + offsets[r["camera"]]))
              for r in frames if r["status"] == "ok"}
    rules = {s.id: (s.rule.kind, s.rule.threshold) for s in cfg.stations}
    for part in audit:
        verdict, score = rule_verdict(part, *rules[part["station"]], oracle)
        assert part["verdict"] == verdict and part["score"] == pytest.approx(score, rel=1e-9)
        if part["station"] == "on_time":
            assert not part["late"] and not part["fail_safe"] and part["decision"] == part["verdict"]
        else:
            fail_safe = "reject" if part["station"] == "reject_late" else "accept"
            assert part["late"] and part["fail_safe"] and part["decision"] == fail_safe, part
            # the gate got the fail-safe at the deadline; the verdict came later, and was still recorded
            assert 60 <= part["latency_ms"]["decision"] < part["latency_ms"]["verdict"]
            assert part["verdict"] == ("reject" if part["station"] == "reject_late" else "accept")
    stations = summary["stations"]
    for sid in ("reject_late", "accept_late"):
        st = stations[sid]
        assert st["triggered"] == st["decided"] == st["final"] == st["late"] == st["fail_safe"] == n
        assert st["counts_add_up"] and st["accepted"] + st["rejected"] == st["decided"]
    assert stations["reject_late"]["rejected"] == n and stations["accept_late"]["accepted"] == n
    assert stations["on_time"]["late"] == 0 and stations["on_time"]["fail_safe"] == 0
    assert stations["reject_late"]["decision_latency_ms"]["p50"] >= 60
    # every late part: its decision event came before its final record
    seen = [(e.kind, e.data["part"]) for e in events]
    for part in audit:
        if part["late"]:
            assert seen.index(("decision", part["part"])) < seen.index(("part", part["part"]))


FLAKY_LINE = """
[line]
name = "flaky"
deadline_ms = 5000
status_interval_s = 0.05

[detectors.mean]
bundle = "unused"
batch_size = 4
latency_budget_ms = 5

[[cameras]]
id = "good"
detector = "mean"
source = { kind = "video", path = "unused.avi" }

[[cameras]]
id = "flaky"
detector = "mean"
source = { kind = "video", path = "unused.avi" }
max_retries = 10
backoff_s = [1.0, 1.0]

[[stations]]
id = "st"
cameras = ["good", "flaky"]
collect_timeout_ms = 600
rule = { kind = "max", threshold = 2.0 }

[[triggers]]
station = "st"
kind = "http"

[http]
port = 0

[outputs]
audit = "audit.jsonl"
frames = "frames.jsonl"
"""


def test_a_camera_that_drops_out_degrades_its_station_and_reconnects(tmp_path: Path) -> None:
    cfg = load_line_file(_write(tmp_path, FLAKY_LINE), check_bundles=False)
    flaky = FlakySource(2000, disconnect_at=(30,), refuse_reopen=2, shape=(24, 32))
    sources = {"good": _paced("good", 2000, 50), "flaky": PacedSource(flaky, fps=50)}
    runtime = LineRuntime(cfg, detectors={"mean": MeanDetector()}, sources=sources).start()
    try:
        runtime.trigger("st", "before")
        wait_for(lambda: runtime.health()["cameras"]["flaky"] == "reconnecting", 10, "the flaky camera to drop")
        assert runtime.health()["stations"]["st"].startswith("degraded: flaky")
        runtime.trigger("st", "during")
        wait_for(lambda: runtime.tracker.stats["st"].final >= 2, 10, "the part during the outage")
        wait_for(lambda: runtime.health()["cameras"]["flaky"] == "ok", 10, "the reconnect")
        runtime.trigger("st", "after")
        wait_for(lambda: runtime.tracker.stats["st"].final >= 3, 10, "the part after the reconnect")
    finally:
        runtime.stop()
        summary = runtime.join(30)
    audit = {r["part_id"]: r for r in read_jsonl(tmp_path / "audit.jsonl")}
    check_camera_accounting(summary, read_jsonl(tmp_path / "frames.jsonl"))
    during = audit["during"]
    assert during["degraded"] and during["missing_cameras"] == ["flaky"]
    assert during["decision"] == "reject" and during["fail_safe"] and during["verdict"] == "accept"
    assert {f["camera"] for f in during["frames"]} == {"good"}
    for pid in ("before", "after"):
        assert not audit[pid]["degraded"] and audit[pid]["decision"] == "accept"
    assert summary["cameras"]["flaky"]["reconnects"] >= 3 and summary["cameras"]["good"]["reconnects"] == 0
    assert summary["exit_code"] == 0


@pytest.mark.slow
def test_line_run_drains_on_sigterm(isstad_bundle: Path, tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    images = base_images(4, shape=(32, 40))
    for cam, fps in (("c1", 8), ("c2", 12)):
        write_video(tmp_path / f"{cam}.avi", images, fps, 30 * fps)
    line = _write(tmp_path, f"""
[line]
name = "cli"
status_interval_s = 0.2

[detectors.isstad]
bundle = "{isstad_bundle}"
backend = "onnxruntime"
threshold = 0.5

[[cameras]]
id = "c1"
detector = "isstad"
source = {{ kind = "video", path = "c1.avi" }}

[[cameras]]
id = "c2"
detector = "isstad"
source = {{ kind = "video", path = "c2.avi" }}

[[stations]]
id = "st"
cameras = ["c1", "c2"]

[[triggers]]
station = "st"
kind = "free_run"

[outputs]
audit = "audit.jsonl"
frames = "frames.jsonl"
summary = "summary.json"
""")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "edgesentry.cli", "line", "run", str(line), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        wait_for(lambda: (tmp_path / "audit.jsonl").exists() and len(read_jsonl(tmp_path / "audit.jsonl")) >= 3,
                 90, "three parts in the audit log")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out.startswith("stopped: cli |") and "exit code 0" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    audit = read_jsonl(tmp_path / "audit.jsonl")
    frames = read_jsonl(tmp_path / "frames.jsonl")
    check_camera_accounting(summary, frames)
    check_parts_match_frames(audit, frames)
    assert summary["exit_reason"] == "stopped"
    st = summary["stations"]["st"]
    assert st["triggered"] == st["decided"] == st["final"] == len(audit)  # every open part went final
    assert [r["part"] for r in audit] == list(range(len(audit)))


def test_trigger_during_shutdown_is_refused(tmp_path: Path) -> None:
    cfg = load_line_file(_write(tmp_path, FLAKY_LINE), check_bundles=False)
    runtime = LineRuntime(cfg, detectors={"mean": MeanDetector()},
                          sources={"good": _paced("good", 50, 50), "flaky": _paced("flaky", 50, 50)}).start()
    runtime.stop()
    with pytest.raises(RuntimeError, match="stopping"):
        runtime.trigger("st")
    summary = runtime.join(30)
    assert summary["exit_reason"] == "stopped" and summary["identity_holds"]


LISTENERS_LINE = """
[detectors.mean]
bundle = "unused"

[[cameras]]
id = "a"
detector = "mean"
source = { kind = "video", path = "unused.avi" }

[[stations]]
id = "st"
cameras = ["a"]

[[triggers]]
station = "st"
kind = "http"

[[triggers]]
station = "st"
kind = "opcua"

[http]
port = 0

[outputs]
opcua = { port = 0 }
"""


def test_every_listening_socket_is_on_loopback_by_default(tmp_path: Path) -> None:
    pytest.importorskip("asyncua")
    from asyncua.sync import Client

    from .helpers import is_loopback, listening_sockets

    before = set(listening_sockets())
    cfg = load_line_file(_write(tmp_path, LISTENERS_LINE), check_bundles=False)
    runtime = LineRuntime(cfg, detectors={"mean": MeanDetector()}, sources={"a": _paced("a", 500, 50)}).start()
    try:
        opened = set(listening_sockets()) - before
        assert {port for _, port in opened} == {runtime.opcua.port, runtime.http_trigger.port}
        assert all(is_loopback(addr) for addr, _ in opened), opened
        client = Client(runtime.opcua.endpoint, timeout=10)  # the OPC UA trigger method opens a part
        client.connect()
        try:
            idx = client.get_namespace_index("urn:edgesentry:line")
            station = client.nodes.objects.get_child([f"{idx}:{cfg.name}", f"{idx}:Stations", f"{idx}:st"])
            seq = station.call_method(f"{idx}:Trigger", "PLC-1")
            wait_for(lambda: station.get_child([f"{idx}:FinalPartId"]).read_value() == "PLC-1", 20, "the verdict")
        finally:
            client.disconnect()
        assert seq == 0
        with urllib.request.urlopen(f"{runtime.http_trigger.url}/health", timeout=5) as response:
            health = json.loads(response.read())
        assert health["stations"]["st"] == "ok" and health["cameras"]["a"] == "ok"
    finally:
        runtime.stop()
        summary = runtime.join(30)
    assert summary["stations"]["st"]["final"] == 1 and summary["exit_code"] == 0
    assert not set(listening_sockets()) - before  # every listener closed with the line
