"""Industrial cameras in a line file: settings from the line file, fired by the part trigger, health.

- pylon emulation: two software-triggered cameras of one station; each part trigger fires each
  camera ``frames`` times, and the part gets exactly those frames (matched by block id against the
  emulated camera's known test image, see test_pylon.py).
- Aravis fake GigE camera: killed while the line runs, the next part is degraded (missing
  camera), the station is reported degraded, the camera comes back and parts are whole again.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edgesentry.errors import ConfigError
from edgesentry.line import LineRuntime, load_line_file
from tests.line.helpers import check_camera_accounting, check_parts_match_frames, read_jsonl, wait_for
from tests.stream.helpers import MeanDetector, mean_score

from .test_pylon import ramp

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
pytest.importorskip("jsonschema")

LINE = """
[line]
name = "genicam"
deadline_ms = 20000
status_interval_s = 0.05

[detectors.mean]
bundle = "unused"

{cameras}

[[stations]]
id = "st"
cameras = [{ids}]
frames = {frames}
collect_timeout_ms = {collect_ms}
rule = {{ kind = "max", threshold = 2.0 }}

[[triggers]]
station = "st"
kind = "http"

[http]
port = 0

[outputs]
audit = "audit.jsonl"
frames = "frames.jsonl"
"""


def _line(tmp_path: Path, cameras: dict[str, str], frames: int = 2, collect_ms: int = 10000, extra: str = "") -> Path:
    blocks = "\n".join(f'[[cameras]]\nid = "{cid}"\ndetector = "mean"\nsource = {{ {src} }}\n{extra}\n'
                       for cid, src in cameras.items())
    path = tmp_path / "line.toml"
    path.write_text(LINE.format(cameras=blocks, ids=", ".join(f'"{c}"' for c in cameras), frames=frames,
                                collect_ms=collect_ms))
    return path


def test_part_trigger_fires_pylon_cameras(pylon_emulation, tmp_path: Path) -> None:
    settings = 'trigger = "software", pixel_format = "Mono8", roi = [8, 16, 64, 48], exposure_us = 1000'
    path = _line(tmp_path, {"top": f'kind = "pylon", camera = "0815-0000", {settings}',
                            "side": f'kind = "pylon", camera = "0815-0001", {settings}'})
    runtime = LineRuntime(load_line_file(path, check_bundles=False), detectors={"mean": MeanDetector()}).start()
    try:
        for k in range(3):
            runtime.trigger("st", f"P{k}")
            wait_for(lambda k=k: runtime.tracker.stats["st"].final > k, 60, f"part P{k}")
    finally:
        runtime.stop()
        summary = runtime.join(60)
    assert summary is not None and summary["exit_code"] == 0
    frames = read_jsonl(tmp_path / "frames.jsonl")
    audit = read_jsonl(tmp_path / "audit.jsonl")
    check_camera_accounting(summary, frames)
    check_parts_match_frames(audit, frames)
    assert summary["dropped"] == 0  # the cameras take a frame only when a part wants it: nothing idle
    for part in audit:
        assert not part["degraded"] and [f["status"] for f in part["frames"]] == ["ok"] * 4
    by_key = {(r["camera"], r["frame"]): r for r in frames}
    for cam in ("top", "side"):
        mine = sorted((r for r in frames if r["camera"] == cam), key=lambda r: r["frame"])
        ids = [r["acquisition"]["frame_id"] for r in mine]
        assert ids == list(range(ids[0], ids[0] + 6))  # two per part, none lost
        for r in mine:  # the emulated camera's known image, through pylon, the source and the detector
            assert r["score"] == pytest.approx(mean_score(ramp(r["acquisition"]["frame_id"])), rel=1e-9)
        applied = summary["cameras"][cam]["camera"]["applied"]
        assert applied["trigger_source"] == "Software" and applied["roi"] == [8, 16, 64, 48]
    for part in audit:  # a part's frames are the ones fired for it, in order
        for cam in ("top", "side"):
            ids = [by_key[(f["camera"], f["frame"])]["acquisition"]["frame_id"] for f in part["frames"]
                   if f["camera"] == cam]
            assert len(ids) == 2 and ids[1] == ids[0] + 1


def test_bad_camera_in_line_file_fails_before_start(pylon_emulation, tmp_path: Path) -> None:
    path = _line(tmp_path, {"top": 'kind = "pylon", camera = "NOPE"'})
    with pytest.raises(ConfigError, match="camera top: no pylon camera 'NOPE'; cameras found: Emulation"):
        LineRuntime(load_line_file(path, check_bundles=False), detectors={"mean": MeanDetector()})
    path = _line(tmp_path, {"top": 'kind = "pylon", camera = "0815-0000", trigger = "hardware", '
                                   'trigger_source = "Line7"'})
    with pytest.raises(ConfigError, match="TriggerSource cannot be 'Line7'"):
        LineRuntime(load_line_file(path, check_bundles=False), detectors={"mean": MeanDetector()})


def test_schema_refuses_unknown_camera_settings(tmp_path: Path, capsys) -> None:
    from edgesentry.cli import main

    path = _line(tmp_path, {"top": 'kind = "aravis", shutter = 3'})
    code = main(["line", "check", str(path)])
    err = capsys.readouterr().err
    assert code == 1 and "shutter" in err


def test_aravis_camera_lost_and_back_degrades_then_heals(fake_gv_camera, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    path = _line(tmp_path, {"gige": 'kind = "aravis", camera = "GV01", trigger = "software", roi = [0, 0, 32, 32], '
                                    'timeout_s = 1.0'}, frames=1, collect_ms=1500,
                 extra="max_retries = 100\nbackoff_s = [0.2, 0.5]")
    cfg = load_line_file(path, check_bundles=False)
    runtime = LineRuntime(cfg, detectors={"mean": MeanDetector()}).start()
    try:
        runtime.trigger("st", "before")
        wait_for(lambda: runtime.tracker.stats["st"].final > 0, 60, "part before")
        fake_gv_camera.kill()
        runtime.trigger("st", "during")  # the fire fails (or finds no frame): the part misses the camera
        wait_for(lambda: runtime.tracker.stats["st"].final > 1, 60, "part during")
        wait_for(lambda: runtime.health()["stations"]["st"].startswith("degraded"), 60, "station degraded")
        fake_gv_camera.start(wait=False)
        wait_for(lambda: runtime.health()["stations"]["st"] == "ok" and runtime.cameras["gige"].source.opens == 2,
                 90, "camera back")
        runtime.trigger("st", "after")
        wait_for(lambda: runtime.tracker.stats["st"].final > 2, 60, "part after")
    finally:
        runtime.stop()
        summary = runtime.join(60)
    frames = read_jsonl(tmp_path / "frames.jsonl")
    audit = {p["part_id"]: p for p in read_jsonl(tmp_path / "audit.jsonl")}
    check_camera_accounting(summary, frames)
    assert not audit["before"]["degraded"] and not audit["after"]["degraded"]
    assert audit["during"]["degraded"] and audit["during"]["decision"] == "reject"  # fail-safe, never accept
    assert summary["cameras"]["gige"]["reconnects"] >= 1
    assert any("reconnected" in r.getMessage() for r in caplog.records)
