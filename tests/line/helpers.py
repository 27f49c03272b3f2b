"""Helpers of the line tests: videos with known frames, a webhook receiver that can go down,
listening sockets of this process, JSONL readers and the part checks every test shares."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import numpy as np


def base_images(n: int = 6, shape: tuple[int, int] = (48, 64), seed: int = 3) -> list[np.ndarray]:
    """``n`` distinct RGB images; odd ones carry a red defect (a higher ISSTAD score)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = rng.integers(60, 200, (*shape, 3), dtype=np.uint8)
        if i % 2:
            img[8 + i:28 + i, 10 + 2 * i:34 + 2 * i] = (255, 0, 0)
        out.append(img)
    return out


def write_video(path: Path, images: list[np.ndarray], fps: float, n: int, offset: int = 0) -> list[int]:
    """An FFV1 (lossless) video of ``n`` frames: frame k shows ``images[(k + offset) % len(images)]``.

    Returns the image index of every frame, so a test knows each frame's pixels without decoding.
    """
    import cv2

    h, w = images[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (w, h))
    assert writer.isOpened()
    order = [(k + offset) % len(images) for k in range(n)]
    for i in order:
        writer.write(cv2.cvtColor(images[i], cv2.COLOR_RGB2BGR))
    writer.release()
    return order


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    text = Path(path).read_text()
    assert text == "" or text.endswith("\n"), "JSONL file ends with a partial line"
    return [json.loads(line) for line in text.splitlines()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebhookReceiver:
    """A local HTTP server collecting POSTed JSON; ``stop()`` closes the port (the receiver is down:
    connections are refused), ``start()`` opens it again on the same port."""

    def __init__(self, port: int | None = None, token: str | None = None):
        self.port = port or free_port()
        self.token = token
        self.received: list[dict[str, Any]] = []
        self.keys: list[str] = []
        self.unauthorized = 0
        self._server: HTTPServer | None = None
        self._lock = threading.Lock()

    def start(self) -> WebhookReceiver:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if owner.token is not None and self.headers.get("Authorization") != f"Bearer {owner.token}":
                    owner.unauthorized += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                with owner._lock:
                    owner.received.append(json.loads(body))
                    owner.keys.append(self.headers.get("Idempotency-Key", ""))
                self.send_response(204)
                self.end_headers()

        self._server = HTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


def listening_sockets() -> list[tuple[str, int]]:
    """(address, port) of every TCP socket this process listens on, from /proc (IPv4 and IPv6)."""
    import os

    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            addr_hex, port_hex = local.split(":")
            out.append((_address(addr_hex, v6), int(port_hex, 16)))
    return out


def ss_listening_sockets(pid: int) -> list[tuple[str, int]] | None:
    """The same list as :func:`listening_sockets`, as ``ss -ltnp`` prints it for process ``pid``
    (an independent cross-check); None where ``ss`` is not installed."""
    import re
    import shutil
    import subprocess

    if shutil.which("ss") is None:
        return None
    text = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, timeout=10, check=True).stdout
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or f"pid={pid}," not in line:
            continue
        addr, _, port = fields[3].rpartition(":")
        out.append((re.sub(r"^\[|\](%.*)?$|%.*$", "", addr), int(port)))
    return out


def _address(hex_addr: str, v6: bool) -> str:
    raw = bytes.fromhex(hex_addr)
    if not v6:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))  # /proc prints host-order words
    return socket.inet_ntop(socket.AF_INET6, words)


def is_loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, poll: float = 0.02) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def check_camera_accounting(summary: dict[str, Any], frames: list[dict[str, Any]]) -> None:
    """Per camera: every index 0..produced-1 exactly once in the frame log, counts as the summary's."""
    assert summary["identity_holds"] is True and summary["pending"] == 0
    for cam, c in summary["cameras"].items():
        assert c["produced"] == c["processed"] + c["dropped"] + c["failed"] and c["pending"] == 0, (cam, c)
        mine = [r for r in frames if r["camera"] == cam]
        assert sorted(r["frame"] for r in mine) == list(range(c["produced"])), f"camera {cam}: index missing/repeated"
        by = {s: sum(r["status"] == s for r in mine) for s in ("ok", "failed", "dropped")}
        assert by == {"ok": c["processed"], "failed": c["failed"], "dropped": c["dropped"]}, (cam, by, c)
    for key in ("produced", "processed", "dropped", "failed"):
        assert summary[key] == sum(c[key] for c in summary["cameras"].values())


def check_parts_match_frames(parts: list[dict[str, Any]], frames: list[dict[str, Any]]) -> None:
    """Every part's frame list is exactly the frames the frame log assigns to it, outcome for outcome."""
    by_key = {(r["camera"], r["frame"]): r for r in frames}
    claimed = {}
    for r in frames:
        if "part" in r:
            claimed.setdefault(r["part"], set()).add((r["camera"], r["frame"]))
    for part in parts:
        listed = {(f["camera"], f["frame"]) for f in part["frames"]}
        assert listed == claimed.get(part["part"], set()), f"part {part['part']}: frame list differs from the log"
        for f in part["frames"]:
            log = by_key[(f["camera"], f["frame"])]
            assert log["status"] == f["status"] and log["part"] == part["part"]
            if f["status"] == "ok":
                assert log["score"] == f["score"]
    assert set(claimed) <= {p["part"] for p in parts}, "a frame names a part that has no record"


def rule_verdict(part: dict[str, Any], kind: str, threshold: float, oracle: dict[tuple[str, int], float]
                 ) -> tuple[str | None, float | None]:
    """The station rule, written independently of the runtime: over the oracle scores of the part's
    scored frames."""
    scores = [oracle[(f["camera"], f["frame"])] for f in part["frames"] if f["status"] == "ok"]
    if not scores:
        return None, None
    score = float(np.mean(scores)) if kind == "mean" else float(np.max(scores))
    return ("reject" if score >= threshold else "accept"), score
