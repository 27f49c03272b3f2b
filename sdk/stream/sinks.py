"""Result sinks: JSON Lines, overlay PNGs, MQTT, Python callbacks; plus the summary file.

A sink gets one ``record`` (a JSON-able dict) per frame: processed, failed or dropped.
Sinks run on the runtime's output thread only, so they need not be thread-safe; a sink
that raises is counted in ``sink_errors`` and the stream goes on.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry.errors import ConfigError
from edgesentry.stream.queues import Frame

log = logging.getLogger("edgesentry.stream")


class Sink:
    name = "sink"

    def write(self, record: dict[str, Any], frame: Frame | None, result: Any) -> None:
        raise NotImplementedError

    def close(self) -> dict[str, Any]:
        """Flush and release; return facts for the summary (counts, unacknowledged ...)."""
        return {}


def dumps(record: dict[str, Any]) -> str:
    """One JSON line; NaN/Inf become null (strict JSON, readable by any consumer)."""
    try:
        return json.dumps(record, separators=(",", ":"), allow_nan=False, default=_default)
    except ValueError:  # a non-finite float somewhere: the rare path, so clean only then
        return json.dumps(_finite(record), separators=(",", ":"), allow_nan=False, default=_default)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        value = obj.item()
        return None if isinstance(value, float) and not np.isfinite(value) else value
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def atomic_write_text(path: Path, text: str) -> None:
    """Write-then-rename: readers see the old file or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------- JSON Lines
class JsonlSink(Sink):
    """Append one JSON object per line with a single ``write(2)`` of the complete line.

    There is no user-space buffer: each line reaches the kernel whole, so a crash of this
    process never leaves half a line. On open, a torn tail left by an earlier crash of the
    machine (power loss mid-write) is cut back to the last newline. ``fsync_every`` lines
    (and at close) the file is forced to disk.
    """

    name = "jsonl"

    def __init__(self, path: str | os.PathLike, *, fsync_every: int = 100):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._repair_tail()
        self.fsync_every = fsync_every
        self.lines = 0

    def _repair_tail(self) -> None:
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        with open(self.path, "rb") as fh:
            back = min(size, 1 << 20)
            fh.seek(size - back)
            tail = fh.read()
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        keep = size - back + cut + 1 if cut >= 0 else 0
        log.warning("%s ended with a torn line (%d bytes); cut back to the last complete line",
                    self.path, size - keep)
        os.truncate(self.path, keep)

    def write(self, record: dict[str, Any], frame: Frame | None, result: Any) -> None:
        data = (dumps(record) + "\n").encode()
        view = memoryview(data)
        while view:  # regular files take it in one call; loop only for the pathological case
            written = os.write(self._fd, view)
            view = view[written:]
        self.lines += 1
        if self.fsync_every and self.lines % self.fsync_every == 0:
            os.fsync(self._fd)

    def close(self) -> dict[str, Any]:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        return {"path": str(self.path), "lines": self.lines}


# --------------------------------------------------------------------------- overlays
class OverlaySink(Sink):
    """PNG overlays (heatmap blended on the frame, mask contour) of frames above threshold.

    A frame qualifies when its ``label`` is true (the detector's threshold) or, when
    ``threshold`` is given here, when its ``score`` reaches it. Files are written under a
    temporary name and renamed, and the path is added to the frame's record (this sink runs
    before the others).
    """

    name = "overlays"

    def __init__(self, directory: str | os.PathLike, *, threshold: float | None = None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.threshold = threshold
        self.written = 0

    def _qualifies(self, record: dict[str, Any]) -> bool:
        if record.get("status") != "ok":
            return False
        if self.threshold is not None:
            score = record.get("score")
            return score is not None and score >= self.threshold
        return bool(record.get("label"))

    def write(self, record: dict[str, Any], frame: Frame | None, result: Any) -> None:
        if frame is None or frame.image is None or not self._qualifies(record):
            return
        from PIL import Image

        from edgesentry.viz import overlay

        image = frame.image
        amap = getattr(result, "anomaly_map", None)
        if amap is not None:
            if amap.shape != image.shape[:2]:
                amap = np.asarray(Image.fromarray(amap.astype(np.float32), mode="F").resize(
                    (image.shape[1], image.shape[0]), Image.BILINEAR))
                mask = None
            else:
                mask = getattr(result, "mask", None)
            picture = overlay(image, amap, mask=mask)
        else:
            picture = image
        path = self.dir / f"frame_{record['frame']:08d}.png"
        tmp = path.with_name(f".{path.name}.tmp")
        Image.fromarray(picture).save(tmp, format="PNG")
        os.replace(tmp, path)
        record["overlay"] = str(path)
        self.written += 1

    def close(self) -> dict[str, Any]:
        return {"dir": str(self.dir), "written": self.written}


# ------------------------------------------------------------------------------ MQTT
def parse_mqtt_target(text: str) -> tuple[str, int, str]:
    """``HOST:PORT/TOPIC`` (``PORT`` defaults to 1883) -> (host, port, topic)."""
    if "/" not in text:
        raise ConfigError(f"--mqtt must be HOST[:PORT]/TOPIC; got {text!r}")
    hostport, topic = text.split("/", 1)
    host, _, port = hostport.partition(":")
    try:
        port_num = int(port) if port else 1883
    except ValueError:
        raise ConfigError(f"--mqtt port must be an integer; got {port!r} in {text!r}") from None
    if not host or not topic:
        raise ConfigError(f"--mqtt must be HOST[:PORT]/TOPIC with a host and a topic; got {text!r}")
    return host, port_num, topic


class MqttSink(Sink):
    """Publish each record as JSON to an MQTT broker with QoS 1 (paho-mqtt).

    paho keeps QoS-1 messages until the broker acknowledges them and resends after a
    reconnect; at close the sink waits up to ``flush_timeout`` seconds for outstanding
    acknowledgements and reports how many never came (``unacked``, counted as sink errors).
    """

    name = "mqtt"

    def __init__(self, host: str, port: int, topic: str, *, qos: int = 1, client_id: str | None = None,
                 flush_timeout: float = 10.0, connect_timeout: float = 5.0):
        try:
            import paho.mqtt.client as mqtt
        except ImportError as exc:
            raise ConfigError(f"the MQTT sink needs paho-mqtt: pip install 'edgesentry[stream]'; {exc}") from None
        self.host, self.port, self.topic, self.qos = host, port, topic, qos
        self.flush_timeout = flush_timeout
        self._lock = threading.Lock()
        self._unacked: set[int] = set()
        self._early: set[int] = set()
        self.published = 0
        self.acked = 0
        self._connected = threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=client_id or f"edgesentry-{os.getpid()}-{id(self):x}")
        client.max_inflight_messages_set(100)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        self._client = client
        client.connect_async(host, port, keepalive=30)
        client.loop_start()
        if not self._connected.wait(connect_timeout):
            log.warning("MQTT broker %s:%d not reachable yet; messages are queued and sent on connect", host, port)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if not getattr(reason_code, "is_failure", False):
            self._connected.set()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        if self.qos == 0:
            return
        # The acknowledgement may arrive before ``publish`` has returned the mid to
        # ``write``: whichever side comes second completes the pair.
        with self._lock:
            if mid in self._unacked:
                self._unacked.discard(mid)
                self.acked += 1
            else:
                self._early.add(mid)

    def write(self, record: dict[str, Any], frame: Frame | None, result: Any) -> None:
        info = self._client.publish(self.topic, dumps(record), qos=self.qos)
        with self._lock:
            self.published += 1
            if self.qos == 0 or info.mid in self._early:
                self._early.discard(info.mid)
                self.acked += 1
            else:
                self._unacked.add(info.mid)

    def close(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.flush_timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._unacked:
                    break
            time.sleep(0.02)
        self._client.disconnect()
        self._client.loop_stop()
        with self._lock:
            unacked = len(self._unacked)
        return {"broker": f"{self.host}:{self.port}", "topic": self.topic, "qos": self.qos,
                "published": self.published, "acked": self.acked, "unacked": unacked}


# -------------------------------------------------------------------------- callback
class CallbackSink(Sink):
    """Call ``fn(record, result)`` for every frame (``result`` is ``None`` unless scored)."""

    def __init__(self, fn: Callable[[dict[str, Any], Any], None], name: str = "callback"):
        self.fn = fn
        self.name = name

    def write(self, record: dict[str, Any], frame: Frame | None, result: Any) -> None:
        self.fn(record, result)
