"""Sinks and checks shared by the camera tests."""

from __future__ import annotations

import threading
import time
from typing import Any

from edgesentry.stream import Sink
from tests.stream.helpers import check_accounting


class KeepSink(Sink):
    """Keeps every record and the image each scored record was computed from (the oracle's input)."""

    name = "keep"

    def __init__(self, delay_s: float = 0.0, on_record=None):
        self.records: list[dict[str, Any]] = []
        self.images: dict[int, Any] = {}
        self.delay_s = delay_s
        self.on_record = on_record
        self.lock = threading.Lock()

    def write(self, record: dict[str, Any], frame: Any, result: Any) -> None:
        with self.lock:
            self.records.append(record)
            if frame is not None and frame.image is not None:
                self.images[record["frame"]] = frame.image
        if self.on_record is not None:
            self.on_record(record)
        if self.delay_s and record["status"] != "dropped":
            time.sleep(self.delay_s)  # a consumer slower than the camera

    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] == "ok"]


def check_identity(records: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """Each produced index exactly once, the counts by status and reason equal the summary's."""
    check_accounting(records, summary)
    reasons: dict[str, int] = {}
    for r in records:
        if r["status"] == "dropped":
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    assert reasons == summary["dropped_by_reason"]


def id_span(ids: list[int], wrap: int = 1 << 16) -> int:
    """Frames a camera produced from the first to the last of ``ids`` (16-bit ids skip 0 on wrap)."""
    total = 1
    for a, b in zip(ids, ids[1:]):
        total += (b - a) % (wrap - 1) if b != a else 0
    return total


def check_ids_add_up(records: list[dict[str, Any]]) -> int:
    """Between the first and the last scored frame, the runtime counted exactly the frames the
    camera numbered (scored, failed or dropped): the block-id span, computed here independently
    of the source. Returns that span."""
    records = sorted(records, key=lambda r: r["frame"])
    ok = [i for i, r in enumerate(records) if r["status"] == "ok"]
    assert len(ok) >= 2, "too few scored frames to compare ids"
    span = id_span([records[i]["acquisition"]["frame_id"] for i in ok])
    assert ok[-1] - ok[0] + 1 == span
    return span
