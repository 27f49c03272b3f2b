"""Reading a source with reconnects: what the stream's capture thread and a line camera share.

``ReconnectingReader.next()`` hands back the next ``RawFrame`` and hides the rest: opening,
reopening after ``SourceDisconnected`` with bounded exponential backoff (``FIRST, 2*FIRST, ...
<= MAX`` seconds, at most ``max_retries`` times in a row; a frame that arrives resets the
count), ``IDLE`` answers, and reads that raise (one failed frame each; ``MAX_CONSECUTIVE_READ_ERRORS``
in a row count as a disconnect). It returns ``None`` when the source ended, when ``stop`` was set,
or when the source is lost (``lost`` is then True). ``state`` says which, for health reports.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from edgesentry.stream.accounting import Accounting
from edgesentry.stream.queues import Frame
from edgesentry.stream.sources import IDLE, RawFrame, Source, SourceDisconnected
from edgesentry.stream.supervisor import describe_crash

log = logging.getLogger("edgesentry.stream")

#: reads that raise in a row before the source counts as disconnected (and is reopened)
MAX_CONSECUTIVE_READ_ERRORS = 25
#: most frames one block-id gap may count as lost (a camera reset that looks like a jump)
MAX_LOST_PER_GAP = 1 << 16

ReaderState = Literal["opening", "open", "reconnecting", "ended", "lost", "stopped"]


class ReconnectingReader:
    """Frames of ``source``, reopened with backoff (see the module docstring).

    Args:
        source: any ``Source``; it is opened by the first ``next()`` and closed by ``close()``.
        stop: set by the owner to end reading; backoff waits on it, so a stop is never delayed.
        max_retries: reconnect attempts in a row before the source counts as lost.
        backoff_s: (first, longest) delay in seconds.
        on_reconnect: called before each reconnect wait (a counter).
    """

    def __init__(self, source: Source, *, stop: threading.Event, max_retries: int, backoff_s: tuple[float, float],
                 on_reconnect: Callable[[], None] | None = None):
        self.source = source
        self.stop = stop
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.on_reconnect = on_reconnect
        self.lost = False
        self.state: ReaderState = "opening"
        self._open = False
        self._attempts = 0
        self._read_errors = 0

    def next(self) -> RawFrame | None:
        """The next frame (an image, or a failed read as ``RawFrame.error``); ``None`` at the end."""
        source = self.source
        while not self.stop.is_set():
            if not self._open:
                try:
                    source.open()
                    self._open = True
                    self.state = "open"
                except Exception as exc:  # any failure to open is a reason to retry, not to die
                    if not self._reconnect(exc):
                        return None
                    continue
            try:
                raw = source.read()
                self._read_errors = 0
            except SourceDisconnected as exc:
                self._close()
                if not self._reconnect(exc):
                    return None
                continue
            except Exception as exc:  # this one read failed: a failed frame, the source goes on
                self._read_errors += 1
                if self._read_errors >= MAX_CONSECUTIVE_READ_ERRORS:
                    self._close()
                    self._read_errors = 0
                    if not self._reconnect(SourceDisconnected(f"{MAX_CONSECUTIVE_READ_ERRORS} reads failed: {exc}")):
                        return None
                raw = RawFrame(f"{source.name}#read-error", error=f"read: {describe_crash(exc)}")
            if raw is None:
                self.state = "ended"
                return None
            if raw is IDLE:
                self.stop.wait(0.02)
                continue
            if not isinstance(raw, RawFrame):
                raw = RawFrame(f"{source.name}#?", error=f"read: the source returned {type(raw).__name__}, "
                                                           "not a RawFrame")
            self._attempts = 0
            return raw
        self.state = "stopped"
        return None

    def _close(self) -> None:
        self.source.close()
        self._open = False

    def _reconnect(self, exc: Exception) -> bool:
        """Wait before the next attempt; False when retries are exhausted or stop was set."""
        self._attempts += 1
        if self._attempts > self.max_retries:
            log.error("source %s lost after %d reconnect attempts: %s", self.source.name, self.max_retries, exc)
            self.lost = True
            self.state = "lost"
            return False
        first, longest = self.backoff_s
        delay = min(longest, first * 2 ** (self._attempts - 1))
        self.state = "reconnecting"
        if self.on_reconnect is not None:
            self.on_reconnect()
        log.warning("source %s: %s; reconnect %d/%d in %.2fs", self.source.name, exc, self._attempts,
                    self.max_retries, delay)
        self.stop.wait(delay)
        return not self.stop.is_set()

    def close(self) -> None:
        self.source.close()
        self._open = False


def count_lost(acc: Accounting, raw: RawFrame, meta: dict[str, Any] | None = None) -> list[Frame]:
    """Frames the device produced before ``raw`` and the host never received (``raw.lost``, a gap in
    a camera's block ids): each gets an index and is dropped at once, reason ``transport``, so
    ``produced == processed + dropped + failed`` counts the camera's frames, not only the host's."""
    lost = []
    for offset in range(min(int(raw.lost or 0), MAX_LOST_PER_GAP)):
        index = acc.produce()
        frame = Frame(index=index, timestamp=time.time(), captured=time.perf_counter(),
                      name=f"{raw.name}-lost{offset + 1}", image=None, meta=dict(meta or {}))
        acc.attach(index, frame)
        acc.drop(frame, "transport")
        lost.append(frame)
    return lost
