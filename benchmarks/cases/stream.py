"""Stream runtime rows: sustained frames/s of ``watch`` and the runtime's own overhead.

- ``noop``: a detector that returns 0 without looking at the pixels, fed from memory (the
  runtime alone: capture thread, bounded queues, micro-batching, accounting, a JSON Lines
  sink) and from an MJPG video file (adds OpenCV decoding); the baseline rows run the same
  work in a plain loop (``predict`` per frame, ``cap.read`` per frame) without the runtime;
- ``isstad``: the tiny ISSTAD bundle (reference weights, ViT 64-d, 12 pixel heads, 224 x 224
  scoring) on a 320 x 240 video, ``watch`` at batch 1 and 4 against a plain decode-then-
  ``predict`` loop.

Timing columns are per frame: p50 = wall time of one whole stream run / frames (so "per s"
is the sustained frames/s). ``extra`` has the runtime's own end-to-end latency quantiles
(capture to sink) and its counters; every run must account for every frame.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry.io.video import iter_frames

from _harness import Row, Timing, add_speedups, measure

NOTES = [
    "stream: the plain loops run in one worker thread (like the runtime's inference thread), because torch's "
    "OpenMP pool in the main thread of a loaded 2-core machine is several times slower and erratic.",
    "stream: p50/p90 = wall time of a whole run / frames; 'per s' = sustained frames/s; speedup vs the plain loop "
    "(< 1 = the runtime costs that much). latency_p50/p99_ms = capture-to-sink latency inside the runtime.",
    "stream isstad: the tiny reference model (embed 64, depth 2, 12 decoder blocks) at 224 x 224, torch backend "
    "with torch.set_num_threads(1) (edgesentry watch --torch-threads 1). With torch's default 2 threads on this "
    "2-core machine, shared with other jobs (load average ~9), the same runs took 0.1-1.2 s a frame, erratically, "
    "for the loop and the runtime alike (OpenMP spin-wait contention); at 1 thread both take ~15-17 ms a frame.",
]


def _in_thread(fn: Any) -> Any:
    """Run ``fn`` in a fresh thread, as the runtime's inference thread does.

    The plain-loop baselines run this way so that both sides share one threading context:
    on a loaded 2-core machine torch's 2-thread OpenMP pool behaves very differently in the
    main thread (spin-wait contention, 0.1-2.4 s per tiny ISSTAD call) than in a worker thread
    (~20-60 ms), which would otherwise be reported as a fake runtime speed-up.
    """
    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(fn()))
    worker.start()
    worker.join()
    return out[0] if out else None


def _per_frame(t: Timing, n: int) -> Timing:
    return Timing(t.p20 / n, t.p50 / n, t.p80 / n, t.p90 / n, t.iters, None)


def _detectors() -> tuple[Any, Any]:
    from edgesentry.detector import Detector
    from edgesentry.result import Result

    class NoOp(Detector):
        family = "noop"

        def preprocess(self, x: Any) -> Any:
            return x

        def postprocess(self, raw: Any, prepared: Any) -> Result:
            return Result(score=0.0)

    return NoOp, Result


def _write_video(path: Path, n: int, size: tuple[int, int] = (320, 240)) -> Path:
    import cv2

    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, size)
    base = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    for i in range(n):
        writer.write(np.roll(base, i, axis=1))
    writer.release()
    return path


def _watch_row(case: str, impl: str, size: str, det: Any, source_fn: Any, n: int, ctx: Any, tmp: Path,
               batch: int, iters: int) -> Row:
    from edgesentry.stream import stream

    last: dict[str, Any] = {}

    def run() -> None:
        jsonl = tmp / f"{case}_{batch}.jsonl"
        jsonl.unlink(missing_ok=True)
        summary = stream(det, source_fn(), jsonl=jsonl, batch_size=batch, latency_budget_ms=20.0,
                         policy="block", handle_signals=False)
        d = summary.to_dict()
        if d["processed"] != n or not d["identity_holds"]:
            raise RuntimeError(f"stream lost frames: {json.dumps(d)}")
        last.update(d)

    timing = measure(run, warmup=1, iters=iters, track_memory=False)
    lat = last["latency_ms"]
    return Row("stream", case, impl, size, _per_frame(timing, n),
               extra={"frames": n, "latency_p50_ms": lat["p50"], "latency_p99_ms": lat["p99"],
                      "mean_batch": round(last["mean_batch"], 2), "dropped": last["dropped"]})


def latency_rows(ctx: Any) -> list[Row]:
    from edgesentry.stream import IterableSource

    NoOp, _ = _detectors()
    rows: list[Row] = []
    tmp = Path(tempfile.mkdtemp(prefix="edgesentry_bench_stream_"))
    iters = 3 if ctx.quick else 5

    # ------------------------------------------------------------- no-op: runtime alone
    n = 400 if ctx.quick else 3000
    frames = [np.full((240, 320, 3), i % 256, np.uint8) for i in range(64)]
    stream_frames = [frames[i % 64] for i in range(n)]
    det = NoOp()
    size = f"{n} frames 240x320"
    loop = measure(lambda: _in_thread(lambda: [det.predict(f) for f in stream_frames]), warmup=1, iters=iters,
                   track_memory=False)
    rows.append(Row("stream", "noop-memory", "plain predict loop", size, _per_frame(loop, n)))
    for batch in (1, 8):
        rows.append(_watch_row("noop-memory", f"watch batch={batch}", size, det,
                               lambda: IterableSource(stream_frames), n, ctx, tmp, batch, iters))

    # ------------------------------------------------------- no-op on a video (decode included)
    try:
        import cv2  # noqa: F401
    except ImportError:
        NOTES.append("stream: OpenCV missing, video rows skipped")
        add_speedups(rows, "plain predict loop", "vs loop")
        return rows
    nv = 200 if ctx.quick else 1000
    video = _write_video(tmp / "noop.avi", nv)
    size = f"{nv} frames 240x320 MJPG"
    decode = measure(lambda: _in_thread(lambda: [det.predict(f) for f in iter_frames(video)]), warmup=1, iters=iters,
                     track_memory=False)
    rows.append(Row("stream", "noop-video", "plain predict loop", size, _per_frame(decode, nv)))
    rows.append(_watch_row("noop-video", "watch batch=1", size, det, lambda: str(video), nv, ctx, tmp, 1, iters))

    # ------------------------------------------------------------------- ISSTAD (tiny)
    ref = ctx.shared / "reference" / "isstad"
    if not (ref / "tiny_stage2_seed0.pt").is_file():
        NOTES.append(f"stream: ISSTAD rows skipped (no tiny reference weights under {ref})")
    else:
        import edgesentry

        bundle = edgesentry.convert("isstad", ref / "tiny_stage2_seed0.pt", output=tmp / "isstad",
                                    config=ref / "tiny_stage2_config.json")
        isstad = edgesentry.load(bundle.path)
        ni = 16 if ctx.quick else 64
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # see NOTES: 2 OpenMP threads on a shared 2-core box are erratic
        try:
            rows.extend(_isstad_rows(isstad, tmp, ni, ctx))
        finally:
            torch.set_num_threads(threads)
    add_speedups(rows, "plain predict loop", "vs loop")
    return rows


def _isstad_rows(isstad: Any, tmp: Path, ni: int, ctx: Any) -> list[Row]:
    video = _write_video(tmp / "isstad.avi", ni)
    size = f"{ni} frames 240x320 -> 224x224, tiny"
    it = 2 if ctx.quick else 3
    loop = measure(lambda: _in_thread(lambda: [isstad.predict(f) for f in iter_frames(video)]), warmup=1, iters=it,
                   track_memory=False)
    rows = [Row("stream", "isstad-video", "plain predict loop", size, _per_frame(loop, ni))]
    for batch in (1, 4):
        rows.append(_watch_row("isstad-video", f"watch batch={batch}", size, isstad, lambda: str(video), ni, ctx,
                               tmp, batch, it))
    return rows


if __name__ == "__main__":  # quick manual run: python benchmarks/cases/stream.py
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from latency import SHARED, Context

    from _harness import markdown_table

    start = time.perf_counter()
    print(markdown_table(latency_rows(Context(quick=True, shared=SHARED, iters=3))))
    print(f"{time.perf_counter() - start:.1f}s")
