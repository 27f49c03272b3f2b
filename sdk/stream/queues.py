"""Frames and the bounded queue that joins the runtime's threads.

One lock-and-condition queue instead of ``queue.Queue`` because the runtime needs three
things the standard queue does not offer atomically: evict-the-oldest on a full queue
(``drop-oldest``), take a micro-batch with a latency deadline, and close-then-drain.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Frame:
    """One frame inside the runtime.

    Attributes:
        index: position in the stream, assigned at capture (0, 1, 2 ... without gaps: every
            index is later reported exactly once, as processed, failed or dropped).
        timestamp: wall-clock capture time (seconds since the epoch).
        captured: ``time.perf_counter()`` at capture, the origin of the frame's latency.
        name: where the frame came from (file name, ``video.avi#12``, ``camera:0#5``).
        image: (H, W, 3) uint8 RGB, or ``None`` when the source could not decode it.
        error: why ``image`` is ``None`` (decode failures are counted as failed frames).
    """

    index: int
    timestamp: float
    captured: float
    name: str
    image: np.ndarray | None = None
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class Closed(Exception):
    """Raised by ``BoundedQueue.put`` once the queue was closed or aborted."""


class BoundedQueue:
    """A bounded FIFO with ``block`` / ``drop-oldest`` puts and deadline micro-batching."""

    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError(f"queue size must be >= 1; got {maxsize}")
        self.maxsize = maxsize
        self._items: deque[Any] = deque()
        self._cond = threading.Condition()
        self._closed = False  # no more puts; readers drain what is left
        self._aborted = False  # blocked writers give up

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, item: Any, *, drop_oldest: bool = False, on_evict: Callable[[Any], None] | None = None) -> None:
        """Append ``item``; when full either wait (block) or evict the oldest item.

        ``on_evict`` runs under the queue's lock, so the eviction and its accounting are one
        step as seen by any reader of the queue.
        """
        with self._cond:
            if self._closed:  # readers may already have drained and left: refuse, never strand
                raise Closed("queue closed")
            while len(self._items) >= self.maxsize:
                if self._closed:
                    raise Closed("queue closed")
                if drop_oldest:
                    evicted = self._items.popleft()
                    if on_evict is not None:
                        on_evict(evicted)
                    break
                self._cond.wait(0.1)
            if self._closed:
                raise Closed("queue closed")
            self._items.append(item)
            self._cond.notify_all()

    def get_batch(self, max_items: int, deadline_of: Callable[[Any], float] | None = None,
                  hold: Callable[[list[Any]], None] | None = None) -> list[Any]:
        """Wait for one item, then gather up to ``max_items`` until the first one's deadline.

        ``deadline_of(first)`` gives the ``perf_counter`` time after which the batch is sent
        even if it is not full. ``hold(batch)`` runs under the queue's lock before the batch
        is returned, so an item is always either queued or held by its taker (what a
        supervisor needs to account for it after a crash). Returns ``[]`` only when the queue
        is closed and empty.
        """
        with self._cond:
            while not self._items:
                if self._closed:
                    return []
                self._cond.wait(0.1)
            batch = [self._items.popleft()]
            deadline = deadline_of(batch[0]) if deadline_of is not None else 0.0
            while len(batch) < max_items:
                if self._items:
                    batch.append(self._items.popleft())
                    continue
                if self._closed:
                    break
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if hold is not None:
                hold(batch)
            self._cond.notify_all()  # room for blocked writers
            return batch

    def close(self) -> None:
        """No more items will come; readers drain the rest, then get ``[]``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def abort(self) -> list[Any]:
        """Close, wake blocked writers with ``Closed`` and hand back what was queued."""
        with self._cond:
            self._closed = self._aborted = True
            items = list(self._items)
            self._items.clear()
            self._cond.notify_all()
            return items
