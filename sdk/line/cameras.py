"""Line cameras: pluggable source kinds, and one supervised capture loop per camera.

A camera's ``source`` in the line file is a table with a ``kind`` and that kind's settings::

    source = { kind = "video", path = "cam1.avi", fps = 15 }     # a recording replayed like a camera
    source = { kind = "camera", index = 0 }                       # a local camera (OpenCV)
    source = { kind = "url", url = "rtsp://10.0.0.7/1" }          # RTSP / HTTP (OpenCV + FFmpeg)
    source = { kind = "pipeline", pipeline = "... ! appsink" }    # GStreamer
    source = { kind = "folder", path = "incoming/", settle_s = 0.5 }   # hot folder
    source = { kind = "aravis", camera = "GV01", trigger = "software", pixel_format = "Mono12" }
    source = { kind = "pylon", camera = "40012345", exposure_us = 800, roi = [0, 0, 1280, 720] }

``aravis`` / ``pylon`` are industrial GenICam cameras (``edgesentry.stream.cameras``): every key
but ``kind`` and ``camera`` is a ``CameraSettings`` field. A camera with ``trigger = "software"`` on
a station with a software part trigger (MQTT, HTTP, OPC UA) is fired by the part trigger,
``frames`` times per part; a gap in its block ids is counted as dropped (``transport``).

A new kind (an industrial camera SDK, a line-scan sensor) is one ``register_source_kind(kind,
builder)`` call plus its settings in ``line.schema.json`` (``$defs/source_<kind>``): the builder
takes the settings table and returns a ``edgesentry.stream.Source``; nothing else changes.

Each camera reads with ``edgesentry.stream.capture.ReconnectingReader`` (reconnects with backoff),
keeps its own ``Accounting`` (``produced == processed + dropped + failed + pending`` at every
moment), asks the part tracker which part each frame belongs to, and queues the frames a part
wants into its lane of the detector's ``FairQueue``. Frames no part wants are counted as dropped
with reason ``idle`` (their records still say so); frames evicted from a full lane under
``drop-oldest`` as ``queue_full``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from edgesentry.errors import ConfigError
from edgesentry.line.config import CameraSpec
from edgesentry.stream.accounting import Accounting
from edgesentry.stream.cameras import CameraSettings, camera_source
from edgesentry.stream.capture import ReconnectingReader, count_lost
from edgesentry.stream.queues import Closed, Frame
from edgesentry.stream.sources import FolderSource, PacedSource, Source, VideoSource
from edgesentry.stream.supervisor import InHand

SourceBuilder = Callable[[dict[str, Any]], Source]
SOURCE_KINDS: dict[str, SourceBuilder] = {}

Health = Literal["starting", "ok", "stalled", "reconnecting", "lost", "ended", "stopped", "crashed"]


def register_source_kind(kind: str, builder: SourceBuilder) -> None:
    """Make ``source = { kind = KIND, ... }`` available in line files (see the module docstring)."""
    SOURCE_KINDS[kind] = builder


def build_source(settings: dict[str, Any]) -> Source:
    """The ``Source`` for a camera's ``source`` table (already validated against the schema)."""
    kind = settings.get("kind")
    if kind not in SOURCE_KINDS:
        raise ConfigError(f"unknown source kind {kind!r}; known: {', '.join(sorted(SOURCE_KINDS))}")
    return SOURCE_KINDS[kind](settings)


def _video(s: dict[str, Any]) -> Source:
    source = VideoSource(s["path"], live=False)
    return PacedSource(source, s.get("fps")) if s.get("realtime", True) else source


register_source_kind("video", _video)
register_source_kind("camera", lambda s: VideoSource(int(s["index"])))
register_source_kind("url", lambda s: VideoSource(s["url"], timeout_s=s.get("timeout_s", 5.0)))
register_source_kind("pipeline", lambda s: VideoSource(s["pipeline"]))
register_source_kind("folder", lambda s: FolderSource(s["path"], once=s.get("once", False),
                                                      idle_timeout=s.get("idle_timeout_s"),
                                                      settle_s=s.get("settle_s", 0.5)))



def _industrial(kind: str) -> SourceBuilder:
    def build(s: dict[str, Any]) -> Source:
        settings = {k: (tuple(v) if k == "roi" else v) for k, v in s.items() if k not in ("kind", "camera")}
        return camera_source(kind, s.get("camera", ""),  # type: ignore[arg-type]
                             CameraSettings.from_mapping(settings, who=f"{kind} camera settings"))
    return build


register_source_kind("aravis", _industrial("aravis"))
register_source_kind("pylon", _industrial("pylon"))


class Camera:
    """One camera of the line: its source, counters, health and capture loop.

    Args:
        spec: the camera's entry in the line file.
        source: its ``Source`` (``build_source(spec.source)`` unless a test passes its own).
        claim: ``claim(camera_id, index, name, captured) -> part or None`` (the part tracker).
        enqueue: ``enqueue(frame, drop_oldest) -> evicted frames`` (its lane of the detector queue).
        on_dropped: ``on_dropped(frame, reason)`` for a claimed frame that will never be scored.
        stop: set to stop reading.
    """

    def __init__(self, spec: CameraSpec, source: Source, *, claim: Callable[..., Any],
                 enqueue: Callable[[Frame, bool], list[Frame]], on_dropped: Callable[[Frame, str], None],
                 stop: threading.Event):
        self.spec = spec
        self.id = spec.id
        self.source = source
        self.policy = spec.policy or ("drop-oldest" if source.live else "block")
        self.acc = Accounting()
        self.held = InHand()
        self._claim, self._enqueue, self._on_dropped = claim, enqueue, on_dropped
        self.stop = stop
        self.reader = ReconnectingReader(source, stop=stop, max_retries=spec.max_retries, backoff_s=spec.backoff_s,
                                         on_reconnect=self.acc.count_reconnect)
        self.last_frame_at: float | None = None
        self.started_at = time.monotonic()
        self.crashed = False
        self.latest: dict[str, Any] = {}  # latest frame and latest scored result, for dashboards

    @property
    def health(self) -> Health:
        if self.crashed:
            return "crashed"
        state = self.reader.state
        if state in ("reconnecting", "lost", "ended", "stopped"):
            return state
        since = self.last_frame_at if self.last_frame_at is not None else self.started_at
        triggered = getattr(self.source, "waits_for_triggers", False)  # quiet between parts: not stalled
        if not triggered and time.monotonic() - since > self.spec.stall_timeout_s:
            return "stalled"
        return "ok" if state == "open" else "starting"

    def loop(self) -> None:
        """The capture loop (run supervised): read, claim, queue; never blocks a stop for long."""
        drop_oldest = self.policy == "drop-oldest"
        while not self.stop.is_set():
            raw = self.reader.next()
            if raw is None:
                return
            self.last_frame_at = time.monotonic()
            count_lost(self.acc, raw, {"camera": self.id})  # frames the camera sent and the host never got
            index = self.acc.produce()
            frame = Frame(index=index, timestamp=time.time(), captured=time.perf_counter(), name=str(raw.name),
                          image=raw.image, error=raw.error, meta={"camera": self.id})
            if raw.position_ms is not None:
                frame.meta["position_ms"] = raw.position_ms
            if raw.meta:
                frame.meta["acquisition"] = dict(raw.meta)  # camera frame id, timestamp, pixel format
            self.acc.attach(index, frame)
            self.latest["frame"] = frame
            part = self._claim(self.id, index, frame.name, frame.captured)
            if part is None:
                self.acc.drop(frame, "idle")
                continue
            frame.meta["part"] = part.seq
            self.held.take([frame])
            try:
                for old in self._enqueue(frame, drop_oldest):
                    self.acc.drop(old, "queue_full")
                    self._on_dropped(old, "queue_full")
            except Closed:
                self.acc.drop(frame, "shutdown")
                self._on_dropped(frame, "shutdown")
                return
            finally:
                self.held.passed(frame)

    def close(self) -> None:
        self.reader.close()
