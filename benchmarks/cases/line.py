"""Line runtime rows: 8 cameras of 240 x 320 at 30 fps, the tiny ISSTAD bundle, 4 stations of 2 cameras.

Two loads, each run with the two layouts side by side (alternating rounds in one process):

- ``free-run``: every frame of every camera belongs to a part (1 frame per camera per part):
  240 frames/s offered, far more than the tiny model scores on a small CPU, so the lanes
  (``drop-oldest``, 8 frames) drop; the row says how many frames/s the line sustains and what
  the parts see;
- ``triggered``: each station is triggered twice a second (software triggers), so 16 frames/s
  are wanted and the other frames are skipped as ``idle``: trigger-to-verdict latency when the
  line keeps up.

Layouts: a ``shared detector`` for the 8 cameras (cross-camera micro-batches, 20 ms latency
budget) with 1 worker and batches of up to 8, or 2 workers (one per core here) and batches of up
to 4; and a ``detector per camera`` (8 detectors, 8 workers; a batch only ever holds frames of
one camera). p50 / p90 = wall time / frames scored (``per s`` = sustained
frames/s); ``extra``: mean batch, cameras per batch, trigger-to-verdict p50 / p99 (ms), frames
dropped from full lanes, late and degraded parts.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from _harness import Row, Timing, add_speedups

NOTES = [
    "line: 8 cameras x 30 fps of 240x320 frames from memory (paced like live cameras, drop-oldest lanes of 8), tiny "
    "ISSTAD (torch, 1 intra-op thread per worker), 4 free-run or triggered stations of 2 cameras; frames/s = frames "
    "scored per wall second; verdict p50/p99 = trigger (free-run: first frame) to final verdict.",
]

CAMERAS, FPS, SHAPE = 8, 30.0, (240, 320)


#: impl -> (shared detector?, workers, batch size)
LAYOUTS = {"shared detector, 1 worker, batch 8": (True, 1, 8), "shared detector, 2 workers, batch 4": (True, 2, 4),
           "detector per camera": (False, 1, 8)}


def _line_toml(tmp: Path, bundle: Path, layout: tuple[bool, int, int], mode: str) -> Path:
    shared, workers, batch = layout
    names = ["shared"] if shared else [f"d{i}" for i in range(CAMERAS)]
    dets = "".join(f'[detectors.{n}]\nbundle = "{bundle}"\nbatch_size = {batch}\nworkers = {workers}\n'
                   "latency_budget_ms = 20\n" for n in names)
    cams = "".join(f'[[cameras]]\nid = "c{i}"\ndetector = "{"shared" if shared else f"d{i}"}"\n'
                   f'source = {{ kind = "camera", index = {i} }}\npolicy = "drop-oldest"\nqueue_size = 8\n'
                   for i in range(CAMERAS))
    stations = "".join(f'[[stations]]\nid = "s{k}"\ncameras = ["c{2 * k}", "c{2 * k + 1}"]\n'
                       f'rule = {{ kind = "max", threshold = 1e9 }}\n' for k in range(CAMERAS // 2))
    kind = "free_run" if mode == "free-run" else "http"
    triggers = "".join(f'[[triggers]]\nstation = "s{k}"\nkind = "{kind}"\n' for k in range(CAMERAS // 2))
    path = tmp / f"line_{int(shared)}_{workers}_{mode}.toml"
    path.write_text(f'[line]\nname = "bench"\ndeadline_ms = 2000\nstatus_interval_s = 0.5\n\n{dets}\n{cams}\n'
                    f"{stations}\n{triggers}\n[http]\nport = 0\n")
    return path


def _sources(seconds: float) -> dict[str, Any]:
    from edgesentry.stream import IterableSource, PacedSource

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (*SHAPE, 3), dtype=np.uint8) for _ in range(16)]
    n = int(seconds * FPS)
    return {f"c{i}": PacedSource(IterableSource([frames[(i + k) % 16] for k in range(n)], name=f"c{i}", live=True),
                                 fps=FPS) for i in range(CAMERAS)}


def _run(path: Path, detectors: dict[str, Any], seconds: float, mode: str) -> dict[str, Any]:
    from edgesentry.line import LineRuntime, load_line_file

    runtime = LineRuntime(load_line_file(path, check_bundles=False), detectors=detectors,
                          sources=_sources(seconds)).start()
    stop = threading.Event()

    def trigger() -> None:  # 2 parts per second per station
        while not stop.wait(0.5):
            for k in range(CAMERAS // 2):
                try:
                    runtime.trigger(f"s{k}")
                except RuntimeError:
                    return

    thread = threading.Thread(target=trigger, daemon=True)
    if mode == "triggered":
        thread.start()
    t0 = time.perf_counter()
    summary = runtime.join(seconds + 120)
    stop.set()
    if summary is None:
        runtime.stop(drain=False)
        raise RuntimeError("the line did not finish")
    if not summary["identity_holds"]:
        raise RuntimeError(f"line lost frames: {summary}")
    summary["wall_s"] = time.perf_counter() - t0
    return summary


def _row(mode: str, impl: str, runs: list[dict[str, Any]]) -> Row:
    per_frame = [r["wall_s"] / max(1, r["processed"]) for r in runs]
    q = np.quantile(per_frame, [0.2, 0.5, 0.8, 0.9])
    last = runs[-1]
    dets = last["detectors"].values()
    batches = sum(d["batches"] for d in dets)
    stations = last["stations"].values()
    p50s = [s["verdict_latency_ms"]["p50"] for s in stations if s["verdict_latency_ms"]["p50"] is not None]
    lat50 = float(np.median(p50s)) if p50s else float("nan")
    lat99 = float(max((s["verdict_latency_ms"]["p99"] or 0.0) for s in stations))
    full = sum(c["dropped_by_reason"].get("queue_full", 0) for c in last["cameras"].values())
    return Row("line", mode, impl, f"{CAMERAS} cams 240x320 @ {FPS:g} fps", Timing(*map(float, q), iters=len(runs)),
               extra={"frames_per_s": round(last["processed"] / last["wall_s"], 1),
                      "offered_per_s": CAMERAS * FPS,
                      "mean_batch": round(sum(d["frames"] for d in dets) / max(1, batches), 2),
                      "mixed_batches": sum(d["mixed_batches"] for d in dets),
                      "verdict_p50_ms": round(lat50, 1), "verdict_p99_ms": round(lat99, 1),
                      "queue_full_drops": full, "produced": last["produced"],
                      "parts": sum(s["final"] for s in stations), "late": sum(s["late"] for s in stations),
                      "degraded": sum(s["degraded"] for s in stations)})


def tiny_bundle(ctx: Any, notes: list[str], family: str) -> tuple[Path, Path] | None:
    """A scratch folder and the tiny ISSTAD bundle converted into it; ``None`` (and a note) without the weights."""
    ref = ctx.shared / "reference" / "isstad"
    if not (ref / "tiny_stage2_seed0.pt").is_file():
        notes.append(f"{family}: skipped (no tiny ISSTAD reference weights under {ref})")
        return None
    import edgesentry

    tmp = Path(tempfile.mkdtemp(prefix=f"edgesentry_bench_{family}_"))
    bundle = edgesentry.convert("isstad", ref / "tiny_stage2_seed0.pt", output=tmp / "isstad",
                                config=ref / "tiny_stage2_config.json").path
    return tmp, Path(bundle)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch on one thread while a line runs (its workers are the parallelism), restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_lengths(ctx: Any) -> tuple[float, int]:
    """Seconds per line run and alternating rounds: short in --quick."""
    return (4.0, 1) if ctx.quick else (10.0, 2)


def latency_rows(ctx: Any) -> list[Row]:
    made = tiny_bundle(ctx, NOTES, "line")
    if made is None:
        return []
    import edgesentry

    tmp, bundle = made
    seconds, rounds = run_lengths(ctx)
    rows: list[Row] = []
    with one_torch_thread():
        shared_det = {"shared": edgesentry.load(bundle, backend="torch")}
        per_camera = {f"d{i}": edgesentry.load(bundle, backend="torch") for i in range(CAMERAS)}
        for mode in ("free-run", "triggered"):
            runs: dict[str, list[dict[str, Any]]] = {impl: [] for impl in LAYOUTS}
            for _ in range(rounds):  # alternate the layouts so each sees the same machine
                for impl, layout in LAYOUTS.items():
                    dets = shared_det if layout[0] else per_camera
                    runs[impl].append(_run(_line_toml(tmp, bundle, layout, mode), dets, seconds, mode))
            rows.extend(_row(mode, impl, r) for impl, r in runs.items())
    add_speedups(rows, "detector per camera", "vs per-camera")
    return rows

