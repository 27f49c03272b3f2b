"""The line's in-process event stream, for dashboards, custom sinks and tests.

    sub = runtime.subscribe(kinds={"decision", "part"})
    for event in sub:                 # blocks; ends when the runtime has finished
        print(event.kind, event.data["station"], event.data["decision"])

Events, in the order the runtime produced them:

- ``frame``: a frame left the runtime (``data``: its record, with ``camera``; ``frame``: the
  ``Frame`` with its image; ``result``: the detector's ``Result`` or ``None``);
- ``decision``: the gate of a station got a decision (``data``: the part record so far);
- ``part``: a part is final (``data``: its full record, as the audit log has it);
- ``health``: a camera's or a detector's health changed (``data``: ``{"camera"|"detector", "health"}``);
- ``drift``: a camera's drift state changed (``data``: the drift record, see ``drift.py``).

Each subscription has its own bounded queue: a slow subscriber loses its own oldest events
(counted in ``dropped``), never slows the line down or another subscriber.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

EventKind = Literal["frame", "decision", "part", "health", "drift"]


@dataclass
class Event:
    kind: EventKind
    data: dict[str, Any]
    frame: Any = None
    result: Any = None


class Subscription:
    """A bounded queue of events; iterate it, or ``get(timeout)``."""

    def __init__(self, bus: EventBus, kinds: set[str] | None, maxsize: int):
        self._bus, self.kinds, self.maxsize = bus, kinds, maxsize
        self._items: deque[Event] = deque()
        self._cond = threading.Condition()
        self.dropped = 0
        self.closed = False

    def _put(self, event: Event) -> None:
        with self._cond:
            if len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(event)
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event; ``None`` on timeout or once the bus closed and the queue is empty."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self.closed, timeout):
                return None
            return self._items.popleft() if self._items else None

    def __iter__(self) -> Iterator[Event]:
        while True:
            event = self.get()
            if event is None:
                return
            yield event

    def close(self) -> None:
        self._bus.unsubscribe(self)
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class EventBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: list[Subscription] = []

    def subscribe(self, kinds: set[str] | None = None, maxsize: int = 10_000) -> Subscription:
        sub = Subscription(self, set(kinds) if kinds else None, maxsize)
        with self._lock:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    @property
    def active(self) -> bool:
        return bool(self._subs)

    def publish(self, event: Event) -> None:
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            if sub.kinds is None or event.kind in sub.kinds:
                sub._put(event)

    def close(self) -> None:
        with self._lock:
            subs, self._subs = self._subs, []
        for sub in subs:
            with sub._cond:
                sub.closed = True
                sub._cond.notify_all()
