"""``backend="auto"`` for a graph that both ONNX Runtime and torch can run: measured, per shape.

Which backend is faster depends on the machine and on the input's dynamic axes: on one 2-core
Intel Xeon the MDMF 5-way episode took 204 ms on ONNX Runtime and 64 ms on torch, while on an
AMD EPYC ONNX Runtime won at batch 1 and lost at batch 25. So neither is assumed. The first
call with a new shape bucket (every dynamic axis rounded up to a power of two) times both
runners on that very input, in alternating calls after an untimed warm-up each, and the faster
(by median) runs from then on; the choice, with both timings, is kept per CPU model, graph and
bucket in the machine cache (``edgesentry._machine``), so a later process on the same machine
decides without measuring. ``describe()`` says what was chosen and why.
"""

from __future__ import annotations

import logging
import re
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesentry import _machine
from edgesentry.backends.base import Runner

log = logging.getLogger("edgesentry.backends")

#: (backend name, thunk) -> (seconds, outputs): how one call is timed (tests inject their own)
Timer = Callable[[str, Callable[[], Any]], tuple[float, Any]]


def wall_timer(name: str, call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = call()
    return time.perf_counter() - start, out


@dataclass(frozen=True)
class Choice:
    """The backend chosen for one shape bucket, with the median seconds per call of each."""

    backend: str
    seconds: Mapping[str, float]
    cached: bool = False

    def reason(self) -> str:
        times = ", ".join(f"{name} {1e3 * s:.3g} ms" for name, s in sorted(self.seconds.items(), key=lambda kv: kv[1]))
        where = "measured earlier on this CPU model" if self.cached else "measured on this input"
        return f"{self.backend} is the faster here ({times} per call; {where})"


def _bucket(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


class MeasuredRunner(Runner):
    """Runs each input on the faster of ``candidates`` (``{"onnxruntime": ..., "torch": ...}``).

    Args:
        candidates: runners of the same graph (same inputs and outputs), by backend name.
        graph_id: identifies the graph across processes (e.g. the ONNX file's sha256); without
            it, choices are kept for this runner's life only.
        rounds: timed calls per candidate (after one untimed warm-up each); calls slower than
            ``budget`` seconds are timed once.
        timer: how one call is timed (tests inject theirs).
    """

    name = "auto"

    def __init__(self, candidates: Mapping[str, Runner], *, graph_id: str | None = None, rounds: int = 3,
                 budget: float = 0.5, timer: Timer = wall_timer):
        first = next(iter(candidates.values()))
        super().__init__(first.inputs, first.outputs)
        if len(candidates) < 2:
            raise ValueError("a measured choice needs at least two candidate runners")
        self.candidates = dict(candidates)
        self.graph_id = re.sub(r"[^A-Za-z0-9_.-]", "", graph_id or "")[:40] or None
        self.rounds = rounds
        self.budget = budget
        self.timer = timer
        self.choices: dict[str, Choice] = {}

    def shape_key(self, feed: Mapping[str, np.ndarray]) -> str:
        """The bucket of ``feed``: its dynamic axes rounded up to powers of two."""
        parts = []
        for name, spec in self.inputs.items():
            dims = [str(_bucket(d)) if not isinstance(want, int) else str(d)
                    for want, d in zip(spec.shape, np.shape(feed[name]))]
            parts.append(f"{name}-{'x'.join(dims)}")
        return re.sub(r"[^A-Za-z0-9_.-]", "_", ".".join(parts))

    def activate_impl(self) -> None:
        pass  # candidates activate on their first call (a cached choice never opens the other)

    def deactivate_impl(self) -> None:
        for runner in self.candidates.values():
            runner.deactivate()

    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        key = self.shape_key(feed)
        choice = self.choices.get(key) or self._remembered(key)
        if choice is not None:
            return self.candidates[choice.backend].infer(feed)
        outputs: dict[str, Any] = {}

        def measure() -> dict[str, float]:
            seconds = self._time_candidates(feed, outputs)
            return seconds

        if self.graph_id:
            seconds = _machine.measured(f"graph.{self.graph_id}.{key}", 1, measure)
        else:
            seconds = measure()
        choice = self._decide(key, seconds, cached=not outputs)
        return outputs[choice.backend] if choice.backend in outputs else self.candidates[choice.backend].infer(feed)

    def _remembered(self, key: str) -> Choice | None:
        if not self.graph_id:
            return None
        seconds = _machine.read_cached(f"graph.{self.graph_id}.{key}", 1)
        if seconds is None or set(seconds) != set(self.candidates):
            return None
        return self._decide(key, seconds, cached=True)

    def _decide(self, key: str, seconds: Mapping[str, float], *, cached: bool) -> Choice:
        best = min(seconds, key=lambda name: seconds[name])
        choice = Choice(best, dict(seconds), cached)
        self.choices[key] = choice
        log.info("graph backend for %s: %s", key, choice.reason())
        return choice

    def _time_candidates(self, feed: Mapping[str, np.ndarray], outputs: dict[str, Any]) -> dict[str, float]:
        """Median seconds per call of each candidate on ``feed``: one untimed call each (session
        creation, first-call allocations), then ``rounds`` rounds of alternating timed calls so
        that every candidate samples the same stretch of a drifting machine."""
        samples: dict[str, list[float]] = {name: [] for name in self.candidates}
        slow = False
        for name, runner in self.candidates.items():
            seconds, outputs[name] = self.timer(name, lambda r=runner: r.infer(feed))
            slow = slow or seconds > self.budget
        for _ in range(1 if slow else self.rounds):
            for name, runner in self.candidates.items():
                seconds, outputs[name] = self.timer(name, lambda r=runner: r.infer(feed))
                samples[name].append(seconds)
        return {name: statistics.median(times) for name, times in samples.items()}

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "candidates": sorted(self.candidates),
                "choices": {key: {"backend": c.backend, "ms": {k: 1e3 * v for k, v in c.seconds.items()},
                                  "why": c.reason()} for key, c in self.choices.items()}}
