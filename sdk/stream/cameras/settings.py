"""Camera settings (exposure, gain, pixel format, ROI, frame rate, trigger) and how they reach a camera.

The same settings come from a line file's ``source`` table, from ``edgesentry watch``'s camera
source (``aravis:ID?exposure_us=2000&trigger=software``) or from Python. They are applied at
open through standard GenICam (SFNC) feature names, in the order the SFNC requires (pixel
format before ROI, offsets cleared before the size grows, trigger selector before its mode),
and read back afterwards: what the camera actually runs with goes into the run's summary.

A feature the camera lacks stops the open with one line naming the feature, the camera model
and the features of ours it has.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl

from edgesentry.errors import ConfigError
from edgesentry.stream.cameras.pixels import ALIASES, lookup

TriggerKind = Literal["off", "software", "hardware"]
TRIGGERS = ("off", "software", "hardware")

#: settings -> the SFNC features tried, first present wins (older Basler GigE cameras: ...Abs)
EXPOSURE = ("ExposureTime", "ExposureTimeAbs")
FRAME_RATE = ("AcquisitionFrameRate", "AcquisitionFrameRateAbs")
KNOWN_FEATURES = (*EXPOSURE, "ExposureAuto", "Gain", "GainRaw", "GainAuto", "PixelFormat", "Width", "Height", "OffsetX",
                  "OffsetY", *FRAME_RATE, "AcquisitionFrameRateEnable", "AcquisitionMode", "TriggerSelector",
                  "TriggerMode", "TriggerSource", "TriggerActivation", "TriggerSoftware")


@dataclass
class CameraSettings:
    """What to set on a camera at open (``None``: leave the camera's own value).

    Attributes:
        exposure_us: exposure time in microseconds (``ExposureTime``).
        gain_db: analogue gain in dB (``Gain``).
        gain_raw: gain in the camera's own units (``GainRaw``: older GigE cameras without ``Gain``).
        pixel_format: a PFNC name (see ``pixels.py`` for what each becomes).
        roi: ``(offset_x, offset_y, width, height)`` in pixels.
        frame_rate: frames per second when free running (``AcquisitionFrameRate``).
        trigger: ``off`` (free running), ``software`` (one frame per software trigger: the
            runtime or the line's part trigger fires it) or ``hardware`` (an input line).
        trigger_selector / trigger_source / trigger_activation: the SFNC trigger features;
            ``trigger_source`` defaults to ``Software`` for software triggers and ``Line1``
            for hardware triggers.
        buffers: acquisition buffers queued to the driver; when all are full the camera's
            frames are lost on the host side and counted as dropped (``transport``).
        timeout_s: longest wait for one frame before the camera is checked for life.
    """

    exposure_us: float | None = None
    gain_db: float | None = None
    gain_raw: int | None = None
    pixel_format: str | None = None
    roi: tuple[int, int, int, int] | None = None
    frame_rate: float | None = None
    trigger: TriggerKind = "off"
    trigger_selector: str = "FrameStart"
    trigger_source: str | None = None
    trigger_activation: str | None = None
    buffers: int = 8
    timeout_s: float = 2.0

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        if self.trigger not in TRIGGERS:
            raise ConfigError(f"camera trigger must be one of {list(TRIGGERS)}; got {self.trigger!r}")
        for name in ("exposure_us", "frame_rate"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0 < value < 1e9):
                raise ConfigError(f"camera {name} must be a positive number; got {value!r}")
        if self.gain_db is not None and not (isinstance(self.gain_db, (int, float)) and -100 <= self.gain_db <= 100):
            raise ConfigError(f"camera gain_db must be a number of dB in [-100, 100]; got {self.gain_db!r}")
        if self.gain_raw is not None and not (isinstance(self.gain_raw, int) and abs(self.gain_raw) < 1 << 31):
            raise ConfigError(f"camera gain_raw must be an integer; got {self.gain_raw!r}")
        if self.pixel_format is not None:
            lookup(str(self.pixel_format), who="camera setting pixel_format")  # refuse what we cannot convert
        if self.roi is not None:
            roi = tuple(self.roi)
            if len(roi) != 4 or not all(isinstance(v, int) and 0 <= v < 1 << 20 for v in roi) or 0 in roi[2:]:
                raise ConfigError(f"camera roi must be [offset_x, offset_y, width, height] (integers, width and "
                                  f"height > 0); got {self.roi!r}")
            self.roi = roi  # type: ignore[assignment]
        if not (isinstance(self.buffers, int) and 1 <= self.buffers <= 1024):
            raise ConfigError(f"camera buffers must be an integer in [1, 1024]; got {self.buffers!r}")
        if not (isinstance(self.timeout_s, (int, float)) and 0 < self.timeout_s <= 3600):
            raise ConfigError(f"camera timeout_s must be in (0, 3600] seconds; got {self.timeout_s!r}")

    @property
    def source_feature(self) -> str:
        return self.trigger_source or ("Software" if self.trigger == "software" else "Line1")

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, who: str = "camera settings") -> CameraSettings:
        """Settings from a table (line file) or parsed query; unknown keys are refused by name."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ConfigError(f"{who}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(names)}")
        return cls(**dict(values))

    @classmethod
    def from_query(cls, query: str, *, who: str = "camera settings") -> CameraSettings:
        """Settings from ``key=value&key=value`` (numbers parsed; ``roi=x,y,w,h``)."""
        values: dict[str, Any] = {}
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=32)
        except ValueError as exc:
            raise ConfigError(f"{who}: settings must be key=value&key=value; {exc}") from None
        for key, text in pairs:
            if key == "roi":
                try:
                    values[key] = tuple(int(v) for v in text.split(","))
                except ValueError:
                    raise ConfigError(f"{who}: roi must be x,y,width,height; got {text!r}") from None
            elif key in ("exposure_us", "gain_db", "frame_rate", "timeout_s"):
                try:
                    values[key] = float(text)
                except ValueError:
                    raise ConfigError(f"{who}: {key} must be a number; got {text!r}") from None
            elif key in ("buffers", "gain_raw"):
                values[key] = int(text) if text.lstrip("-").isdigit() else text
            else:
                values[key] = text
        return cls.from_mapping(values, who=who)


class FeatureAccess(Protocol):
    """What a camera backend offers the settings code (GenICam node map access)."""

    model: str

    def has(self, feature: str) -> bool: ...
    def get(self, feature: str) -> Any: ...
    def set(self, feature: str, value: Any) -> None: ...
    def choices(self, feature: str) -> list[str]: ...


def _first(cam: FeatureAccess, candidates: tuple[str, ...], setting: str) -> str:
    for name in candidates:
        if cam.has(name):
            return name
    raise missing_feature(cam, candidates[0], setting)


def missing_feature(cam: FeatureAccess, feature: str, setting: str) -> ConfigError:
    has = [f for f in KNOWN_FEATURES if cam.has(f)]
    return ConfigError(f"camera {cam.model} has no feature {feature} (needed by {setting}); "
                       f"the features it has: {', '.join(has) or 'none of the standard ones'}")


def _set_enum(cam: FeatureAccess, feature: str, value: str, setting: str) -> None:
    if not cam.has(feature):
        raise missing_feature(cam, feature, setting)
    choices = cam.choices(feature)
    if choices and value not in choices:
        raise ConfigError(f"camera {cam.model}: {feature} cannot be {value!r} (setting {setting}); "
                          f"it offers {', '.join(choices)}")
    cam.set(feature, value)


def apply(cam: FeatureAccess, s: CameraSettings) -> dict[str, Any]:
    """Set ``s`` on the camera in SFNC order and return what the camera reports back."""
    if s.pixel_format is not None:
        fmt = lookup(s.pixel_format)
        choices = cam.choices("PixelFormat") if cam.has("PixelFormat") else []
        # the camera may spell it the vendor way (Basler GigE: RGB8Packed)
        spelt = next((c for c in choices if ALIASES.get(c, c) == fmt.name), fmt.name)
        _set_enum(cam, "PixelFormat", spelt, "pixel_format")
    if s.roi is not None:
        x, y, w, h = s.roi
        for feature in ("OffsetX", "OffsetY", "Width", "Height"):
            if not cam.has(feature):
                raise missing_feature(cam, feature, "roi")
        cam.set("OffsetX", 0)
        cam.set("OffsetY", 0)
        cam.set("Width", w)
        cam.set("Height", h)
        cam.set("OffsetX", x)
        cam.set("OffsetY", y)
    for value, cast, features, setting, switch in (
            (s.exposure_us, float, EXPOSURE, "exposure_us", ("ExposureAuto", "Off")),
            (s.gain_db, float, ("Gain",), "gain_db", ("GainAuto", "Off")),
            (s.gain_raw, int, ("GainRaw",), "gain_raw", ("GainAuto", "Off")),
            (s.frame_rate, float, FRAME_RATE, "frame_rate", ("AcquisitionFrameRateEnable", True))):
        if value is not None:
            if cam.has(switch[0]):
                cam.set(*switch)  # automatic control off (or the rate limit on), or the value is ignored
            cam.set(_first(cam, features, setting), cast(value))
    if cam.has("AcquisitionMode") and "Continuous" in cam.choices("AcquisitionMode"):
        cam.set("AcquisitionMode", "Continuous")
    _apply_trigger(cam, s)
    return read_back(cam, s)


def _apply_trigger(cam: FeatureAccess, s: CameraSettings) -> None:
    if s.trigger == "off":
        if cam.has("TriggerSelector") and cam.has("TriggerMode"):
            for selector in cam.choices("TriggerSelector") or [s.trigger_selector]:
                cam.set("TriggerSelector", selector)  # a leftover trigger on any selector would stall
                cam.set("TriggerMode", "Off")
            if s.trigger_selector in cam.choices("TriggerSelector"):
                cam.set("TriggerSelector", s.trigger_selector)
        return
    setting = f"trigger={s.trigger}"
    _set_enum(cam, "TriggerSelector", s.trigger_selector, setting)
    _set_enum(cam, "TriggerMode", "On", setting)
    _set_enum(cam, "TriggerSource", s.source_feature, setting)
    if s.trigger_activation is not None:
        _set_enum(cam, "TriggerActivation", s.trigger_activation, setting)
    if s.trigger == "software" and not cam.has("TriggerSoftware"):
        raise missing_feature(cam, "TriggerSoftware", setting)


def read_back(cam: FeatureAccess, s: CameraSettings) -> dict[str, Any]:
    """The values the camera runs with, for the summary (features it lacks are left out)."""
    out: dict[str, Any] = {"model": cam.model}
    for key, names in (("exposure_us", EXPOSURE), ("gain_db", ("Gain",)), ("gain_raw", ("GainRaw",)),
                       ("pixel_format", ("PixelFormat",)),
                       ("frame_rate", FRAME_RATE), ("trigger_selector", ("TriggerSelector",)),
                       ("trigger_mode", ("TriggerMode",)), ("trigger_source", ("TriggerSource",)),
                       ("trigger_activation", ("TriggerActivation",))):
        name = next((n for n in names if cam.has(n)), None)
        if name is not None:
            try:
                out[key] = cam.get(name)
            except Exception:  # noqa: BLE001 - an unreadable feature is left out of the summary, not fatal
                continue
    if all(cam.has(f) for f in ("OffsetX", "OffsetY", "Width", "Height")):
        out["roi"] = [int(cam.get(f)) for f in ("OffsetX", "OffsetY", "Width", "Height")]
    out["trigger"] = s.trigger
    return out
