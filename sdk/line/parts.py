"""Parts, triggers and verdicts: which frames make up a part, and what the gate is told, by when.

A **part** is opened by a trigger at time ``t``; each camera of its station then gives it the next
``frames`` frames it captures after ``t`` (parts opened in a burst queue up: a camera always feeds
the oldest part that still wants its frames). Three ways to open parts:

- software triggers (``trigger()``: MQTT message, HTTP POST, OPC UA method) carrying an optional
  part id;
- ``free_run``: a station always has a part open; a part closes after ``frames`` frames of each
  camera and the next one opens with the next frame;
- ``part_id``: the frame carries its part's id in its name (hot-folder files such as
  ``P0042_top.png``, matched by the trigger's ``pattern`` with a group ``(?P<part>...)``).

A part stops collecting once every camera gave its frames, or ``collect_timeout`` after its
trigger (cameras that gave fewer are **missing**: the part is *degraded*). It is **final** once
every frame it collected has an outcome (scored, failed or dropped). Its verdict is the station
rule over the scored frames (``any`` frame at or over the threshold, ``max`` score, ``mean``
score; per-camera rules reject when any camera's rule rejects).

**Deadline and fail-safe.** ``deadline_ms`` after the trigger the gate must have a decision.
A part final before then gets its verdict (or, when degraded and not rejected, the fail-safe: a
missing camera never produces an accept). A part not final at its deadline gets the fail-safe
at the deadline (``late``); its verdict is still computed when it is final and recorded with
``late: true``. Every part is decided exactly once and recorded exactly once.

Thread safety: every method takes the tracker's lock; events (decisions, final parts) are
handed to ``emit`` after the lock is released, in the order they happened.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from edgesentry.line.config import Rule, StationSpec, TriggerSpec

FrameStatus = Literal["pending", "ok", "failed", "dropped"]
Decision = Literal["reject", "accept"]


@dataclass
class PartFrame:
    """One frame of a part and its outcome."""

    camera: str
    index: int
    name: str
    status: FrameStatus = "pending"
    score: float | None = None
    label: bool | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"camera": self.camera, "frame": self.index, "source": self.name, "status": self.status}
        if self.status == "ok":
            out.update(score=self.score, label=self.label)
        elif self.error is not None:
            out["error"] = self.error
        return out


@dataclass
class Part:
    seq: int  # line-wide order of triggers: records reach every sink in this order
    part_id: str
    station: StationSpec
    trigger: str
    t_trigger: float  # perf_counter
    wall_trigger: float  # time.time()
    wanted: dict[str, int]
    frames: list[PartFrame] = field(default_factory=list)
    collecting: bool = True
    missing: dict[str, str] = field(default_factory=dict)  # camera -> why
    decision: Decision | None = None
    decided_at: float | None = None
    late: bool = False
    fail_safe_applied: bool = False
    verdict: Decision | None = None
    score: float | None = None
    final_at: float | None = None

    @property
    def deadline_at(self) -> float:
        return self.t_trigger + self.station.deadline_ms / 1e3

    @property
    def degraded(self) -> bool:
        return bool(self.missing) or any(f.status != "ok" for f in self.frames)

    @property
    def final(self) -> bool:
        return self.final_at is not None

    def record(self) -> dict[str, Any]:
        """The part's record for the audit log and every record sink (``part`` first)."""
        rule = self.station.rule
        lat = {"decision": _ms(self.decided_at, self.t_trigger), "verdict": _ms(self.final_at, self.t_trigger)}
        return {
            "part": self.seq, "part_id": self.part_id, "station": self.station.id, "trigger": self.trigger,
            "triggered_at": round(self.wall_trigger, 6), "decision": self.decision, "verdict": self.verdict,
            "score": self.score, "rule": rule.kind, "threshold": rule.threshold, "late": self.late,
            "fail_safe": self.fail_safe_applied, "degraded": self.degraded,
            "missing_cameras": sorted(self.missing), "missing": dict(sorted(self.missing.items())),
            "deadline_ms": self.station.deadline_ms, "latency_ms": lat,
            "frames": [f.to_dict() for f in self.frames],
        }


def _ms(t: float | None, t0: float) -> float | None:
    return None if t is None else round((t - t0) * 1e3, 3)


@dataclass
class StationStats:
    """Per-station counters; ``triggered == decided + open`` and ``decided == accepted + rejected``."""

    triggered: int = 0
    decided: int = 0
    accepted: int = 0
    rejected: int = 0
    late: int = 0
    fail_safe: int = 0
    degraded: int = 0
    final: int = 0
    decision_ms: list[float] = field(default_factory=list)
    verdict_ms: list[float] = field(default_factory=list)
    last: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("triggered", "decided", "accepted", "rejected", "late", "fail_safe",
                                              "degraded", "final")}
        out["open"] = self.triggered - self.decided
        out["counts_add_up"] = (self.decided == self.accepted + self.rejected and self.decided <= self.triggered
                                and self.late <= self.fail_safe)
        for name, values in (("decision_latency_ms", self.decision_ms), ("verdict_latency_ms", self.verdict_ms)):
            out[name] = _quantiles(values)
        return out


def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    a = np.asarray(values, dtype=np.float64)
    p50, p99 = np.quantile(a, [0.5, 0.99])
    return {"p50": round(float(p50), 3), "p99": round(float(p99), 3), "max": round(float(a.max()), 3)}


Event = tuple[str, Part]  # ("decision" | "final", part)


class PartTracker:
    """Opens, fills, decides and finalises parts (see the module docstring).

    Args:
        stations: the line's stations.
        triggers: the line's triggers (``free_run`` / ``part_id`` change how parts open).
        thresholds: camera -> its detector's threshold, for rules without their own threshold.
        emit: called with each event, outside the lock, in order.
    """

    def __init__(self, stations: list[StationSpec], triggers: list[TriggerSpec],
                 thresholds: dict[str, float | None], emit: Callable[[Event], None]):
        self._lock = threading.Lock()
        self._emit_lock = threading.Lock()
        self._pending: list[Event] = []
        self.emit = emit
        self.stations = {s.id: s for s in stations}
        self.station_of = {cam: s for s in stations for cam in s.cameras}
        self.mode: dict[str, str] = {s.id: "software" for s in stations}
        self.patterns: dict[str, re.Pattern[str]] = {}
        for t in triggers:
            if t.kind in ("free_run", "part_id"):
                self.mode[t.station] = t.kind
            if t.kind == "part_id" and t.pattern is not None:
                self.patterns[t.station] = re.compile(t.pattern)
        self.thresholds = thresholds
        self.stats = {s.id: StationStats() for s in stations}
        self._open: dict[str, list[Part]] = {s.id: [] for s in stations}  # collecting, oldest first
        self._unfinal: dict[int, Part] = {}
        self._by_frame: dict[tuple[str, int], Part] = {}
        self._seq = 0
        self._auto: dict[str, int] = {s.id: 0 for s in stations}
        self._accepting = True

    # ------------------------------------------------------------------- opening
    def trigger(self, station: str, part_id: str | None = None, source: str = "software",
                at: float | None = None) -> Part:
        """Open a part of ``station`` now (a software trigger). Raises ``KeyError`` for an unknown station
        and ``RuntimeError`` once the line is draining."""
        with self._lock:
            if station not in self.stations:
                raise KeyError(station)
            if not self._accepting:
                raise RuntimeError("the line is stopping; no new parts")
            part = self._open_part(self.stations[station], part_id, source, at)
        return part

    def _open_part(self, station: StationSpec, part_id: str | None, source: str, at: float | None) -> Part:
        now = time.perf_counter() if at is None else at
        self._auto[station.id] += 1
        part = Part(seq=self._seq, part_id=part_id or f"{station.id}-{self._auto[station.id]}", station=station,
                    trigger=source, t_trigger=now, wall_trigger=time.time() - (time.perf_counter() - now),
                    wanted={cam: station.frames for cam in station.cameras})
        self._seq += 1
        self._open[station.id].append(part)
        self._unfinal[part.seq] = part
        self.stats[station.id].triggered += 1
        return part

    def claim(self, camera: str, index: int, name: str, captured: float) -> Part | None:
        """The part that frame ``index`` of ``camera`` belongs to (``None``: no part wants it)."""
        with self._lock:
            station = self.station_of[camera]
            mode = self.mode[station.id]
            opened = self._open[station.id]
            if mode == "part_id":
                m = self.patterns[station.id].search(name)
                pid = m.group("part") if m is not None else None
                part = next((p for p in opened if p.part_id == pid), None) if pid else None
                if part is None and pid and self._accepting:
                    part = self._open_part(station, pid, "part_id", captured)
            else:
                part = next((p for p in opened if p.wanted.get(camera, 0) > 0 and p.t_trigger <= captured), None)
                if part is None and mode == "free_run" and self._accepting:
                    part = self._open_part(station, None, "free_run", captured)
            if part is None or part.wanted.get(camera, 0) <= 0:
                return None
            part.frames.append(PartFrame(camera, index, name))
            part.wanted[camera] -= 1
            self._by_frame[(camera, index)] = part
            if not any(part.wanted.values()):
                self._stop_collecting(part)
        self._flush()
        return part

    def _stop_collecting(self, part: Part, why: str = "collect_timeout") -> None:
        if not part.collecting:
            return
        part.collecting = False
        for cam, left in part.wanted.items():
            if left > 0:
                part.missing[cam] = f"{why}: {part.station.frames - left} of {part.station.frames} frames"
        self._open[part.station.id].remove(part)
        self._maybe_final(part)

    # ------------------------------------------------------------------- outcomes
    def resolve(self, camera: str, index: int, status: FrameStatus, score: float | None = None,
                label: bool | None = None, error: str | None = None) -> None:
        """The outcome of a claimed frame (scored, failed or dropped); unknown frames are ignored."""
        with self._lock:
            part = self._by_frame.pop((camera, index), None)
            if part is None:
                return
            for f in part.frames:
                if f.camera == camera and f.index == index:
                    f.status, f.score, f.label, f.error = status, score, label, error
                    break
            self._maybe_final(part)
        self._flush()

    def tick(self, now: float | None = None) -> None:
        """Apply collection timeouts and deadlines (called every few milliseconds)."""
        now = time.perf_counter() if now is None else now
        with self._lock:
            for parts in self._open.values():
                for part in list(parts):
                    if now >= part.t_trigger + part.station.collect_timeout_s:
                        self._stop_collecting(part)
            for part in list(self._unfinal.values()):
                if part.decision is None and now >= part.deadline_at:
                    self._decide(part, part.station.fail_safe, late=True, at=now)
        self._flush()

    def stop_accepting(self) -> None:
        with self._lock:
            self._accepting = False

    def close_all(self, why: str = "stopped") -> None:
        """Stop collecting every open part (the cameras stopped); parts go final as frames resolve."""
        with self._lock:
            self._accepting = False
            for parts in self._open.values():
                for part in list(parts):
                    self._stop_collecting(part, why)
        self._flush()

    def unfinished(self) -> int:
        with self._lock:
            return len(self._unfinal)

    def abandon(self, error: str) -> None:
        """Last resort at shutdown: fail every frame still pending so every part goes final."""
        with self._lock:
            for (camera, index), part in list(self._by_frame.items()):
                for f in part.frames:
                    if f.camera == camera and f.index == index and f.status == "pending":
                        f.status, f.error = "failed", error
                del self._by_frame[(camera, index)]
                self._maybe_final(part)
            for parts in self._open.values():
                for part in list(parts):
                    self._stop_collecting(part, "stopped")
        self._flush()

    # ------------------------------------------------------------------- verdicts
    def _maybe_final(self, part: Part) -> None:
        if part.collecting or part.final or any(f.status == "pending" for f in part.frames):
            return
        now = time.perf_counter()
        part.verdict, part.score = self._verdict(part)
        if part.decision is None:
            if part.degraded and part.verdict != "reject":
                self._decide(part, part.station.fail_safe, late=False, at=now)
            else:
                self._decide(part, part.verdict or part.station.fail_safe, late=False, at=now)
        part.final_at = now
        stats = self.stats[part.station.id]
        stats.final += 1
        stats.verdict_ms.append((now - part.t_trigger) * 1e3)
        stats.degraded += part.degraded
        stats.last = part.record()
        del self._unfinal[part.seq]
        self._pending.append(("final", part))

    def _decide(self, part: Part, decision: Decision, *, late: bool, at: float) -> None:
        part.decision, part.decided_at, part.late = decision, at, late
        part.fail_safe_applied = late or (part.degraded and part.verdict != "reject")
        stats = self.stats[part.station.id]
        stats.decided += 1
        stats.late += late
        stats.fail_safe += part.fail_safe_applied
        if decision == "reject":
            stats.rejected += 1
        else:
            stats.accepted += 1
        stats.decision_ms.append((at - part.t_trigger) * 1e3)
        self._pending.append(("decision", part))

    def _verdict(self, part: Part) -> tuple[Decision | None, float | None]:
        scored = [f for f in part.frames if f.status == "ok" and f.score is not None]
        if not scored:
            return None, None
        station = part.station
        groups = ({cam: [f for f in scored if f.camera == cam] for cam in station.camera_rules}
                  if station.camera_rules else {"*": scored})
        if station.camera_rules:  # cameras without their own rule follow the station's
            rest = [f for f in scored if f.camera not in station.camera_rules]
            if rest:
                groups["*"] = rest
        verdicts, scores = [], []
        for cam, frames in groups.items():
            if not frames:
                continue
            rule = station.camera_rules.get(cam, station.rule)
            decision, score = self._apply(rule, frames)
            verdicts.append(decision)
            scores.append(score)
        return ("reject" if "reject" in verdicts else "accept"), float(max(scores))

    def _apply(self, rule: Rule, frames: list[PartFrame]) -> tuple[Decision, float]:
        values = np.asarray([f.score for f in frames], dtype=np.float64)
        score = float(values.mean() if rule.kind == "mean" else values.max())
        if rule.threshold is None:  # the detectors' own thresholds (labels)
            if rule.kind == "any":
                hit = any(bool(f.label) for f in frames)
            else:
                thresholds = [self.thresholds[f.camera] for f in frames]
                hit = score >= min(t for t in thresholds if t is not None)
        else:
            hit = score >= rule.threshold
        return ("reject" if hit else "accept"), score

    def _flush(self) -> None:
        """Hand queued events to ``emit`` in order, outside the tracker lock (one flusher at a time)."""
        with self._emit_lock:
            with self._lock:
                events, self._pending = self._pending, []
            for event in events:
                self.emit(event)
