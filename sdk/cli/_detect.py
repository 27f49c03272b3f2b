"""The loop every ``edgesentry detect FAMILY`` shares: inputs in, one line per input, records out.

Each input goes through ``Detector.predict_batch(..., on_error="return")`` in chunks of the
detector's batch size; one that cannot be read becomes a failed record and the run goes on (as
``watch`` does). The console shows one line per input, in the manner of ultralytics::

    image 3/23 test/colour/02.jpg: 512x512 Anomalous 0.87, mask 2304 px, 41.2 ms

then the mean stage times (``pre / graph / post ms per image``) and processed / failed counts.
``OUT/results.jsonl`` holds one record per input (failed ones with their error) and
``OUT/summary.json`` the counts, timings and thresholds. The exit code is 0 when every input
was processed and 3 when some failed.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesentry.detector import Detector
from edgesentry.errors import EdgesentryError, InputError
from edgesentry.result import Result

#: exit code of a run in which some inputs failed (the others were processed and written)
SOME_FAILED = 3


@dataclass
class Item:
    """One input of a run: its output name, what the detector is given, how to show it, and
    why it cannot run (``error``: recorded as failed without running)."""

    name: str
    value: Any
    shown: str
    error: str | None = None


@dataclass
class Run:
    """Counters and timings of a run, and its records."""

    kind: str
    total: int
    processed: int = 0
    failed: int = 0
    stage_ms: dict[str, float] = field(default_factory=lambda: {"preprocess": 0.0, "graph": 0.0, "postprocess": 0.0})
    records: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0  # the whole loop: reading, the pipeline and writing outputs

    def speed(self) -> str:
        n = max(self.processed, 1)
        pre, graph, post = (self.stage_ms[k] / n for k in ("preprocess", "graph", "postprocess"))
        return f"Speed: {pre:.1f} ms pre, {graph:.1f} ms graph, {post:.1f} ms post per {self.kind}"


def verdict_text(res: Result) -> str:
    """"Anomalous 0.87" / "Good 0.12" / "score 0.12" for the console."""
    value = f"{res.score:.2f}" if 0.0 <= res.score <= 1.0 else f"{res.score:.4g}"
    if res.label is None:
        return f"score {value}"
    return f"{'Anomalous' if res.label else 'Good'} {value}"


def run_detector(
    det: Detector,
    items: Sequence[Item],
    out: Path | None,
    *,
    kind: str,
    describe: Callable[[Result, dict[str, Any]], str],
    write: Callable[[Item, Result], dict[str, Any]] | None = None,
    options: dict[str, Any] | None = None,
    stream: Any = None,
) -> Run:
    """Run ``det`` over ``items``; print a line per input; write records under ``out``.

    ``write(item, result)`` writes the family's files for one processed input and returns the
    fields it adds to the input's record; ``describe(result, record)`` is its console text;
    ``options`` go to ``predict_batch`` (the family's preprocessing options).
    """
    stream = stream or sys.stdout
    run = Run(kind, len(items))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    step = max(1, int(det.batch_size))
    width = len(str(len(items)))
    begin = time.perf_counter()
    for start in range(0, len(items), step):
        chunk = items[start:start + step]
        runnable = [i for i in chunk if i.error is None]
        t0 = time.perf_counter()
        done = iter(det.predict_batch([i.value for i in runnable], on_error="return", **(options or {}))
                    if runnable else [])
        elapsed = (time.perf_counter() - t0) / len(chunk)
        outcomes = [InputError(i.error) if i.error is not None else next(done) for i in chunk]
        for k, (item, res) in enumerate(zip(chunk, outcomes)):
            index = f"{kind} {start + k + 1:>{width}}/{len(items)} {item.shown}"
            if isinstance(res, EdgesentryError):
                run.failed += 1
                run.records.append({"name": item.name, "input": item.shown, "status": "failed", "error": str(res)})
                print(f"{index}: failed: {res}", file=stream)
                continue
            run.processed += 1
            for stage in run.stage_ms:
                run.stage_ms[stage] += 1e3 * res.timings.get(stage, 0.0)
            record = {"name": item.name, "input": item.shown, "status": "processed", **res.summary()}
            if write is not None and out is not None:
                try:
                    record.update(write(item, res))
                except EdgesentryError as exc:  # e.g. ground truth of the wrong shape
                    record.update(status="failed", error=str(exc))
                    run.processed -= 1
                    run.failed += 1
            run.records.append(record)
            ms = 1e3 * res.timings.get("total", elapsed)
            print(f"{index}: {describe(res, record)}, {ms:.1f} ms", file=stream)
    run.wall_s = time.perf_counter() - begin
    print(run.speed() + (f" (batch {step})" if step > 1 else ""), file=stream)
    where = f"; results in {out}" if out is not None else ""
    per = 1e3 * run.wall_s / max(len(items), 1)
    print(f"{run.processed} processed, {run.failed} failed in {run.wall_s:.2f} s ({per:.1f} ms per {kind} with "
          f"reading and writing){where}", file=stream)
    return run


def write_records(run: Run, out: Path | None, summary: dict[str, Any]) -> dict[str, Any]:
    """``OUT/results.jsonl`` (a record per input) and ``OUT/summary.json``; returns the summary."""
    n = max(run.processed, 1)
    summary = {"processed": run.processed, "failed": run.failed, "total": run.total,
               "ms_per_input": {k: round(v / n, 3) for k, v in run.stage_ms.items()},
               "wall_ms_per_input": round(1e3 * run.wall_s / max(run.total, 1), 3), **summary}
    if out is not None:
        with open(out / "results.jsonl", "w") as fh:
            for record in run.records:
                fh.write(json.dumps(record, default=str) + "\n")
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def exit_code(run: Run) -> int:
    return 0 if run.failed == 0 else SOME_FAILED
