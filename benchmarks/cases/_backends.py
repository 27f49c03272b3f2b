"""Sweep rows shared by the families with graphs: ``predict`` per backend, side by side.

torch and onnxruntime are the forced paths, ``auto`` the measured choice (``edgesentry.backends.
measured``): on every shape ``auto`` must be within 10% of the faster of the two. The auto row
records what it chose per graph and shape bucket.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from _harness import Row, race

BACKENDS = ("torch", "onnxruntime", "auto")


def choices(det: Any) -> dict[str, str]:
    """graph[/bucket] -> backend chosen, for every measured runner of a detector."""
    from edgesentry.backends import MeasuredRunner

    runners = dict(getattr(det, "runners", None) or {})
    if getattr(det, "runner", None) is not None:
        runners["graph"] = det.runner
    out = {}
    for graph, runner in runners.items():
        if isinstance(runner, MeasuredRunner):
            for key, choice in runner.choices.items():
                out[f"{graph}/{key}"] = choice.backend
    return out


def backend_rows(family: str, case: str, size: str, dets: dict[str, Any], call: Callable[[Any], Any],
                 rounds: int = 2) -> list[Row]:
    """Time ``call(det)`` for the detectors of ``BACKENDS`` (``dets``) in alternating calls."""
    impls = {name: ("auto" if name == "auto" else "path", lambda d=det: call(d)) for name, det in dets.items()}
    rows = race(family, case, size, impls, rounds=rounds, block=2, min_time=1.5)
    for row in rows:
        if row.impl == "auto":
            row.extra["chose"] = ", ".join(f"{k}: {v}" for k, v in sorted(choices(dets["auto"]).items()))
    return rows
