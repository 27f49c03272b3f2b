"""Webhooks: each part record POSTed as JSON, in order, through a bounded spool on disk.

``write`` only appends the record to the spool folder (one file per record, written under a
temporary name, flushed to disk and renamed), so a receiver that is slow or down never holds up
the line. One sender thread POSTs the oldest spooled record until the receiver answers 2xx, then
deletes it and goes on with the next: records arrive in order, and a record is never skipped
because the receiver was down. Failed attempts are retried with exponential backoff
(``backoff_s = [FIRST, MAX]``). A receiver that *rejects* a record (4xx other than 408 / 429) would
otherwise block the queue forever: that record moves to ``SPOOL/rejected/`` and counts as a sink
error.

The spool survives restarts: records left by a previous run are sent first, in their order. It
is bounded (``max_spool`` records); a record that finds it full is refused and counted as a sink
error (the run's exit code says so). Every request carries ``Idempotency-Key: RUN-PART`` so a
receiver can drop the duplicate that a lost HTTP response would cause (delivery is at least
once on the wire, exactly once for a receiver that honours the key). The token
(``Authorization: Bearer``) comes from ``token_env`` or ``token_file``, never from the line file
or a log line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from edgesentry.errors import ConfigError
from edgesentry.io.paths import read_bytes_bounded, read_text_bounded
from edgesentry.stream.queues import Frame
from edgesentry.stream.sinks import Sink, dumps

log = logging.getLogger("edgesentry.line")

_NAME = re.compile(r"^(\d{12})\.json$")
#: a spooled record larger than this is not ours (records are a few kB)
MAX_RECORD_BYTES = 4 << 20


def read_token(*, token_env: str | None, token_file: str | os.PathLike | None, what: str) -> str | None:
    """A bearer token from an environment variable or the first line of a file (never logged)."""
    if token_env is not None:
        value = os.environ.get(token_env)
        if not value:
            raise ConfigError(f"{what}: environment variable {token_env} is not set (it should hold the token)")
        return value
    if token_file is not None:
        text = read_text_bounded(token_file, limit=4096, what=f"{what} token file", error=ConfigError)
        return text.splitlines()[0].strip() if text else ""
    return None


class WebhookSink(Sink):
    """POST part records to ``url`` in order through a spool folder (see the module docstring)."""

    def __init__(self, url: str, spool: str | os.PathLike, *, token: str | None = None, max_spool: int = 10_000,
                 timeout_s: float = 5.0, backoff_s: tuple[float, float] = (0.5, 30.0), run: str = "",
                 name: str = "webhook"):
        self.url, self.token, self.max_spool = url, token, max_spool
        self.timeout_s, self.backoff_s, self.run = timeout_s, tuple(backoff_s), run
        self.name = name
        self.spool = Path(spool)
        if self.spool.exists() and not self.spool.is_dir():
            raise ConfigError(f"webhook spool {str(self.spool)!r} exists and is not a folder")
        (self.spool / "rejected").mkdir(parents=True, exist_ok=True, mode=0o700)
        self._cond = threading.Condition()
        self._queue = sorted(p for p in self.spool.iterdir() if _NAME.match(p.name))
        self._next = int(_NAME.match(self._queue[-1].name).group(1)) + 1 if self._queue else 0
        self.replayed = len(self._queue)
        self.delivered = self.attempts = self.failures = self.rejected = self.refused = 0
        self.down_since: float | None = None
        self._closing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send_loop, name=f"edgesentry-line-{name}", daemon=True)
        self._thread.start()

    # -------------------------------------------------------------------- writing
    def write(self, record: dict[str, Any], frame: Frame | None, result: Any) -> None:
        data = (dumps(record) + "\n").encode()
        with self._cond:
            if len(self._queue) >= self.max_spool:
                self.refused += 1
                raise RuntimeError(f"webhook spool {self.spool} is full ({self.max_spool} records); record of part "
                                   f"{record.get('part')} refused")
            path = self.spool / f"{self._next:012d}.json"
            self._next += 1
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        with self._cond:
            self._queue.append(path)
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    # -------------------------------------------------------------------- sending
    def _send_loop(self) -> None:
        failures_in_row = 0
        while True:
            with self._cond:
                while not self._queue and not self._stop.is_set():
                    if self._closing:
                        return
                    self._cond.wait(0.2)
                if self._stop.is_set():
                    return
                path = self._queue[0]
            outcome = self._post(path)
            if outcome == "retry":
                failures_in_row += 1
                first, longest = self.backoff_s
                self._stop.wait(min(longest, first * 2 ** (failures_in_row - 1)))
                continue
            failures_in_row = 0
            with self._cond:
                self._queue.pop(0)
                self._cond.notify_all()

    def _post(self, path: Path) -> str:
        try:
            body = read_bytes_bounded(path, limit=MAX_RECORD_BYTES, what="spooled record", error=ConfigError)
            part = json.loads(body).get("part")
        except (OSError, ValueError, ConfigError) as exc:
            log.error("webhook %s: spooled record %s unreadable (%s); moved to rejected/", self.name, path.name, exc)
            self._reject(path)
            return "rejected"
        headers = {"Content-Type": "application/json", "Idempotency-Key": f"{self.run}-{part}",
                   "User-Agent": "edgesentry-line"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        self.attempts += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 - http(s) only
                response.read(1 << 16)
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (OSError, ValueError) as exc:  # refused, reset, timed out, DNS
            return self._failed(f"{type(exc).__name__}: {exc}")
        if 200 <= status < 300:
            path.unlink(missing_ok=True)
            self.delivered += 1
            if self.down_since is not None:
                log.warning("webhook %s: receiver back after %.1fs", self.name, time.monotonic() - self.down_since)
                self.down_since = None
            return "sent"
        if 400 <= status < 500 and status not in (408, 429):
            log.error("webhook %s: receiver rejected part %s with HTTP %d; moved to rejected/", self.name, part, status)
            self._reject(path)
            return "rejected"
        return self._failed(f"HTTP {status}")

    def _failed(self, why: str) -> str:
        self.failures += 1
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("webhook %s: delivery failed (%s); records wait in %s and are retried in order",
                        self.name, why, self.spool)
        return "retry"

    def _reject(self, path: Path) -> None:
        self.rejected += 1
        try:
            os.replace(path, self.spool / "rejected" / path.name)
        except OSError:
            path.unlink(missing_ok=True)

    # -------------------------------------------------------------------- closing
    def close(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Give the sender up to ``timeout_s`` to empty the spool; what is left stays for the next run."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            while self._queue and time.monotonic() < deadline:
                self._cond.wait(min(0.1, max(0.0, deadline - time.monotonic())))
        self._stop.set()
        self._thread.join(5.0)
        return {"url": self.url, "delivered": self.delivered, "attempts": self.attempts, "failures": self.failures,
                "rejected": self.rejected, "refused": self.refused, "replayed": self.replayed,
                "spooled": self.pending(), "spool": str(self.spool)}
