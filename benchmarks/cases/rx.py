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

from _harness import Row, Timing, add_speedups, measure, measure_interleaved, race, rel_err

NOTES = [
    "rx global/local: 'speedup' = p50 of the named baseline / p50 of the row (same process, same cube); "
    "global: cpu, detector.predict, spectral.rx and the float64 GEMM floor (X @ W: the N B^2 multiply-adds of "
    "the kernel's two passes, numpy's BLAS) are timed in alternating blocks.",
    "rx local: the reference is the per-pixel float64 pinv loop; spectral.rx(window=...) uses the same border rule "
    "and refuses windows with fewer background pixels than bands; both run with BLAS on one thread (their best on "
    "a small or busy machine: per-pixel B x B work). rel_err_vs_ref = max |cpu - ref| / max |ref|.",
    "rx global (fresh process), with --rss: one predict (after an untimed 4x4 call) in a child per row, a random "
    "float32 cube built in it; 'x_cube' = peak RSS / cube bytes. spectral.rx at a quarter of the pixels: on the "
    "full cube it needs ~6.4 GB. rx local (fresh process): the same for local RX with a 3 x 3 guard and a 9 x 9 "
    "outer window.",
]

#: (rows of the fresh-process RSS rows) impl -> (full size, quick size)
RSS_SIZES = {"detector.predict": ((1024, 1024, 224), (128, 128, 64)),
             "spectral.rx": ((512, 512, 224), (128, 128, 64))}
#: the local RX row (3 x 9 windows): (full size, quick size)
LOCAL_RSS_SIZES = ((256, 256, 224), (64, 64, 32))

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
    weights = np.tril(np.random.default_rng(0).normal(size=(b, b)))
    fns = {"cpu": lambda: rx.global_rx(pixels, tier="cpu"), "detector.predict": lambda: det.predict(cube),
           "float64 GEMM floor": lambda: pixels @ weights}
    extra = {"cpu": {"rel_err_vs_ref": rel_err(rx.global_rx(pixels, tier="cpu")[0], expected)}, "detector.predict": {},
             "float64 GEMM floor": {"what": "X @ W, N B^2 multiply-adds (the kernel's two passes)"}}
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
    n = outer * outer - inner * inner
    size = f"{h}x{w}x{b} {name} win{inner},{outer} (n={n})"
    # the per-pixel loops (reference, SPy) do B x B work per pixel: BLAS threads only oversubscribe a
    # small or busy machine (10x slower on a loaded 2-core one), so they run on one, at their best
    expected = _one_blas_thread(lambda: rx.reference.local_rx(crop, inner=inner, outer=outer))
    slow = {"warmup": 0, "iters": 1, "track_memory": False}  # per-pixel loops: seconds per call
    rows = [Row("rx", "local", "reference", size, measure(lambda: _one_blas_thread(
        lambda: rx.local_rx(crop, inner=inner, outer=outer, tier="reference")), **slow))]
    rows += _local_cpu_rows(ctx, crop, window, size, expected)
    spectral = _spectral()
    if spectral is not None and n < b:  # SPy refuses: "too few samples for image data dimensionality"
        rows[1].extra["spectral.rx(window)"] = "refuses (fewer background pixels than bands)"
    elif spectral is not None:
        peer = _one_blas_thread(lambda: spectral.rx(crop, window=window))
        rows.append(Row("rx", "local", "spectral.rx(window)", size,
                        measure(lambda: _one_blas_thread(lambda: spectral.rx(crop, window=window)), **slow),
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
    """Global and local RX at scale, each row a fresh process: its peak resident set and one call's time."""
    rows = []
    for impl, (full, quick) in RSS_SIZES.items():
        if impl == "spectral.rx" and _spectral() is None:
            continue
        shape = quick if ctx.quick else full
        spec = {"source": "array", "shape": shape, "impl": "spectral" if impl == "spectral.rx" else "edgesentry"}
        rows.append(_rss_row("global (fresh process)", impl, spec))
    shape = LOCAL_RSS_SIZES[1] if ctx.quick else LOCAL_RSS_SIZES[0]
    spec = {"source": "array", "shape": shape, "impl": "edgesentry", "detector": "rx-local", "window": [3, 9]}
    rows.append(_rss_row("local (fresh process)", "detector.predict", spec))
    return rows


def _rss_row(case: str, impl: str, spec: dict) -> Row:
    """One ``scene_memory`` child run of ``spec`` as a row."""
    from scene_memory import run_child

    with tempfile.TemporaryDirectory() as tmp:
        run = run_child(sys.executable, spec, Path(tmp) / "child.log")
        if run["rc"] != 0:
            log = (Path(tmp) / "child.log").read_text()[-2000:]
            raise RuntimeError(f"rx {case} {impl} child failed (exit {run['rc']}):\n{log}")
    shape = spec["shape"]
    seconds, cube_bytes = run["seconds"], int(np.prod(shape)) * 4
    return Row("rx", case, impl, "x".join(map(str, shape)) + " float32 synthetic",
               Timing(seconds, seconds, seconds, seconds, 1), peak_rss_mb=run["peak_rss_bytes"] / 2**20,
               extra={"x_cube": run["peak_rss_bytes"] / cube_bytes})


def latency_rows(ctx: Any) -> list[Row]:
    scene, name = _cube(ctx, SCENE, (100, 100, 205))
    rows = _global_rows(ctx, scene, name)
    if not ctx.quick:
        beach, beach_name = _cube(ctx, BEACH, (150, 150, 188))
        rows += _global_rows(ctx, beach, beach_name)
    if ctx.quick:
        rows += _local_rows(ctx, scene[:16, :16, :40], (3, 9), name)
    else:
        # small windows (the 20 x 20 crop): fewer background pixels than bands (the sample
        # space; SPy refuses them) and just above the band count (rings with repeated pixels)
        for window in ((3, 9), (3, 11), (3, 13), (3, 15), (5, 17)):
            rows += _local_rows(ctx, scene[:20, :20], window, name)
        # (5, 21) gives 416 pixels for 205 bands
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


# ---------------------------------------------------------------------------------- sweep
SWEEP_NOTES = [
    "rx local sweep: per band count, windows with fewer background pixels than bands (n<B: the sample-space "
    "path; spectral.rx refuses them), just above (B <= n < 1.5 B), the benchmark's (5, 21) and the largest "
    "(5, 41), on a crop of (outer + 12)^2 pixels (border and interior pixels mixed); bands <= 205 from "
    "los-angeles-1 (with its repeated pixels), 224 bands synthetic. Compared per pixel; spectral.rx(window) "
    "(its cost per pixel does not depend on where the pixel is) timed on a max(outer, 12)^2 crop, up to outer 21, "
    "with BLAS on one thread (its best on a small or busy machine).",
    "rx global sweep: 'float64 GEMM floor' = numpy's X @ W (N x B times B x B, float64): the multiply-adds "
    "of the kernel's two passes (half a Gram and half a triangular projection, N B^2 in all).",
]


def _pick_window(bands: int, lo: float, hi: float) -> tuple[int, int] | None:
    """The smallest window (odd inner 1..7) whose ring has lo <= n < hi pixels."""
    for outer in range(3, 42):
        for inner in (1, 3, 5, 7):
            if inner < outer and lo <= outer * outer - inner * inner < hi:
                return inner, outer
    return None


def _sweep_scene(ctx: Any, bands: int) -> tuple[np.ndarray, str]:
    if bands <= 205:
        scene, name = _cube(ctx, SCENE, (100, 100, 205))
        return np.ascontiguousarray(scene[..., :bands]), name
    rng = np.random.default_rng(bands)
    return rng.normal(size=(100, 100, bands)) * rng.uniform(5, 50, size=bands) + 1000, "synthetic"


def _local_sweep(ctx: Any, bands: int) -> list[Row]:
    from edgesentry.kernels.rx import cpu

    scene, name = _sweep_scene(ctx, bands)
    spectral = _spectral()
    windows = {"n<B": _pick_window(bands, 0.55 * bands, 0.95 * bands),
               "B<=n<1.5B": _pick_window(bands, bands, 1.5 * bands), "5,21": (5, 21), "5,41": (5, 41)}
    if bands not in (205,):  # the full set at the band count, a sample elsewhere
        windows = {k: v for k, v in windows.items() if k in ("n<B", "B<=n<1.5B" if bands < 200 else "5,41")}
    rows: list[Row] = []
    for label, window in windows.items():
        if window is None:
            continue
        inner, outer = window
        n = outer * outer - inner * inner
        side = min(scene.shape[0], outer + 12)
        crop = scene[:side, :side]
        impls: dict[str, tuple[Any, ...]] = {
            "cpu": ("auto", lambda c=crop, w=window: cpu.local_rx(c, inner=w[0], outer=w[1]), side * side)}
        if n > bands:  # the two covariance paths (a ring with n <= B is singular: sample space only)
            for impl, mode in (("cpu per-pixel", "never"), ("cpu shared windows", "always")):
                impls[impl] = ("path", lambda c=crop, w=window, m=mode: cpu.local_rx(
                    c, inner=w[0], outer=w[1], shared_windows=m), side * side)
        if spectral is not None and n >= bands and outer <= 21:
            ps = max(outer, 12)  # SPy's progress arithmetic divides by rows // 10
            impls["spectral.rx(window)"] = ("peer", lambda c=scene[:ps, :ps], w=window: _one_blas_thread(
                lambda: spectral.rx(c, window=w)), ps * ps)
        size = f"B{bands} win{inner},{outer} n={n} ({label}) {side}x{side} {name}"
        rows += race("rx", "local (per pixel)", size, impls, rounds=2)
    return rows


def _one_blas_thread(fn: Any) -> Any:
    """SPy's windowed RX does per-pixel B x B work: BLAS threads only oversubscribe a small or busy
    machine (10x slower on a loaded 2-core one), so the peer runs at its best, on one thread."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return fn()


def _global_sweep(ctx: Any, shape: tuple[int, int, int]) -> list[Row]:
    h, w, b = shape
    if (h, w, b) == (100, 100, 205):
        cube, name = _cube(ctx, SCENE, shape)
    else:
        rng = np.random.default_rng(h * b)
        cube, name = rng.normal(size=shape) * rng.uniform(5, 50, size=b) + 1000, "synthetic"
    pixels = cube.reshape(-1, b)
    weights = np.tril(np.random.default_rng(0).normal(size=(b, b)))
    impls: dict[str, tuple[Any, ...]] = {"cpu": ("auto", lambda: rx.global_rx(pixels, tier="cpu")),
                                         "float64 GEMM floor": ("floor", lambda: pixels @ weights)}
    spectral = _spectral()
    if spectral is not None:
        impls["spectral.rx"] = ("peer", lambda: spectral.rx(cube))
    return race("rx", "global", f"{h}x{w}x{b} {name}", impls, rounds=2 if h * w > 70000 else 3, pause=0.15)


def sweep_rows(ctx: Any) -> list[Row]:
    rows: list[Row] = []
    for bands in (50, 100, 205, 224):
        rows += _local_sweep(ctx, bands)
    for shape in ((100, 100, 205), (64, 64, 50), (256, 256, 224), (512, 512, 100)):
        rows += _global_sweep(ctx, shape)
    return rows
