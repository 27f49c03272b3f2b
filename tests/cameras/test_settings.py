"""Camera settings: parsing, checks, and the SFNC order they reach a node map in (no camera library needed)."""

from __future__ import annotations

from typing import Any

import pytest

from edgesentry.errors import ConfigError, InputError
from edgesentry.stream.cameras import CameraSettings, open_camera, pick_camera
from edgesentry.stream.cameras.settings import apply
from edgesentry.stream.cameras.source import CameraInfo, CameraNotFound, CameraSource


class NodeMap:
    """A GenICam node map in memory: records every write in order, refuses unknown enum values."""

    model = "Test Cam"

    def __init__(self, features: dict[str, Any], enums: dict[str, list[str]]):
        self.values, self.enums, self.writes = dict(features), enums, []

    def has(self, feature: str) -> bool:
        return feature in self.values

    def get(self, feature: str) -> Any:
        return self.values[feature]

    def set(self, feature: str, value: Any) -> None:
        if feature in self.enums:
            assert value in self.enums[feature], (feature, value)
        self.writes.append((feature, value))
        self.values[feature] = value

    def choices(self, feature: str) -> list[str]:
        return list(self.enums.get(feature, []))


def sfnc_camera() -> NodeMap:
    features = {"ExposureTime": 10000.0, "ExposureAuto": "Continuous", "Gain": 0.0, "PixelFormat": "Mono8",
                "Width": 640, "Height": 480, "OffsetX": 0, "OffsetY": 0, "AcquisitionFrameRate": 30.0,
                "AcquisitionFrameRateEnable": False, "TriggerSelector": "FrameStart", "TriggerMode": "Off",
                "TriggerSource": "Software", "TriggerActivation": "RisingEdge", "TriggerSoftware": None}
    enums = {"PixelFormat": ["Mono8", "Mono12", "BayerRG8", "RGB8Packed"], "ExposureAuto": ["Off", "Continuous"],
             "TriggerSelector": ["FrameStart", "FrameBurstStart"], "TriggerMode": ["Off", "On"],
             "TriggerSource": ["Software", "Line1", "Line2"], "TriggerActivation": ["RisingEdge", "FallingEdge"]}
    return NodeMap(features, enums)


def test_settings_reach_the_camera_in_sfnc_order_and_are_read_back() -> None:
    cam = sfnc_camera()
    s = CameraSettings(exposure_us=2000, gain_db=3.5, pixel_format="RGB8", roi=(16, 8, 320, 240), frame_rate=50,
                       trigger="hardware", trigger_source="Line2", trigger_activation="FallingEdge")
    back = apply(cam, s)
    order = [feature for feature, _ in cam.writes]
    assert order.index("PixelFormat") < order.index("Width")  # the format sets the ROI's increments
    assert cam.writes[order.index("Width") - 2:order.index("Width")] == [("OffsetX", 0), ("OffsetY", 0)]
    assert order.index("TriggerSelector") < order.index("TriggerMode") < order.index("TriggerSource")
    assert ("ExposureAuto", "Off") in cam.writes and ("AcquisitionFrameRateEnable", True) in cam.writes
    assert cam.values["PixelFormat"] == "RGB8Packed"  # the camera's own spelling of RGB8
    assert back == {"model": "Test Cam", "exposure_us": 2000.0, "gain_db": 3.5, "pixel_format": "RGB8Packed",
                    "frame_rate": 50.0, "trigger_selector": "FrameStart", "trigger_mode": "On",
                    "trigger_source": "Line2", "trigger_activation": "FallingEdge", "roi": [16, 8, 320, 240],
                    "trigger": "hardware"}


def test_trigger_off_clears_every_selector() -> None:
    cam = sfnc_camera()
    cam.values["TriggerMode"] = "On"
    apply(cam, CameraSettings(trigger="off"))
    assert [v for f, v in cam.writes if f == "TriggerSelector"] == ["FrameStart", "FrameBurstStart", "FrameStart"]
    assert cam.values["TriggerMode"] == "Off"


def test_missing_features_and_refused_values_name_the_camera() -> None:
    cam = sfnc_camera()
    del cam.values["Gain"]
    with pytest.raises(ConfigError, match=r"camera Test Cam has no feature Gain \(needed by gain_db\); the features "
                                          r"it has: ExposureTime, ExposureAuto, PixelFormat"):
        apply(cam, CameraSettings(gain_db=1.0))
    with pytest.raises(ConfigError, match="camera Test Cam has no feature GainRaw"):
        apply(cam, CameraSettings(gain_raw=1))
    with pytest.raises(ConfigError, match="PixelFormat cannot be 'Mono16'.*it offers Mono8, Mono12, BayerRG8"):
        apply(cam, CameraSettings(pixel_format="Mono16"))
    del cam.values["TriggerSoftware"]
    with pytest.raises(ConfigError, match="has no feature TriggerSoftware"):
        apply(cam, CameraSettings(trigger="software"))


def test_parsing_and_checks() -> None:
    s = CameraSettings.from_query("exposure_us=1500&gain_raw=-2&roi=1,2,30,40&trigger=software&buffers=3")
    assert (s.exposure_us, s.gain_raw, s.roi, s.trigger, s.buffers) == (1500.0, -2, (1, 2, 30, 40), "software", 3)
    assert CameraSettings.from_query("") == CameraSettings()
    bad = {"roi=1,2,3": "camera roi must be", "roi=a,b,c,d": "roi must be x,y,width,height",
           "exposure_us=fast": "exposure_us must be a number", "exposure_us=-1": "exposure_us must be a positive",
           "buffers=0": "buffers must be an integer in", "trigger=sometimes": "trigger must be one of",
           "pixel_format=Mono12p": "is not supported; supported:", "speed=3": "unknown setting(s) speed",
           "gain_db=500": "gain_db must be a number of dB", "roi=0,0,0,5": "width and height > 0",
           "novalue": "settings must be key=value&key=value", "a=1&" * 40: "settings must be"}
    for query, message in bad.items():
        with pytest.raises((ConfigError, InputError), match=message.replace("(", r"\(").replace(")", r"\)")):
            CameraSettings.from_query(query)
    with pytest.raises(ConfigError, match="camera backend must be one of"):
        open_camera("basler:1")


def test_pick_camera_by_any_id() -> None:
    found = [CameraInfo("dev-a", "Acme", "M1", "S1", "line-a", "10.0.0.5"),
             CameraInfo("dev-b", "Acme", "M1", "S2", "", "10.0.0.6")]
    for key, want in (("dev-b", "dev-b"), ("S1", "dev-a"), ("line-a", "dev-a"), ("10.0.0.6", "dev-b"), ("", "dev-a")):
        assert pick_camera(found, key, "test").id == want
    with pytest.raises(CameraNotFound, match="2 test cameras match 'Acme/M1'; name one by serial or id: dev-a"):
        pick_camera(found, "Acme/M1", "test")
    with pytest.raises(CameraNotFound, match=r"no test camera 'S9'; cameras found: dev-a \(Acme M1, serial S1, "
                                             r"user id line-a, address 10.0.0.5\); dev-b"):
        pick_camera(found, "S9", "test")


@pytest.mark.parametrize("ids, complete, lost", [
    ([5, 6, 7], None, [0, 0, 0]),
    ([5, 9], None, [0, 3]),
    ([65534, 65535, 1, 4], None, [0, 0, 0, 2]),  # 16-bit ids wrap to 1 (0 is never used)
    ([5, 0, 6], [True, False, True], [0, 0, 0]),  # an incomplete buffer's id is not a reference
    ([5, 77, 9], [True, False, True], [0, 0, 2]),  # 6, 7, 8: one arrived incomplete, two never did
    ([900, 3], None, [0, 0]),  # numbering restarted (a reopened camera): not loss
    ([5, 5 + (1 << 15) + 10], None, [0, 0]),  # an absurd jump: a restart, not 32 768 lost frames
])
def test_block_id_gaps(ids: list[int], complete: list[bool] | None, lost: list[int]) -> None:
    source = CameraSource("x")
    flags = complete or [True] * len(ids)
    assert [source._gap(i, c) for i, c in zip(ids, flags)] == lost
