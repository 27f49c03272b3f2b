"""Basler cameras (GigE, USB3, CoaXPress) through Basler's pylon SDK (``pypylon``).

Install: ``pip install 'edgesentry[pylon]'`` (the ``pypylon`` wheel bundles the pylon runtime
for x86-64 and aarch64, Jetson included). ``PYLON_CAMEMU=N`` makes pylon offer N emulated
cameras, which is what the tests use.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgesentry.errors import ConfigError
from edgesentry.stream.cameras.settings import apply
from edgesentry.stream.cameras.source import CameraBusy, CameraInfo, CameraSource, Grab
from edgesentry.stream.sources import SourceDisconnected, SourceUnavailable

log = logging.getLogger("edgesentry.stream")


def import_pylon() -> tuple[Any, Any]:
    """``(pylon, genicam)`` from pypylon, or ``ConfigError`` saying what to install."""
    try:
        from pypylon import genicam, pylon
    except ImportError as exc:
        raise ConfigError(f"pylon camera sources need pypylon: pip install 'edgesentry[pylon]'; {exc}") from None
    return pylon, genicam


def _infos() -> list[tuple[CameraInfo, Any]]:
    pylon, _ = import_pylon()
    out = []
    for dev in pylon.TlFactory.GetInstance().EnumerateDevices():
        address = dev.GetIpAddress() if dev.IsIpAddressAvailable() else ""
        out.append((CameraInfo(id=dev.GetFullName(), vendor=dev.GetVendorName(), model=dev.GetModelName(),
                               serial=dev.GetSerialNumber(), user_id=dev.GetUserDefinedName(), address=address), dev))
    return out


def list_cameras() -> list[CameraInfo]:
    return [info for info, _ in _infos()]


def _message(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.split(" : ")[0] if " : " in text else text  # drop pylon's "(file.cpp, line)" tail


class _Features:
    """``settings.FeatureAccess`` over a pylon node map."""

    def __init__(self, genicam: Any, nodemap: Any, model: str):
        self._gc, self._map, self.model = genicam, nodemap, model

    def _node(self, feature: str) -> Any:
        try:
            node = self._map.GetNode(feature)
            return node if node is not None and self._gc.IsAvailable(node) else None
        except Exception:  # noqa: BLE001 - "not found" and "not available" are the same to us
            return None

    def has(self, feature: str) -> bool:
        return self._node(feature) is not None

    def get(self, feature: str) -> Any:
        return self._node(feature).Value

    def set(self, feature: str, value: Any) -> None:
        node = self._node(feature)
        try:
            node.Value = value
        except Exception as exc:  # genicam.OutOfRangeException, AccessException, ...
            raise ConfigError(f"camera {self.model}: cannot set {feature} to {value!r}: {_message(exc)}") from None

    def choices(self, feature: str) -> list[str]:
        node = self._node(feature)
        return list(getattr(node, "Symbolics", ()) or ()) if node is not None else []


class PylonSource(CameraSource):
    """A Basler camera through pypylon (``pylon:ID`` in ``edgesentry watch``).

    Args:
        camera: full device name, serial, user id, IP address, model or ``Basler/model``
            (empty: the first camera).
        settings: ``CameraSettings`` applied at every open.
    """

    backend = "pylon"

    def __init__(self, camera: str = "", settings: Any = None):
        super().__init__(camera, settings)
        self._cam: Any = None
        self._devices: dict[str, Any] = {}

    def _enumerate(self) -> list[CameraInfo]:
        found = _infos()
        self._devices = {info.id: dev for info, dev in found}
        return [info for info, _ in found]

    def _connect(self, info: CameraInfo) -> None:
        pylon, genicam = import_pylon()
        try:
            cam = pylon.InstantCamera(pylon.TlFactory.GetInstance().CreateDevice(self._devices[info.id]))
            cam.Open()
        except Exception as exc:
            text = _message(exc)
            if "exclusive" in text.lower() or "in use" in text.lower() or "access denied" in text.lower():
                raise CameraBusy(f"camera {info.label()} is busy: another process has it open ({text})") from None
            raise SourceUnavailable(f"cannot open camera {info.label()}: {text}") from None
        self._cam = cam

    def _configure(self) -> dict[str, Any]:
        _, genicam = import_pylon()
        info = self.info
        model = f"{info.vendor} {info.model}".strip() if info else "?"
        return apply(_Features(genicam, self._cam.GetNodeMap(), model), self.settings)

    def _start(self) -> None:
        pylon, _ = import_pylon()
        try:
            self._cam.MaxNumBuffer.Value = self.settings.buffers
            self._cam.StartGrabbing(pylon.GrabStrategy_OneByOne)
        except Exception as exc:
            raise SourceUnavailable(f"camera {self.name}: cannot start grabbing: {_message(exc)}") from None

    def _gone(self) -> SourceDisconnected:
        return SourceDisconnected(f"camera {self.name} was removed (unplugged or powered off)")

    def _grab(self, timeout_s: float) -> Grab | None:
        pylon, _ = import_pylon()
        cam = self._cam
        try:
            result = cam.RetrieveResult(max(1, int(timeout_s * 1000)), pylon.TimeoutHandling_Return)
        except Exception as exc:
            if cam.IsCameraDeviceRemoved():
                raise self._gone() from None
            raise SourceDisconnected(f"camera {self.name}: grab failed: {_message(exc)}") from None
        if result is None or not result.IsValid():
            if cam.IsCameraDeviceRemoved():
                raise self._gone()
            return None
        try:
            ok = bool(result.GrabSucceeded())
            # the array views pylon's buffer, which goes back to the pool on Release: copy it
            return Grab(data=np.array(result.Array) if ok else b"", width=int(result.Width), height=int(result.Height),
                        pixel_format=int(result.PixelType), frame_id=int(result.BlockID),
                        timestamp_ns=int(result.TimeStamp) or None, complete=ok,
                        status="ok" if ok else f"error 0x{result.ErrorCode:x}: {result.ErrorDescription}")
        finally:
            result.Release()

    def _fire(self) -> None:
        pylon, _ = import_pylon()
        try:
            if self._cam.WaitForFrameTriggerReady(int(self.settings.timeout_s * 1000), pylon.TimeoutHandling_Return):
                self._cam.ExecuteSoftwareTrigger()
        except Exception as exc:
            raise SourceDisconnected(f"camera {self.name}: software trigger failed: {_message(exc)}") from None

    def _disconnect(self) -> None:
        cam, self._cam = self._cam, None
        if cam is None:
            return
        try:
            cam.StopGrabbing()
            cam.Close()
        except Exception as exc:  # noqa: BLE001 - a removed camera fails its own release
            log.debug("camera %s: close failed: %s", self.name, _message(exc))
        finally:
            try:
                cam.DestroyDevice()
            except Exception:  # noqa: BLE001 - already destroyed
                pass
