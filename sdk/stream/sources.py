"""Frame sources: whatever OpenCV's ``VideoCapture`` opens, a hot folder, a Python iterable.

A source is opened, read frame by frame and closed by the runtime's capture thread:

- ``read()`` returns a ``RawFrame`` (``image`` RGB uint8, or ``error`` when that one frame
  could not be decoded: the stream goes on), ``IDLE`` when nothing is ready yet (a hot
  folder between files), or ``None`` at the end of the stream;
- ``open()`` raises ``SourceUnavailable`` and ``read()`` raises ``SourceDisconnected``;
  the runtime then reopens the source with bounded exponential backoff.

``live`` sources (cameras, network streams, pipelines) default to the ``drop-oldest``
policy, finite ones (files, folders, iterables) to ``block``.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry.errors import ConfigError, EdgesentryError, InputError, describe
from edgesentry.io.image import IMAGE_SUFFIXES, read_image, to_rgb_uint8


class SourceUnavailable(EdgesentryError):
    """The source cannot be opened (camera absent, URL unreachable, file missing)."""


class SourceDisconnected(EdgesentryError):
    """An opened source stopped delivering (network drop, unplugged camera, stall timeout)."""


class _Idle:
    def __repr__(self) -> str:
        return "IDLE"


IDLE = _Idle()  # "no frame yet, ask again"


@dataclass
class RawFrame:
    """What a source hands the runtime: an RGB image or the reason there is none.

    ``lost`` counts frames the device produced before this one that never reached the host
    (a gap in a camera's block ids): the runtime counts each as dropped, reason ``transport``.
    ``meta`` (camera frame id, timestamp, pixel format) is carried into the frame's record.
    """

    name: str
    image: np.ndarray | None = None
    error: str | None = None
    position_ms: float | None = None
    lost: int = 0
    meta: dict[str, Any] | None = None


class Source:
    """Base class; see the module docstring for the contract."""

    name: str = "source"
    live: bool = False

    def open(self) -> None:
        """Open (or reopen after a disconnect). Raise ``SourceUnavailable`` on failure."""

    def read(self) -> RawFrame | _Idle | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file; must be safe to call twice."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, live={self.live})"


# ---------------------------------------------------------------------------- OpenCV
class VideoSource(Source):
    """A camera index, video file, RTSP/HTTP URL or GStreamer pipeline via ``cv2.VideoCapture``.

    Frames are converted from OpenCV's BGR to RGB. For files, a frame the decoder rejects is
    reported as a failed frame and reading continues (the container's frame count tells a
    corrupt frame from the end). For live sources a failed read is a disconnect. Network
    sources get open/read timeouts so that a stalled stream is detected, not waited on.
    """

    def __init__(self, spec: int | str, *, live: bool | None = None, timeout_s: float = 5.0,
                 max_consecutive_errors: int = 25):
        self.spec = spec
        self.kind = _classify(spec)
        self.live = (self.kind != "file") if live is None else bool(live)
        self.name = f"camera:{spec}" if self.kind == "camera" else str(spec)
        self.timeout_s = timeout_s
        self.max_consecutive_errors = max_consecutive_errors
        self._cap: Any = None
        self._attempted = 0  # frames read or failed since open (files: position)
        self._frame_count = 0
        self._consecutive_errors = 0

    def open(self) -> None:
        try:
            import cv2
        except ImportError as exc:
            raise ConfigError("video sources need OpenCV: pip install 'edgesentry[stream]' "
                              f"(opencv-python-headless); {exc}") from None
        self.close()
        if self.kind == "file" and not Path(str(self.spec)).is_file():
            raise SourceUnavailable(f"video file {str(self.spec)!r} does not exist")
        if self.kind == "camera":
            cap = cv2.VideoCapture(int(self.spec))
        elif self.kind == "pipeline":
            cap = cv2.VideoCapture(str(self.spec), cv2.CAP_GSTREAMER)
        elif self.kind == "url":
            ms = int(self.timeout_s * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            cap = cv2.VideoCapture(str(self.spec), cv2.CAP_FFMPEG, params)
        else:
            cap = cv2.VideoCapture(str(self.spec))
        if not cap.isOpened():
            cap.release()
            raise SourceUnavailable(f"OpenCV could not open {self.kind} source {self.name!r}")
        self._cap = cap
        self._frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if self.kind == "file" else 0
        self._consecutive_errors = 0
        if self.kind == "file" and self._attempted:
            # Reopened a file: continue where we were rather than replaying frames.
            cap.set(cv2.CAP_PROP_POS_FRAMES, self._attempted)

    def read(self) -> RawFrame | None:
        import cv2

        if self._cap is None:
            raise SourceDisconnected(f"{self.name} is not open")
        ok, bgr = self._cap.read()
        position = self._attempted
        name = f"{self.name}#{position}"
        if ok and bgr is not None:
            self._attempted += 1
            self._consecutive_errors = 0
            pos_ms = float(self._cap.get(cv2.CAP_PROP_POS_MSEC))
            try:
                rgb = to_rgb_uint8(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if bgr.ndim == 3 else bgr, convert=True,
                                   who=name)
            except (InputError, cv2.error) as exc:
                return RawFrame(name, error=f"decode: {exc}", position_ms=pos_ms)
            return RawFrame(name, image=rgb, position_ms=pos_ms)
        if self.live:
            raise SourceDisconnected(f"{self.name}: read failed (stream ended, stalled or was unplugged)")
        if self._attempted < self._frame_count and self._consecutive_errors < self.max_consecutive_errors:
            # A frame the container announces but the decoder rejected: report it, go on.
            self._attempted += 1
            self._consecutive_errors += 1
            return RawFrame(name, error=f"decode: OpenCV could not decode frame {position} of {self.name}")
        return None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _classify(spec: int | str) -> str:
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        return "camera"
    text = str(spec)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text):
        return "url"
    if "!" in text:
        return "pipeline"
    return "file"


# ------------------------------------------------------------------------- hot folder
#: how long a hot-folder file's size and mtime must stay unchanged before it is read (seconds)
DEFAULT_SETTLE_S = 0.5


class FolderSource(Source):
    """A hot folder: every image file that appears is read once it is complete, oldest first.

    When is a file complete? Two protocols, both supported:

    - **settle** (any producer): a file is read once its size and mtime have not changed
      for ``settle_s`` seconds (default 0.5; a file already older than that when first seen
      is read at once);
    - **rename** (producers that can): write under a name starting with ``.`` or ending with
      ``.tmp`` / ``.part`` (ignored), then rename; with ``settle_s=0`` such files are read as
      soon as they appear.

    A file that fails to decode while it was still changing is not reported: it goes back to
    waiting. A file that fails while unchanged is a failed frame, and is read again (as a
    new frame) if it changes later, e.g. when a producer finishes writing it after a pause.
    ``once=True`` reads what is there now and ends; ``idle_timeout`` ends the stream after that
    many seconds without a new or changing file; neither: run until stopped. Entries that are
    not regular files (FIFOs, sockets, devices, folders) are never opened.
    """

    live = False

    def __init__(self, path: str | os.PathLike, *, once: bool = False, idle_timeout: float | None = None,
                 poll_s: float = 0.1, settle_s: float = DEFAULT_SETTLE_S, suffixes: Iterable[str] = IMAGE_SUFFIXES):
        if settle_s < 0 or poll_s <= 0:
            raise ConfigError(f"settle time must be >= 0 s and poll interval > 0 s; got {settle_s}, {poll_s}")
        self.path = Path(path)
        self.name = str(self.path)
        self.once = once
        self.idle_timeout = idle_timeout
        self.poll_s = poll_s
        self.settle_s = settle_s
        self.suffixes = tuple(s.lower() for s in suffixes)
        self._seen: set[str] = set()
        self._pending: list[tuple[Path, tuple[int, int]]] = []
        self._watch: dict[str, tuple[tuple[int, int], float]] = {}  # name -> (size, mtime_ns), since
        self._failed: dict[str, tuple[int, int]] = {}  # failed while unchanged: retried if it changes
        self._last_new = time.monotonic()
        self._last_poll = 0.0
        self._listed_once = False

    def open(self) -> None:
        if not self.path.is_dir():
            raise SourceUnavailable(f"hot folder {self.name!r} does not exist or is not a directory")
        self._last_new = time.monotonic()

    def _candidates(self) -> list[tuple[str, tuple[int, int]]]:
        try:
            entries = list(os.scandir(self.path))
        except OSError as exc:
            raise SourceDisconnected(f"cannot list hot folder {self.name!r}: {exc}") from None
        out = []
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name.endswith((".tmp", ".part")) or not name.lower().endswith(self.suffixes):
                continue
            try:
                if not entry.is_file(follow_symlinks=True):
                    continue
                st = entry.stat()
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            out.append((name, (st.st_size, st.st_mtime_ns)))
        return out

    def _poll(self) -> None:
        now, wall = time.monotonic(), time.time()
        ready = []
        for name, sig in self._candidates():
            if name in self._failed:
                if self._failed[name] == sig:
                    continue
                del self._failed[name]  # changed since it failed: completed late, read it again
                self._seen.discard(name)
            if name in self._seen:
                continue
            previous = self._watch.get(name)
            if previous is None or previous[0] != sig:
                self._watch[name] = (sig, now)
                self._last_new = now
                first_sight_old = previous is None and wall - sig[1] / 1e9 >= self.settle_s
                if not (self.settle_s == 0 or first_sight_old):
                    continue
            elif now - previous[1] < self.settle_s:
                continue
            ready.append((sig[1], name, sig))
        for _, name, sig in sorted(ready):
            self._seen.add(name)
            self._watch.pop(name, None)
            self._pending.append((self.path / name, sig))
        if ready:
            self._last_new = now
        self._listed_once = True

    def read(self) -> RawFrame | _Idle | None:
        if not self._pending:
            now = time.monotonic()
            if not self._listed_once or now - self._last_poll >= self.poll_s:
                self._last_poll = now
                self._poll()
            if not self._pending:
                if self.once and self._listed_once and not self._watch:
                    return None
                if self.idle_timeout is not None and now - self._last_new >= self.idle_timeout:
                    return None
                return IDLE
        path, sig = self._pending.pop(0)
        frame = read_image_file(path)
        if frame.error is not None:
            try:
                st = path.stat()
                now_sig = (st.st_size, st.st_mtime_ns)
            except OSError:
                now_sig = None
            if now_sig is not None and now_sig != sig:  # still being written: wait for it again
                self._seen.discard(path.name)
                self._watch[path.name] = (now_sig, time.monotonic())
                return IDLE
            if now_sig is not None:
                self._failed[path.name] = now_sig
        return frame


def read_image_file(path: Path) -> RawFrame:
    """Decode an image file fully; any failure (truncated, corrupt, too many pixels, a decoder
    exception of any type) becomes a failed frame naming the file, never an exception."""
    try:
        rgb = read_image(path)
    except Exception as exc:  # one file must not stop the stream, whatever its decoder raises
        detail = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
        return RawFrame(path.name, error=f"decode: cannot read image {path.name}: {detail}")
    return RawFrame(path.name, image=rgb)


# -------------------------------------------------------------------------- iterables
class IterableSource(Source):
    """Frames from Python: an iterable of (H, W, 3) uint8 RGB arrays (or ``RawFrame``)."""

    def __init__(self, frames: Iterable[Any], *, name: str = "iterable", live: bool = False):
        self._frames = frames
        self._it: Iterator[Any] | None = None
        self._count = 0
        self.name = name
        self.live = live

    def open(self) -> None:
        if self._it is None:
            self._it = iter(self._frames)

    def read(self) -> RawFrame | None:
        assert self._it is not None
        try:
            item = next(self._it)
        except StopIteration:
            return None
        name = f"{self.name}#{self._count}"
        self._count += 1
        if isinstance(item, RawFrame):
            return item
        return RawFrame(name, image=np.asarray(item))


class PacedSource(Source):
    """Replays a finite source at camera speed: frame ``k`` is handed out ``k / fps`` seconds
    after the first (or at its ``position_ms`` when ``fps`` is None), never earlier.

    A recording then behaves like a live camera for tests, demos and benchmarks (``live`` is
    True, so the runtime's default policy is ``drop-oldest``). A reader that falls behind gets
    the frames late rather than skipped.
    """

    live = True

    def __init__(self, inner: Source, fps: float | None = None):
        if fps is not None and not fps > 0:
            raise ConfigError(f"fps must be > 0; got {fps!r}")
        self.inner = inner
        self.fps = fps
        self.name = inner.name
        self._t0: float | None = None
        self._k = 0

    def open(self) -> None:
        self.inner.open()

    def read(self) -> RawFrame | _Idle | None:
        raw = self.inner.read()
        if not isinstance(raw, RawFrame):
            return raw
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        if self.fps is not None:
            due = self._t0 + self._k / self.fps
        else:
            due = self._t0 + (raw.position_ms or 0.0) / 1e3
        self._k += 1
        if due > now:
            time.sleep(due - now)
        return raw

    def close(self) -> None:
        self.inner.close()


def open_source(source: Any, *, once: bool = False, idle_timeout: float | None = None,
                settle_s: float = DEFAULT_SETTLE_S) -> Source:
    """Turn a user's SOURCE into a ``Source``.

    ``Source`` instances pass through; an int or digit string is a camera index; an existing
    directory a hot folder; a URL (``rtsp://``, ``http://`` ...) or a GStreamer pipeline
    (contains ``!``) a live stream; any other string a video file; other iterables yield
    frames.
    """
    if isinstance(source, Source):
        return source
    if isinstance(source, (int, str, os.PathLike)) and not isinstance(source, bool):
        if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
            return FolderSource(source, once=once, idle_timeout=idle_timeout, settle_s=settle_s)
        if isinstance(source, os.PathLike):
            source = os.fspath(source)
        kind = _classify(source)
        if kind == "file" and not Path(source).exists():
            raise ConfigError(f"source {source!r} is not a camera index, URL, GStreamer pipeline, "
                              "existing video file or directory")
        return VideoSource(source)
    if isinstance(source, Iterable):
        return IterableSource(source)
    raise ConfigError(f"source must be a camera index, path, URL, pipeline, Source or iterable; got {describe(source)}")
