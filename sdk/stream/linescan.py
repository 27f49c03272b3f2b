"""Push-broom line sources for ``watch`` and the line-scan side of the stream runtime.

Sources (each line is a ``RawFrame`` whose ``image`` is the (W, B) line):

- ``CubeLineSource``: a cube (ENVI ``.hdr``, ``.mat``, ``.npy`` or an array) replayed line by
  line at ``line_rate`` lines per second: a simulated push-broom camera (``live``, so the
  runtime drops the oldest lines when the detector falls behind, as a camera would);
- ``CallbackLineSource``: lines from a user callback (a camera SDK's grab function). The
  callback returns a (W, B) array, ``None`` when no line is ready yet, or raises
  ``StopIteration`` at the end. It runs in a worker thread: a callback that returns nothing
  (or hangs) for ``stall_timeout_s`` is a stalled source, reported as ``SourceDisconnected``,
  so the runtime counts a reconnect, backs off, and after ``max_retries`` ends the stream with
  ``source_lost`` (exit code 3).

Scoring: ``LineScorer`` drives a line-scan detector for the runtime. A line's record is
written when *its* scores exist (after the detector's look-ahead / warm-up delay), so every
line still leaves the runtime exactly once, with its own scores, and its latency includes
the delay. At the end of the source the detector is flushed and the last lines are
delivered. Records carry ``line`` (the detector's line index), ``anomalous_pixels``,
``delay_lines`` and the ``objects`` closed by that line (bounding boxes in line coordinates).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry.detectors.linescan import LineResult, LineScanDetector
from edgesentry.errors import ConfigError, describe
from edgesentry.io.files import CUBE_SUFFIXES
from edgesentry.io.hsi import as_cube
from edgesentry.stream.queues import Frame
from edgesentry.stream.sources import IDLE, RawFrame, Source, SourceDisconnected, SourceUnavailable, _Idle


class CubeLineSource(Source):
    """A cube replayed top to bottom, one (W, B) line per read, at ``line_rate`` lines/s
    (``None``: as fast as the runtime takes them). ``clock``/``sleep`` are injectable for tests."""

    live = True

    def __init__(self, cube: Any, *, line_rate: float | None = None, variable: str | None = None,
                 clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep):
        if line_rate is not None and not (np.isfinite(line_rate) and line_rate > 0):
            raise ConfigError(f"line rate must be a positive number of lines per second; got {line_rate}")
        self._spec, self._variable = cube, variable
        self.name = os.fspath(cube) if isinstance(cube, (str, os.PathLike)) else "cube"
        self.line_rate = line_rate
        self._clock, self._sleep = clock, sleep
        self._cube: np.ndarray | None = None
        self._next = 0
        self._start: float | None = None

    def open(self) -> None:
        if self._cube is None:
            try:
                self._cube, _ = as_cube(self._spec, variable=self._variable, who="the line source")
            except FileNotFoundError as exc:
                raise SourceUnavailable(f"cube {self.name!r} does not exist") from exc
        self._start = None  # a reopened source keeps its place and restarts its clock

    def read(self) -> RawFrame | None:
        if self._cube is None:
            raise SourceDisconnected(f"{self.name} is not open")
        if self._next >= self._cube.shape[0]:
            return None
        if self.line_rate is not None:
            now = self._clock()
            if self._start is None:
                self._start = now - self._next / self.line_rate
            due = self._start + self._next / self.line_rate  # a fixed schedule: no drift
            if due > now:
                self._sleep(due - now)
        index = self._next
        self._next += 1
        position = None if self.line_rate is None else 1000.0 * index / self.line_rate
        return RawFrame(f"{self.name}#{index}", image=self._cube[index], position_ms=position)


class CallbackLineSource(Source):
    """Lines from ``callback()`` (see the module docstring), watched for stalls."""

    live = True

    def __init__(self, callback: Callable[[], Any], *, name: str = "callback", stall_timeout_s: float = 5.0):
        if not callable(callback):
            raise ConfigError(f"the line callback must be callable; got {describe(callback)}")
        if not (np.isfinite(stall_timeout_s) and stall_timeout_s > 0):
            raise ConfigError(f"stall timeout must be a positive number of seconds; got {stall_timeout_s}")
        self.callback, self.name, self.stall_timeout_s = callback, name, float(stall_timeout_s)
        self._results: queue.Queue = queue.Queue(maxsize=1)
        self._worker: threading.Thread | None = None
        self._pending = False  # the worker is inside the callback
        self._count = 0
        self._ended = False
        self._last_line = time.monotonic()

    def open(self) -> None:
        self._last_line = time.monotonic()  # a (re)opened camera gets a full stall timeout

    def _call(self) -> None:
        try:
            item: Any = ("line", self.callback())
        except StopIteration:
            item = ("end", None)
        except Exception as exc:  # the SDK failed: the runtime reconnects
            item = ("error", exc)
        self._results.put(item)

    def read(self) -> RawFrame | _Idle | None:
        if self._ended:
            return None
        if not self._pending:
            self._pending = True
            self._worker = threading.Thread(target=self._call, name=f"line-callback-{self.name}", daemon=True)
            self._worker.start()
        left = self._last_line + self.stall_timeout_s - time.monotonic()
        try:
            kind, value = self._results.get(timeout=max(left, 0.0))
        except queue.Empty:  # still inside the callback: a stalled camera (the call may return later)
            raise SourceDisconnected(f"{self.name}: no line for {self.stall_timeout_s:g} s") from None
        self._pending = False
        if kind == "end":
            self._ended = True
            return None
        if kind == "error":
            raise SourceDisconnected(f"{self.name}: callback raised {type(value).__name__}: {value}")
        if value is None:  # no line ready: ask again, until the stall timeout
            if time.monotonic() - self._last_line > self.stall_timeout_s:
                raise SourceDisconnected(f"{self.name}: no line for {self.stall_timeout_s:g} s")
            return IDLE
        self._last_line = time.monotonic()
        index = self._count
        self._count += 1
        return RawFrame(f"{self.name}#{index}", image=np.asarray(value))


def open_line_source(source: Any, *, line_rate: float | None = None, variable: str | None = None) -> Source:
    """A line source from a cube path or array, a callable, or a ``Source`` (passed through)."""
    if isinstance(source, Source):
        return source
    if callable(source):
        return CallbackLineSource(source)
    if isinstance(source, np.ndarray):
        return CubeLineSource(source, line_rate=line_rate)
    if isinstance(source, (str, os.PathLike)):
        if Path(source).suffix.lower() not in CUBE_SUFFIXES:
            raise ConfigError(f"a line-scan source is a cube file ({', '.join(CUBE_SUFFIXES)}); "
                              f"got {os.fspath(source)!r}")
        return CubeLineSource(source, line_rate=line_rate, variable=variable)
    raise ConfigError(f"line-scan source must be a cube path or array, a callback or a Source; got {describe(source)}")


class LineScorer:
    """Feeds a ``LineScanDetector`` line by line for the runtime's inference thread and hands
    back each line's frame with its own result once the detector has scored it."""

    def __init__(self, detector: LineScanDetector):
        self.detector = detector
        self._awaiting: deque[Frame] = deque()  # accepted lines whose scores are not out yet

    def score(self, frame: Frame) -> list[tuple[Frame, Any, str | None]]:
        """``frame`` scored or failed now, and any earlier lines that this one completes."""
        try:
            results = self.detector.predict_line(frame.image)
        except Exception as exc:  # a bad line fails alone; the scan goes on
            return [(frame, None, f"{type(exc).__name__}: {exc}")]
        self._awaiting.append(frame)
        return self._match(results)

    def flush(self) -> list[tuple[Frame, Any, str | None]]:
        """End of the source: the lines still waiting for look-ahead."""
        return self._match(self.detector.flush())

    def reset(self) -> None:
        """Start a new scan (after a crash failed the lines that were waiting)."""
        self.detector.reset()
        self._awaiting.clear()

    def _match(self, results: list[LineResult]) -> list[tuple[Frame, Any, str | None]]:
        # results come oldest first and the awaiting frames are in the detector's line order
        return [(self._awaiting.popleft(), result, None) for result in results]
