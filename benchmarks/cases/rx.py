"""RX rows: global and local RX per tier, raced against ``spectral.rx`` in the same process.

Baselines: the seed-faithful ``reference`` tier (float64 pinv, per-pixel loop for local)
and, when installed, SPy's ``spectral.rx`` (global: ``np.linalg.inv``; windowed: a per-pixel
Python loop with ``np.cov``). Every fast output is compared with the reference and the
relative error is printed beside the time.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import edgesentry
from edgesentry.io.hsi import read_cube
from edgesentry.kernels import rx

from _harness import Row, Timing, add_speedups, measure, measure_interleaved, rel_err

NOTES = [
    "rx global/local: 'speedup' = p50 of the named baseline / p50 of the row (same process, same cube); "
    "global: cpu, detector.predict and spectral.rx are timed in alternating blocks.",
    "rx local: the reference is the per-pixel float64 pinv loop; spectral.rx(window=...) uses the same border rule.",
    "rx global (fresh process), with --rss: one predict (after an untimed 4x4 call) in a child per row, a random "
    "float32 cube built in it; 'x_cube' = peak RSS / cube bytes. spectral.rx at a quarter of the pixels: on the "
    "full cube it needs ~6.4 GB.",
]

#: (rows of the fresh-process RSS rows) impl -> (full size, quick size)
RSS_SIZES = {"detector.predict": ((1024, 1024, 224), (128, 128, 64)),
             "spectral.rx": ((512, 512, 224), (128, 128, 64))}

SCENE = "data/abu/los-angeles-1.mat"  # ABU airport-1, 100 x 100 x 205
BEACH = "data/abu/abu-beach-1.mat"  # 150 x 150 x 188


def _spectral() -> Any:
    try:
        import spectral

        spectral.settings.show_progress = False  # progress output would pollute the report
        return spectral
    except ImportError:
        return None


def _cube(ctx: Any, rel: str, synthetic: tuple[int, int, int]) -> tuple[np.ndarray, str]:
    path = ctx.shared / rel
    if path.exists():
        return read_cube(path).astype(np.float64), path.stem
    rng = np.random.default_rng(0)
    return rng.normal(size=synthetic) * 50 + 1000, "synthetic"


def _global_rows(ctx: Any, cube: np.ndarray, name: str) -> list[Row]:
    h, w, b = cube.shape
    pixels = cube.reshape(-1, b)
    size = f"{h}x{w}x{b} {name}"
    expected = rx.reference.global_rx(pixels)
    rows = [Row("rx", "global", "reference", size, measure(lambda: rx.global_rx(pixels, tier="reference"),
                                                            iters=ctx.iters))]
    det = edgesentry.load("rx")
    fns = {"cpu": lambda: rx.global_rx(pixels, tier="cpu"), "detector.predict": lambda: det.predict(cube)}
    extra = {"cpu": {"rel_err_vs_ref": rel_err(rx.global_rx(pixels, tier="cpu")[0], expected)}, "detector.predict": {}}
    spectral = _spectral()
    if spectral is not None:
        fns["spectral.rx"] = lambda: spectral.rx(cube)
        extra["spectral.rx"] = {"rel_err_vs_ref": rel_err(spectral.rx(cube).ravel(), expected)}
    # the fast tiers and the peer in alternating blocks: the ratio does not carry the VM's drift
    timings = measure_interleaved(fns, rounds=3 if ctx.quick else 6, block=3, pause=0.15)
    rows += [Row("rx", "global", impl, size, timings[impl], extra=extra[impl]) for impl in fns]
    return rows


def _local_rows(ctx: Any, crop: np.ndarray, window: tuple[int, int], name: str) -> list[Row]:
    inner, outer = window
    h, w, b = crop.shape
    size = f"{h}x{w}x{b} {name} win{inner},{outer}"
    expected = rx.reference.local_rx(crop, inner=inner, outer=outer)
    slow = {"warmup": 0, "iters": 1, "track_memory": False}  # per-pixel loops: seconds per call
    rows = [Row("rx", "local", "reference", size,
                measure(lambda: rx.local_rx(crop, inner=inner, outer=outer, tier="reference"), **slow))]
    rows += _local_cpu_rows(ctx, crop, window, size, expected)
    spectral = _spectral()
    if spectral is not None:
        peer = spectral.rx(crop, window=window)
        rows.append(Row("rx", "local", "spectral.rx(window)", size,
                        measure(lambda: spectral.rx(crop, window=window), **slow),
                        extra={"rel_err_vs_ref": rel_err(peer, expected)}))
    return rows


def _local_cpu_rows(ctx: Any, cube: np.ndarray, window: tuple[int, int], size: str,
                    expected: np.ndarray | None) -> list[Row]:
    """The cpu tier as dispatched ("cpu": the cost model picks shared outer windows or
    per-pixel factorisations) and with every pixel factoring its own ring ("cpu per-pixel").
    Without a reference (too slow on a whole scene) errors are against the per-pixel path."""
    from edgesentry.kernels.rx import cpu

    inner, outer = window
    h, w, _ = cube.shape
    small = h * w <= 32 * 32
    outputs, rows = {}, []
    for impl, mode in (("cpu", "auto"), ("cpu per-pixel", "never")):
        def run(mode: str = mode) -> np.ndarray:
            return cpu.local_rx(cube, inner=inner, outer=outer, shared_windows=mode)

        outputs[impl] = run()
        timing = measure(run, iters=ctx.iters if small else 3, track_memory=small)
        rows.append(Row("rx", "local", impl, size, timing, extra={"us_per_px": timing.p50 / (h * w) * 1e6}))
    key, baseline = ("rel_err_vs_ref", expected) if expected is not None else \
        ("rel_err_vs_per_pixel", outputs["cpu per-pixel"])
    for row in rows:
        row.extra[key] = rel_err(outputs[row.impl], baseline)
    return rows


def rss_rows(ctx: Any) -> list[Row]:
    """Global RX at scale, each row a fresh process: its peak resident set and one call's time."""
    from scene_memory import run_child

    rows = []
    for impl, (full, quick) in RSS_SIZES.items():
        if impl == "spectral.rx" and _spectral() is None:
            continue
        shape = quick if ctx.quick else full
        spec = {"source": "array", "shape": shape, "impl": "spectral" if impl == "spectral.rx" else "edgesentry"}
        with tempfile.TemporaryDirectory() as tmp:
            run = run_child(sys.executable, spec, Path(tmp) / "child.log")
            if run["rc"] != 0:
                log = (Path(tmp) / "child.log").read_text()[-2000:]
                raise RuntimeError(f"rx {impl} child failed (exit {run['rc']}):\n{log}")
        seconds, cube_bytes = run["seconds"], int(np.prod(shape)) * 4
        rows.append(Row("rx", "global (fresh process)", impl, "x".join(map(str, shape)) + " float32 synthetic",
                        Timing(seconds, seconds, seconds, seconds, 1), peak_rss_mb=run["peak_rss_bytes"] / 2**20,
                        extra={"x_cube": run["peak_rss_bytes"] / cube_bytes}))
    return rows


def latency_rows(ctx: Any) -> list[Row]:
    scene, name = _cube(ctx, SCENE, (100, 100, 205))
    rows = _global_rows(ctx, scene, name)
    if not ctx.quick:
        beach, beach_name = _cube(ctx, BEACH, (150, 150, 188))
        rows += _global_rows(ctx, beach, beach_name)
    if ctx.quick:
        rows += _local_rows(ctx, scene[:16, :16, :40], (3, 9), name)
    else:
        # full bands need background >= bands: (5, 21) gives 416 pixels for 205 bands
        rows += _local_rows(ctx, scene[:24, :24], (5, 21), name)
        rows += _local_rows(ctx, scene[:32, :32], (7, 31), name)
        # the whole scene: mostly interior pixels, whose outer windows nobody shares
        h, w, b = scene.shape
        rows += _local_cpu_rows(ctx, scene, (5, 21), f"{h}x{w}x{b} {name} win5,21", None)
    add_speedups(rows, "reference", "vs reference")
    if _spectral() is not None:
        add_speedups(rows, "spectral.rx", "vs spectral.rx")
        add_speedups(rows, "spectral.rx(window)", "vs spectral.rx(window)")
    return rows
