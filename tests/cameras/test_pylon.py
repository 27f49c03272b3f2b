"""The pylon source against pypylon's emulated cameras (``PYLON_CAMEMU=2``, set in conftest.py).

An emulated camera's test image is a grey ramp: the pixel at (y, x) of the frame with block id
``n`` is ``(OffsetX + x + OffsetY + y + n + 1) mod 256``, at the top 8 bits of every pixel
format (Mono12 carries it << 4, RGB8 in all three channels, Bayer through the colour filter).
That known frame is the oracle here, computed without the camera.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edgesentry
from edgesentry.cli import main
from edgesentry.errors import ConfigError
from edgesentry.stream.cameras import CameraNotFound, CameraSettings, camera_source
from edgesentry.stream.sources import IDLE
from tests.reliability.isstad_bundle import convert_tiny
from tests.stream.helpers import read_jsonl

from .helpers import check_identity

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ROI = (8, 16, 64, 48)


def ramp(frame_id: int, roi=ROI) -> np.ndarray:
    """The emulated camera's test image as RGB uint8 (see the module docstring)."""
    x0, y0, w, h = roi
    y, x = np.mgrid[0:h, 0:w]
    grey = ((x0 + x + y0 + y + frame_id + 1) % 256).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def _frames(source, n: int) -> list:
    frames = []
    for _ in range(2000):
        raw = source.read()
        if raw is not IDLE:
            frames.append(raw)
            if len(frames) == n:
                return frames
    raise AssertionError(f"only {len(frames)} of {n} frames")


def test_enumerate_configure_and_read_back(pylon_emulation) -> None:
    assert {c.serial for c in pylon_emulation} >= {"0815-0000", "0815-0001"}
    settings = CameraSettings(exposure_us=1500.0, gain_db=2.0, pixel_format="Mono8", roi=ROI, frame_rate=50.0,
                              trigger="software")
    source = camera_source("pylon", "0815-0001", settings)
    try:
        source.open()
        applied = source.applied
        assert source.info.serial == "0815-0001" and applied["model"] == "Basler Emulation"
        assert applied["exposure_us"] == pytest.approx(1500.0)
        assert applied["gain_db"] == pytest.approx(2.0, abs=0.05)  # the camera rounds to its gain steps
        assert applied["roi"] == list(ROI) and applied["frame_rate"] == pytest.approx(50.0)
        assert (applied["trigger_mode"], applied["trigger_source"]) == ("On", "Software")
    finally:
        source.close()


@pytest.mark.parametrize("pixel_format", ["Mono8", "Mono12", "Mono16", "RGB8", "BGR8"])
def test_known_frames_through_the_driver(pylon_emulation, pixel_format: str) -> None:
    source = camera_source("pylon", "0815-0000", CameraSettings(pixel_format=pixel_format, roi=ROI,
                                                                trigger="software"))
    try:
        source.open()
        frames = _frames(source, 3)
    finally:
        source.close()
    for raw in frames:
        assert raw.error is None and raw.lost == 0
        np.testing.assert_array_equal(raw.image, ramp(raw.meta["frame_id"]))
    assert [raw.meta["frame_id"] for raw in frames] == list(range(frames[0].meta["frame_id"],
                                                                 frames[0].meta["frame_id"] + 3))


@pytest.mark.parametrize("pixel_format", ["BayerRG8", "BayerBG12"])
def test_bayer_frames_through_the_driver(pylon_emulation, pixel_format: str) -> None:
    source = camera_source("pylon", "0815-0000", CameraSettings(pixel_format=pixel_format, roi=ROI,
                                                                trigger="software"))
    try:
        source.open()
        raw = _frames(source, 1)[0]
    finally:
        source.close()
    # a grey ramp seen through a colour filter and demosaiced: grey again inside the image
    # (bilinear interpolation of a linear ramp), within 2 levels; borders are interpolated
    # from one side only and left out
    inner = (slice(2, -2), slice(2, -2))
    diff = raw.image[inner].astype(int) - ramp(raw.meta["frame_id"])[inner].astype(int)
    assert np.abs(diff).max() <= 2


def test_watch_pylon_camera_through_tiny_isstad(pylon_emulation, shared: Path, tmp_path: Path,
                                                torch_one_thread, capsys) -> None:
    if not Path(edgesentry.__file__).with_name("detectors").joinpath("isstad.py").exists():
        pytest.skip("isstad family not in this checkout")
    bundle = convert_tiny(shared, tmp_path / "isstad")
    roi = ",".join(map(str, ROI))
    code = main(["watch", str(bundle), f"pylon:0815-0000?trigger=software&pixel_format=Mono12&roi={roi}",
                 "--max-frames", "6", "--batch", "2", "--latency-budget", "500", "--policy", "block",
                 "--jsonl", str(tmp_path / "r.jsonl"), "--summary", str(tmp_path / "s.json"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "s.json").read_text())
    records = read_jsonl(tmp_path / "r.jsonl")
    check_identity(records, summary)
    assert summary["processed"] == 6 and summary["camera"]["applied"]["pixel_format"] == "Mono12"
    det = edgesentry.load(bundle)
    for rec in records:
        assert rec["acquisition"]["pixel_format"] == "Mono12"
        oracle = det.predict(ramp(rec["acquisition"]["frame_id"])).score
        assert rec["score"] == pytest.approx(oracle, rel=1e-5, abs=1e-7)


def test_bad_pylon_input(pylon_emulation, capsys) -> None:
    with pytest.raises(CameraNotFound, match=r"no pylon camera 'NOPE'; cameras found: Emulation \(0815-0000\) "
                                             r"\(Basler Emulation, serial 0815-0000\); Emulation \(0815-0001\)"):
        camera_source("pylon", "NOPE").open()
    with pytest.raises(CameraNotFound, match="2 pylon cameras match 'Emulation'; name one by serial"):
        camera_source("pylon", "Emulation").open()
    source = camera_source("pylon", "0815-0000", CameraSettings(trigger="hardware", trigger_source="Line9"))
    with pytest.raises(ConfigError, match="camera Basler Emulation: TriggerSource cannot be 'Line9' "
                                          r"\(setting trigger=hardware\); it offers Software, Line1"):
        source.open()
    code = main(["watch", "isstad", "pylon:0815-0000?roi=0,0,99999,8", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 2 and "camera Basler Emulation: cannot set Width to 99999" in err[0]
