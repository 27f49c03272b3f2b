"""CLIP-MDMF rows: the fused soft-OTAM kernel per tier vs the seed's loop formulation, and
per-episode latency (5-way 1-shot / 5-shot, one query per class) per graph backend.

Baselines of the OTAM rows (same inputs, same process):

- ``official loops (torch)``: the seed's formulation as it runs there: float32 torch ops, a
  Python double loop over the DP cells with indexed writes into [Q, N] slices, four calls
  (2 views x 2 directions) after a torch cosine-distance matmul (written from the brief's
  description, not copied);
- ``official loops (numpy)``: the same loops in numpy (``kernels/otam/reference.fuse_official``),
  a faster host baseline than torch's per-op dispatch.

Episode rows use seeded random heads at the real width D = 1024 (features in: the heads,
the prompt selector and the kernel; the visual tower is timed separately per clip of 8 frames
at 224 px with random RN50 weights, full runs only: it is ~33 GFLOP per clip).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from _harness import Row, add_speedups, measure, race, rel_err

NOTES = [
    "mdmf otam: speedup = p50 of the named baseline / p50 of the row; inputs Q x N pairs, T = 8, two views.",
    "mdmf episode: 5 queries (one per class); support side = both views per shot + prototypes, query side = "
    "prompt selector + both views + fused OTAM. Random heads at D = 1024 (no MDMF weights are published).",
]


# ------------------------------------------------------------------------ baselines
def official_torch(z_local: Any, p_local: Any, z_global: Any, p_global: Any, lam: float = 0.5,
                   eps: float = 0.01) -> tuple[Any, Any]:
    """The seed's float32 formulation in torch: cosine matmul + 4 loop DPs without max-subtraction."""
    import torch

    def cos_dist(z: Any, p: Any) -> Any:
        dots = torch.einsum("qid,njd->qnij", z, p)
        den = z.norm(dim=-1)[:, None, :, None] * p.norm(dim=-1)[None, :, None, :] + eps
        return 1 - dots / den

    def otam(d: Any) -> Any:
        d = torch.nn.functional.pad(d, (1, 1))
        cum = torch.zeros_like(d)
        cum[:, :, 0, :] = torch.cumsum(d[:, :, 0, :], dim=-1)
        rows, cols = d.shape[-2], d.shape[-1]
        for r in range(1, rows):
            cum[:, :, r, 1] = d[:, :, r, 1] - lam * torch.log(
                torch.exp(-cum[:, :, r - 1, 0] / lam) + torch.exp(-cum[:, :, r - 1, 1] / lam)
                + torch.exp(-cum[:, :, r, 0] / lam))
            for m in range(2, cols - 1):
                cum[:, :, r, m] = d[:, :, r, m] - lam * torch.log(
                    torch.exp(-cum[:, :, r - 1, m - 1] / lam) + torch.exp(-cum[:, :, r, m - 1] / lam))
            cum[:, :, r, -1] = d[:, :, r, -1] - lam * torch.log(
                torch.exp(-cum[:, :, r - 1, -2] / lam) + torch.exp(-cum[:, :, r - 1, -1] / lam)
                + torch.exp(-cum[:, :, r, -2] / lam))
        return cum[:, :, -1, -1]

    with torch.inference_mode():
        parts = []
        for z, p in ((z_local, p_local), (z_global, p_global)):
            delta = cos_dist(z, p)
            parts += [otam(delta), otam(delta.transpose(-1, -2))]
        dists = torch.stack(parts)
        return dists, -(dists[0] + dists[1] + dists[2] + dists[3])


# ------------------------------------------------------------------------ OTAM rows
def _views(rng: np.random.Generator, q: int, n: int, t: int, d: int) -> list[np.ndarray]:
    return [rng.standard_normal((b, t, d)).astype(np.float32) for b in (q, n, q, n)]


def _otam_rows(ctx: Any) -> list[Row]:
    import torch

    from edgesentry.kernels import otam
    from edgesentry.kernels.otam import reference as ref

    rows: list[Row] = []
    rng = np.random.default_rng(0)
    sizes = [(5, 5, 8, 1024), (5, 5, 8, 256)] + ([] if ctx.quick else [(25, 100, 8, 1024)])
    for q, n, t, d in sizes:
        args = _views(rng, q, n, t, d)
        size = f"Q{q} N{n} T{t} D{d}"
        _, want = ref.fuse_reference(*args)
        targs = [torch.from_numpy(a) for a in args]
        slow = {"warmup": 1, "iters": max(3, ctx.iters // 3), "track_memory": False}
        rows.append(Row("mdmf", "otam", "official loops (torch)", size,
                        measure(lambda targs=targs: official_torch(*targs), **slow),
                        extra={"rel_err_vs_ref": rel_err(official_torch(*targs)[1].numpy(), want)}))
        rows.append(Row("mdmf", "otam", "official loops (numpy)", size,
                        measure(lambda args=args: ref.fuse_official(*args), **slow),
                        extra={"rel_err_vs_ref": rel_err(ref.fuse_official(*args)[1], want)}))
        rows.append(Row("mdmf", "otam", "reference (float64 stable)", size,
                        measure(lambda args=args: ref.fuse_reference(*args), **slow)))
        for tier in ("cpu", "triton", "cuda"):
            try:
                fn = otam.FUSE.load(tier)
            except Exception:  # tier cannot run here (no GPU): no row
                continue
            if tier == "triton" and not torch.cuda.is_available():
                continue  # the interpreter is a correctness tool, not a timing
            iters = max(ctx.iters, 20)
            out = fn(*args)
            rows.append(Row("mdmf", "otam", tier, size, measure(lambda fn=fn, args=args: fn(*args), iters=iters),
                            extra={"rel_err_vs_ref": rel_err(np.asarray(out[1]), want)}))
        frames = np.stack([args[0].reshape(q * t, d), args[2].reshape(q * t, d)])
        protos_t = np.ascontiguousarray(np.stack([args[1].reshape(n * t, d).T, args[3].reshape(n * t, d).T]))
        rows.append(Row("mdmf", "otam", "sgemm floor", size,
                        measure(lambda f=frames, p=protos_t: np.matmul(f, p), iters=max(ctx.iters, 20)),
                        extra={"what": "numpy float32 [QT, D] x [D, NT], both views: the frame-similarity GEMM"}))
    add_speedups(rows, "official loops (torch)", "vs torch loops")
    add_speedups(rows, "official loops (numpy)", "vs numpy loops")
    add_speedups(rows, "sgemm floor", "vs sgemm floor")
    return rows


# --------------------------------------------------------------------- episode rows
def _heads_bundle(tmp: Path, d: int, export: bool) -> Path:
    import torch

    from edgesentry.bundle import Bundle
    from edgesentry.detectors import mdmf
    from edgesentry.models import mdmf as M

    torch.manual_seed(0)
    model = M.MDMF(M.MDMFConfig(dim=d, visual=None, text=None))
    torch.save(M.canonical_state_dict(model), tmp / "heads.pt")
    bundle = mdmf.convert(tmp / "heads.pt", output=tmp / f"heads{d}")
    if export:
        from edgesentry.export.onnx import export_bundle

        export_bundle(Bundle.open(bundle.path))
    return bundle.path


def _episode_rows(ctx: Any) -> list[Row]:
    import edgesentry

    rows: list[Row] = []
    d = 1024
    with tempfile.TemporaryDirectory() as tmp:
        path = _heads_bundle(Path(tmp), d, export=True)
        rng = np.random.default_rng(1)
        for shots in (1, 5):
            n = 5
            query = rng.standard_normal((n, 8, d)).astype(np.float32)
            support = rng.standard_normal((n * shots, 8, d)).astype(np.float32)
            labels = np.repeat(np.arange(n), shots)
            text = rng.standard_normal((n, d)).astype(np.float32)
            size = f"5-way {shots}-shot D{d}"
            ref_logits = None
            episode = (query, support, labels, text)
            for backend in ("torch", "onnxruntime", "auto"):
                det = edgesentry.load(path, backend=backend, kernels="cpu")
                out = det.classify_features(*episode).extras["logits"]
                ref_logits = out if ref_logits is None else ref_logits
                rows.append(Row("mdmf", "episode (features in)", backend, size,
                                measure(lambda det=det, ep=episode: det.classify_features(*ep),
                                        iters=ctx.iters, track_memory=False),
                                extra={"rel_err_vs_torch": rel_err(out, ref_logits)}))
                gallery = det.gallery()
                for c in range(n):
                    gallery.enroll(f"c{c}", list(support[labels == c]), prompt=text[c])
                rows.append(Row("mdmf", "query vs enrolled gallery", backend, size,
                                measure(lambda det=det, g=gallery, q1=list(query[:1]): det.classify(q1, g),
                                        iters=ctx.iters, track_memory=False)))
    return rows


def _visual_rows(ctx: Any) -> list[Row]:
    """RN50 visual tower on one 8-frame clip at 224 px, torch vs ONNX Runtime (random weights)."""
    import torch

    from edgesentry.bundle import Bundle
    from edgesentry.detectors import mdmf
    from edgesentry.models import mdmf as M

    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = M.MDMF(M.MDMFConfig(text=None))
        torch.save(M.canonical_state_dict(model), Path(tmp) / "full.pt")
        del model
        bundle = mdmf.convert(Path(tmp) / "full.pt", output=Path(tmp) / "rn50")
        from edgesentry.export.onnx import export_bundle

        export_bundle(Bundle.open(bundle.path))
        frames = np.random.default_rng(0).uniform(0, 1, (1, 8, 3, 224, 224)).astype(np.float32)
        base = None
        for backend in ("torch", "onnxruntime"):
            det = mdmf.from_bundle(Bundle.open(bundle.path), backend=backend)
            out = det.visual(frames)
            base = out if base is None else base
            rows.append(Row("mdmf", "RN50 visual, 1 clip", backend, "8x3x224x224",
                            measure(lambda det=det: det.visual(frames), warmup=1, iters=3, track_memory=False),
                            extra={"rel_err_vs_torch": rel_err(out, base)}))
    return rows


def latency_rows(ctx: Any) -> list[Row]:
    rows = _otam_rows(ctx) + _episode_rows(ctx)
    if not ctx.quick:
        rows += _visual_rows(ctx)
    return rows


# ---------------------------------------------------------------------------------- sweep
SWEEP_NOTES = [
    "mdmf otam sweep: queries Q x gallery N at T = 8 and D; 'cpu' decides its threads by the work, the forced "
    "1- and all-thread runs are its paths; 'sgemm floor' = numpy's float32 matmul of both views' frames "
    "([Q T, D] x [D, N T], twice; BLAS threads as they come, and on one thread: the faster is the floor), the "
    "frame-similarity GEMM no implementation can skip; the seed's torch loops up to 2500 pairs.",
    "mdmf graphs sweep: classify Q query clips (features in, random heads D = 1024) against an enrolled 5-way "
    "1-shot gallery, and one 5-way 1-shot episode (classify_features), per backend; 'auto' measures both "
    "graphs per batch bucket on its first call and keeps the faster.",
]

OTAM_SWEEP = [(1, 5, 256), (5, 5, 1024), (1, 100, 1024), (25, 100, 1024), (64, 100, 512), (5, 500, 1024),
              (64, 500, 256), (16, 500, 1024)]


def _otam_sweep(ctx: Any) -> list[Row]:
    import torch

    from edgesentry.kernels import _cpu_otam
    from edgesentry.kernels.otam import cpu

    rows: list[Row] = []
    rng = np.random.default_rng(0)
    team = _cpu_otam.max_threads()
    for q, n, d in OTAM_SWEEP:
        args = _views(rng, q, n, 8, d)
        frames = np.stack([args[0].reshape(q * 8, d), args[2].reshape(q * 8, d)])
        protos_t = np.ascontiguousarray(np.stack([args[1].reshape(n * 8, d).T, args[3].reshape(n * 8, d).T]))
        impls: dict[str, tuple[Any, ...]] = {
            "cpu": ("auto", lambda a=args: cpu.fuse(*a)),
            "cpu 1 thread": ("path", lambda a=args: cpu.fuse(*a, threads=1)),
            f"cpu {team} threads": ("path", lambda a=args: cpu.fuse(*a, threads=team)),
            "sgemm floor": ("floor", lambda f=frames, p=protos_t: np.matmul(f, p)),
            "sgemm floor (1 thread)": ("floor", lambda f=frames, p=protos_t: _one_blas_thread(lambda: np.matmul(f, p))),
        }
        if q * n <= 2500:
            targs = [torch.from_numpy(a) for a in args]
            impls["official loops (torch)"] = ("peer", lambda t=targs: official_torch(*t))
        rows += race("mdmf", "otam", f"Q{q} N{n} T8 D{d}", impls, rounds=3 if q * n < 10000 else 2, pause=0.05)
    return rows


def _one_blas_thread(fn: Any) -> Any:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return fn()


def _graph_sweep(ctx: Any) -> list[Row]:
    import edgesentry

    from cases._backends import BACKENDS, backend_rows

    rows: list[Row] = []
    d = 1024
    rng = np.random.default_rng(1)
    query = rng.standard_normal((25, 8, d)).astype(np.float32)
    support = rng.standard_normal((5, 8, d)).astype(np.float32)
    text = rng.standard_normal((5, d)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = _heads_bundle(Path(tmp), d, export=True)
        dets = {b: edgesentry.load(path, backend=b, kernels="cpu") for b in BACKENDS}
        galleries = {}
        for b, det in dets.items():
            galleries[b] = det.gallery()
            for c in range(5):
                galleries[b].enroll(f"c{c}", [support[c]], prompt=text[c])
        episode = (query[:5], support, np.arange(5), text)
        rows += backend_rows("mdmf", "graphs: 5-way 1-shot episode", f"D{d}", dets,
                             lambda det, ep=episode: det.classify_features(*ep))
        for q in (1, 5, 25):
            rows += backend_rows("mdmf", "graphs: classify vs gallery", f"Q{q} vs 5-way 1-shot D{d}", dets,
                                 lambda det, q=q: det.classify(list(query[:q]), galleries[_backend_of(det, dets)]))
    return rows


def _backend_of(det: Any, dets: dict[str, Any]) -> str:
    return next(name for name, other in dets.items() if other is det)


def sweep_rows(ctx: Any) -> list[Row]:
    return _otam_sweep(ctx) + _graph_sweep(ctx)


# ------------------------------------------------------------------------- GPU cases
def _compile_all() -> dict[str, int]:
    from edgesentry.kernels._cuda import TARGET_ARCHS
    from edgesentry.kernels.otam import cuda

    return {arch: sum(len(c) for c in cuda.compile_all(arch).values()) for arch in TARGET_ARCHS}


def gpu_cases(ctx: Any) -> list[Any]:
    from gpu_check import GpuCase, shared_reference

    from edgesentry.kernels.otam import reference as ref

    sizes = [(2, 3, 8, 32)] if ctx.smoke else [(5, 5, 8, 1024), (25, 100, 8, 1024), (64, 200, 8, 1024),
                                               (8, 16, 32, 512)]
    cases = []
    for q, n, t, d in sizes:
        rng = np.random.default_rng(q * 1000 + n)
        args = _views(rng, q, n, t, d)
        label = f"Q{q} N{n} T{t} D{d}"

        def reference(args=args) -> np.ndarray:
            dists, logits = ref.fuse_reference(*args)
            return np.concatenate([dists, logits[None]])

        reference = shared_reference(reference)  # the numpy reference: ~q n T^2 of Python-level DP work
        # unique bytes: both views' queries and prototypes once, 5 outputs per pair
        nbytes = 4 * (2 * (q + n) * t * d + 5 * q * n)
        flops = 2 * 2 * q * n * t * t * d
        for tier in ("triton", "cuda"):
            for mode in ctx.modes(tier):
                cases.append(GpuCase(kernel="otam_fuse", tier=tier, mode=mode, size=label,
                                     run=_runner(tier, ctx.on(mode, args)), reference=reference, bytes_moved=nbytes,
                                     flops=flops, atol=1e-4, rtol=1e-4, notes={"seed": q * 1000 + n},
                                     compile=_compile_all if tier == "cuda" else None,
                                     estimate_s=(4.0 if tier == "triton" else 2.0) + q * n * t * t / 2e5))
    return cases


def _runner(tier: str, inputs: tuple[Any, ...]) -> Any:
    import importlib

    fn = importlib.import_module(f"edgesentry.kernels.otam.{tier}").fuse

    def run() -> Any:
        dists, logits = fn(*inputs)
        if hasattr(dists, "detach"):
            import torch

            return torch.cat([dists, logits[None]])
        return np.concatenate([np.asarray(dists), np.asarray(logits)[None]])

    return run
