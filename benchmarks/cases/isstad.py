"""ISSTAD rows: graph per backend and batch, the fusion kernel per tier vs the seed's scipy
path, and whole ``predict`` per image.

Latency (``latency_rows``):
- ``graph``: ``ISSTADGraph`` (image -> recon, P) with the tiny reference architecture
  (64-d encoder x 2, 32-d decoder x 12; the full 224 x 224 pipeline) on torch and ONNX
  Runtime at batch 1 and 8, and (full run only) the official ViT-L/16 on torch at batch 1
  (random weights: same cost as trained ones).
- ``fusion``: ``edgesentry.kernels.isstad`` at 224 x 224 from P (what the graph gives) and
  from the 12 heads' logits, per tier. ``reference`` IS the seed's post-processing (numpy +
  ``scipy.ndimage.gaussian_filter``, image by image); speedups are against it, same process.
  ``cpu`` runs with the default thread policy (one thread per image) and with 2 threads.
- ``predict``: preprocess + graph + fusion on a 512 x 512 hazelnut_toy photo.

GPU check (``gpu_cases``): the Triton and CUDA tiers against the reference at 224 x 224.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import edgesentry
from edgesentry.kernels import isstad as isstad_kernels
from edgesentry.kernels.isstad import reference

from _harness import Row, add_speedups, measure, race, rel_err

NOTES = [
    "isstad: 'graph' = image -> (recon, P) network only; 'fusion' = post-processing from the graph outputs "
    "(P or 12 head logits, recon, image) to P, R, pixel map and score; speedups vs the seed's numpy/scipy "
    "path ('reference'), measured side by side. 'predict' = preprocess + graph + fusion per image.",
]

TINY = "reference/isstad/tiny_stage2_seed0.pt"
TINY_CONFIG = "reference/isstad/tiny_stage2_config.json"
PHOTO = "data/hazelnut_toy/test/colour/00.jpg"


def fusion_inputs(rng: np.random.Generator, batch: int, logits: bool, size: int = 224,
                  heads: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Graph-like outputs: logits ~ N(-2, 2) (mostly normal pixels), recon = image + small error."""
    image = np.clip(rng.normal(0.0, 0.4, size=(batch, 3, size, size)), -1, 1).astype(np.float32)
    recon = (image + rng.normal(0.0, 0.05, size=image.shape)).astype(np.float32)
    if logits:
        h = rng.normal(0.0, 1.0, size=(batch, heads, 2, size, size)).astype(np.float32)
        h[:, :, 1] -= 2.0
    else:
        h = rng.beta(1.0, 8.0, size=(batch, size, size)).astype(np.float32)
    return h, recon, image


def _fusion_rows(ctx: Any) -> list[Row]:
    rows: list[Row] = []
    rng = np.random.default_rng(0)
    batches = [1] if ctx.quick else [1, 8]
    for batch in batches:
        for logits in (False, True):
            inputs = fusion_inputs(rng, batch, logits)
            for scoring in ("original", "weighted"):
                size = f"{batch}x224x224 from {'12 logits' if logits else 'P'} {scoring}"
                want = reference.isstad_fusion(*inputs, scoring=scoring)
                variants = [("reference", "reference", None), ("cpu", "cpu", None), ("cpu 1 thread", "cpu", "1")]
                for impl, tier, threads in variants:
                    old = os.environ.get("EDGESENTRY_CPU_THREADS")
                    if threads:
                        os.environ["EDGESENTRY_CPU_THREADS"] = threads
                    try:
                        got, _ = isstad_kernels.isstad_fusion(*inputs, scoring=scoring, tier=tier)
                        # sub-millisecond calls: a time floor gives the median enough samples
                        timing = measure(lambda t=tier, a=inputs, s=scoring: isstad_kernels.isstad_fusion(
                            *a, scoring=s, tier=t), iters=max(ctx.iters, 20), warmup=3,
                            min_time=0.0 if ctx.quick else 0.3)
                    finally:
                        if threads:
                            if old is None:
                                os.environ.pop("EDGESENTRY_CPU_THREADS", None)
                            else:
                                os.environ["EDGESENTRY_CPU_THREADS"] = old
                    rows.append(Row("isstad", "fusion", impl, size, timing,
                                    extra={"map_rel_err": rel_err(got["pixel_map"], want["pixel_map"]),
                                           "score_rel_err": rel_err(got["score"], want["score"])}))
    add_speedups(rows, "reference", "vs seed scipy")
    return rows


def _graph_rows(ctx: Any, bundle: Path, photo: np.ndarray | None) -> list[Row]:
    import torch

    rows: list[Row] = []
    batches = [1] if ctx.quick else [1, 8]
    for backend in ("torch", "onnxruntime"):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            det = edgesentry.load(bundle, backend=backend, kernels="cpu")
            if backend == "onnxruntime":
                det.runner.threads = threads
                det.runner.deactivate()
            for batch in batches:
                x = np.random.default_rng(batch).uniform(-1, 1, size=(batch, 3, 224, 224)).astype(np.float32)
                timing = measure(lambda d=det, a=x: d.runner.infer({"image": a}), iters=ctx.iters, track_memory=False)
                rows.append(Row("isstad", "graph tiny", f"{backend} {threads}t", f"batch {batch}", timing,
                                extra={"ms_per_image": 1e3 * timing.p50 / batch}))
            if photo is not None:
                rows.append(Row("isstad", "predict tiny", f"{backend} {threads}t", "512x512 photo",
                                measure(lambda d=det: d.predict(photo), iters=ctx.iters, track_memory=False)))
    torch.set_num_threads(2)
    return rows


def _vit_large_rows(ctx: Any) -> list[Row]:
    import torch

    from edgesentry.models.isstad import ISSTADGraph, isstad_vit_large_patch16

    torch.manual_seed(0)
    graph = ISSTADGraph(isstad_vit_large_patch16()).eval()
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, size=(1, 3, 224, 224)).astype(np.float32))
    rows = []
    for threads in (2,):
        torch.set_num_threads(threads)
        with torch.inference_mode():
            timing = measure(lambda: graph(x), iters=3, warmup=1, track_memory=False)
        rows.append(Row("isstad", "graph ViT-L/16", f"torch {threads}t", "batch 1", timing,
                        extra={"gflop": 140.5}))
    return rows


def latency_rows(ctx: Any) -> list[Row]:
    rows = _fusion_rows(ctx)
    tiny = ctx.shared / TINY
    if tiny.is_file():
        from edgesentry.export.onnx import export_bundle

        photo = None
        if (ctx.shared / PHOTO).is_file():
            from edgesentry.io.image import read_image

            photo = read_image(ctx.shared / PHOTO)
        with tempfile.TemporaryDirectory() as tmp:
            config = json.loads((ctx.shared / TINY_CONFIG).read_text())
            bundle = edgesentry.convert("isstad", tiny, output=Path(tmp) / "tiny", config=config)
            export_bundle(bundle, check_parity=False)
            rows += _graph_rows(ctx, bundle.path, photo)
    if not ctx.quick:
        rows += _vit_large_rows(ctx)
    return rows


# ---------------------------------------------------------------------------------- sweep
SWEEP_NOTES = [
    "isstad fusion sweep: batch x image size from P (what the graph gives); 'cpu' = the default thread policy "
    "(all cores: image-parallel batches, row-parallel single images), 'cpu 1 thread' its forced alternative; "
    "the peer is the seed's numpy + scipy post-processing ('reference').",
    "isstad graph sweep: predict_batch of B 224 x 224 images (preprocess + tiny reference network + fusion) "
    "per backend; 'auto' measures both backends per batch bucket and keeps the faster.",
]

FUSION_SWEEP = [(1, 224), (8, 224), (16, 224), (1, 512), (4, 512), (1, 1024)]


def _one_thread(fn: Any) -> Any:
    old = os.environ.get("EDGESENTRY_CPU_THREADS")
    os.environ["EDGESENTRY_CPU_THREADS"] = "1"
    try:
        return fn()
    finally:
        if old is None:
            os.environ.pop("EDGESENTRY_CPU_THREADS", None)
        else:
            os.environ["EDGESENTRY_CPU_THREADS"] = old


def _fusion_sweep(ctx: Any) -> list[Row]:
    rows: list[Row] = []
    rng = np.random.default_rng(0)
    for batch, size in FUSION_SWEEP:
        inputs = fusion_inputs(rng, batch, False, size=size)

        def run(tier: str, a: Any = inputs) -> Any:
            return isstad_kernels.isstad_fusion(*a, tier=tier)

        impls = {"cpu": ("auto", lambda: run("cpu")), "cpu 1 thread": ("path", lambda: _one_thread(lambda: run("cpu"))),
                 "reference (seed scipy)": ("peer", lambda: run("reference"))}
        rows += race("isstad", "fusion", f"{batch}x{size}x{size} from P", impls, rounds=3, pause=0.05)
    return rows


def _graph_sweep(ctx: Any) -> list[Row]:
    from cases._backends import BACKENDS, backend_rows

    tiny = ctx.shared / TINY
    if not tiny.is_file():
        return []
    from edgesentry.export.onnx import export_bundle

    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = json.loads((ctx.shared / TINY_CONFIG).read_text())
        bundle = edgesentry.convert("isstad", tiny, output=Path(tmp) / "tiny", config=config)
        export_bundle(bundle, check_parity=False)
        dets = {b: edgesentry.load(bundle.path, backend=b, kernels="cpu") for b in BACKENDS}
        rng = np.random.default_rng(0)
        for batch in (1, 4, 16):
            images = [rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8) for _ in range(batch)]
            rows += backend_rows("isstad", "graphs: predict_batch (tiny)", f"batch {batch} 224x224", dets,
                                 lambda det, im=images: det.predict_batch(im))
    return rows


def sweep_rows(ctx: Any) -> list[Row]:
    return _fusion_sweep(ctx) + _graph_sweep(ctx)


# --------------------------------------------------------------------------- GPU check
def gpu_cases(ctx: Any) -> list[Any]:
    from gpu_check import GpuCase, shared_reference

    # (batch, logits?, size)
    sizes = [(1, True, 9)] if ctx.smoke else [(1, True, 224), (8, False, 224), (32, False, 224), (8, True, 224)]
    cases = []
    for batch, logits, size in sizes:
        rng = np.random.default_rng(batch * 1000 + size + int(logits))
        inputs = fusion_inputs(rng, batch, logits, size=size, heads=12 if size >= 224 else 2)
        ref = shared_reference(lambda a=inputs: reference.isstad_fusion(*a)["pixel_map"])
        hw = size * size
        head_bytes = (12 * 2 if logits else 1) * batch * hw * 4
        for tier in ("triton", "cuda"):
            module = __import__(f"edgesentry.kernels.isstad.{tier}", fromlist=["isstad_fusion"])
            for mode in ctx.modes(tier):
                staged = ctx.on(mode, inputs)
                cases.append(GpuCase(
                    kernel="isstad_fusion", tier=tier, mode=mode,
                    size=f"{batch}x{size}x{size} {'logits' if logits else 'P'}",
                    run=lambda fn=module.isstad_fusion, a=staged: fn(*a)["pixel_map"],
                    reference=ref,
                    # heads + recon + image read; P, R, pixel written; 3 blurred maps written + read twice
                    bytes_moved=head_bytes + 2 * 3 * batch * hw * 4 + 3 * batch * hw * 4 + 3 * 3 * batch * hw * 4,
                    flops=float(batch * hw * (2 * 2 * 33 * 3 + (12 * 6 if logits else 0))),
                    # x255 map: float32 accumulation of 33 taps vs scipy's float64
                    atol=2e-3, rtol=1e-5,
                    compile=_compile_all if tier == "cuda" else None,
                    estimate_s=(4.0 if tier == "triton" else 2.0) + 0.1 * batch,
                ))
    return cases


def _compile_all() -> dict[str, int]:
    from edgesentry.kernels._cuda import TARGET_ARCHS
    from edgesentry.kernels.isstad import cuda

    return {arch: sum(len(c) for c in cuda.compile_all(arch).values()) for arch in TARGET_ARCHS}
