"""GPU check cases of the RX kernels (Triton and CUDA tiers); see ``benchmarks/gpu_check.py``.

Inputs are fresh synthetic cubes each run (a few smooth "endmember" spectra mixed with
random abundances plus noise, float32, like a radiance cube: strongly correlated bands, so
the covariance is ill-conditioned as on the ABU scenes). The seed is in each case's notes.
``gpu_check`` is imported lazily so that ``benchmarks/latency.py``, which imports every
module here, does not depend on it; the RX latency rows live in ``cases/rx.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgesentry.kernels.rx import reference

TIERS = ("triton", "cuda")


def synthetic_cube(rng: np.random.Generator, h: int, w: int, b: int, endmembers: int = 6) -> np.ndarray:
    """(h, w, b) float32 cube: smooth spectra x random abundances + 1% noise + a few anomalies."""
    grid = np.linspace(0.0, 1.0, b)
    centres = rng.uniform(0.0, 1.0, endmembers)
    spectra = np.exp(-((grid[None, :] - centres[:, None]) ** 2) / 0.05) + 0.2  # (e, b)
    abundance = rng.dirichlet(np.ones(endmembers), size=h * w)  # (n, e)
    cube = abundance @ spectra * 1000.0
    cube += rng.normal(scale=10.0, size=cube.shape)
    hits = rng.choice(h * w, size=max(1, h * w // 200), replace=False)
    cube[hits] += rng.normal(scale=200.0, size=(hits.size, b))
    return cube.reshape(h, w, b).astype(np.float32)


def _compile_all() -> dict[str, int]:
    from edgesentry.kernels._cuda import TARGET_ARCHS
    from edgesentry.kernels.rx import cuda

    return {arch: sum(len(c) for c in cuda.compile_all(arch).values()) for arch in TARGET_ARCHS}


def _tier_fn(kernel: str, tier: str) -> Any:
    import importlib

    return getattr(importlib.import_module(f"edgesentry.kernels.rx.{tier}"), kernel)


def _global_cases(ctx: Any, label: str, cubes: list[np.ndarray], seed: int) -> list[Any]:
    from gpu_check import GpuCase, shared_reference

    pixels = [c.reshape(-1, c.shape[-1]) for c in cubes]
    n, b = pixels[0].shape
    count = len(pixels)

    def ref() -> np.ndarray:
        outs = [reference.global_rx(p) for p in pixels]
        return outs[0] if count == 1 else np.stack(outs)

    ref = shared_reference(ref)
    notes: dict[str, Any] = {"seed": seed}
    if count > 1:
        notes["batch"] = f"{count} scenes, one call each (no batched kernel yet)"
    cases = []
    for tier in TIERS:
        fn = _tier_fn("global_rx", tier)
        for mode in ctx.modes(tier):
            inputs = ctx.on(mode, pixels)

            def run(fn: Any = fn, inputs: tuple = inputs) -> Any:
                outs = [fn(x, ridge=0.0, rcond=reference.DEFAULT_RCOND) for x in inputs]
                return outs[0] if len(outs) == 1 else _stack(outs)

            cases.append(GpuCase(
                kernel="global_rx", tier=tier, mode=mode, size=label, run=run, reference=ref,
                # pass A, pass B and the Mahalanobis pass each read X once; the scores are written once
                bytes_moved=count * (3 * n * b * pixels[0].itemsize + 8 * n),
                # Gram (full B x B tile grid) + projection on at most B kept eigenvectors
                flops=count * 4.0 * n * b * b,
                atol=1e-6, rtol=1e-6, notes=notes,
                compile=_compile_all if tier == "cuda" else None,
                estimate_s=(5.0 if tier == "triton" else 2.0) + 0.2 * count,
            ))
    return cases


def _stack(outs: list[Any]) -> Any:
    if hasattr(outs[0], "detach"):
        import torch

        return torch.stack(outs)
    return np.stack([np.asarray(o) for o in outs])


def _local_cases(ctx: Any, label: str, cube: np.ndarray, window: tuple[int, int], seed: int,
                 slow_reference: bool) -> list[Any]:
    from gpu_check import GpuCase, shared_reference

    from edgesentry.kernels.rx import cpu

    inner, outer = window
    h, w, b = cube.shape
    notes: dict[str, Any] = {"seed": seed, "window": f"{inner},{outer}"}
    if slow_reference and cpu.unavailable_reason() is None:
        # The per-pixel numpy reference takes about a minute at this size; the compiled CPU
        # tier is tested equal to it within 1e-9 relative (tests/rx), so it stands in here.
        ref = shared_reference(lambda: cpu.local_rx(cube, inner=inner, outer=outer))
        notes["reference"] = "cpu tier (== reference within 1e-9 rel)"
    else:
        ref = shared_reference(lambda: reference.local_rx(cube, inner=inner, outer=outer))
    channels = b + b * (b + 1) // 2
    cases = []
    for tier in TIERS:
        fn = _tier_fn("local_rx", tier)
        for mode in ctx.modes(tier):
            (x,) = ctx.on(mode, [cube])
            cases.append(GpuCase(
                kernel="local_rx", tier=tier, mode=mode, size=label,
                run=lambda fn=fn, x=x: fn(x, inner=inner, outer=outer, ridge=0.0, rcond=reference.DEFAULT_RCOND),
                reference=ref,
                # each image row enters and leaves the running sums (C channels per pixel), the ring
                # moments are written and factored in place
                bytes_moved=8.0 * (4 * h * w * b + 3 * h * w * channels),
                # per pixel: Cholesky B^3/3 + forward solve B^2 + covariance assembly B^2
                flops=h * w * (b**3 / 3.0 + 2.0 * b * b),
                atol=1e-6, rtol=1e-6, notes=notes,
                compile=_compile_all if tier == "cuda" else None,
                estimate_s=15.0 if tier == "triton" else 4.0,
            ))
    return cases


def gpu_cases(ctx: Any) -> list[Any]:
    """RX global/local x {triton, cuda} x modes x sizes (tiny under ``ctx.smoke``)."""
    seed = int(np.random.SeedSequence().entropy % 2**31)
    rng = np.random.default_rng(seed)
    if ctx.smoke:
        return (_global_cases(ctx, "16x16x8", [synthetic_cube(rng, 16, 16, 8)], seed)
                + _local_cases(ctx, "10x10x4 w(1,5)", synthetic_cube(rng, 10, 10, 4), (1, 5), seed, False))
    return (_global_cases(ctx, "100x100x205", [synthetic_cube(rng, 100, 100, 205)], seed)
            + _global_cases(ctx, "150x150x188", [synthetic_cube(rng, 150, 150, 188)], seed)
            + _global_cases(ctx, "16x64x64x200", [synthetic_cube(rng, 64, 64, 200) for _ in range(16)], seed)
            + _local_cases(ctx, "40x40x205 w(5,21)", synthetic_cube(rng, 40, 40, 205), (5, 21), seed, True))
