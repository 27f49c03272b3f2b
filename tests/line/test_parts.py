"""Parts and the fair scheduler, without cameras: rules against an oracle written here, part ids from
frame names, free-run, and a fast camera that cannot starve a slow one."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edgesentry.line import FairQueue, PartTracker, Rule, StationSpec, TriggerSpec
from edgesentry.stream.queues import Frame


def _tracker(stations, triggers, thresholds=None):
    events = []
    tracker = PartTracker(stations, triggers, thresholds or {}, events.append)
    return tracker, events


def _oracle(rule_kind: str, threshold: float, scores: list[float]) -> tuple[str, float]:
    agg = sum(scores) / len(scores) if rule_kind == "mean" else max(scores)
    return ("reject" if agg >= threshold else "accept"), agg


@pytest.mark.parametrize("kind", ["any", "max", "mean"])
def test_rules_match_an_oracle_on_random_scores(kind: str, rng: np.random.Generator) -> None:
    station = StationSpec("st", ("a", "b"), frames=3, rule=Rule(kind, 0.5), deadline_ms=1e6)
    tracker, events = _tracker([station], [TriggerSpec("st", "http")])
    for trial in range(40):
        t0 = time.perf_counter()
        part = tracker.trigger("st", at=t0)
        scores = {}
        for k in range(3):
            for cam in ("a", "b"):
                index = trial * 3 + k
                assert tracker.claim(cam, index, f"{cam}#{index}", t0 + 0.001) is part
                scores[(cam, index)] = float(rng.random())
        for (cam, index), score in scores.items():
            tracker.resolve(cam, index, "ok", score=score, label=score >= 0.9)
        want, agg = _oracle("max" if kind == "any" else kind, 0.5, list(scores.values()))
        assert part.final and part.verdict == want == part.decision and part.score == pytest.approx(agg)
    assert [e[0] for e in events] == ["decision", "final"] * 40


def test_per_camera_rules_and_missing_frames() -> None:
    station = StationSpec("st", ("top", "side"), rule=Rule("max", 0.5),
                          camera_rules={"side": Rule("mean", 0.8)}, deadline_ms=1e6, collect_timeout_ms=1000)
    tracker, _ = _tracker([station], [TriggerSpec("st", "http")])
    t0 = time.perf_counter()
    part = tracker.trigger("st", "P1", at=t0)
    tracker.claim("top", 0, "top#0", t0)
    tracker.claim("side", 0, "side#0", t0)
    tracker.resolve("top", 0, "ok", score=0.4)  # under 0.5: top accepts
    tracker.resolve("side", 0, "ok", score=0.7)  # under 0.8 (side's own rule), although over 0.5
    assert part.verdict == "accept" and part.decision == "accept"
    part = tracker.trigger("st", "P2", at=t0)
    tracker.claim("top", 1, "top#1", t0)
    tracker.claim("side", 1, "side#1", t0)
    tracker.resolve("top", 1, "ok", score=0.1)
    tracker.resolve("side", 1, "failed", error="InputError: bad frame")
    assert part.degraded and part.verdict == "accept" and part.decision == "reject" and part.fail_safe_applied
    part = tracker.trigger("st", "P3", at=t0)
    tracker.claim("top", 2, "top#2", t0)
    tracker.tick(t0 + 2)  # the side camera never delivers: the part stops collecting, side missing
    tracker.resolve("top", 2, "ok", score=0.9)
    assert part.missing == {"side": "collect_timeout: 0 of 1 frames"} and part.decision == "reject"
    assert not part.fail_safe_applied  # a defect was seen: reject is the verdict, not the fail-safe


def test_frames_before_the_trigger_and_queued_triggers() -> None:
    station = StationSpec("st", ("a",), frames=2, deadline_ms=1e6)
    tracker, _ = _tracker([station], [TriggerSpec("st", "mqtt", topic="t")])
    t0 = time.perf_counter()
    assert tracker.claim("a", 0, "a#0", t0) is None  # no part yet: idle
    p1 = tracker.trigger("st", at=t0 + 1)
    p2 = tracker.trigger("st", at=t0 + 1.5)
    assert tracker.claim("a", 1, "a#1", t0 + 0.5) is None  # captured before p1's trigger
    got = [tracker.claim("a", i, f"a#{i}", t0 + 2) for i in range(2, 7)]
    assert got == [p1, p1, p2, p2, None]
    assert (p1.seq, p2.seq) == (0, 1) and (p1.part_id, p2.part_id) == ("st-1", "st-2")


def test_part_id_from_frame_names_and_free_run() -> None:
    by_name = StationSpec("named", ("top", "side"), deadline_ms=1e6)
    free = StationSpec("free", ("f",), frames=2, deadline_ms=1e6)
    tracker, _ = _tracker([by_name, free], [TriggerSpec("named", "part_id", pattern=r"^(?P<part>P\d+)_"),
                                            TriggerSpec("free", "free_run")])
    now = time.perf_counter()
    a = tracker.claim("top", 0, "P7_top.png", now)
    assert a is not None and a.part_id == "P7" and a.trigger == "part_id"
    assert tracker.claim("side", 0, "P8_side.png", now).part_id == "P8"
    assert tracker.claim("side", 1, "P7_side.png", now) is a and not a.collecting
    assert tracker.claim("top", 1, "no-id.png", now) is None
    parts = [tracker.claim("f", i, f"f#{i}", now) for i in range(5)]
    assert [p.part_id for p in parts] == ["free-1", "free-1", "free-2", "free-2", "free-3"]


def _frame(cam: str, i: int) -> Frame:
    return Frame(index=i, timestamp=0.0, captured=time.perf_counter(), name=f"{cam}#{i}", meta={"camera": cam})


def test_fair_queue_round_robin_and_drop_oldest() -> None:
    q = FairQueue({"fast": 8, "slow": 8})
    for i in range(8):
        q.put("fast", _frame("fast", i), drop_oldest=True)
    q.put("slow", _frame("slow", 0), drop_oldest=True)
    q.put("slow", _frame("slow", 1), drop_oldest=True)
    batch = q.get_batch(4, 0.0)
    # the slow camera's two frames ride in the first batch although the fast one queued 8 before them
    assert [(f.meta["camera"], f.index) for f in batch] == [("fast", 0), ("slow", 0), ("fast", 1), ("slow", 1)]
    evicted = [q.put("fast", _frame("fast", 8 + i), drop_oldest=True) for i in range(4)]
    assert [len(e) for e in evicted] == [0, 0, 1, 1] and [e[0].index for e in evicted[2:]] == [2, 3]
    q.close("fast")
    q.close("slow")
    rest = q.get_batch(100, 0.0)
    assert [f.index for f in rest] == [4, 5, 6, 7, 8, 9, 10, 11] and q.get_batch(4, 0.0) == []
