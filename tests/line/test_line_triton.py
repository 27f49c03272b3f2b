"""One camera of a line scored through a real ``tritonserver`` on loopback (the python-backend
repository of the tiny ISSTAD bundle), the other one locally: the remote scores equal
``Detector.predict``, the verdicts equal the rule on local scores; then the server is stopped
mid-run and the remote camera's frames become failed frames (never lost ones), its parts
degraded and decided by the fail-safe."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgesentry.line import LineRuntime, load_line_file

from .helpers import (
    base_images,
    check_camera_accounting,
    check_parts_match_frames,
    read_jsonl,
    rule_verdict,
    wait_for,
    write_video,
)

pytest.importorskip("cv2")
pytest.importorskip("tritonclient.grpc")


@pytest.mark.slow
@pytest.mark.triton_server
def test_remote_camera_same_verdicts_then_failed_frames(isstad_bundle: Path, tmp_path: Path) -> None:
    import edgesentry
    from edgesentry.bundle import Bundle
    from edgesentry.errors import BackendUnavailableError
    from edgesentry.serving import write_model_repository
    from edgesentry.serving.local import LocalTritonServer

    images = base_images(4)
    det = edgesentry.load(isstad_bundle, backend="onnxruntime")
    oracle_img = [float(det.predict(img).score) for img in images]
    ranked = sorted(oracle_img)
    threshold = (ranked[1] + ranked[2]) / 2
    order = {cam: write_video(tmp_path / f"{cam}.avi", images, 10, 600, offset=i)
             for i, cam in enumerate(("local", "remote"))}

    write_model_repository(Bundle.open(isstad_bundle), tmp_path / "repo", variant="python", example=images[0])
    server = LocalTritonServer(tmp_path / "repo", startup_timeout=60)
    try:
        server.start()  # before tritonclient.http is imported (gevent must not be forked)
    except BackendUnavailableError as exc:
        server.close()
        pytest.skip(f"pytriton's tritonserver cannot start here: {exc}")
    line = tmp_path / "line.toml"
    line.write_text(f"""
[line]
name = "remote"
deadline_ms = 30000
status_interval_s = 0.1

[detectors.local]
bundle = "{isstad_bundle}"
backend = "onnxruntime"

[detectors.served]
triton = {{ url = "{server.http_url}", model = "isstad", timeout_s = 10 }}

[[cameras]]
id = "local"
detector = "local"
source = {{ kind = "video", path = "local.avi" }}

[[cameras]]
id = "remote"
detector = "served"
source = {{ kind = "video", path = "remote.avi" }}

[[stations]]
id = "st"
cameras = ["local", "remote"]
rule = {{ kind = "max", threshold = {threshold!r} }}

[[triggers]]
station = "st"
kind = "http"

[http]
port = 0

[outputs]
audit = "audit.jsonl"
frames = "frames.jsonl"
""")
    runtime = LineRuntime(load_line_file(line)).start()
    served, down = 4, 3
    try:
        for k in range(served):
            runtime.trigger("st", f"up{k}")
            wait_for(lambda k=k: runtime.tracker.stats["st"].final > k, 60, f"part up{k}")
        server.stop()  # mid-run: the next remote calls are refused
        for k in range(down):
            runtime.trigger("st", f"down{k}")
            wait_for(lambda k=k: runtime.tracker.stats["st"].final > served + k, 60, f"part down{k}")
        assert runtime.health()["detectors"]["served"] == "unreachable"
        assert runtime.health()["stations"]["st"].startswith("degraded")
    finally:
        runtime.stop()
        summary = runtime.join(60)
        server.close()
    audit = {r["part_id"]: r for r in read_jsonl(tmp_path / "audit.jsonl")}
    frames = read_jsonl(tmp_path / "frames.jsonl")
    check_camera_accounting(summary, frames)
    check_parts_match_frames(list(audit.values()), frames)
    oracle = {(r["camera"], r["frame"]): oracle_img[order[r["camera"]][r["frame"]]]
              for r in frames if r.get("part") is not None}
    for k in range(served):
        part = audit[f"up{k}"]
        assert [f["status"] for f in part["frames"]] == ["ok", "ok"] and not part["degraded"]
        for f in part["frames"]:  # served (python-backend ONNX Runtime) vs local ONNX Runtime, same graph
            assert f["score"] == pytest.approx(oracle[(f["camera"], f["frame"])], rel=1e-5, abs=1e-6)
        verdict, _ = rule_verdict(part, "max", threshold, oracle)
        assert part["verdict"] == part["decision"] == verdict
    for k in range(down):
        part = audit[f"down{k}"]
        by_cam = {f["camera"]: f for f in part["frames"]}
        assert by_cam["local"]["status"] == "ok"
        assert by_cam["remote"]["status"] == "failed" and by_cam["remote"]["error"].startswith("RemoteError")
        assert part["degraded"]
        local_only, _ = rule_verdict(part, "max", threshold, oracle)
        assert part["verdict"] == local_only
        assert part["decision"] == "reject"  # the verdict, or the fail-safe (reject): never an unsure accept
        assert part["fail_safe"] == (local_only != "reject")
    remote = summary["cameras"]["remote"]
    assert remote["failed"] >= down and remote["failed_by_reason"].get("RemoteError", 0) >= down
    assert summary["exit_code"] == 0
