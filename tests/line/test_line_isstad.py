"""The test line: 4 cameras (videos at 10, 15, 20 and 30 fps) in 2 stations, the tiny ISSTAD bundle
shared by all of them, parts triggered by MQTT messages through a real mosquitto broker (and one
HTTP POST), verdicts read back by an asyncua OPC UA client, and a webhook receiver that is down
for part of the run. Every part's record must reach the audit log, MQTT and the webhook exactly
once and in order, every frame must be accounted for per camera, every part's frame list must
match the frame log, and every verdict must equal the station rule applied to scores computed
here with ``Detector.predict`` on the pixels the test wrote.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from edgesentry.line import LineRuntime, load_line_file

from .helpers import (
    WebhookReceiver,
    base_images,
    check_camera_accounting,
    check_parts_match_frames,
    is_loopback,
    listening_sockets,
    read_jsonl,
    rule_verdict,
    ss_listening_sockets,
    wait_for,
    write_video,
)

cv2 = pytest.importorskip("cv2")
mqtt = pytest.importorskip("paho.mqtt.client")
asyncua_sync = pytest.importorskip("asyncua.sync")

CAMERAS = {"c1": 10, "c2": 15, "c3": 20, "c4": 30}  # fps
ROUNDS = 6
SECONDS = 40  # video length: the test stops the line long before


def _line_file(tmp: Path, bundle: Path, mqtt_port: int, hook_url: str, thresholds: tuple[float, float]) -> Path:
    cams = "\n".join(f'[[cameras]]\nid = "{c}"\ndetector = "isstad"\nsource = {{ kind = "video", path = "{c}.avi" }}\n'
                     f"queue_size = 16\n" for c in CAMERAS)
    text = f"""
[line]
name = "testline"
deadline_ms = 60000
status_interval_s = 0.2
drain_timeout_s = 60

[detectors.isstad]
bundle = "{bundle}"
backend = "onnxruntime"
batch_size = 8
latency_budget_ms = 30

{cams}
[[stations]]
id = "st1"
cameras = ["c1", "c2"]
frames = 2
rule = {{ kind = "max", threshold = {thresholds[0]!r} }}

[[stations]]
id = "st2"
cameras = ["c3", "c4"]
frames = 2
rule = {{ kind = "mean", threshold = {thresholds[1]!r} }}

[[triggers]]
station = "st1"
kind = "mqtt"
topic = "test/st1/trigger"

[[triggers]]
station = "st2"
kind = "mqtt"
topic = "test/st2/trigger"

[[triggers]]
station = "st2"
kind = "http"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}

[http]
port = 0

[outputs]
audit = "audit.jsonl"
frames = "frames.jsonl"
summary = "summary.json"
mqtt = {{ topic = "test/parts" }}
webhooks = [ {{ url = "{hook_url}", spool = "spool", backoff_s = [0.05, 0.3], token_env = "TEST_LINE_HOOK_TOKEN" }} ]
opcua = {{ port = 0 }}
"""
    path = tmp / "line.toml"
    path.write_text(text)
    return path


class _Subscriber:
    def __init__(self, port: int, topic: str):
        self.records: list[dict] = []
        ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="edgesentry-line-test-sub")
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = lambda c, u, msg: self.records.append(json.loads(msg.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert ready.wait(10), "test subscriber got no SUBACK"

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _publisher(port: int):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="edgesentry-line-test-pub")
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def _opcua_reader(endpoint: str, line: str):
    client = asyncua_sync.Client(endpoint, timeout=10)
    client.connect()
    idx = client.get_namespace_index("urn:edgesentry:line")
    stations = client.nodes.objects.get_child([f"{idx}:{line}", f"{idx}:Stations"])

    def read(station: str, *names: str) -> dict:
        node = stations.get_child([f"{idx}:{station}"])
        return {n: node.get_child([f"{idx}:{n}"]).read_value() for n in names}

    return client, read


@pytest.mark.slow
def test_four_camera_line(isstad_bundle: Path, mosquitto: int, tmp_path: Path, monkeypatch, torch_one_thread) -> None:
    import edgesentry

    det = edgesentry.load(isstad_bundle, backend="onnxruntime")
    images = base_images()
    oracle_img = [float(det.predict(img).score) for img in images]  # unbatched, RGB: the reference
    ranked = sorted(oracle_img)
    thresholds = ((ranked[-1] + ranked[-2]) / 2, (ranked[2] + ranked[3]) / 2)  # st1: max rule, st2: mean rule
    order = {}
    for i, (cam, fps) in enumerate(CAMERAS.items()):
        order[cam] = write_video(tmp_path / f"{cam}.avi", images, fps, SECONDS * fps, offset=i)

    monkeypatch.setenv("TEST_LINE_HOOK_TOKEN", "tok-123")
    receiver = WebhookReceiver(token="tok-123").start()
    sub = _Subscriber(mosquitto, "test/parts")
    pub = _publisher(mosquitto)
    cfg = load_line_file(_line_file(tmp_path, isstad_bundle, mosquitto, receiver.url, thresholds))
    runtime = LineRuntime(cfg).start()
    opc = None
    try:
        sockets = listening_sockets()
        assert sockets and all(is_loopback(addr) for addr, _ in sockets), sockets
        assert {runtime.opcua.port, runtime.http_trigger.port} <= {port for _, port in sockets}
        by_ss = ss_listening_sockets(os.getpid())  # `ss -ltnp` agrees, where it is installed
        assert by_ss is None or sorted(by_ss) == sorted(sockets), (by_ss, sockets)
        opc, read = _opcua_reader(runtime.opcua.endpoint, "testline")
        wait_for(lambda: runtime.mqtt_trigger.subscribed, 10, "the trigger subscription")
        seen_opcua = {}
        for k in range(ROUNDS):
            pub.publish("test/st1/trigger", json.dumps({"part_id": f"P{k}"}), qos=1).wait_for_publish(5)
            if k == 4:  # one part through the HTTP trigger instead
                req = urllib.request.Request(f"{runtime.http_trigger.url}/trigger/st2", data=b'{"part_id": "Q4"}',
                                             method="POST")
                with urllib.request.urlopen(req, timeout=5) as r:
                    assert json.loads(r.read())["part_id"] == "Q4"
            else:
                pub.publish("test/st2/trigger", f"Q{k}", qos=1).wait_for_publish(5)
            for station, pid in (("st1", f"P{k}"), ("st2", f"Q{k}")):
                wait_for(lambda s=station, p=pid: read(s, "FinalPartId")["FinalPartId"] == p, 60,
                         f"OPC UA FinalPartId {pid}")
                seen_opcua[pid] = read(station, "Verdict", "Decision", "Score", "PartSeq", "Late")
            if k == 1:
                receiver.stop()  # the receiver goes down: records wait in the spool
            if k == 3:
                assert len(receiver.received) == 4  # nothing arrived while it was down
                receiver.start()  # back: the spool is replayed in order
        runtime.stop()
        summary = runtime.join(120)
    finally:
        if opc is not None:
            opc.disconnect()
        runtime.stop(drain=False)
        runtime.join(60)
        pub.loop_stop()
        pub.disconnect()
    wait_for(lambda: len(sub.records) >= 2 * ROUNDS, 10, "the MQTT records")
    sub.close()
    receiver.stop()

    assert summary is not None and summary["exit_code"] == 0, summary
    audit = read_jsonl(tmp_path / "audit.jsonl")
    frames = read_jsonl(tmp_path / "frames.jsonl")
    # every part, exactly once and in order, at every sink
    assert [r["part"] for r in audit] == list(range(2 * ROUNDS))
    assert sorted(r["part_id"] for r in audit) == sorted([f"P{k}" for k in range(ROUNDS)] +
                                                         [f"Q{k}" for k in range(ROUNDS)])
    assert sub.records == audit
    assert receiver.received == audit and receiver.unauthorized == 0
    assert len(set(receiver.keys)) == len(audit)
    assert summary["sinks"]["webhook"]["failures"] > 0 and summary["sinks"]["webhook"]["spooled"] == 0
    assert not any((tmp_path / "spool").glob("*.json"))
    # accounting per camera, and parts against the frame log
    check_camera_accounting(summary, frames)
    check_parts_match_frames(audit, frames)
    assert summary["detectors"]["isstad"]["mixed_batches"] > 0  # batches mixed cameras
    # scores and verdicts against the oracle
    oracle = {(r["camera"], r["frame"]): oracle_img[order[r["camera"]][r["frame"]]]
              for r in frames if r["status"] == "ok"}
    for r in frames:
        if r["status"] == "ok":  # ONNX Runtime batched vs unbatched: float32 sums in another order
            assert r["score"] == pytest.approx(oracle[(r["camera"], r["frame"])], rel=1e-4, abs=1e-6)
    rules = {"st1": ("max", thresholds[0]), "st2": ("mean", thresholds[1])}
    for part in audit:
        kind, thr = rules[part["station"]]
        verdict, score = rule_verdict(part, kind, thr, oracle)
        assert part["verdict"] == verdict and part["score"] == pytest.approx(score, rel=1e-4)
        assert len(part["frames"]) == 4 and {f["camera"] for f in part["frames"]} == set(
            cfg.stations[0 if part["station"] == "st1" else 1].cameras)
        expected_decision = part["verdict"] if not (part["late"] or part["degraded"]) else part["decision"]
        assert part["decision"] == expected_decision
        got = seen_opcua[part["part_id"]]
        assert (got["Verdict"], got["Decision"], got["PartSeq"], got["Late"]) == (
            part["verdict"], part["decision"], part["part"], part["late"])
        assert got["Score"] == pytest.approx(part["score"])
    for st in summary["stations"].values():
        assert st["triggered"] == st["decided"] == st["final"] == ROUNDS and st["counts_add_up"], st
    print(f"line: {summary['processed']} frames scored, {summary['dropped']} dropped "
          f"({ {c: d['dropped_by_reason'] for c, d in summary['cameras'].items()} }), "
          f"mean batch {summary['detectors']['isstad']['mean_batch']:.2f}, verdicts "
          f"{[p['verdict'] for p in audit]}, decision p50 "
          f"{ {s: v['decision_latency_ms']['p50'] for s, v in summary['stations'].items()} } ms")
    assert np.isfinite([p["score"] for p in audit]).all()
