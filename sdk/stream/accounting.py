"""Counters behind the runtime's guarantee: every frame is accounted for.

All counters change under one lock, so any snapshot satisfies

    produced == processed + dropped + failed + pending

where ``pending`` counts frames inside the runtime (queued, being scored or being written).
When a stream ends ``pending`` is 0 and the identity is the one the summary reports:
``produced == processed + dropped + failed``.

Every produced index stays *outstanding* until it is finished or dropped, so a runtime can
ask, after a worker crashed anywhere, which frames nobody will ever finish
(``outstanding()``) and fail them: the identity then holds on every exit path.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Snapshot:
    produced: int
    processed: int
    dropped: int
    failed: int
    pending: int
    dropped_by_reason: dict[str, int]
    failed_by_reason: dict[str, int]
    reconnects: int
    batches: int
    batched_frames: int
    elapsed_s: float
    fps: float  # processed frames per second over the recent window
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None
    sink_errors: dict[str, int] = field(default_factory=dict)
    worker_crashes: dict[str, int] = field(default_factory=dict)

    @property
    def identity_holds(self) -> bool:
        return self.produced == self.processed + self.dropped + self.failed + self.pending

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items()}
        out["identity_holds"] = self.identity_holds
        return out


class Accounting:
    """Thread-safe frame counters and a window of recent end-to-end latencies."""

    def __init__(self, latency_window: int = 10_000, rate_window_s: float = 5.0):
        self._lock = threading.Lock()
        self.produced = self.processed = self.dropped = self.failed = 0
        self.dropped_by_reason: Counter[str] = Counter()
        self.failed_by_reason: Counter[str] = Counter()
        self.sink_errors: Counter[str] = Counter()
        self.worker_crashes: Counter[str] = Counter()
        self._outstanding: dict[int, Any] = {}  # index -> its frame (None until attached)
        self.reconnects = 0
        self.batches = 0
        self.batched_frames = 0
        self._latencies: deque[float] = deque(maxlen=latency_window)
        self._done_times: deque[float] = deque()
        self._rate_window_s = rate_window_s
        self._start = time.perf_counter()
        self._end: float | None = None
        self._drop_notes: list[tuple[Any, str]] = []

    def start_clock(self) -> None:
        self._start = time.perf_counter()

    def stop_clock(self) -> None:
        """Freeze ``elapsed_s`` (the stream ended; closing sinks is not stream time)."""
        self._end = time.perf_counter()

    # -------------------------------------------------------------------- transitions
    def produce(self) -> int:
        """A frame entered the runtime; returns its index (outstanding until it leaves)."""
        with self._lock:
            index = self.produced
            self.produced += 1
            self._outstanding[index] = None
            return index

    def attach(self, index: int, frame: Any) -> None:
        """Remember the frame of an outstanding index (what ``outstanding()`` hands back)."""
        with self._lock:
            if index in self._outstanding:
                self._outstanding[index] = frame

    def outstanding(self) -> list[tuple[int, Any]]:
        """Indices produced and not yet finished or dropped, oldest first, with their frames."""
        with self._lock:
            return sorted(self._outstanding.items(), key=lambda kv: kv[0])

    def drop(self, frame: Any, reason: str) -> None:
        """A queued frame was discarded (``drop-oldest`` overload, or an aborted shutdown)."""
        with self._lock:
            if self._outstanding.pop(getattr(frame, "index", None), False) is False:
                return  # already accounted for: a frame leaves the runtime once
            self.dropped += 1
            self.dropped_by_reason[reason] += 1
            self._drop_notes.append((frame, reason))

    def finish(self, index: int, ok: bool, latency_s: float, reason: str | None = None) -> bool:
        """Frame ``index`` left the runtime through the sinks, scored (``ok``) or failed.

        Returns False (and counts nothing) when that index had already left.
        """
        now = time.perf_counter()
        with self._lock:
            if self._outstanding.pop(index, False) is False:
                return False
            if ok:
                self.processed += 1
            else:
                self.failed += 1
                self.failed_by_reason[reason or "error"] += 1
            self._latencies.append(latency_s)
            self._done_times.append(now)
            while self._done_times and now - self._done_times[0] > self._rate_window_s:
                self._done_times.popleft()
        return True

    def is_outstanding(self, index: int) -> bool:
        with self._lock:
            return index in self._outstanding

    def take_drop_notes(self) -> list[tuple[Any, str]]:
        with self._lock:
            notes, self._drop_notes = self._drop_notes, []
            return notes

    def count_batch(self, size: int) -> None:
        with self._lock:
            self.batches += 1
            self.batched_frames += size

    def count_reconnect(self) -> None:
        with self._lock:
            self.reconnects += 1

    def count_sink_error(self, sink: str) -> None:
        with self._lock:
            self.sink_errors[sink] += 1

    def count_crash(self, worker: str) -> None:
        with self._lock:
            self.worker_crashes[worker] += 1

    # ----------------------------------------------------------------------- reading
    def snapshot(self) -> Snapshot:
        now = time.perf_counter()
        with self._lock:
            lat = np.fromiter(self._latencies, dtype=np.float64, count=len(self._latencies))
            recent = [t for t in self._done_times if now - t <= self._rate_window_s]
            elapsed = (self._end or now) - self._start
            span = min(self._rate_window_s, elapsed)
            snap = Snapshot(
                produced=self.produced, processed=self.processed, dropped=self.dropped, failed=self.failed,
                pending=self.produced - self.processed - self.dropped - self.failed,
                dropped_by_reason=dict(self.dropped_by_reason), failed_by_reason=dict(self.failed_by_reason),
                reconnects=self.reconnects, batches=self.batches, batched_frames=self.batched_frames,
                elapsed_s=elapsed, fps=len(recent) / span if span > 0 else 0.0,
                latency_p50_ms=None, latency_p99_ms=None, latency_max_ms=None,
                sink_errors=dict(self.sink_errors), worker_crashes=dict(self.worker_crashes),
            )
        if lat.size:
            p50, p99 = np.quantile(lat, [0.5, 0.99])
            snap.latency_p50_ms, snap.latency_p99_ms = float(p50) * 1e3, float(p99) * 1e3
            snap.latency_max_ms = float(lat.max()) * 1e3
        return snap
