"""The operator's web page of a running line: ``edgesentry line run LINE_FILE --dashboard 127.0.0.1:8080``.

A small HTTP server (standard library, one thread per client) inside the line process. Every
asset ships in this package (``static/``): nothing comes from a CDN, it works offline.

    GET  /                      the page (static/index.html, app.js, style.css)
    GET  /api/state             counters, health, latencies, sparklines, recent parts, drift (JSON)
    GET  /api/events            the same state as server-sent events every ``interval_s``; then ``end``
    GET  /api/frame/CAMERA.jpg  the camera's latest scored frame with its anomaly overlay
    GET  /api/part/SEQ          a recent part's record; its frames at /api/part/SEQ/CAMERA/INDEX.jpg
    POST /api/recalibrate       refit a detector's thresholds from the audit log (a token is needed)

Read-only by default: ``POST`` answers 403 unless tokens were given (a file of ``NAME:SECRET``
lines, or ``$EDGESENTRY_DASHBOARD_TOKEN``); a request then needs ``Authorization: Bearer SECRET``
and the action is recorded under that token's NAME. The server binds to 127.0.0.1 unless told
otherwise. Memory is bounded: the last ``keep_parts`` parts per station and their frames.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry.errors import ConfigError, EdgesentryError

log = logging.getLogger("edgesentry.line.dashboard")
STATIC = Path(__file__).parent / "static"
ASSETS = {"/": ("index.html", "text/html; charset=utf-8"), "/static/app.js": ("app.js", "text/javascript"),
          "/static/style.css": ("style.css", "text/css")}
TOKEN_ENV = "EDGESENTRY_DASHBOARD_TOKEN"
SPARK = 120
MAX_BODY = 4096
#: frames go out as JPEG: a PNG of a textured 240x320 frame is ~230 kB, this ~20-40 kB
JPEG_QUALITY = 80


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) -> (host, port); a bad value names ``--dashboard``."""
    m = re.fullmatch(r"\[?([^\[\]]*?)\]?:(\d{1,5})", text.strip())
    if not m or not m.group(1) or int(m.group(2)) > 65535:
        raise ConfigError(f"--dashboard {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return m.group(1), int(m.group(2))


def read_tokens(token_file: str | os.PathLike | None) -> dict[str, str]:
    """secret -> name, from a file of ``NAME:SECRET`` lines, or ``$EDGESENTRY_DASHBOARD_TOKEN``."""
    from edgesentry.io.paths import read_text_bounded

    lines = []
    if token_file is not None:
        lines = read_text_bounded(token_file, limit=65536, what="--dashboard-token-file",
                                  error=ConfigError).splitlines()
    elif os.environ.get(TOKEN_ENV):
        lines = [os.environ[TOKEN_ENV]]
    tokens = {}
    for line in (x.strip() for x in lines):
        name, sep, secret = line.partition(":")
        if line and (not sep or not name or len(secret) < 8):
            raise ConfigError("dashboard tokens must read NAME:SECRET with a secret of at least 8 characters")
        if line:
            tokens[secret] = name
    return tokens


class Dashboard:
    """Serves the page of ``runtime`` (a ``LineRuntime``) on ``host:port``; ``close()`` stops it."""

    def __init__(self, runtime: Any, host: str = "127.0.0.1", port: int = 8080, *,
                 tokens: dict[str, str] | None = None, interval_s: float = 0.5, keep_parts: int = 50):
        self.runtime, self.interval_s, self.tokens = runtime, interval_s, dict(tokens or {})
        self._lock = threading.Lock()
        self._spark = {cid: deque(maxlen=SPARK) for cid in runtime.cameras}
        self._parts = {s.id: deque(maxlen=keep_parts) for s in runtime.cfg.stations}
        self._frames: OrderedDict[tuple[str, int], tuple[Any, Any]] = OrderedDict()
        self._max_frames = keep_parts * 4 * max(1, len(runtime.cameras))
        self.actions: list[dict[str, Any]] = []
        self._sub = runtime.subscribe(kinds={"frame", "part"}, maxsize=5000)
        self._closed = threading.Event()
        self._collector = threading.Thread(target=self._collect, name="edgesentry-dashboard-collect", daemon=True)
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.server.daemon_threads = True
        self.address = self.server.server_address[:2]
        self._thread = threading.Thread(target=self.server.serve_forever, name="edgesentry-dashboard", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"

    def start(self) -> Dashboard:
        self._collector.start()
        self._thread.start()
        return self

    def linger(self) -> None:
        """Give connected pages two update intervals to read the final state before ``close``."""
        time.sleep(self.interval_s * 2)

    def close(self) -> None:
        self._closed.set()
        self._sub.close()
        self.server.shutdown()
        self.server.server_close()
        self._collector.join(5)

    # ----------------------------------------------------------------------- collecting
    def _collect(self) -> None:
        for event in self._sub:
            with self._lock:
                if event.kind == "frame":
                    record = event.data
                    if record["status"] == "ok":
                        self._spark[record["camera"]].append(round(record["score"], 6))
                    if "part" in record and event.frame is not None:
                        self._frames[(record["camera"], record["frame"])] = (event.frame, event.result)
                        while len(self._frames) > self._max_frames:
                            self._frames.popitem(last=False)
                elif event.kind == "part":
                    self._parts[event.data["station"]].append(event.data)

    def state(self) -> dict[str, Any]:
        """What the page shows: the runtime's summary so far, sparklines, thresholds, recent parts."""
        summary = self.runtime.summary(final=False) if self.runtime.join(0) is None else self.runtime.join(0)
        with self._lock:
            spark = {cid: list(v) for cid, v in self._spark.items()}
            parts = {sid: [_brief(p) for p in v] for sid, v in self._parts.items()}
        latest = {}
        for cid, cam in self.runtime.cameras.items():
            pair = cam.latest.get("result")
            latest[cid] = None if pair is None else {"frame": pair[0].index, "score": float(pair[1].score),
                                                     "label": None if pair[1].label is None else bool(pair[1].label)}
        thresholds = {cid: _camera_threshold(self.runtime, cid) for cid in self.runtime.cameras}
        return {"summary": summary, "sparklines": spark, "latest": latest, "thresholds": thresholds, "parts": parts,
                "finished": self.runtime.join(0) is not None, "actions": len(self.actions),
                "writable": bool(self.tokens)}

    def part(self, seq: int) -> dict[str, Any] | None:
        with self._lock:
            for parts in self._parts.values():
                for p in parts:
                    if p["part"] == seq:
                        return p
        return None

    def frame_jpeg(self, camera: str, index: int | None) -> bytes | None:
        """A frame with its anomaly overlay as JPEG: the camera's latest scored one, or a kept part frame."""
        if index is None:
            cam = self.runtime.cameras.get(camera)
            pair = None if cam is None else cam.latest.get("result")
        else:
            with self._lock:
                pair = self._frames.get((camera, index))
        if pair is None or pair[0].image is None:
            return None
        return _overlay_jpeg(pair[0].image, pair[1])

    # -------------------------------------------------------------------------- actions
    def recalibrate(self, detector: str, who: str) -> dict[str, Any]:
        from edgesentry.recalibration import recalibrate

        spec = self.runtime.cfg.detectors.get(detector)
        audit = self.runtime.cfg.outputs.get("audit")
        if spec is None or spec.bundle is None:
            raise ConfigError(f"unknown local detector {detector!r}")
        if audit is None:
            raise ConfigError("the line has no outputs.audit to recalibrate from")
        bundle = recalibrate(spec.bundle, audit, who=who)
        record = bundle.meta["lineage"][-1]
        done = {"detector": detector, "bundle": str(bundle.path), "version": record["version"], "who": who,
                "new_raw_threshold": record["new"]["raw_threshold"]}
        self.actions.append(done)
        log.warning("dashboard: %s recalibrated %s -> %s", who, detector, bundle.path)
        return done

    # -------------------------------------------------------------------------- serving
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        dash = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: bytes, kind: str, cache: bool = False) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "max-age=300" if cache else "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:")
                self.end_headers()
                self.wfile.write(body)

            def _json(self, code: int, obj: Any) -> None:
                self._send(code, json.dumps(obj, default=_jsonable).encode(), "application/json")

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                if path in ASSETS:
                    name, kind = ASSETS[path]
                    return self._send(200, (STATIC / name).read_bytes(), kind)
                if path == "/api/state":
                    return self._json(200, dash.state())
                if path == "/api/events":
                    return self._events()
                m = re.fullmatch(r"/api/frame/([A-Za-z0-9_.-]{1,64})\.jpg", path)
                if m:
                    return self._jpeg(dash.frame_jpeg(m.group(1), None))
                m = re.fullmatch(r"/api/part/(\d{1,12})", path)
                if m:
                    part = dash.part(int(m.group(1)))
                    return self._json(200, part) if part else self._json(404, {"error": "not a recent part"})
                m = re.fullmatch(r"/api/part/\d{1,12}/([A-Za-z0-9_.-]{1,64})/(\d{1,12})\.jpg", path)
                if m:
                    return self._jpeg(dash.frame_jpeg(m.group(1), int(m.group(2))))
                self._json(404, {"error": "not found"})

            def _jpeg(self, data: bytes | None) -> None:
                if data is None:
                    return self._json(404, {"error": "no such frame (yet)"})
                self._send(200, data, "image/jpeg")

            def _events(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                try:
                    while not dash._closed.is_set():
                        finished = dash.runtime.join(0) is not None
                        data = json.dumps(dash.state(), default=_jsonable)
                        self.wfile.write(f"event: state\ndata: {data}\n\n".encode())
                        if finished:
                            self.wfile.write(b"event: end\ndata: {}\n\n")
                            self.wfile.flush()
                            return
                        self.wfile.flush()
                        dash._closed.wait(dash.interval_s)
                except (BrokenPipeError, ConnectionResetError):
                    return

            def do_POST(self) -> None:  # noqa: N802
                if self.path != "/api/recalibrate":
                    return self._json(404, {"error": "not found"})
                if not dash.tokens:
                    return self._json(403, {"error": "read-only dashboard: start it with --dashboard-token-file"})
                given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
                who = next((name for secret, name in dash.tokens.items()
                            if hmac.compare_digest(secret.encode(), given.encode())), None)
                if who is None:
                    return self._json(401, {"error": "a valid bearer token is needed"})
                length = int(self.headers.get("Content-Length") or 0)
                if not 0 < length <= MAX_BODY:
                    return self._json(400, {"error": f"a JSON body of at most {MAX_BODY} bytes is needed"})
                try:
                    detector = json.loads(self.rfile.read(length))["detector"]
                    return self._json(200, dash.recalibrate(str(detector), who))
                except (ValueError, KeyError, TypeError):
                    return self._json(400, {"error": 'expected {"detector": NAME}'})
                except EdgesentryError as exc:
                    return self._json(400, {"error": str(exc)})

        return Handler


def _camera_threshold(runtime: Any, camera: str) -> float | None:
    """The threshold a camera's scores meet at its station: its rule's, else its detector's."""
    for station in runtime.cfg.stations:
        if camera in station.cameras:
            rule = station.camera_rules.get(camera, station.rule)
            if rule.threshold is not None:
                return rule.threshold
    return runtime.scorers[runtime.cfg.camera(camera).detector].threshold


def _brief(part: dict[str, Any]) -> dict[str, Any]:
    keys = ("part", "part_id", "station", "decision", "verdict", "score", "late", "fail_safe", "degraded")
    return {k: part.get(k) for k in keys} | {"frames": [(f["camera"], f["frame"], f["status"])
                                                        for f in part.get("frames", [])]}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


def _overlay_jpeg(image: np.ndarray, result: Any) -> bytes:
    import cv2

    from edgesentry.viz import overlay

    out = image
    amap = getattr(result, "anomaly_map", None)
    if amap is not None and np.ndim(amap) == 2:
        amap = np.asarray(amap, np.float32)
        if amap.shape != image.shape[:2]:
            amap = cv2.resize(amap, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
        out = overlay(image, amap)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise EdgesentryError("JPEG encoding failed")
    return data.tobytes()


