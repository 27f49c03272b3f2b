"""GenICam cameras (GigE Vision, USB3 Vision) through Aravis, via GObject introspection.

Why Aravis rather than a GenTL consumer such as ``harvesters``: Aravis speaks GigE Vision and
USB3 Vision itself (no vendor GenTL producer to install and license), is packaged by Debian and
Ubuntu for x86-64 and aarch64 (Jetson) alike, and ships ``arv-fake-gv-camera``, a camera that
speaks the real GVCP / GVSP protocol on loopback, which is what the tests run against.

Install (Debian / Ubuntu / JetPack): ``apt-get install gir1.2-aravis-0.8 aravis-tools`` and
PyGObject in the environment (``pip install 'edgesentry[aravis]'``, which needs
``libgirepository1.0-dev libcairo2-dev pkg-config`` to build); ``scripts/services.sh`` does both.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from edgesentry.errors import ConfigError
from edgesentry.stream.cameras.settings import apply
from edgesentry.stream.cameras.source import CameraBusy, CameraInfo, CameraSource, Grab
from edgesentry.stream.sources import SourceDisconnected, SourceUnavailable

log = logging.getLogger("edgesentry.stream")

_LOCK = threading.Lock()  # Aravis' device list is process-global


def import_aravis() -> Any:
    """The ``Aravis`` 0.8 introspection module, or ``ConfigError`` saying what to install."""
    try:
        import gi

        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis
    except (ImportError, ValueError) as exc:
        raise ConfigError("aravis camera sources need Aravis 0.8 and PyGObject: apt-get install gir1.2-aravis-0.8 "
                          f"and pip install 'edgesentry[aravis]' (see docs/jetson.md); {exc}") from None
    return Aravis


def list_cameras() -> list[CameraInfo]:
    Aravis = import_aravis()
    with _LOCK:
        Aravis.update_device_list()
        return [CameraInfo(id=Aravis.get_device_id(i) or "", vendor=Aravis.get_device_vendor(i) or "",
                           model=Aravis.get_device_model(i) or "", serial=Aravis.get_device_serial_nbr(i) or "",
                           address=Aravis.get_device_address(i) or "")
                for i in range(Aravis.get_n_devices())]


class _Features:
    """``settings.FeatureAccess`` over an ``ArvDevice``."""

    def __init__(self, Aravis: Any, device: Any, model: str):
        self._arv, self._dev, self.model = Aravis, device, model

    def has(self, feature: str) -> bool:
        try:
            return bool(self._dev.is_feature_available(feature))
        except Exception:  # noqa: BLE001 - a node that cannot be evaluated is a node we cannot use
            return False

    def get(self, feature: str) -> Any:
        node, arv, dev = self._dev.get_feature(feature), self._arv, self._dev
        if isinstance(node, arv.GcEnumeration):
            return dev.get_string_feature_value(feature)
        if isinstance(node, arv.GcFloat):
            return dev.get_float_feature_value(feature)
        if isinstance(node, arv.GcInteger):
            return dev.get_integer_feature_value(feature)
        if isinstance(node, arv.GcBoolean):
            return dev.get_boolean_feature_value(feature)
        return node.get_value_as_string()

    def set(self, feature: str, value: Any) -> None:
        node, arv, dev = self._dev.get_feature(feature), self._arv, self._dev
        try:
            if isinstance(node, arv.GcEnumeration):
                dev.set_string_feature_value(feature, str(value))
            elif isinstance(node, arv.GcFloat):
                dev.set_float_feature_value(feature, float(value))
            elif isinstance(node, arv.GcInteger):
                dev.set_integer_feature_value(feature, int(value))
            elif isinstance(node, arv.GcBoolean):
                dev.set_boolean_feature_value(feature, bool(value))
            else:
                node.set_value_from_string(str(value))
        except Exception as exc:  # GLib.Error: out of range, not writable, ...
            raise ConfigError(f"camera {self.model}: cannot set {feature} to {value!r}: {_message(exc)}") from None

    def choices(self, feature: str) -> list[str]:
        try:
            return list(self._dev.dup_available_enumeration_feature_values_as_strings(feature) or [])
        except Exception:  # noqa: BLE001 - not an enumeration
            return []


def _message(exc: BaseException) -> str:
    return getattr(exc, "message", None) or str(exc)


class AravisSource(CameraSource):
    """A GigE Vision / USB3 Vision camera through Aravis (``aravis:ID`` in ``edgesentry watch``).

    Args:
        camera: device id, serial, address, model or ``vendor/model`` (empty: the first camera).
        settings: ``CameraSettings`` applied at every open.
    """

    backend = "aravis"

    def __init__(self, camera: str = "", settings: Any = None):
        super().__init__(camera, settings)
        self._arv: Any = None
        self._cam: Any = None
        self._stream: Any = None
        self._control_lost = threading.Event()

    def _enumerate(self) -> list[CameraInfo]:
        self._arv = import_aravis()
        return list_cameras()

    def _connect(self, info: CameraInfo) -> None:
        Aravis = self._arv
        try:
            cam = Aravis.Camera.new(info.id)
        except Exception as exc:
            raise SourceUnavailable(f"cannot open camera {info.label()}: {_message(exc)}") from None
        device = cam.get_device()
        if hasattr(device, "is_controller") and not device.is_controller():
            raise CameraBusy(f"camera {info.label()} is busy: another process controls it (close it first)")
        self._control_lost.clear()
        device.connect("control-lost", lambda *_: self._control_lost.set())
        self._cam = cam

    def _configure(self) -> dict[str, Any]:
        info = self.info
        model = f"{info.vendor} {info.model}".strip() if info else "?"
        return apply(_Features(self._arv, self._cam.get_device(), model), self.settings)

    def _start(self) -> None:
        Aravis, cam = self._arv, self._cam
        try:
            self._stream = cam.create_stream(None, None)
            payload = cam.get_payload()
            for _ in range(self.settings.buffers):
                self._stream.push_buffer(Aravis.Buffer.new_allocate(payload))
            cam.start_acquisition()
        except Exception as exc:
            raise SourceUnavailable(f"camera {self.name}: cannot start acquisition: {_message(exc)}") from None

    def _grab(self, timeout_s: float) -> Grab | None:
        if self._control_lost.is_set():
            raise SourceDisconnected(f"camera {self.name}: control channel lost (unplugged or powered off)")
        buffer = self._stream.timeout_pop_buffer(int(timeout_s * 1e6))
        if buffer is None:
            if self._control_lost.is_set():
                raise SourceDisconnected(f"camera {self.name}: control channel lost (unplugged or powered off)")
            return None
        try:
            status = buffer.get_status()
            nick = getattr(status, "value_nick", str(status))
            if status != self._arv.BufferStatus.SUCCESS:  # missing packets, timeout, ...: no image to read
                return Grab(data=b"", width=0, height=0, pixel_format=0, frame_id=buffer.get_frame_id(),
                            complete=False, status=nick)
            return Grab(data=buffer.get_data(), width=buffer.get_image_width(), height=buffer.get_image_height(),
                        pixel_format=buffer.get_image_pixel_format(), frame_id=buffer.get_frame_id(),
                        timestamp_ns=buffer.get_timestamp() or None, status=nick)
        finally:
            self._stream.push_buffer(buffer)  # back to the pool: the camera keeps streaming into it

    def _fire(self) -> None:
        try:
            self._cam.software_trigger()
        except Exception as exc:
            raise SourceDisconnected(f"camera {self.name}: software trigger failed: {_message(exc)}") from None

    def _disconnect(self) -> None:
        cam, self._cam, self._stream = self._cam, None, None
        if cam is not None:
            try:
                cam.stop_acquisition()
            except Exception as exc:  # noqa: BLE001 - the camera may already be gone
                log.debug("camera %s: stop_acquisition failed: %s", self.name, _message(exc))

    def facts(self) -> dict[str, Any]:
        out = super().facts()
        stream = self._stream
        if stream is not None:
            try:
                completed, failures, underruns = stream.get_statistics()
                out["driver"] = {"completed": completed, "failures": failures, "underruns": underruns}
            except Exception:  # noqa: BLE001 - statistics are a courtesy
                pass
        return out
