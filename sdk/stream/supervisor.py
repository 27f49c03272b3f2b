"""Supervised worker loops: a crash is recorded, what the worker held is handed back, and the
loop is restarted, or, once its restarts are spent, it stops with the accounting intact.

Used by ``Stream`` (capture, inference and output loops) and meant for any runtime built on
these pieces (a multi-camera line runs one set of workers per camera):

    held = InHand()
    target = supervise("inference", loop, max_restarts=3, on_crash=crashed, on_exit=finished)
    threading.Thread(target=target, name="edgesentry-inference", daemon=True).start()

``loop`` is called again in the same thread after a crash (so ``Thread.join`` still means "this
worker is done for good"); ``on_crash(name, exc, restarting)`` runs first, in that thread,
and is where the caller fails or re-queues what ``held`` still holds. ``on_exit(name, gave_up)``
runs once, when the loop returned normally (``gave_up=False``) or crashed with no restart left.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("edgesentry.stream")

OnCrash = Callable[[str, BaseException, bool], None]
OnExit = Callable[[str, bool], None]


def describe_crash(exc: BaseException) -> str:
    """``"TypeName: message"`` (first line only, 200 characters at most) for records and logs."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


def supervise(name: str, loop: Callable[[], None], *, max_restarts: int, on_crash: OnCrash,
              on_exit: OnExit | None = None) -> Callable[[], None]:
    """A thread target running ``loop`` under supervision (see the module docstring).

    Any ``BaseException`` counts as a crash, ``SystemExit`` and ``KeyboardInterrupt`` included
    (raised in a worker they can only mean that the worker was killed). A failure inside
    ``on_crash`` is logged and does not stop the supervision.
    """
    def run() -> None:
        restarts = 0
        gave_up = False
        try:
            while True:
                try:
                    loop()
                    return
                except BaseException as exc:  # noqa: BLE001 - the point of a supervisor
                    restarting = restarts < max_restarts
                    log.error("stream worker %s crashed (%s); %s", name, describe_crash(exc),
                              f"restart {restarts + 1}/{max_restarts}" if restarting else "no restart left",
                              exc_info=exc)
                    try:
                        on_crash(name, exc, restarting)
                    except Exception:
                        log.exception("handling the crash of worker %s failed", name)
                    if not restarting:
                        gave_up = True
                        return
                    restarts += 1
        finally:
            if on_exit is not None:
                on_exit(name, gave_up)

    return run


class InHand:
    """What one worker holds between taking it from a queue and passing it on (thread-safe).

    After a crash the supervisor's ``on_crash`` calls ``release()`` to get back, exactly once,
    every item the worker took and did not pass on.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Any] = []

    def take(self, items: list[Any]) -> None:
        with self._lock:
            self._items.extend(items)

    def passed(self, item: Any) -> None:
        """``item`` went on (queued, delivered): no longer this worker's to account for."""
        with self._lock:
            for i, held in enumerate(self._items):
                if held is item:
                    del self._items[i]
                    return

    def release(self) -> list[Any]:
        with self._lock:
            items, self._items = self._items, []
            return items


def wait_handling_signals(finished: threading.Event, on_signal: Callable[[], None], *, handle_signals: bool = True
                          ) -> None:
    """Wait until ``finished``; meanwhile SIGINT/SIGTERM call ``on_signal`` (main thread only).

    The previous handlers are restored on return. Short waits keep the handlers responsive.
    """
    previous: dict[int, Any] = {}
    if handle_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, frame: on_signal())
    try:
        while not finished.wait(0.1):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
