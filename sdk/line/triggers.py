"""Software triggers: an MQTT topic, an HTTP POST (and the OPC UA ``Trigger`` method, in outputs/opcua.py).

Each opens a part of its station through ``on_trigger(station, part_id, source)``. The message may
carry the part's id: an MQTT payload or HTTP body that is a JSON object with ``part_id`` (a string
of at most 128 characters), or plain text (the id itself); an empty payload gets an id made by the
runtime (``STATION-N``). Anything else is refused and logged, never a crash.

    mosquitto_pub -t line7/st1/trigger -m '{"part_id": "P0042"}'
    curl -X POST http://127.0.0.1:8088/trigger/st1 -d '{"part_id": "P0042"}'   # -> {"part": 17, ...}

``free_run`` and ``part_id`` triggers need no listener: the part tracker opens those parts itself.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edgesentry.errors import ConfigError
from edgesentry.stream.sinks import MqttCredentials

log = logging.getLogger("edgesentry.line")

OnTrigger = Callable[[str, "str | None", str], int]
_PART_ID = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable ASCII, no spaces: safe in every sink
MAX_BODY = 4096


def parse_part_id(payload: bytes) -> str | None:
    """The part id carried by a trigger message (``None``: let the runtime number it).

    Raises:
        ValueError: the payload is not an id, a JSON object with a string ``part_id``, or empty.
    """
    text = payload.decode("utf-8", errors="strict").strip()
    if not text:
        return None
    if text.startswith("{"):
        obj = json.loads(text)
        pid = obj.get("part_id") if isinstance(obj, dict) else None
        if pid is None:
            return None
        if not isinstance(pid, str):
            raise ValueError(f"part_id must be a string; got {type(pid).__name__}")
        text = pid
    if not _PART_ID.match(text):
        raise ValueError(f"a part id is 1-128 printable ASCII characters without spaces; got {text[:40]!r}")
    return text


class MqttTrigger:
    """Subscribes to each station's trigger topic on the line's broker (QoS 1)."""

    def __init__(self, topics: dict[str, str], host: str, port: int, credentials: MqttCredentials,
                 on_trigger: OnTrigger, *, client_id: str | None = None, connect_timeout: float = 5.0):
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise ConfigError("mqtt triggers need paho-mqtt: pip install 'edgesentry[line]'") from None
        self.topics = topics  # topic -> station
        self.on_trigger = on_trigger
        self.received = self.refused = 0
        self._subscribed = threading.Event()
        self.host, self.port = host, port
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "")
        if credentials.username is not None:
            client.username_pw_set(credentials.username, credentials.password)
        if credentials.uses_tls:
            try:
                client.tls_set(ca_certs=credentials.ca_file, certfile=credentials.cert_file,
                               keyfile=credentials.key_file)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"MQTT TLS setup failed: {exc}") from None
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *a: self._subscribed.set()
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        self._client = client
        client.connect_async(host, port, keepalive=30)
        client.loop_start()
        if not self._subscribed.wait(connect_timeout):
            log.warning("MQTT broker %s:%d has not confirmed the trigger subscriptions yet; triggers count from "
                        "when it does", host, port)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            log.error("MQTT broker %s:%d refused the trigger connection: %s", self.host, self.port, reason_code)
            return
        client.subscribe([(topic, 1) for topic in self.topics])  # again after every reconnect

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        station = self.topics.get(msg.topic)
        if station is None:
            return
        try:
            if len(msg.payload) > MAX_BODY:
                raise ValueError(f"payload of {len(msg.payload)} bytes (at most {MAX_BODY})")
            part_id = parse_part_id(msg.payload)
            self.on_trigger(station, part_id, "mqtt")
            self.received += 1
        except Exception as exc:  # noqa: BLE001 - a bad message is refused, never a crash of the client loop
            self.refused += 1
            log.warning("MQTT trigger on %s refused: %s", msg.topic, exc)

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    def close(self) -> dict[str, Any]:
        self._client.disconnect()
        self._client.loop_stop()
        return {"received": self.received, "refused": self.refused}


class HttpTriggerServer:
    """``POST /trigger/STATION`` on loopback (or the host the line file names); answers the part's seq.

    Stations not listed in ``stations`` answer 404; bodies over 4 kB answer 413; bad ids 400.
    ``GET /health`` answers 200 with the runtime's health (``health()``), for load balancers and
    watchdogs.
    """

    def __init__(self, stations: set[str], on_trigger: OnTrigger, *, host: str = "127.0.0.1", port: int = 8088,
                 health: Callable[[], dict[str, Any]] | None = None):
        owner = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "edgesentry-line"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
                log.debug("http trigger: " + format, *args)

            def _answer(self, code: int, body: dict[str, Any]) -> None:
                data = (json.dumps(body) + "\n").encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                if self.path == "/health" and health is not None:
                    self._answer(200, health())
                else:
                    self._answer(404, {"error": "not found"})

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                m = re.fullmatch(r"/trigger/([A-Za-z0-9][A-Za-z0-9_.-]{0,63})", self.path)
                if m is None or m.group(1) not in stations:
                    self._answer(404, {"error": "POST /trigger/STATION with a station that has an http trigger"})
                    return
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if not 0 <= length <= MAX_BODY:
                    self._answer(413, {"error": f"body must be 0..{MAX_BODY} bytes"})
                    return
                try:
                    part_id = parse_part_id(self.rfile.read(length))
                    seq = owner.on_trigger(m.group(1), part_id, "http")
                except (ValueError, UnicodeDecodeError) as exc:
                    self._answer(400, {"error": str(exc)[:200]})
                    return
                except RuntimeError as exc:  # the line is stopping
                    self._answer(503, {"error": str(exc)[:200]})
                    return
                owner.received += 1
                self._answer(200, {"part": seq, "station": m.group(1), "part_id": part_id})

        self.on_trigger = on_trigger
        self.received = 0
        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise ConfigError(f"cannot serve HTTP triggers on {host}:{port}: {exc}") from None
        self._server.daemon_threads = True
        self.host, self.port = host, int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="edgesentry-line-http", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> dict[str, Any]:
        self._server.shutdown()
        self._server.server_close()
        return {"url": self.url, "received": self.received}
