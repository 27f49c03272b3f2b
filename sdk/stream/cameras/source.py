"""What every industrial camera source shares: finding the camera, frame-loss accounting, triggers, health.

A backend (``aravis.py``, ``pylon.py``) implements six small hooks (enumerate, connect, start,
grab, fire the software trigger, disconnect) and gets from ``CameraSource``:

- **addressing**: ``ID`` matches a camera's device id, serial number, user id (``DeviceUserID``),
  address, model or ``vendor/model``; an empty ``ID`` takes the first camera found. No match,
  or several, is one line listing the cameras found.
- **loss accounting**: every buffer carries the camera's frame (block) id; a gap between two
  received ids is frames the camera produced and the host never received (its buffer pool was
  full, packets were lost): they come back as ``RawFrame.lost`` and the runtime counts each as
  dropped with reason ``transport``. An incomplete buffer is a failed frame (``incomplete``).
  Frames a camera produced while it was gone (unplugged, power cycle) are not knowable: ids
  restart when it comes back, and counting restarts with them.
- **triggers**: ``trigger="software"`` fires one software trigger per frame, when the runtime
  asks for the next frame (``self_trigger``); the line runtime turns that off and fires it
  from the part trigger (``fire()``). ``trigger="hardware"`` waits for the camera's input line:
  no frame for a while is then normal (``IDLE``), not a stall.
- **health**: a free-running or self-triggered camera that delivers nothing for
  ``timeout_s``, or whose control channel is lost, raises ``SourceDisconnected``; the runtime
  then closes it and reopens it with backoff (re-enumerating: a power-cycled camera may come
  back at another address), and the reopen is logged.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from edgesentry.errors import ConfigError, InputError
from edgesentry.stream.cameras.pixels import lookup, to_rgb8
from edgesentry.stream.cameras.settings import CameraSettings
from edgesentry.stream.sources import IDLE, RawFrame, Source, SourceDisconnected, SourceUnavailable, _Idle

log = logging.getLogger("edgesentry.stream")

#: longest single wait inside ``read`` (s): keeps a stop responsive while a camera is quiet
POLL_S = 0.2
#: a forward jump in frame ids larger than this is a camera restart, not frames lost
MAX_GAP = 1 << 15


class CameraNotFound(SourceUnavailable, ConfigError):
    """No camera (or more than one) matches the id; the message lists the cameras found."""


class CameraBusy(SourceUnavailable, ConfigError):
    """The camera exists but another process holds it."""


@dataclass(frozen=True)
class CameraInfo:
    """One enumerated camera."""

    id: str  # the backend's device id (what it opens)
    vendor: str = ""
    model: str = ""
    serial: str = ""
    user_id: str = ""
    address: str = ""

    def keys(self) -> set[str]:
        return {k for k in (self.id, self.serial, self.user_id, self.address, self.model,
                            f"{self.vendor}/{self.model}") if k}

    def label(self) -> str:
        extra = ", ".join(f"{k} {v}" for k, v in (("serial", self.serial), ("user id", self.user_id),
                                                  ("address", self.address)) if v)
        return f"{self.id} ({self.vendor} {self.model}{', ' + extra if extra else ''})"


@dataclass
class Grab:
    """One buffer as a backend hands it over."""

    data: Any  # bytes-like or ndarray
    width: int
    height: int
    pixel_format: int | str  # PFNC code or name
    frame_id: int
    timestamp_ns: int | None = None
    complete: bool = True
    status: str = "ok"
    extra: dict[str, Any] = field(default_factory=dict)


def pick_camera(found: list[CameraInfo], wanted: str, backend: str) -> CameraInfo:
    """The camera ``wanted`` names among ``found`` (empty: the first one)."""
    listing = "; ".join(c.label() for c in found) or "none"
    if not found:
        raise CameraNotFound(f"no {backend} camera {wanted!r}; cameras found: none" if wanted else
                             f"no {backend} camera found (cameras found: none)")
    if not wanted:
        return found[0]
    matches = [c for c in found if wanted in c.keys()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CameraNotFound(f"no {backend} camera {wanted!r}; cameras found: {listing}")
    raise CameraNotFound(f"{len(matches)} {backend} cameras match {wanted!r}; name one by serial or id: {listing}")


class CameraSource(Source):
    """Base class of the GenICam camera sources; see the module docstring."""

    backend = "camera"
    live = True
    #: where block ids may wrap (GigE Vision 1.x: 16 bits; GigE Vision 2 and USB3 Vision: 64), id 0 skipped
    id_wraps: tuple[int, ...] = (1 << 16, 1 << 64)

    def __init__(self, camera: str = "", settings: CameraSettings | None = None):
        self.camera = camera
        self.settings = settings or CameraSettings()
        self.name = f"{self.backend}:{camera}" if camera else f"{self.backend}:"
        self.self_trigger = True
        self.info: CameraInfo | None = None
        self.applied: dict[str, Any] = {}
        self.opens = 0
        self._connected = False
        self._awaiting = False  # a software trigger was fired and its frame is not in yet
        self._fire_failed: str | None = None  # fire() from another thread failed: the camera is gone
        self._waiting_since: float | None = None
        self._last_id: int | None = None  # of the last complete buffer
        self._incomplete_since = 0  # incomplete buffers received since then
        self._lock = threading.Lock()  # fire() comes from a trigger thread, read() from capture
        self.received = self.lost = self.incomplete = 0

    @property
    def waits_for_triggers(self) -> bool:
        """Frames come only when something outside fires (an input line, the part trigger): a quiet
        camera is then idle, not stalled."""
        s = self.settings
        return s.trigger == "hardware" or (s.trigger == "software" and not self.self_trigger)

    # ----------------------------------------------------------------- backend hooks
    def _enumerate(self) -> list[CameraInfo]:
        raise NotImplementedError

    def _connect(self, info: CameraInfo) -> None:
        """Open the device (raise ``CameraBusy`` when another process holds it)."""
        raise NotImplementedError

    def _configure(self) -> dict[str, Any]:
        """Apply ``self.settings``; return the read-back values."""
        raise NotImplementedError

    def _start(self) -> None:
        raise NotImplementedError

    def _grab(self, timeout_s: float) -> Grab | None:
        """The next buffer, or ``None`` after ``timeout_s``; raise ``SourceDisconnected`` when gone."""
        raise NotImplementedError

    def _fire(self) -> None:
        raise NotImplementedError

    def _disconnect(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------------ Source
    def open(self) -> None:
        if self._connected:
            return  # opened ahead of the stream (to fail early on a bad id or setting)
        self.info = pick_camera(self._enumerate(), self.camera, self.backend)
        self._connect(self.info)
        try:
            self.applied = self._configure()
            self._start()
        except BaseException:
            self._disconnect()
            raise
        self._connected = True
        self._last_id, self._incomplete_since = None, 0  # a reopened camera numbers its frames afresh
        self._awaiting = False
        self._waiting_since = None
        self._fire_failed = None
        self.opens += 1
        if self.opens > 1:
            log.warning("camera %s reconnected (%s); open %d", self.name, self.info.label(), self.opens)

    def close(self) -> None:
        with self._lock:  # not while fire() is using the camera from a trigger thread
            if not self._connected:
                return
            self._connected = False
            try:
                self._disconnect()
            except Exception as exc:  # a vanished camera fails its own release; nothing left to do
                log.debug("camera %s: close failed: %s", self.name, exc)

    def fire(self) -> bool:
        """Fire the software trigger once (the line runtime's part trigger); False when not open."""
        with self._lock:
            if not self._connected:
                return False
            try:
                self._fire()
            except Exception as exc:
                self._fire_failed = str(exc)  # the capture thread's next read reports the disconnect
                raise
            return True

    def read(self) -> RawFrame | _Idle | None:
        if not self._connected:
            raise SourceDisconnected(f"{self.name} is not open")
        if self._fire_failed is not None:
            failed, self._fire_failed = self._fire_failed, None
            raise SourceDisconnected(failed)
        s = self.settings
        if s.trigger == "software" and self.self_trigger and not self._awaiting:
            with self._lock:
                self._fire()
            self._awaiting = True
        grab = self._grab(POLL_S)
        now = time.monotonic()
        if grab is None:
            if self._waiting_since is None:
                self._waiting_since = now
            if not self.waits_for_triggers and now - self._waiting_since > s.timeout_s:
                raise SourceDisconnected(f"camera {self.name} delivered no frame for {s.timeout_s:g}s")
            return IDLE
        self._waiting_since = None
        self._awaiting = False
        return self._frame(grab)

    # ------------------------------------------------------------------------ frames
    def _gap(self, frame_id: int, complete: bool = True) -> int:
        """Frames between the previous complete buffer's id and this one that never arrived.

        Only complete buffers carry a trustworthy id (an incomplete one may have lost its
        leader packet and show a stale id); the incomplete buffers received in between are
        frames of that gap that did arrive (as failed frames), so they are not lost.
        """
        if not complete:
            self._incomplete_since += 1
            return 0
        last, self._last_id = self._last_id, frame_id
        arrived, self._incomplete_since = self._incomplete_since, 0
        if last is None or frame_id == last:
            return 0
        if frame_id > last:
            gap = frame_id - last - 1
        else:
            gap = next(((wrap - 1 - last) + max(frame_id - 1, 0) for wrap in self.id_wraps
                        if wrap * 3 // 4 < last < wrap and frame_id < wrap // 4), 0)  # wrapped (id 0 skipped)
        if gap > MAX_GAP:
            log.warning("camera %s: frame id jumped from %d to %d; counted as a restart, not as loss",
                        self.name, last, frame_id)
            return 0
        return max(gap - arrived, 0)

    def _frame(self, grab: Grab) -> RawFrame:
        lost = self._gap(grab.frame_id, grab.complete)
        self.received += 1
        self.lost += lost
        meta = {"frame_id": grab.frame_id, "camera_timestamp_ns": grab.timestamp_ns, **grab.extra}
        name = f"{self.name}#{grab.frame_id}"
        if not grab.complete:
            self.incomplete += 1
            return RawFrame(name, error=f"incomplete: buffer {grab.frame_id} of {self.name} arrived incomplete "
                                        f"({grab.status})", lost=lost, meta=meta)
        try:
            fmt = lookup(grab.pixel_format, who=f"camera {self.name}")
        except InputError as exc:
            return RawFrame(name, error=f"pixel_format: {exc}", lost=lost, meta=meta)
        meta["pixel_format"] = fmt.name
        try:
            image = to_rgb8(grab.data, fmt, grab.width, grab.height, who=name)
        except InputError as exc:
            self.incomplete += 1
            return RawFrame(name, error=f"incomplete: {exc}", lost=lost, meta=meta)
        return RawFrame(name, image=image, lost=lost, meta=meta)

    def facts(self) -> dict[str, Any]:
        """The camera and what it runs with, for the run's summary."""
        info = self.info
        return {"backend": self.backend, "camera": None if info is None else info.__dict__.copy(),
                "requested": self.settings.to_dict(), "applied": self.applied, "opens": self.opens,
                "received": self.received, "lost_in_transport": self.lost, "incomplete": self.incomplete}

