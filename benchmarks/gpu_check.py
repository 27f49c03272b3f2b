"""GPU check: compile every Triton and CUDA kernel, check it against the reference, time it.

    python benchmarks/gpu_check.py                 # on a GPU machine (< 8 minutes)
    TRITON_INTERPRET=1 python benchmarks/gpu_check.py --smoke   # CPU smoke test (CI)

First measures the device's copy bandwidth (device-to-device memcpy), then for each case
(kernel x tier x size) from ``benchmarks/cases/<family>.py::gpu_cases(ctx)``: runs the
tier on fresh random inputs, compares with the numpy reference (max abs / rel error),
times it with CUDA events (median of repeats) and reports achieved GB/s or GFLOP/s and the
percentage of the measured copy ceiling. Without a GPU, Triton kernels run on the
interpreter at tiny sizes and CUDA kernels are compiled (NVRTC) for sm_87 and sm_90 only.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


@dataclass
class Context:
    gpu: bool
    smoke: bool
    repeats: int


@dataclass
class GpuCase:
    """One kernel x tier x size. ``run`` returns the output; ``reference`` the expected one."""

    kernel: str
    tier: str
    size: str
    run: Callable[[], Any]
    reference: Callable[[], np.ndarray]
    bytes_moved: float | None = None
    flops: float | None = None
    atol: float = 1e-4
    rtol: float = 1e-4
    notes: dict[str, Any] = field(default_factory=dict)
    #: cuda tier without a GPU: compile for every target arch, return {arch: cubin bytes}
    compile: Callable[[], dict[str, int]] | None = None


@dataclass
class CaseResult:
    kernel: str
    tier: str
    size: str
    status: str
    max_abs: float | None = None
    max_rel: float | None = None
    median_ms: float | None = None
    gbps: float | None = None
    gflops: float | None = None
    pct_ceiling: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def copy_bandwidth_gbps() -> float | None:
    """Device-to-device copy bandwidth (read + write bytes / time), the roofline ceiling."""
    import torch

    if not torch.cuda.is_available():
        return None
    n = 256 * 2**20
    src = torch.empty(n, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    ms = cuda_time_ms(lambda: dst.copy_(src), repeats=20)
    return 2 * n / (ms * 1e-3) / 1e9


def cuda_time_ms(fn: Callable[[], Any], repeats: int) -> float:
    import torch

    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def check_case(case: GpuCase, ctx: Context, ceiling: float | None) -> CaseResult:
    if case.tier == "cuda" and not ctx.gpu:
        if case.compile is None:
            return CaseResult(case.kernel, case.tier, case.size, "SKIP no GPU")
        try:
            sizes = case.compile()
        except Exception as exc:
            return CaseResult(case.kernel, case.tier, case.size, f"ERROR compile: {str(exc)[:120]}")
        built = ", ".join(f"{arch} {n} B" for arch, n in sizes.items())
        return CaseResult(case.kernel, case.tier, case.size, f"COMPILED ({built})")
    try:
        got = np.asarray(to_numpy(case.run()), dtype=np.float64)
        want = np.asarray(case.reference(), dtype=np.float64)
    except Exception as exc:  # report and go on: one broken kernel must not hide the rest
        return CaseResult(case.kernel, case.tier, case.size, f"ERROR {type(exc).__name__}: {str(exc)[:120]}")
    if got.shape != want.shape:
        return CaseResult(case.kernel, case.tier, case.size, f"FAIL shape {got.shape} != {want.shape}")
    diff = np.abs(got - want)
    max_abs = float(np.nanmax(diff)) if diff.size else 0.0
    max_rel = float(np.nanmax(diff / np.maximum(np.abs(want), 1e-30))) if diff.size else 0.0
    finite_ok = bool(np.array_equal(np.isfinite(got), np.isfinite(want)))
    ok = finite_ok and bool(np.all(diff[np.isfinite(want)] <= case.atol + case.rtol * np.abs(want[np.isfinite(want)])))
    result = CaseResult(case.kernel, case.tier, case.size, "PASS" if ok else "FAIL", max_abs, max_rel, notes=case.notes)
    if ctx.gpu:
        result.median_ms = cuda_time_ms(case.run, ctx.repeats)
        secs = result.median_ms * 1e-3
        if case.bytes_moved:
            result.gbps = case.bytes_moved / secs / 1e9
            if ceiling:
                result.pct_ceiling = 100 * result.gbps / ceiling
        if case.flops:
            result.gflops = case.flops / secs / 1e9
    return result


def table(results: list[CaseResult], ceiling: float | None) -> str:
    lines = [f"copy ceiling: {ceiling:.0f} GB/s" if ceiling else "copy ceiling: n/a (no GPU)", "",
             "| kernel | tier | size | status | max abs | max rel | median ms | GB/s | GFLOP/s | % ceiling |",
             "|" + "---|" * 10]

    def f(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    for r in results:
        lines.append(
            f"| {r.kernel} | {r.tier} | {r.size} | {r.status} | {f(r.max_abs, '.2e')} | {f(r.max_rel, '.2e')} | "
            f"{f(r.median_ms, '.4f')} | {f(r.gbps, '.1f')} | {f(r.gflops, '.1f')} | {f(r.pct_ceiling, '.1f')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CPU interpreter smoke test)")
    parser.add_argument("--only", nargs="*", help="families to run (default: all)")
    parser.add_argument("--json", default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)
    try:
        import torch

        gpu = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
    except ImportError:
        gpu = False
    ctx = Context(gpu=gpu, smoke=args.smoke or not gpu, repeats=20 if gpu else 1)
    ceiling = copy_bandwidth_gbps() if gpu else None
    results: list[CaseResult] = []
    names = sorted(p.stem for p in (HERE / "cases").glob("*.py") if not p.stem.startswith("_"))
    start = time.perf_counter()
    for name in names:
        if args.only and name not in args.only:
            continue
        module = importlib.import_module(f"cases.{name}")
        if not hasattr(module, "gpu_cases"):
            continue
        try:
            cases = module.gpu_cases(ctx)
        except Exception:
            print(f"{name}: building cases FAILED\n{traceback.format_exc()}")
            results.append(CaseResult(name, "-", "-", "ERROR building cases"))
            continue
        for case in cases:
            results.append(check_case(case, ctx, ceiling))
            print(f"  {case.kernel} {case.tier} {case.size}: {results[-1].status}", flush=True)
    print(table(results, ceiling))
    print(f"\n{'GPU' if gpu else 'CPU smoke'} run, {len(results)} cases, {time.perf_counter() - start:.1f}s")
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in results], indent=2, default=str))
    failed = [r for r in results if not r.status.startswith(("PASS", "COMPILED", "SKIP"))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
