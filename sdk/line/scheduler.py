"""Shared detectors: one worker per detector, fed by every camera that uses it, in fair micro-batches.

    camera A --lane A--\\
    camera B --lane B--- FairQueue --round robin--> DetectorWorker --> scorer.score(images)
    camera C --lane C--/    (bounded lanes: block | drop-oldest)       (local predict_batch or Triton)

Each camera has its own bounded **lane** with its own policy, so a fast camera fills (and, under
``drop-oldest``, drops from) its own lane only. A batch takes one frame from each non-empty lane in
turn, starting after the lane served first last time, until ``batch_size`` frames or until the
first frame has waited ``latency_budget_ms`` since capture: a fast camera cannot starve a slow
one, and every batch mixes cameras whenever several have frames waiting.

Scorers turn a list of images into one ``(result, error)`` per image, never raising:

- ``LocalScorer``: a ``Detector`` shared by the cameras (one ``predict_batch`` per batch, failures
  isolated frame by frame);
- ``RemoteScorer``: a model served by Triton Inference Server through ``edgesentry.serving.Client``.
  A call that fails or times out is a failed frame (``RemoteError``); once the server is
  unreachable the rest of that batch fails at once, and the next batch tries again. Each worker
  thread has its own connection.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from edgesentry.stream.queues import Closed, Frame
from edgesentry.stream.scoring import score_isolated

log = logging.getLogger("edgesentry.line")

Outcome = tuple[Any, "str | None"]


class FairQueue:
    """Bounded per-camera lanes under one lock, read in round-robin micro-batches."""

    def __init__(self, lanes: dict[str, int]):
        self._cond = threading.Condition()
        self._lanes: dict[str, deque[Frame]] = {name: deque() for name in lanes}
        self._size = dict(lanes)
        self._open = set(lanes)
        self._order = list(lanes)
        self._next = 0
        self._aborted = False

    def __len__(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._lanes.values())

    def depth(self, lane: str) -> int:
        with self._cond:
            return len(self._lanes[lane])

    def put(self, lane: str, frame: Frame, *, drop_oldest: bool) -> list[Frame]:
        """Queue ``frame``; returns the frames evicted to make room (``drop-oldest``).

        Under ``block`` waits for room. Raises ``Closed`` once the lane was closed or aborted.
        """
        evicted: list[Frame] = []
        with self._cond:
            q = self._lanes[lane]
            while True:
                if lane not in self._open or self._aborted:
                    raise Closed(f"lane {lane} closed")
                if len(q) < self._size[lane]:
                    break
                if drop_oldest:
                    evicted.append(q.popleft())
                    continue
                self._cond.wait(0.1)
            q.append(frame)
            self._cond.notify_all()
        return evicted

    def get_batch(self, max_items: int, budget_s: float, hold: Callable[[list[Frame]], None] | None = None
                  ) -> list[Frame]:
        """Up to ``max_items`` frames, fairly across lanes; ``[]`` when every lane is closed and empty."""
        with self._cond:
            while not any(self._lanes.values()):
                if not self._open:
                    return []
                self._cond.wait(0.1)
            batch = self._take(max_items)
            deadline = min(f.captured for f in batch) + budget_s
            while len(batch) < max_items:
                if any(self._lanes.values()):
                    batch.extend(self._take(max_items - len(batch)))
                    continue
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or not self._open:
                    break
                self._cond.wait(remaining)
            if hold is not None:
                hold(batch)
            self._cond.notify_all()  # room for blocked cameras
            return batch

    def _take(self, n: int) -> list[Frame]:
        out: list[Frame] = []
        lanes = len(self._order)
        while len(out) < n and any(self._lanes.values()):
            for k in range(lanes):
                name = self._order[(self._next + k) % lanes]
                if self._lanes[name]:
                    out.append(self._lanes[name].popleft())
                    self._next = (self._next + k + 1) % lanes
                    break
        return out

    def close(self, lane: str) -> None:
        """The camera of ``lane`` stopped; what it queued is still served."""
        with self._cond:
            self._open.discard(lane)
            self._cond.notify_all()

    def abort(self) -> list[Frame]:
        """Close every lane, wake blocked cameras and hand back everything queued."""
        with self._cond:
            self._aborted = True
            self._open.clear()
            items = [f for q in self._lanes.values() for f in q]
            for q in self._lanes.values():
                q.clear()
            self._cond.notify_all()
            return items


# ---------------------------------------------------------------------------- scorers
class LocalScorer:
    """A local ``Detector`` (see ``score_isolated``)."""

    remote = False

    def __init__(self, detector: Any):
        self.detector = detector
        self.threshold = getattr(detector, "threshold", None)
        self.healthy = True

    def score(self, images: Sequence[Any]) -> list[Outcome]:
        return score_isolated(self.detector, images)

    def close(self) -> None:
        pass


class RemoteScorer:
    """A model served by Triton (``edgesentry.serving.Client``); connects lazily, reconnects per batch.

    Args:
        url / model / protocol: what ``Client`` takes.
        timeout_s: network timeout of one request; a request that takes longer fails its frame.
        threshold: the served bundle's threshold (read from the line file's bundle, if any).
    """

    remote = True

    def __init__(self, url: str, model: str, *, protocol: str = "http", timeout_s: float = 5.0,
                 threshold: float | None = None, client_factory: Callable[[], Any] | None = None):
        self.url, self.model, self.protocol, self.timeout_s = url, model, protocol, timeout_s
        self.threshold = threshold
        self._factory = client_factory or self._connect
        self._local = threading.local()  # one client per worker thread: tritonclient's are not shared
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        self.healthy = True  # until a call fails: nothing is contacted before the first frame
        self.last_error: str | None = None

    def _connect(self) -> Any:
        from edgesentry.serving import Client

        return Client(self.url, model=self.model, protocol=self.protocol, timeout=self.timeout_s)

    def score(self, images: Sequence[Any]) -> list[Outcome]:
        out: list[Outcome] = []
        for image in images:
            client = getattr(self._local, "client", None)
            if client is None:
                try:
                    client = self._local.client = self._factory()
                except Exception as exc:
                    return out + self._unreachable(exc, len(images) - len(out))
                with self._lock:
                    self._clients.append(client)
            try:
                out.append((client.predict(image), None))
                self.healthy, self.last_error = True, None
            except Exception as exc:  # noqa: BLE001 - any transport or server error fails this frame only
                if _is_transport_error(exc):
                    self._drop_client()
                    return out + self._unreachable(exc, len(images) - len(out))
                out.append((None, f"RemoteError: {type(exc).__name__}: {_one_line(exc)}"))
        return out

    def _unreachable(self, exc: BaseException, n: int) -> list[Outcome]:
        self.healthy = False
        self.last_error = f"RemoteError: server {self.url} unreachable: {type(exc).__name__}: {_one_line(exc)}"
        log.warning("%s", self.last_error)
        return [(None, self.last_error)] * n

    def _drop_client(self) -> None:
        client, self._local.client = self._local.client, None
        with self._lock:
            if client in self._clients:
                self._clients.remove(client)
        _close_quietly(client)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            _close_quietly(client)


def _close_quietly(client: Any) -> None:
    try:
        client.close()
    except Exception:  # noqa: BLE001 - closing a broken connection may fail too
        pass


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text[:200]


def _is_transport_error(exc: BaseException) -> bool:
    """A connection refused / reset / timed out (the server is gone), not a rejected request."""
    if isinstance(exc, (OSError, TimeoutError, ConnectionError)):
        return True
    name = type(exc).__name__
    text = str(exc).lower()
    return name in ("InferenceServerException",) and any(
        w in text for w in ("connect", "unavailable", "timed out", "timeout", "deadline", "broken pipe", "reset"))


# ----------------------------------------------------------------------------- worker
class DetectorWorker:
    """One detector's loop: take a fair batch, score it, hand each outcome back with its frame.

    ``on_scored(frame, result, error)`` runs in the worker thread for every frame of a batch;
    ``frame.meta`` gets ``batch`` (frames in this call), ``cameras`` (distinct cameras in it) and
    ``queue_s`` (capture to scoring).
    """

    def __init__(self, name: str, scorer: Any, queue: FairQueue, *, batch_size: int, latency_budget_ms: float,
                 on_scored: Callable[[Frame, Any, str | None], None], hold: Any):
        self.name = name
        self.scorer = scorer
        self.queue = queue
        self.batch_size = batch_size
        self.budget_s = latency_budget_ms / 1e3
        self.on_scored = on_scored
        self.held = hold
        self._lock = threading.Lock()
        self.batches = 0
        self.batched_frames = 0
        self.mixed_batches = 0

    def loop(self) -> None:
        while True:
            batch = self.queue.get_batch(self.batch_size, self.budget_s, hold=self.held.take)
            if not batch:
                return
            self.run_batch(batch)

    def run_batch(self, batch: list[Frame]) -> None:
        ready = [f for f in batch if f.image is not None]
        outcomes: dict[int, Outcome] = {id(f): (None, f.error or "decode: no image") for f in batch
                                        if f.image is None}
        if ready:
            t0 = time.perf_counter()
            cameras = len({f.meta["camera"] for f in ready})
            for f in ready:
                f.meta.update(queue_s=t0 - f.captured, batch=len(ready), cameras=cameras)
            for f, outcome in zip(ready, self.scorer.score([f.image for f in ready])):
                outcomes[id(f)] = outcome
            with self._lock:
                self.batches += 1
                self.batched_frames += len(ready)
                self.mixed_batches += cameras > 1
        for f in batch:
            self.on_scored(f, *outcomes[id(f)])
            self.held.passed(f)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"batches": self.batches, "frames": self.batched_frames,
                    "mean_batch": self.batched_frames / self.batches if self.batches else 0.0,
                    "mixed_batches": self.mixed_batches, "remote": self.scorer.remote,
                    "healthy": self.scorer.healthy}
