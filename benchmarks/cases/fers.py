"""FERS rows: per scene and backend, the network time and the RX time side by side.

Latency (``latency_rows``): per scene (ABU airport-2, 100 x 100, official 200-band weights;
ABU beach-1, 150 x 150, 100-band weights), the spectral-only bundle and (airport-2) the one with
the int8-grid random spatial branch (same cost as a trained one), backends torch and ONNX Runtime;
the RX-on-features kernel per tier
(seed-faithful ``reference`` with its per-pixel loop, BLAS ``cpu``), and the whole
``predict``. GPU check (``gpu_cases``): the fused Triton and CUDA kernels against the
reference on network-like random features (the fused cube is never built on the GPU).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import edgesentry
from edgesentry.io.hsi import read_cube
from edgesentry.kernels import fers as fers_kernels
from edgesentry.kernels.fers import reference

from _harness import Row, add_speedups, measure, rel_err

NOTES = [
    "fers: 'network' = both graphs (spectral [+ spatial]) on one scene; 'rx' = the fused RX-on-features kernel; "
    "'predict' = preprocess + network + rx. Speedups against the seed-faithful reference RX (per-pixel loop).",
]

#: (label, scene, official weights, with the int8-grid spatial branch too)
SCENES = [
    ("airport-2", "data/abu/abu-airport-2.mat", "reference/fers/weights/saved_models/200bands", True),
    ("beach-1", "data/abu/abu-beach-1.mat", "reference/fers/weights/saved_models/100bands", False),  # 150 x 150
]
SPATIAL = "reference/fers/spa_fen_random_seed0_int8.npz"


def _bundles(ctx: Any, root: Path, weights: str, spatial: bool) -> dict[str, Any]:
    from edgesentry.export.onnx import export_bundle

    out = {"spectral-only": edgesentry.convert("fers", ctx.shared / weights, output=root / "spe")}
    if spatial:
        out["full"] = edgesentry.convert("fers", ctx.shared / weights, ctx.shared / SPATIAL, output=root / "full")
    for bundle in out.values():
        export_bundle(bundle, check_parity=False)
    return out


def _scene_rows(ctx: Any, label: str, cube: np.ndarray, bundles: dict[str, Any]) -> list[Row]:
    bands = bundles["spectral-only"].config["arch"]["bands"]
    size = f"{label} " + "x".join(map(str, cube.shape[:2])) + f"x{bands}"
    rows: list[Row] = []
    for variant, bundle in bundles.items():
        for backend in ("torch", "onnxruntime"):
            det = edgesentry.load(bundle.path, backend=backend, kernels="cpu")
            prepared = det.preprocess(cube)
            raw = det.forward(prepared)
            rows.append(Row("fers", f"network {variant}", backend, size,
                            measure(lambda d=det, p=prepared: d.forward(p), iters=ctx.iters, track_memory=False)))
            rows.append(Row("fers", f"predict {variant}", backend, size,
                            measure(lambda d=det: d.predict(cube), iters=ctx.iters, track_memory=False)))
        x, spe, spa = prepared.x, raw["spe_f"], raw["spa_f"]
        expected = reference.fers_rx(x, spe, spa)
        for tier in ("reference", "cpu"):
            out, _ = fers_kernels.fers_rx(x, spe, spa, tier=tier)
            rows.append(Row("fers", f"rx {variant}", tier, size,
                            measure(lambda t=tier, a=(x, spe, spa): fers_kernels.fers_rx(*a, tier=t),
                                    iters=max(3, ctx.iters // 2)),
                            extra={"rel_err_vs_ref": rel_err(out, expected)}))
    return rows


def latency_rows(ctx: Any) -> list[Row]:
    rows: list[Row] = []
    scenes = SCENES[:1] if ctx.quick else SCENES
    for label, scene, weights, spatial in scenes:
        if not (ctx.shared / weights).is_dir() or not (ctx.shared / scene).is_file():
            continue
        cube = read_cube(ctx.shared / scene)
        if ctx.quick:
            cube = cube[:48, :48]
        with tempfile.TemporaryDirectory() as tmp:
            rows += _scene_rows(ctx, label, cube, _bundles(ctx, Path(tmp), weights, spatial))
    add_speedups(rows, "reference", "vs reference")
    return rows


# ---------------------------------------------------------------------------------- sweep
SWEEP_NOTES = [
    "fers graphs sweep: predict (spectral branch, official 200-band weights + RX) on crops of ABU airport-2 "
    "per backend; 'auto' measures both backends per pixel-count bucket and keeps the faster.",
]


def sweep_rows(ctx: Any) -> list[Row]:
    from cases._backends import BACKENDS, backend_rows

    label, scene, weights, _ = SCENES[0]
    if not (ctx.shared / scene).is_file() or not (ctx.shared / weights).exists():
        return []
    cube = read_cube(ctx.shared / scene)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        bundle = _bundles(ctx, Path(tmp), weights, spatial=False)["spectral-only"]
        dets = {b: edgesentry.load(bundle.path, backend=b, kernels="cpu") for b in BACKENDS}
        for side in (32, 64, 100):
            crop = np.ascontiguousarray(cube[:side, :side])
            rows += backend_rows("fers", "graphs: predict (spectral-only)", f"{label} {side}x{side}", dets,
                                 lambda det, c=crop: det.predict(c))
    return rows


# --------------------------------------------------------------------------- GPU check
def network_like(rng: np.random.Generator, bands: int, h: int, w: int) -> tuple[np.ndarray, ...]:
    """x in [-0.1, 0.1]; spe_f and spa_f non-negative and correlated with x, as the networks' outputs."""
    x = (rng.random((1, bands, h, w)) * 0.2 - 0.1).astype(np.float32)
    mix = rng.standard_normal((bands, bands)) * 0.3
    spe = np.maximum(np.einsum("ij,njhw->nihw", mix, x) * 50 + rng.random((1, bands, h, w)), 0).astype(np.float32)
    spa = (rng.random((1, bands, h, w)) * 2).astype(np.float32)
    return x, spe, spa


def gpu_cases(ctx: Any) -> list[Any]:
    from gpu_check import GpuCase, shared_reference

    sizes = [(8, 6, 6)] if ctx.smoke else [(50, 64, 64), (200, 100, 100), (200, 150, 150)]
    cases = []
    for bands, h, w in sizes:
        seed = bands * 1000 + h
        x, spe, spa = network_like(np.random.default_rng(seed), bands, h, w)
        ref = shared_reference(lambda a=(x, spe, spa): reference.fers_rx(*a))
        n = h * w
        for tier in ("triton", "cuda"):
            fn = __import__(f"edgesentry.kernels.fers.{tier}", fromlist=["fers_rx"]).fers_rx
            for mode in ctx.modes(tier):
                staged = ctx.on(mode, (x, spe, spa))
                cases.append(GpuCase(
                    kernel="fers_rx", tier=tier, mode=mode, size=f"{bands}x{h}x{w}",
                    run=lambda fn=fn, a=staged: fn(*a),
                    reference=ref,
                    # minmax, band sums, Gram and Mahalanobis passes each read the three float32 tensors
                    bytes_moved=4 * 3 * bands * n * 4 + 8 * n,
                    flops=4.0 * n * bands * bands,
                    # the reference keeps z in float32 (the seed's recipe); the tiers use float64
                    atol=1e-6, rtol=1e-4,
                    notes={"seed": seed},
                    compile=_compile_all if tier == "cuda" else None,
                    estimate_s=5.0 if tier == "triton" else 2.0,
                ))
    return cases


def _compile_all() -> dict[str, int]:
    from edgesentry.kernels._cuda import TARGET_ARCHS
    from edgesentry.kernels.fers import cuda

    return {arch: sum(len(c) for c in cuda.compile_all(arch).values()) for arch in TARGET_ARCHS}
