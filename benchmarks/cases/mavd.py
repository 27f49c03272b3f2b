"""MAVD benchmark cases: per-video latency per backend and kernel tier, the align-and-fuse
kernel, and the O(T) positional attention; plus the GPU check cases of the MAVD kernels.

Latency rows (``python benchmarks/latency.py --only mavd``), all on one machine, one run:

- ``video``: one XD-Violence video (5 crops) at T = 182 (the test-set mean) and T = 1000:
  the official computation in torch eager (whole network, audio repeated over the 5 crops
  and the T x T positional matrix, as ``test.py``), against the detector on each backend
  (torch, onnxruntime) with each host kernel tier (cpu, reference) for the head;
- ``align_fuse``: the fused va/vf/fusion-embedding step on the 5 T rows of a video, torch
  eager (three modules and a concat) vs the kernel tiers;
- ``positional``: ``A2 @ t`` for the 2 layers x 4 heads x 5 crops of the RGB branch
  (dh = 64) at T = 1000: T x T matrix (torch, numpy float64 reference) vs the O(T) scans.

Inputs are seeded synthetic I3D-like features (non-negative AR(1), like the oracle's).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from _harness import Row, add_speedups, measure, measure_interleaved, rel_err

NOTES = [
    "video: 'torch eager (official)' = whole MAVD network in torch as the official test() runs it "
    "(audio x5 crops, the T x T positional matrix repeated per crop and head, the unused v/a/f MIL "
    "heads, mean of crop sigmoids); "
    "detector rows include input validation and the fused head. The five implementations are "
    "timed in alternating blocks (each block after one untimed call), so all see the same machine.",
    "positional: 2 layers x 4 heads x 5 crops = 40 sequences of dh = 64 channels (the RGB branch).",
]


def _features(rng: np.random.Generator, crops: int, t: int, dim: int, rho: float = 0.8) -> np.ndarray:
    g = np.empty((crops, t, dim), np.float64)
    g[:, 0] = rng.standard_normal((crops, dim))
    for i in range(1, t):
        g[:, i] = rho * g[:, i - 1] + np.sqrt(1 - rho**2) * rng.standard_normal((crops, dim))
    return np.maximum(g, 0).astype(np.float32)


def video_inputs(t: int, crops: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    audio = 0.5 * _features(rng, 1, t, 128)[0] * 2 - 0.5
    return {
        "rgb": _features(rng, crops, t, 1024),
        "flow": _features(rng, crops, t, 1024),
        "audio": audio.astype(np.float32),
    }


def _bundle(ctx: Any, root: Path) -> Any:
    import edgesentry
    from edgesentry.export.onnx import export_bundle

    weights = ctx.shared / "reference" / "mavd" / "weights" / "saved_models" / "ap86.07"
    bundle = edgesentry.convert("mavd", weights, output=root / "mavd_bundle")
    export_bundle(bundle)
    return bundle


def _official_eager(model: Any, x: dict[str, np.ndarray]) -> Any:
    import torch

    rgb, flow = torch.from_numpy(x["rgb"]), torch.from_numpy(x["flow"])
    audio = torch.from_numpy(x["audio"])[None].expand(rgb.shape[0], -1, -1).contiguous()

    def run() -> np.ndarray:
        with torch.inference_mode():
            v, a, f = model.features(rgb, flow, audio)
            # test.py:27-29 runs each Unimodal net whole, so each also scores its own MIL head
            # (unused by the fused score)
            for branch, feat in ((model.v_model, v), (model.a_model, a), (model.f_model, f)):
                torch.sigmoid(branch.mil(feat))
            return torch.sigmoid(model.vaf_model(model.fuse(v, a, f))).mean(0).numpy()

    return run


def video_rows(ctx: Any, bundle: Any) -> list[Row]:
    import edgesentry

    rows: list[Row] = []
    lengths = (32, 64) if ctx.quick else (182, 1000)
    dets = {}
    for backend in ("torch", "onnxruntime"):
        for tier in ("cpu", "reference"):
            dets[f"detector {backend} + {tier} head"] = edgesentry.load(bundle.path, backend=backend, kernels=tier)
    from edgesentry.models.mavd import build_from_tensors

    model = build_from_tensors(bundle.load_tensors(), fused=False)  # the official layout, as the seed runs it
    for t in lengths:
        x = video_inputs(t)
        base = _official_eager(model, x)
        want = base()
        fns = {"torch eager (official)": base}
        extra = {"torch eager (official)": {"crops": 5, "T": t}}
        for name, det in dets.items():
            fns[name] = lambda d=det, x=x: d.predict(x)
            extra[name] = {"max_abs_vs_eager": float(np.abs(det.predict(x).extras["snippet_scores"] - want).max())}
        # all implementations in alternating blocks: their ratios do not carry the VM's drift
        long = t > 200 or ctx.quick
        timings = measure_interleaved(fns, rounds=2 if long else 10, block=1 if long else 3,
                                      min_time=0.0 if long else 6.0)
        rows += [Row("mavd", "video", name, f"5x{t}", timings[name], extra=extra[name]) for name in fns]
    add_speedups(rows, "torch eager (official)", "vs eager")
    return rows


def align_fuse_rows(ctx: Any, bundle: Any) -> list[Row]:
    import torch

    from edgesentry.detectors.mavd import head_params
    from edgesentry.kernels import mavd as kernels
    from edgesentry.models.mavd import build_from_tensors

    tensors = bundle.load_tensors()
    params = head_params(tensors)
    model = build_from_tensors(tensors)
    rows: list[Row] = []
    for t in (32,) if ctx.quick else (182, 1000):
        rng = np.random.default_rng(t)
        n = 5 * t
        v = np.maximum(rng.standard_normal((n, 128)), 0).astype(np.float32)
        a = rng.standard_normal((t, 32)).astype(np.float32)  # one audio stream, broadcast to the crops
        f = np.maximum(rng.standard_normal((n, 64)), 0).astype(np.float32)
        vt, at, ft = (torch.from_numpy(z) for z in (v.reshape(5, t, 128), a[None], f.reshape(5, t, 64)))

        def eager(vt: Any = vt, at: Any = at, ft: Any = ft, n: int = n) -> np.ndarray:
            with torch.inference_mode():
                return model.vaf_model.embedding(model.fuse(vt, at, ft)).reshape(n, 64).numpy()

        want = kernels.reference.align_fuse(v, a, f, params)
        fns = {"torch eager": eager}
        errors = {"torch eager": rel_err(eager(), want)}
        for tier in ("reference", "cpu"):
            out = np.empty((n, 64), np.float32)
            fns[f"kernel {tier}"] = lambda tr=tier, v=v, a=a, f=f, o=out: kernels.align_fuse(
                v, a, f, params, out=o, tier=tr)
            errors[f"kernel {tier}"] = rel_err(kernels.align_fuse(v, a, f, params, tier=tier)[0], want)
        # alternating blocks after a pause: the float64 reference's multi-threaded BLAS leaves
        # OpenBLAS workers spinning for ~0.1 s, which took the second core from the next row
        timings = measure_interleaved(fns, rounds=3 if ctx.quick else 8, block=10, pause=0.15)
        rows += [Row("mavd", "align_fuse", name, f"{n} rows", timings[name], extra={"rel_err": errors[name]})
                 for name in fns]
    add_speedups(rows, "torch eager", "vs eager")
    return rows


def positional_rows(ctx: Any) -> list[Row]:
    import torch

    from edgesentry.kernels import mavd as kernels
    from edgesentry.models.mavd import positional_matrix

    t = 200 if ctx.quick else 1000
    rng = np.random.default_rng(7)
    x = rng.standard_normal((40, t, 64)).astype(np.float32)
    xt = torch.from_numpy(x)

    def torch_matrix() -> np.ndarray:
        with torch.inference_mode():
            return torch.matmul(positional_matrix(t), xt).numpy()

    want = kernels.reference.positional(x)
    out = np.empty_like(x)
    rows = [
        Row(
            "mavd",
            "positional",
            "torch T x T (official)",
            f"40x{t}x64",
            measure(torch_matrix, iters=ctx.iters),
            extra={"rel_err": rel_err(torch_matrix(), want)},
        ),
        Row(
            "mavd",
            "positional",
            "reference T x T (numpy f64)",
            f"40x{t}x64",
            measure(lambda: kernels.positional(x, tier="reference"), iters=max(2, ctx.iters // 2)),
        ),
        Row(
            "mavd",
            "positional",
            "kernel cpu O(T) scans",
            f"40x{t}x64",
            measure(lambda: kernels.positional(x, out=out, tier="cpu"), iters=ctx.iters),
            extra={"rel_err": rel_err(kernels.positional(x, tier="cpu")[0], want)},
        ),
    ]
    add_speedups(rows, "torch T x T (official)", "vs torch T x T")
    return rows


def stream_rows(ctx: Any, bundle: Any) -> list[Row]:
    """Cost of one online push (window 64) and its difference from the offline score."""
    import edgesentry

    det = edgesentry.load(bundle.path, backend="onnxruntime", kernels="cpu")
    t = 40 if ctx.quick else 120
    x = video_inputs(t, seed=3)
    offline = det.predict(x).extras["snippet_scores"]
    rows = []
    for window in (16, 64):
        stream = det.stream(window=window)
        online = np.array([stream.push(x["rgb"][:, i], x["flow"][:, i], x["audio"][i]) for i in range(t)])
        diff = np.abs(online - offline)
        stream.reset()
        for i in range(t - 1):
            stream.push(x["rgb"][:, i], x["flow"][:, i], x["audio"][i])
        timing = measure(lambda s=stream: s.push(x["rgb"][:, -1], x["flow"][:, -1], x["audio"][-1]), iters=ctx.iters)
        rows.append(
            Row(
                "mavd",
                "stream push",
                f"onnxruntime window {window}",
                f"5 crops, T={t}",
                timing,
                extra={"max_abs_vs_offline": float(diff.max()), "mean_abs_vs_offline": float(diff.mean())},
            )
        )
    return rows


def latency_rows(ctx: Any) -> list[Row]:
    import torch

    torch.set_num_threads(len(__import__("os").sched_getaffinity(0)))
    with tempfile.TemporaryDirectory() as tmp:
        bundle = _bundle(ctx, Path(tmp))
        return [
            *video_rows(ctx, bundle),
            *align_fuse_rows(ctx, bundle),
            *positional_rows(ctx),
            *stream_rows(ctx, bundle),
        ]


# ---------------------------------------------------------------------------------- sweep
SWEEP_NOTES = [
    "mavd graphs sweep: predict of one video (5 crops) per snippet count T (the dynamic axis) and backend; "
    "'auto' measures both backends per T bucket and keeps the faster.",
]


def sweep_rows(ctx: Any) -> list[Row]:
    import edgesentry

    from cases._backends import BACKENDS, backend_rows

    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        bundle = _bundle(ctx, Path(tmp))
        dets = {b: edgesentry.load(bundle.path, backend=b, kernels="cpu") for b in BACKENDS}
        for t in (32, 182, 1000):
            x = video_inputs(t)
            rows += backend_rows("mavd", "graphs: predict", f"5x{t}", dets, lambda det, x=x: det.predict(x))
    return rows


# ------------------------------------------------------------------------------ GPU cases
def _random_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    from edgesentry.kernels.mavd.reference import ALIGN_FUSE_PARAMS

    shapes = {"va": (32, 32), "vf": (64, 64), "e1": (112, 224), "e2": (64, 112)}
    out = {}
    for key in ALIGN_FUSE_PARAMS:
        layer, kind = key.split(".")
        o, i = shapes[layer[:2]]
        out[key] = (rng.standard_normal((o, i) if kind == "w" else (o,)) / np.sqrt(i)).astype(np.float32)
    return out


def _compile_all() -> dict[str, int]:
    from edgesentry.kernels._cuda import TARGET_ARCHS, compile_cubin
    from edgesentry.kernels.mavd.cuda import SOURCES

    return {arch: sum(len(compile_cubin(src, arch=arch)) for src in SOURCES.values()) for arch in TARGET_ARCHS}


def gpu_cases(ctx: Any) -> list[Any]:
    import importlib

    from gpu_check import GpuCase, shared_reference

    from edgesentry.kernels.mavd import reference

    cases = []
    rng = np.random.default_rng(11)
    params = _random_params(rng)
    af_sizes = [(37, 37)] if ctx.smoke else [(910, 182), (5000, 1000), (5 * 2**16, 2**16)]
    pos_sizes = [(2, 9, 70)] if ctx.smoke else [(40, 1000, 64), (40, 2000, 64), (20, 1000, 16)]
    names = list(params)
    for n, m in af_sizes:
        v = np.maximum(rng.standard_normal((n, 128)), 0).astype(np.float32)
        a = rng.standard_normal((m, 32)).astype(np.float32)
        f = np.maximum(rng.standard_normal((n, 64)), 0).astype(np.float32)
        ref = shared_reference(lambda v=v, a=a, f=f: reference.align_fuse(v, a, f, params))
        flops = 2.0 * n * (3 * 32 * 32 + 3 * 64 * 64 + 224 * 112 + 112 * 64)
        for tier in ("triton", "cuda"):
            fn = importlib.import_module(f"edgesentry.kernels.mavd.{tier}").align_fuse
            for mode in ctx.modes(tier):
                dv, da, df, *dp = ctx.on(mode, [v, a, f, *params.values()])
                weights = dict(zip(names, dp))
                cases.append(GpuCase(
                    kernel="mavd_align_fuse", tier=tier, mode=mode, size=f"{n} rows (audio {m})",
                    run=lambda fn=fn, dv=dv, da=da, df=df, dp=weights: fn(dv, da, df, dp),
                    reference=ref, bytes_moved=4.0 * (n * (128 + 64 + 64) + m * 32), flops=flops,
                    atol=5e-5, rtol=5e-5, notes={"seed": 11},
                    compile=_compile_all if tier == "cuda" else None,
                    estimate_s=(4.0 if tier == "triton" else 2.0) + n / 1e5,
                ))
    for b, t, c in pos_sizes:
        x = rng.standard_normal((b, t, c)).astype(np.float32)
        ref = shared_reference(lambda x=x: reference.positional(x))
        for tier in ("triton", "cuda"):
            fn = importlib.import_module(f"edgesentry.kernels.mavd.{tier}").positional
            for mode in ctx.modes(tier):
                (dx,) = ctx.on(mode, [x])
                cases.append(GpuCase(
                    kernel="mavd_positional", tier=tier, mode=mode, size=f"{b}x{t}x{c}",
                    run=lambda fn=fn, dx=dx: fn(dx), reference=ref,
                    bytes_moved=4.0 * b * t * c * 4, flops=8.0 * b * t * c,
                    atol=1e-5, rtol=1e-5, notes={"seed": 11, "T x T flops": 2.0 * b * t * t * c},
                    compile=_compile_all if tier == "cuda" else None,
                    estimate_s=3.0 if tier == "triton" else 1.5,
                ))
    return cases
