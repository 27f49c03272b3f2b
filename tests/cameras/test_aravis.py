"""The Aravis source against Aravis' fake GigE Vision camera on 127.0.0.1 (real GVCP / GVSP over UDP).

The fake camera (``arv-fake-gv-camera-0.8``) is started and killed by the ``fake_gv_camera``
fixture. It offers ``ExposureTimeAbs`` and ``GainRaw`` (no ``Gain``), Mono8 / Mono16 / RGB8 /
Bayer8 pixel formats and a software trigger; its 16-bit block ids start near the wrap (65401),
so a run of a hundred frames also crosses the wrap.
"""

from __future__ import annotations

import logging
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
from edgesentry.stream import Stream
from edgesentry.stream.cameras import CameraNotFound, CameraSettings, camera_source, list_cameras
from edgesentry.stream.sources import IDLE
from tests.reliability.isstad_bundle import convert_tiny
from tests.stream.helpers import NoOpDetector

from .helpers import KeepSink, check_identity, check_ids_add_up, id_span

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _read_frames(source, n: int, timeout_s: float = 60.0) -> list:
    frames, deadline = [], time.monotonic() + timeout_s
    while len(frames) < n:
        assert time.monotonic() < deadline, f"only {len(frames)} of {n} frames within {timeout_s}s"
        raw = source.read()
        if raw is not IDLE:
            frames.append(raw)
    return frames


def test_enumerate_configure_and_read_back(fake_gv_camera) -> None:
    found = [c for c in list_cameras("aravis") if c.serial == "GV01"]
    assert len(found) == 1 and found[0].address == "127.0.0.1" and found[0].vendor == "Aravis"
    settings = CameraSettings(exposure_us=2500.0, gain_raw=4, pixel_format="Mono8", roi=(8, 16, 64, 48),
                              frame_rate=40.0, trigger="software")
    source = camera_source("aravis", "GV01", settings)
    try:
        source.open()
        applied = source.applied
        assert applied["model"] == "Aravis Fake"
        assert applied["exposure_us"] == pytest.approx(2500.0) and applied["gain_raw"] == 4
        assert applied["pixel_format"] == "Mono8" and applied["roi"] == [8, 16, 64, 48]
        assert applied["frame_rate"] == pytest.approx(40.0)
        assert (applied["trigger_mode"], applied["trigger_source"], applied["trigger_selector"]) == \
            ("On", "Software", "FrameStart")
        frames = _read_frames(source, 3)
        for raw in frames:
            assert raw.error is None and raw.image.shape == (48, 64, 3) and raw.image.dtype == np.uint8
            assert raw.meta["pixel_format"] == "Mono8" and raw.meta["camera_timestamp_ns"] > 0
            assert (raw.image[:, :, 0] == raw.image[:, :, 2]).all()  # grey copied to R, G, B
        ids = [raw.meta["frame_id"] for raw in frames]
        assert id_span(ids) == 3  # one frame per software trigger, none lost
    finally:
        source.close()


@pytest.mark.parametrize("pixel_format", ["Mono16", "RGB8", "BayerRG8"])
def test_other_pixel_formats_reach_the_detector_as_rgb(fake_gv_camera, pixel_format: str) -> None:
    source = camera_source("aravis", "", CameraSettings(pixel_format=pixel_format, roi=(0, 0, 32, 24),
                                                        trigger="software"))
    try:
        source.open()
        assert source.applied["pixel_format"] == pixel_format
        raw = _read_frames(source, 1)[0]
        assert raw.error is None and raw.meta["pixel_format"] == pixel_format
        assert raw.image.shape == (24, 32, 3) and raw.image.dtype == np.uint8
    finally:
        source.close()


def test_software_trigger_through_tiny_isstad(fake_gv_camera, shared: Path, tmp_path: Path,
                                              torch_one_thread) -> None:
    if not Path(edgesentry.__file__).with_name("detectors").joinpath("isstad.py").exists():
        pytest.skip("isstad family not in this checkout")
    det = edgesentry.load(convert_tiny(shared, tmp_path / "isstad"))
    keep = KeepSink()
    source = camera_source("aravis", "Aravis-Fake-GV01", CameraSettings(trigger="software", roi=(0, 0, 64, 48)))
    summary = Stream(det, source, sinks=[keep], max_frames=8, batch_size=2, latency_budget_ms=500,
                     policy="block").run(handle_signals=False).to_dict()
    check_identity(keep.records, summary)
    assert summary["processed"] == 8 and summary["exit_reason"] == "max_frames"
    ids = [r["acquisition"]["frame_id"] for r in keep.ok()]
    assert id_span(ids) == 8  # triggered one by one: nothing lost on the way
    for rec in keep.ok():
        assert rec["score"] == pytest.approx(det.predict(keep.images[rec["frame"]]).score, rel=1e-5, abs=1e-7)
    camera = summary["camera"]
    assert camera["backend"] == "aravis" and camera["camera"]["serial"] == "GV01"
    assert camera["applied"]["trigger_source"] == "Software" and camera["received"] == 8


def test_host_missing_frames_counts_them_as_transport_drops(fake_gv_camera) -> None:
    # Two driver buffers and a consumer ~3x slower than a free-running 60 fps camera: the driver
    # has no buffer for most frames, and the gaps in block ids come back as dropped (transport).
    keep = KeepSink(delay_s=0.05)
    source = camera_source("aravis", "GV01", CameraSettings(frame_rate=60.0, buffers=2, roi=(0, 0, 32, 32)))
    summary = Stream(NoOpDetector(), source, sinks=[keep], max_frames=60, policy="block",
                     queue_size=1).run(handle_signals=False).to_dict()
    check_identity(keep.records, summary)
    lost = summary["dropped_by_reason"].get("transport", 0)
    assert lost > 0, summary
    assert summary["camera"]["lost_in_transport"] == lost
    check_ids_add_up(keep.records)


def test_incomplete_buffers_are_failed_frames(fake_gv_camera) -> None:
    # The fake camera drops 1% of its GVSP packets: frames arrive with packets missing (what
    # stays incomplete after Aravis' resend requests comes back as a failed buffer), each a
    # failed frame with reason "incomplete", and the block ids still add up: an incomplete
    # buffer is not also counted as lost
    fake_gv_camera.start(lost_per_thousand=10)
    try:
        keep = KeepSink()
        source = camera_source("aravis", "GV01", CameraSettings(frame_rate=50.0, roi=(0, 0, 256, 256)))
        summary = Stream(NoOpDetector(), source, sinks=[keep], max_frames=40,
                         policy="block").run(handle_signals=False).to_dict()
    finally:
        fake_gv_camera.start()
    check_identity(keep.records, summary)
    assert summary["failed_by_reason"].get("incomplete", 0) > 0, summary
    assert set(summary["failed_by_reason"]) == {"incomplete"}
    failed = [r for r in keep.records if r["status"] == "failed"]
    assert all("arrived incomplete" in r["error"] for r in failed)
    check_ids_add_up(keep.records)


def test_camera_killed_and_restarted_mid_run(fake_gv_camera, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="edgesentry.stream")
    seen = threading.Event()
    keep = KeepSink(on_record=lambda rec: seen.set() if len(keep.records) >= 10 else None)
    source = camera_source("aravis", "GV01", CameraSettings(trigger="software", roi=(0, 0, 32, 32), timeout_s=1.0))
    runner = Stream(NoOpDetector(), source, sinks=[keep], max_frames=30, policy="block", max_retries=40,
                    backoff_s=(0.2, 1.0)).start()
    try:
        assert seen.wait(60), "no frames before the kill"
        fake_gv_camera.kill()
        time.sleep(1.5)
        fake_gv_camera.start(wait=False)
        result = runner.join(120)
    finally:
        if runner.join(0) is None:
            runner.stop(drain=False)
            runner.join(30)
    assert result is not None, "the stream did not finish after the camera came back"
    summary = result.to_dict()
    check_identity(keep.records, summary)
    assert summary["exit_code"] == 0 and summary["exit_reason"] == "max_frames"
    assert summary["processed"] + summary["failed"] + summary["dropped"] == 30
    assert summary["reconnects"] >= 1 and summary["camera"]["opens"] == 2
    assert any("reconnected" in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


# ---------------------------------------------------------------------------- bad input
def _watch(args: list[str], capsys) -> tuple[int, list[str]]:
    code = main(["watch", "isstad", *args, "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_bad_camera_input_is_one_line(fake_gv_camera, capsys) -> None:
    cases = {
        "aravis:NOPE": "no aravis camera 'NOPE'; cameras found: Aravis-Fake-GV01 (Aravis Fake, serial GV01",
        "aravis:GV01?gain_db=3": "camera Aravis Fake has no feature Gain (needed by gain_db); the features it "
                                 "has: ExposureTimeAbs, GainRaw, GainAuto, PixelFormat",
        "aravis:GV01?pixel_format=Mono12": "camera Aravis Fake: PixelFormat cannot be 'Mono12' (setting "
                                           "pixel_format); it offers BayerBG8",
        "aravis:GV01?pixel_format=YUV422Packed": "pixel format 'YUV422Packed' is not supported; supported: Mono8",
        "aravis:GV01?shutter=3": "unknown setting(s) shutter; known: exposure_us",
    }
    for spec, message in cases.items():
        code, err = _watch([spec], capsys)
        assert code == 1, spec
        assert len(err) == 2 and err[1].startswith("failed | edgesentry watch"), err
        assert err[0].startswith("edgesentry watch: error: ") and message in err[0], (spec, err[0])


def test_busy_camera_is_one_line(fake_gv_camera, capsys) -> None:
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys\n"
        "from edgesentry.stream.cameras import camera_source\n"
        "s = camera_source('aravis', 'GV01'); s.open(); print('open', flush=True); sys.stdin.read()\n")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        code, err = _watch(["aravis:GV01"], capsys)
        assert code == 1 and len(err) == 2 and "camera Aravis-Fake-GV01 (Aravis Fake, serial GV01" in err[0]
        assert "is busy: another process controls it" in err[0]
    finally:
        holder.kill()
        holder.wait(10)


def test_no_camera_lists_none(capsys) -> None:
    from .conftest import aravis_or_skip

    aravis_or_skip()
    if any(c.serial == "NOSUCH" for c in list_cameras("aravis")):
        pytest.skip("a camera with serial NOSUCH is present")
    with pytest.raises(CameraNotFound, match="no aravis camera 'NOSUCH'"):
        camera_source("aravis", "NOSUCH").open()
    with pytest.raises(ConfigError, match="camera trigger must be one of"):
        CameraSettings(trigger="sometimes")
