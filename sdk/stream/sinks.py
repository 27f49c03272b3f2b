"""Result sinks: JSON Lines, overlay PNGs, MQTT, Python callbacks; plus the summary file.

A sink gets one ``record`` (a JSON-able dict) per frame: processed, failed or dropped.
Sinks run on the runtime's output thread only, so they need not be thread-safe; a sink
that raises is counted in ``sink_errors`` and the stream goes on.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry.errors import ConfigError
from edgesentry.io.paths import check_output_dir, check_output_file, check_regular_file, read_text_bounded
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
    process never leaves half a line. ``fsync_every`` lines (and at close) the file is forced
    to disk.

    The sink never destroys data. On open, the path must be absent, empty, or a JSON Lines file
    of ours (its first and last complete lines are JSON objects whose first key is ``key``,
    ``frame`` by default, holding an integer); then it is appended to, and a torn last line of
    ours (a power loss mid-write: a prefix of a ``{"frame":...`` line) is cut back to the last
    newline. Every record written must start with that key. Anything else (another file, a
    FIFO, a device, a directory) is refused with ``ConfigError`` before anything is written;
    nothing ever blocks on a FIFO without a reader.
    """

    name = "jsonl"
    #: how much of the head and the tail is read to recognise our own format
    PROBE_BYTES = 1 << 16

    def __init__(self, path: str | os.PathLike, *, fsync_every: int = 100, label: str = "JSONL file",
                 key: str = "frame"):
        self.path = Path(path)
        self.label = label
        self.key = key
        self._fd = -1
        check_output_file(self.path, flag=label)
        try:
            # O_NONBLOCK: a FIFO that appeared since the check must not hang us before the
            # signal handlers exist; the fstat below refuses it.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            raise ConfigError(f"{label} {str(self.path)!r} cannot be opened for appending: "
                              f"{exc.strerror or exc}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ConfigError(f"{label} {str(self.path)!r} is not a regular file; refused")
            os.set_blocking(fd, True)
            self._fd = fd
            self._check_and_repair()
        except BaseException:
            os.close(fd)
            self._fd = -1
            raise
        self.fsync_every = fsync_every
        self.lines = 0

    def _refuse(self, why: str) -> ConfigError:
        return ConfigError(f"{self.label} {str(self.path)!r} holds something other than edgesentry JSON Lines "
                           f"({why}); it is left untouched: choose another path or move the file")

    def _check_and_repair(self) -> None:
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        with open(self.path, "rb") as fh:
            head = fh.read(min(size, self.PROBE_BYTES))
            back = min(size, self.PROBE_BYTES)
            fh.seek(size - back)
            tail = fh.read(back)
        first_end = head.find(b"\n")
        if first_end < 0 and size > len(head):
            raise self._refuse(f"no line break in its first {len(head)} bytes")
        if first_end >= 0 and not _ours(head[:first_end], self.key):
            raise self._refuse(f"its first line {head[:60]!r} is not a record of ours")
        if tail.endswith(b"\n"):
            last_start = tail.rfind(b"\n", 0, len(tail) - 1) + 1
            last = tail[last_start:-1]
            if (last_start > 0 or size <= back) and not _ours(last, self.key):
                raise self._refuse(f"its last line {last[:60]!r} is not a record of ours")
            return
        cut = tail.rfind(b"\n")
        torn = tail[cut + 1:]
        if not _torn_line_of_ours(torn, self.key):
            raise self._refuse(f"it ends with {torn[:60]!r}, which is not a line of ours")
        keep = size - len(torn)
        log.warning("%s ended with a torn line (%d bytes); cut back to the last complete line",
                    self.path, len(torn))
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
        return {"path": str(self.path), "lines": getattr(self, "lines", 0)}


def _record_start(key: str) -> bytes:
    """How every record starts: its key first (``dumps`` keeps insertion order, compact separators)."""
    return b'{' + json.dumps(key).encode() + b':'


def _ours(line: bytes, key: str = "frame") -> bool:
    """A complete line written by ``JsonlSink``: a JSON object holding an integer ``key``."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and isinstance(obj.get(key), int)


def _torn_line_of_ours(torn: bytes, key: str = "frame") -> bool:
    """A prefix of one of our lines, as a crash mid-``write`` would leave (no newline in it)."""
    start = _record_start(key)
    n = min(len(torn), len(start))
    return torn[:n] == start[:n] and b"\n" not in torn


# --------------------------------------------------------------------------- overlays
class OverlaySink(Sink):
    """PNG overlays (heatmap blended on the frame, mask contour) of frames above threshold.

    A frame qualifies when its ``label`` is true (the detector's threshold) or, when
    ``threshold`` is given here, when its ``score`` reaches it. Files are written under a
    temporary name and renamed, and the path is added to the frame's record (this sink runs
    before the others).
    """

    name = "overlays"

    def __init__(self, directory: str | os.PathLike, *, threshold: float | None = None, label: str = "overlays"):
        self.dir = check_output_dir(directory, flag=label, create=True)
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
    """``HOST:PORT/TOPIC`` (``PORT`` defaults to 1883) -> (host, port, topic), checked.

    The port must lie in 1..65535 and the topic must be a publishable MQTT topic: not empty,
    no wildcard (``+``, ``#``), no NUL, at most 65535 bytes of UTF-8.
    """
    if "/" not in text:
        raise ConfigError(f"--mqtt must be HOST[:PORT]/TOPIC; got {text!r}")
    hostport, topic = text.split("/", 1)
    host, _, port = hostport.partition(":")
    try:
        port_num = int(port) if port else 1883
    except ValueError:
        raise ConfigError(f"--mqtt port must be an integer; got {port!r} in {text!r}") from None
    if not host or not topic or any(c.isspace() for c in host):
        raise ConfigError(f"--mqtt must be HOST[:PORT]/TOPIC with a host and a topic; got {text!r}")
    if not 1 <= port_num <= 65535:
        raise ConfigError(f"--mqtt port must be in 1..65535; got {port_num} in {text!r}")
    if "+" in topic or "#" in topic or "\0" in topic or len(topic.encode()) > 65535:
        raise ConfigError(f"--mqtt topic must be a topic to publish to (no '+' or '#' wildcard, no NUL); "
                          f"got {topic!r}")
    return host, port_num, topic


@dataclass(frozen=True)
class MqttCredentials:
    """Authentication and TLS for the MQTT sink. Never on a command line (``ps`` shows it).

    ``from_env()`` reads ``EDGESENTRY_MQTT_USERNAME``, ``EDGESENTRY_MQTT_PASSWORD`` (or
    ``EDGESENTRY_MQTT_PASSWORD_FILE``), ``EDGESENTRY_MQTT_CAFILE``, ``EDGESENTRY_MQTT_CERTFILE``,
    ``EDGESENTRY_MQTT_KEYFILE`` and ``EDGESENTRY_MQTT_TLS`` (1 = TLS with the system's CAs).
    """

    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> MqttCredentials:
        """Credentials from the environment, then ``overrides`` (``None`` values are ignored);
        ``password_file`` reads the password from the first line of a file."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {
            "username": env.get("EDGESENTRY_MQTT_USERNAME"), "password": env.get("EDGESENTRY_MQTT_PASSWORD"),
            "tls": env.get("EDGESENTRY_MQTT_TLS", "") not in ("", "0"), "ca_file": env.get("EDGESENTRY_MQTT_CAFILE"),
            "cert_file": env.get("EDGESENTRY_MQTT_CERTFILE"), "key_file": env.get("EDGESENTRY_MQTT_KEYFILE"),
        }
        password_file = overrides.pop("password_file", None) or env.get("EDGESENTRY_MQTT_PASSWORD_FILE")
        if password_file:
            text = read_text_bounded(password_file, limit=4096, what="MQTT password file", error=ConfigError)
            values["password"] = text.splitlines()[0] if text else ""
        values.update({k: v for k, v in overrides.items() if v is not None and v is not False})
        creds = cls(**values)
        creds.check()
        return creds

    def check(self) -> None:
        if self.password is not None and self.username is None:
            raise ConfigError("an MQTT password needs a user name (--mqtt-user or EDGESENTRY_MQTT_USERNAME)")
        for what, path in (("CA file", self.ca_file), ("client certificate", self.cert_file),
                           ("client key", self.key_file)):
            if path is not None:
                check_regular_file(path, what=f"MQTT {what}", error=ConfigError)
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("an MQTT client certificate needs both --mqtt-certfile and --mqtt-keyfile")

    @property
    def uses_tls(self) -> bool:
        return self.tls or any(p is not None for p in (self.ca_file, self.cert_file, self.key_file))


#: CONNACK reason codes (MQTT 5 names, as paho reports them) that mean "who you are was refused"
_AUTH_REFUSALS = ("Bad user name or password", "Not authorized", "Bad authentication method")


class MqttSink(Sink):
    """Publish each record as JSON to an MQTT broker with QoS 1 (paho-mqtt).

    paho keeps QoS-1 messages until the broker acknowledges them and resends after a
    reconnect; at close the sink waits up to ``flush_timeout`` seconds for outstanding
    acknowledgements and reports how many never came (``unacked``, counted as sink errors).

    ``credentials`` (``MqttCredentials``) adds a user name / password and TLS. A broker that
    answers the connection with an authentication refusal is a ``ConfigError`` saying so at
    construction (not "not reachable"); one that does not answer within ``connect_timeout``
    is logged and the messages wait for it.
    """

    name = "mqtt"

    def __init__(self, host: str, port: int, topic: str, *, qos: int = 1, client_id: str | None = None,
                 flush_timeout: float = 10.0, connect_timeout: float = 5.0,
                 credentials: MqttCredentials | None = None):
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
        self._answered = threading.Event()
        self.refused: str | None = None
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=client_id or f"edgesentry-{os.getpid()}-{id(self):x}")
        creds = credentials or MqttCredentials()
        if creds.username is not None:
            client.username_pw_set(creds.username, creds.password)
        if creds.uses_tls:
            try:
                client.tls_set(ca_certs=creds.ca_file, certfile=creds.cert_file, keyfile=creds.key_file)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"MQTT TLS setup failed: {exc}") from None
        client.max_inflight_messages_set(100)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        self._client = client
        client.connect_async(host, port, keepalive=30)
        client.loop_start()
        self._answered.wait(connect_timeout)
        if self.refused is not None and any(r in self.refused for r in _AUTH_REFUSALS):
            client.loop_stop()
            client.disconnect()
            raise ConfigError(f"MQTT broker {host}:{port} refused authentication: {self.refused} "
                              "(check --mqtt-user and the password file / EDGESENTRY_MQTT_PASSWORD)")
        if not self._connected.is_set():
            why = f"it refused the connection: {self.refused}" if self.refused else "no answer yet"
            log.warning("MQTT broker %s:%d not reachable (%s); messages are queued and sent on connect",
                        host, port, why)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            self.refused = str(reason_code)
            if any(r in self.refused for r in _AUTH_REFUSALS):
                log.error("MQTT broker %s:%d refused authentication: %s", self.host, self.port, self.refused)
        else:
            self.refused = None
            self._connected.set()
        self._answered.set()

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
