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


def _device_input(x: np.ndarray, tier: str, gpu: bool) -> Any:
    """What each tier is timed on: Triton takes CUDA tensors (no copies in the timing);
    the CUDA tier takes host arrays (its timing includes the copies and the host eigh)."""
    if tier == "triton" and gpu:
        import torch

        return torch.from_numpy(x).cuda()
    return x


def _tier_fn(kernel: str, tier: str) -> Any:
    import importlib

    return getattr(importlib.import_module(f"edgesentry.kernels.rx.{tier}"), kernel)


def _global_case(ctx: Any, tier: str, label: str, cubes: list[np.ndarray], seed: int) -> Any:
    from gpu_check import GpuCase

    pixels = [c.reshape(-1, c.shape[-1]) for c in cubes]
    inputs = [_device_input(p, tier, ctx.gpu) for p in pixels]
    n, b = pixels[0].shape
    fn = _tier_fn("global_rx", tier)

    def run() -> Any:
        outs = [fn(x, ridge=0.0, rcond=reference.DEFAULT_RCOND) for x in inputs]
        return outs[0] if len(outs) == 1 else _stack(outs)

    def ref() -> np.ndarray:
        outs = [reference.global_rx(p) for p in pixels]
        return outs[0] if len(outs) == 1 else np.stack(outs)

    count = len(pixels)
    notes: dict[str, Any] = {"seed": seed}
    if count > 1:
        notes["batch"] = f"{count} scenes, one call each (no batched kernel yet)"
    return GpuCase(
        kernel="global_rx", tier=tier, size=label, run=run, reference=ref,
        # pass A, pass B and the Mahalanobis pass each read X once; the scores are written once
        bytes_moved=count * (3 * n * b * pixels[0].itemsize + 8 * n),
        # Gram (full B x B tile grid) + projection on at most B kept eigenvectors
        flops=count * 4.0 * n * b * b,
        atol=1e-6, rtol=1e-6, notes=notes,
        compile=_compile_all if tier == "cuda" else None,
    )


def _stack(outs: list[Any]) -> Any:
    if hasattr(outs[0], "detach"):
        import torch

        return torch.stack(outs)
    return np.stack(outs)


def _local_case(ctx: Any, tier: str, label: str, cube: np.ndarray, window: tuple[int, int],
                seed: int, slow_reference: bool) -> Any:
    from gpu_check import GpuCase

    inner, outer = window
    x = _device_input(cube, tier, ctx.gpu)
    h, w, b = cube.shape
    fn = _tier_fn("local_rx", tier)
    notes: dict[str, Any] = {"seed": seed, "window": f"{inner},{outer}"}
    from edgesentry.kernels.rx import cpu

    if slow_reference and cpu.unavailable_reason() is None:
        # The per-pixel numpy reference takes about a minute at this size; the compiled CPU
        # tier is tested equal to it within 1e-9 relative (tests/rx), so it stands in here.

        def ref() -> np.ndarray:
            return cpu.local_rx(cube, inner=inner, outer=outer)

        notes["reference"] = "cpu tier (== reference within 1e-9 rel)"
    else:

        def ref() -> np.ndarray:
            return reference.local_rx(cube, inner=inner, outer=outer)

    channels = b + b * (b + 1) // 2
    return GpuCase(
        kernel="local_rx", tier=tier, size=label,
        run=lambda: fn(x, inner=inner, outer=outer, ridge=0.0, rcond=reference.DEFAULT_RCOND),
        reference=ref,
        # integral images written and scanned twice, then 8 corners per channel per pixel
        bytes_moved=8.0 * ((h + 1) * (w + 1) * channels * 3 + h * w * 8 * channels),
        # per pixel: Cholesky B^3/3 + forward solve B^2 + covariance assembly 8 B^2
        flops=h * w * (b**3 / 3.0 + 9.0 * b * b),
        atol=1e-6, rtol=1e-6, notes=notes,
        compile=_compile_all if tier == "cuda" else None,
    )


def gpu_cases(ctx: Any) -> list[Any]:
    """RX global/local x {triton, cuda} x sizes (tiny under ``ctx.smoke``)."""
    seed = int(np.random.SeedSequence().entropy % 2**31)
    rng = np.random.default_rng(seed)
    cases: list[Any] = []
    if ctx.smoke:
        g = synthetic_cube(rng, 16, 16, 8)
        loc = synthetic_cube(rng, 10, 10, 4)
        for tier in TIERS:
            cases.append(_global_case(ctx, tier, "16x16x8", [g], seed))
            cases.append(_local_case(ctx, tier, "10x10x4 w(1,5)", loc, (1, 5), seed, slow_reference=False))
        return cases
    g100 = synthetic_cube(rng, 100, 100, 205)
    g150 = synthetic_cube(rng, 150, 150, 188)
    batch = [synthetic_cube(rng, 64, 64, 200) for _ in range(16)]
    loc = synthetic_cube(rng, 40, 40, 205)
    for tier in TIERS:
        cases.append(_global_case(ctx, tier, "100x100x205", [g100], seed))
        cases.append(_global_case(ctx, tier, "150x150x188", [g150], seed))
        cases.append(_global_case(ctx, tier, "16x64x64x200", batch, seed))
        cases.append(_local_case(ctx, tier, "40x40x205 w(5,21)", loc, (5, 21), seed, slow_reference=True))
    return cases
