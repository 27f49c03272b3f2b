"""GPU check: every Triton and CUDA kernel against its reference, timed, in one bounded run.

    python benchmarks/gpu_check.py --json gpu.json            # a GPU machine: < --budget-s (420 s)
    python benchmarks/gpu_check.py --dry-run                  # header, pre-flight and the plan only
    python benchmarks/gpu_check.py --resources                # registers / spills of every kernel (no GPU)
    TRITON_INTERPRET=1 python benchmarks/gpu_check.py --smoke # CPU smoke test (CI)

Built to survive its first run on a machine nobody has tried:

- a header with the device, driver, CUDA, NVRTC, Triton, torch and ONNX Runtime versions, and a
  pre-flight that says what the machine lacks (driver, NVRTC vs driver, a C compiler and Python
  headers for Triton's launchers, torch's CUDA build, ONNX Runtime's CUDA provider) before any
  time is spent;
- each family (``benchmarks/cases/<family>.py::gpu_cases``) in its own process, so a sticky CUDA
  fault (illegal address, launch failure) cannot turn the later families' rows into errors; a
  child that faults is restarted after the failing case, one that hangs is killed at its deadline;
- every case in ``try``: the full error text and traceback go to the JSON, the table gets its
  first line; results are written after every case, so a run killed from outside still leaves
  its rows;
- ``--budget-s``: cases whose estimated time would not fit are skipped and say so (estimates are
  guesses until a run has measured them: pass its JSON with ``--timings`` to plan with those);
- the CUDA tier timed device-to-device (inputs and outputs on the GPU, ``d2d``) and
  host-to-host (numpy in and out, copies included, ``h2h``); Triton on device tensors.

Each case runs the tier on fresh inputs, compares with the numpy reference (max abs / rel error),
and times it with CUDA events (median and 20th-80th percentiles of ``--repeats``), reporting GB/s
or GFLOP/s and the percentage of the measured device-to-device copy bandwidth. Without a GPU,
Triton kernels run on the interpreter at tiny sizes and CUDA kernels are compiled (NVRTC) for
sm_87 and sm_90 only.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: Families in the order they run (most important first, the heavy ONNX graph last).
FAMILIES = ("rx_gpu", "fers", "isstad", "mavd", "mdmf", "deploy")
#: Seconds a family process needs besides its cases (python, torch, CUDA context, NVRTC / Triton builds).
FAMILY_OVERHEAD_S = float(os.environ.get("EDGESENTRY_GPU_CHECK_OVERHEAD_S", "20"))
#: Seconds a family's process may run past its deadline (its case in flight) before it is killed.
KILL_GRACE_S = 10.0
#: Error text that means the CUDA context is gone for the rest of the process.
STICKY = ("illegal address", "ILLEGAL_ADDRESS", "unspecified launch failure", "LAUNCH_FAILED",
          "misaligned address", "MISALIGNED", "CUDA error: an illegal", "context is destroyed",
          "CUDA_ERROR_ILLEGAL_INSTRUCTION", "device-side assert")


@dataclass
class Context:
    """What ``gpu_cases(ctx)`` builds for: a GPU run, the CPU smoke run, or only the plan."""

    gpu: bool
    smoke: bool
    repeats: int
    plan_only: bool = False

    def modes(self, tier: str) -> tuple[str, ...]:
        """Where a tier's inputs and outputs live in its cases: ``d2d`` (device arrays) and, for
        the CUDA tier, ``h2h`` (numpy in and out, copies timed); ``smoke`` without a GPU."""
        if not self.gpu:
            return ("smoke",)
        return ("d2d", "h2h") if tier == "cuda" else ("d2d",)

    def on(self, mode: str, arrays: Sequence[np.ndarray]) -> tuple[Any, ...]:
        """``arrays`` as the case of ``mode`` takes them (torch CUDA tensors for d2d)."""
        if mode != "d2d" or self.plan_only:
            return tuple(arrays)
        import torch

        return tuple(torch.from_numpy(np.ascontiguousarray(a)).cuda() for a in arrays)


@dataclass
class GpuCase:
    """One kernel x tier x mode x size. ``run`` returns the output; ``reference`` the expected one."""

    kernel: str
    tier: str
    size: str
    run: Callable[[], Any]
    reference: Callable[[], np.ndarray]
    mode: str = "d2d"
    bytes_moved: float | None = None
    flops: float | None = None
    atol: float = 1e-4
    rtol: float = 1e-4
    notes: dict[str, Any] = field(default_factory=dict)
    #: cuda tier without a GPU: compile for every target arch, return {arch: cubin bytes}
    compile: Callable[[], dict[str, int]] | None = None
    #: seconds this case is expected to take on the GPU run (first call, reference, repeats)
    estimate_s: float = 5.0


@dataclass
class CaseResult:
    family: str
    kernel: str
    tier: str
    mode: str
    size: str
    status: str
    max_abs: float | None = None
    max_rel: float | None = None
    median_ms: float | None = None
    p20_ms: float | None = None
    p80_ms: float | None = None
    gbps: float | None = None
    gflops: float | None = None
    pct_ceiling: float | None = None
    duration_s: float | None = None
    estimate_s: float | None = None
    error: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.family}|{self.kernel}|{self.tier}|{self.mode}|{self.size}"


def shared_reference(fn: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
    """A reference computed once for all the tiers and modes that compare with it."""
    cache: list[np.ndarray] = []

    def ref() -> np.ndarray:
        if not cache:
            cache.append(fn())
        return cache[0]

    return ref


# ----------------------------------------------------------------------------- probing
def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def probe() -> dict[str, Any]:
    """Header (versions) and pre-flight of this machine; runs in its own process."""
    header: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                              "platform": platform.platform(), "numpy": np.__version__,
                              "time": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    checks: list[dict[str, str]] = []

    def check(name: str, ok: bool | None, detail: str, affects: str = "") -> None:
        checks.append({"check": name, "status": "OK" if ok else ("WARN" if ok is None else "MISSING"),
                       "detail": detail, "affects": "" if ok else affects})

    with contextlib.suppress(Exception):
        header["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                                          text=True, timeout=5).stdout.strip() or None
    from edgesentry.kernels import _cuda

    drv, nv = _cuda.driver_version(), _cuda.nvrtc_version()
    header.update(driver_cuda=f"{drv[0]}.{drv[1]}" if drv else None, nvrtc=f"{nv[0]}.{nv[1]}" if nv else None,
                  cuda_python=_version("cuda-python"), cuda_bindings=_version("cuda-bindings"))
    check("NVIDIA driver (libcuda)", drv is not None,
          f"CUDA {drv[0]}.{drv[1]}" if drv else "libcuda.so.1 not found by the loader",
          "every GPU case (install the NVIDIA driver / use an image with it)")
    mismatch = _cuda.version_mismatch(drv, nv)
    check("NVRTC", nv is not None and mismatch is None,
          mismatch or (f"NVRTC {nv[0]}.{nv[1]}" if nv else str(_cuda.nvrtc_unavailable_reason())),
          "cuda tier")
    reason = _cuda.unavailable_reason()
    check("cuda tier", reason is None, reason or "ready", "cuda tier rows")
    _probe_torch(header, check)
    _probe_triton(header, check)
    _probe_ort(header, check)
    trt = importlib.util.find_spec("tensorrt") is not None
    header["tensorrt"] = _version("tensorrt") if trt else None
    check("TensorRT", trt or None, "installed" if trt else "not installed (not part of this check)")
    folder = _cuda.cache_dir()
    writable = folder is None or _writable(folder)
    check("NVRTC cache folder", writable or None, f"{folder} ({'writable' if writable else 'not writable'})",
          "NVRTC rebuilds every process (slower, still correct)")
    return {"header": header, "preflight": checks}


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _probe_torch(header: dict[str, Any], check: Callable[..., None]) -> None:
    try:
        import torch
    except ImportError as exc:
        header["torch"] = None
        check("torch", False, str(exc), "Triton rows, CUDA timings with events, deploy")
        return
    header.update(torch=torch.__version__, torch_cuda=torch.version.cuda)
    cuda = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
    if cuda:
        props = torch.cuda.get_device_properties(0)
        free, total = torch.cuda.mem_get_info()
        header.update(device=props.name, capability=f"{props.major}.{props.minor}",
                      memory_gib=round(total / 2**30, 1), free_gib=round(free / 2**30, 1),
                      sms=props.multi_processor_count)
        check("GPU memory", free > 4 * 2**30 or None, f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB free",
              "large cases may run out of memory")
    else:
        header["device"] = None
    check("torch CUDA", cuda, f"torch {torch.__version__}, built for CUDA {torch.version.cuda}"
          + ("" if cuda else " (torch.cuda.is_available() is False)"),
          "Triton rows, d2d rows (install the CUDA torch wheel)")


def _probe_triton(header: dict[str, Any], check: Callable[..., None]) -> None:
    import shutil
    import sysconfig

    spec = importlib.util.find_spec("triton")
    header["triton"] = _version("triton") if spec else None
    check("Triton", spec is not None, f"triton {header['triton']}", "Triton rows (pip install triton)")
    compiler = next((c for c in (os.environ.get("CC"), "cc", "gcc", "clang") if c and shutil.which(c)), None)
    check("C compiler (Triton launchers)", compiler is not None, compiler or "no cc / gcc / clang on PATH",
          "every Triton launch (apt-get install gcc)")
    include = Path(sysconfig.get_paths()["include"]) / "Python.h"
    check("Python headers (Triton launchers)", include.is_file(), str(include),
          "every Triton launch (apt-get install python3-dev)")


def _probe_ort(header: dict[str, Any], check: Callable[..., None]) -> None:
    try:
        import onnxruntime as ort
    except ImportError:
        header["onnxruntime"] = None
        check("ONNX Runtime", None, "not installed", "deploy rows")
        return
    providers = ort.get_available_providers()
    header.update(onnxruntime=ort.__version__, ort_providers=providers)
    check("ONNX Runtime CUDA EP", "CUDAExecutionProvider" in providers or None,
          f"onnxruntime {ort.__version__}: {', '.join(providers)}", "deploy rows (install onnxruntime-gpu)")


# ----------------------------------------------------------------------------- one case
def copy_bandwidth_gbps() -> float | None:
    """Device-to-device copy bandwidth (read + write bytes / time), the roofline ceiling."""
    import torch

    n = 256 * 2**20
    src = torch.empty(n, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = gpu_times_ms(lambda: dst.copy_(src), repeats=20)
    return 2 * n / (float(np.median(times)) * 1e-3) / 1e9


def gpu_times_ms(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Per-call times with CUDA events on torch's current stream (the stream the tiers launch on)."""
    import torch

    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return times


def to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    if hasattr(x, "to_host"):
        return x.to_host()
    return np.asarray(x)


def check_case(family: str, case: GpuCase, ctx: Context, ceiling: float | None) -> CaseResult:
    """Run, compare and time one case; never raises (errors are results, with their full text)."""
    result = CaseResult(family, case.kernel, case.tier, case.mode, case.size, "ERROR", notes=dict(case.notes),
                        estimate_s=case.estimate_s)
    start = time.perf_counter()
    try:
        _check_case(case, ctx, ceiling, result)
    except Exception as exc:  # report and go on: one broken kernel must not hide the rest
        result.status = f"ERROR {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        result.error = traceback.format_exc()
    result.duration_s = round(time.perf_counter() - start, 3)
    return result


def _check_case(case: GpuCase, ctx: Context, ceiling: float | None, result: CaseResult) -> None:
    if case.tier == "cuda" and not ctx.gpu:
        if case.compile is None:
            result.status = "SKIP no GPU"
            return
        sizes = case.compile()
        result.status = "COMPILED (" + ", ".join(f"{arch} {n} B" for arch, n in sizes.items()) + ")"
        return
    got = np.asarray(to_numpy(case.run()), dtype=np.float64)
    want = np.asarray(case.reference(), dtype=np.float64)
    if got.shape != want.shape:
        result.status = f"FAIL shape {got.shape} != {want.shape}"
        return
    diff = np.abs(got - want)
    result.max_abs = float(np.nanmax(diff)) if diff.size else 0.0
    result.max_rel = float(np.nanmax(diff / np.maximum(np.abs(want), 1e-30))) if diff.size else 0.0
    finite = np.isfinite(want)
    ok = bool(np.array_equal(np.isfinite(got), finite)) and bool(
        np.all(diff[finite] <= case.atol + case.rtol * np.abs(want[finite])))
    result.status = "PASS" if ok else "FAIL"
    if ctx.gpu:
        times = gpu_times_ms(case.run, ctx.repeats)
        result.median_ms = float(np.median(times))
        result.p20_ms, result.p80_ms = (float(v) for v in np.percentile(times, [20, 80]))
        secs = result.median_ms * 1e-3
        if case.bytes_moved:
            result.gbps = case.bytes_moved / secs / 1e9
            if ceiling:
                result.pct_ceiling = 100 * result.gbps / ceiling
        if case.flops:
            result.gflops = case.flops / secs / 1e9


# ----------------------------------------------------------------------------- child
#: A folder of extra case modules (``<family>.py`` with ``gpu_cases``) that replaces ``FAMILIES`` (tests).
CASES_ENV = "EDGESENTRY_GPU_CHECK_CASES"


def families_available() -> tuple[str, ...]:
    folder = os.environ.get(CASES_ENV)
    if folder:
        return tuple(sorted(p.stem for p in Path(folder).glob("*.py") if not p.stem.startswith("_")))
    return FAMILIES


def family_cases(family: str, ctx: Context) -> list[GpuCase]:
    folder = os.environ.get(CASES_ENV)
    if folder:
        spec = importlib.util.spec_from_file_location(f"gpu_check_cases_{family}", Path(folder) / f"{family}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(f"cases.{family}")
    return list(module.gpu_cases(ctx)) if hasattr(module, "gpu_cases") else []


def detect_gpu() -> bool:
    if os.environ.get("TRITON_INTERPRET") == "1":
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def run_child(args: argparse.Namespace) -> int:
    """Run one family's cases from ``--start``, appending one JSON line per result to ``--out``.

    Exit code 3 after a sticky CUDA fault (the parent restarts the family after that case).
    """
    gpu = detect_gpu()
    ctx = Context(gpu=gpu, smoke=args.smoke or not gpu, repeats=args.repeats if gpu else 1)
    ceiling = args.ceiling or None
    estimates = _load_timings(args.timings)
    out = Path(args.out)

    def emit(result: CaseResult) -> None:
        with out.open("a") as f:
            f.write(json.dumps(asdict(result), default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        line = f"  {result.kernel} {result.tier} {result.mode} {result.size}: {result.status}"
        print(line + (f" ({result.median_ms:.3f} ms)" if result.median_ms is not None else ""), flush=True)

    try:
        cases = family_cases(args.child, ctx)
    except Exception as exc:
        emit(CaseResult(args.child, "-", "-", "-", "-", f"ERROR building cases: {type(exc).__name__}: {exc}",
                        error=traceback.format_exc()))
        return 0
    for case in cases[args.start:]:
        estimate = estimates.get(_case_key(args.child, case), case.estimate_s)
        if time.time() + estimate > args.deadline:
            emit(CaseResult(args.child, case.kernel, case.tier, case.mode, case.size,
                            f"SKIP budget (needs ~{estimate:.0f}s)", estimate_s=estimate))
            continue
        result = check_case(args.child, case, ctx, ceiling)
        emit(result)
        if result.error and any(s in result.error for s in STICKY):
            return 3
    return 0


def _case_key(family: str, case: GpuCase) -> str:
    return f"{family}|{case.kernel}|{case.tier}|{case.mode}|{case.size}"


def _load_timings(path: str | None) -> dict[str, float]:
    """Measured durations of an earlier run (its ``--json``), to plan with instead of guesses."""
    if not path:
        return {}
    data = json.loads(Path(path).read_text())
    out = {}
    for r in data.get("results", []):
        if r.get("duration_s") and not str(r.get("status", "")).startswith("SKIP"):
            out["|".join(str(r[k]) for k in ("family", "kernel", "tier", "mode", "size"))] = float(r["duration_s"])
    return out


# ----------------------------------------------------------------------------- parent
def _python(args: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def run_probe(timeout: float = 120) -> dict[str, Any]:
    try:
        done = _python(["--probe"], timeout)
    except subprocess.TimeoutExpired:
        return {"header": {}, "preflight": [{"check": "probe", "status": "MISSING", "detail": "timed out",
                                             "affects": "versions unknown"}]}
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"header": {}, "preflight": [{"check": "probe", "status": "MISSING",
                                             "detail": f"probe failed (rc {done.returncode}): {done.stderr[-2000:]}",
                                             "affects": "versions unknown"}]}


def plan(families: Sequence[str], ctx: Context, timings: dict[str, float]) -> list[dict[str, Any]]:
    """Every case of every family with its estimate (built in plan mode: no GPU work)."""
    rows = []
    for family in families:
        try:
            cases = family_cases(family, ctx)
        except Exception as exc:
            rows.append({"family": family, "kernel": "-", "tier": "-", "mode": "-", "size": "-",
                         "estimate_s": 0.0, "error": f"{type(exc).__name__}: {exc}"})
            continue
        for case in cases:
            rows.append({"family": family, "kernel": case.kernel, "tier": case.tier, "mode": case.mode,
                         "size": case.size, "estimate_s": timings.get(_case_key(family, case), case.estimate_s)})
    return rows


def run_family(family: str, args: argparse.Namespace, deadline: float, planned: list[dict[str, Any]],
               ceiling: float | None) -> list[CaseResult]:
    """One family in child processes (restarted after a sticky fault, killed at its deadline)."""
    results: list[CaseResult] = []
    start, restarts = 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.jsonl"
        while True:
            cmd = ["--child", family, "--out", str(out), "--start", str(start), "--deadline", str(deadline),
                   "--repeats", str(args.repeats), "--ceiling", str(ceiling or 0)]
            cmd += ["--smoke"] if args.smoke else []
            cmd += ["--timings", args.timings] if args.timings else []
            rc, tail = _run_streaming(cmd, deadline + KILL_GRACE_S)
            got = _read_results(out)
            new = got[len(results):]
            results.extend(new)
            start = len(results)
            if rc == 3 and start < len(planned) and restarts < 3:
                restarts += 1
                print(f"  {family}: sticky CUDA fault; restarting the family after case {start}", flush=True)
                continue
            break
    for row in planned[len(results):]:  # what the child never reported
        why = ("TIMEOUT" if rc == "timeout" else f"ERROR child exited rc={rc}")
        results.append(CaseResult(family, row["kernel"], row["tier"], row["mode"], row["size"],
                                  f"{why} before this case", error=tail, estimate_s=row["estimate_s"]))
    return results


def _run_streaming(cmd: list[str], deadline: float) -> tuple[int | str, str]:
    """Run a child, echoing its output; kill its process group at ``deadline``. Returns (rc, output tail)."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    tail: list[str] = []
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    while True:
        remaining = deadline - time.time()
        if remaining <= 0:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return "timeout", "".join(tail[-60:])
        if sel.select(timeout=min(remaining, 1.0)):
            line = proc.stdout.readline()
            if not line:
                break
            tail.append(line)
            print(line, end="", flush=True)
    proc.wait()
    return proc.returncode, "".join(tail[-60:])


def _read_results(path: Path) -> list[CaseResult]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError, TypeError):
            out.append(CaseResult(**json.loads(line)))
    return out


def measure_ceiling(timeout: float = 60) -> float | None:
    """The copy ceiling, measured in a child (the parent never creates a CUDA context)."""
    code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import gpu_check; print(gpu_check.copy_bandwidth_gbps())"
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
        return float(done.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        return None


# ----------------------------------------------------------------------------- report
def _f(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def header_text(probed: dict[str, Any], ceiling: float | None) -> str:
    h = probed.get("header", {})
    lines = [f"device: {h.get('device') or 'none'} (sm {h.get('capability', '-')}, {h.get('memory_gib', '-')} GiB, "
             f"{h.get('sms', '-')} SMs) | driver CUDA {h.get('driver_cuda') or '-'} | NVRTC {h.get('nvrtc') or '-'} | "
             f"cuda-python {h.get('cuda_python') or '-'}",
             f"torch {h.get('torch') or '-'} (CUDA {h.get('torch_cuda') or '-'}) | triton {h.get('triton') or '-'} | "
             f"onnxruntime {h.get('onnxruntime') or '-'} | TensorRT {h.get('tensorrt') or '-'} | numpy "
             f"{h.get('numpy', '-')} | python {h.get('python', '-')} {h.get('machine', '')} | commit "
             f"{h.get('commit') or '-'} | {h.get('time', '')}",
             f"copy ceiling: {ceiling:.0f} GB/s" if ceiling else "copy ceiling: n/a (no GPU)", "", "pre-flight:"]
    for c in probed.get("preflight", []):
        lines.append(f"  [{c['status']:>7}] {c['check']}: {c['detail']}" + (
            f" -> affects {c['affects']}" if c.get("affects") else ""))
    return "\n".join(lines)


def plan_text(rows: list[dict[str, Any]], budget: float) -> str:
    lines = ["", f"plan (budget {budget:.0f} s; estimates are guesses until --timings gives measured ones):",
             "| family | kernel | tier | mode | size | est. s | cumulative s | fits |", "|" + "---|" * 8]
    total = 0.0
    seen: set[str] = set()
    for r in rows:
        if r["family"] not in seen:
            seen.add(r["family"])
            total += FAMILY_OVERHEAD_S
        total += r["estimate_s"]
        lines.append(f"| {r['family']} | {r['kernel']} | {r['tier']} | {r['mode']} | {r['size']} | "
                     f"{r['estimate_s']:.0f} | {total:.0f} | {'yes' if total <= budget else 'no (skipped)'} |"
                     + (f" {r['error']}" if r.get("error") else ""))
    lines.append(f"\nestimated total {total:.0f} s for {len(rows)} cases")
    return "\n".join(lines)


def table(results: list[CaseResult]) -> str:
    lines = ["| family | kernel | tier | mode | size | status | max abs | max rel | median ms | p20-p80 ms | GB/s | "
             "GFLOP/s | % ceiling | s |", "|" + "---|" * 14]
    for r in results:
        status = r.status if len(r.status) <= 160 else r.status[:157] + "..."
        spread = f"{r.p20_ms:.4f}-{r.p80_ms:.4f}" if r.p20_ms is not None else "-"
        lines.append(
            f"| {r.family} | {r.kernel} | {r.tier} | {r.mode} | {r.size} | {status} | {_f(r.max_abs, '.2e')} | "
            f"{_f(r.max_rel, '.2e')} | {_f(r.median_ms, '.4f')} | {spread} | {_f(r.gbps, '.1f')} | "
            f"{_f(r.gflops, '.1f')} | {_f(r.pct_ceiling, '.1f')} | {_f(r.duration_s, '.1f')} |")
    return "\n".join(lines)


def write_json(path: str | None, probed: dict[str, Any], planned: list[dict[str, Any]], results: list[CaseResult],
               ceiling: float | None, complete: bool) -> None:
    if not path:
        return
    data = {"header": probed.get("header", {}), "preflight": probed.get("preflight", []), "ceiling_gbps": ceiling,
            "plan": planned, "results": [asdict(r) for r in results], "complete": complete}
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


# ----------------------------------------------------------------------------- resources
KERNEL_FAMILIES = ("rx", "fers", "isstad", "mavd", "otam", "linescan")


def triton_resources(families: Sequence[str] = KERNEL_FAMILIES) -> list[dict[str, Any]]:
    """Every Triton kernel at its launch settings (``AOT_CONFIGS``) for sm_87 and sm_90, from ptxas -v.

    Runs in a child process: the real compiler cannot run where ``TRITON_INTERPRET=1``.
    """
    code = ("import importlib, json, sys\nfrom edgesentry.kernels import _triton\nrows = []\n"
            "for family in sys.argv[1:]:\n"
            "    module = importlib.import_module(f'edgesentry.kernels.{family}.triton')\n"
            "    rows += [{**r.__dict__, 'family': family, 'ok': r.ok} for r in _triton.compile_module_ahead(module)]\n"
            "print(json.dumps(rows))\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", code, *families], env=env, capture_output=True, text=True,
                          timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"Triton ahead-of-time compile failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cuda_resources(families: Sequence[str] = KERNEL_FAMILIES) -> list[dict[str, Any]]:
    """Every CUDA kernel built by NVRTC for sm_87 and sm_90, from NVRTC's ptxas -v log."""
    from edgesentry.kernels import _cuda

    rows = []
    for family in families:
        module = importlib.import_module(f"edgesentry.kernels.{family}.cuda")
        for name, source in module.SOURCES.items():
            for arch in _cuda.TARGET_ARCHS:
                usage = _cuda.resource_usage(source, arch=arch)
                rows += [{"family": family, "source": name, "arch": arch, "listed": r.name in module.KERNELS[name],
                          **r.__dict__} for r in usage.values()]
    return rows


def _rows_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows])


def print_resources(json_path: str | None) -> int:
    """Print the register / spill tables of every kernel (no GPU needed); 1 if anything spills."""
    triton_rows, cuda_rows = triton_resources(), cuda_resources()
    print("Triton kernels (ptxas -v of Triton's own build, at the launchers' settings):")
    print(_rows_table(triton_rows, ("family", "capability", "label", "registers", "spill_stores", "spill_loads",
                                    "shared_bytes", "cubin_bytes")))
    print("\nCUDA kernels (NVRTC, --ptxas-options=-v):")
    print(_rows_table(cuda_rows, ("family", "source", "arch", "name", "registers", "spill_stores", "spill_loads",
                                  "stack_bytes", "shared_bytes")))
    if json_path:
        Path(json_path).write_text(json.dumps({"triton": triton_rows, "cuda": cuda_rows}, indent=2))
    spills = [r for r in triton_rows if not r["ok"]] + [r for r in cuda_rows if r["spill_stores"] or r["spill_loads"]]
    print(f"\n{len(triton_rows)} Triton and {len(cuda_rows)} CUDA kernel builds, {len(spills)} with spills")
    return 1 if spills else 0


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CPU interpreter smoke test) (default: off)")
    parser.add_argument("--only", nargs="*", help=f"families to run (default: all of {', '.join(FAMILIES)})")
    parser.add_argument("--json", default=None, help="write header, pre-flight, plan and results as JSON "
                        "(rewritten after every family) (default: none)")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="wall-clock budget; cases that would not fit are skipped (default: 420)")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats per case on a GPU (default: 20)")
    parser.add_argument("--timings", default=None, help="an earlier run's --json: plan with its measured "
                        "durations (default: built-in estimates)")
    parser.add_argument("--dry-run", action="store_true", help="print header, pre-flight and plan; run nothing")
    parser.add_argument("--resources", action="store_true",
                        help="registers and spills of every Triton and CUDA kernel for sm_87 and sm_90 (no GPU)")
    # internal: the child processes
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=float("inf"), help=argparse.SUPPRESS)
    parser.add_argument("--ceiling", type=float, default=0.0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe:
        print(json.dumps(probe(), default=str))
        return 0
    if args.child:
        return run_child(args)
    if args.resources:
        return print_resources(args.json)
    started = time.time()
    deadline = started + args.budget_s
    known = families_available()
    families = [f for f in known if not args.only or f in args.only]
    unknown = sorted(set(args.only or ()) - set(known))
    if unknown:
        print(f"error: unknown family {unknown}; --only takes {list(known)}")
        return 1
    probed = run_probe()
    gpu = bool(probed.get("header", {}).get("device"))
    ceiling = measure_ceiling() if gpu and not args.dry_run else None
    print(header_text(probed, ceiling), flush=True)
    ctx = Context(gpu=gpu, smoke=args.smoke or not gpu, repeats=args.repeats, plan_only=True)
    timings = _load_timings(args.timings)
    planned = plan(families, ctx, timings)
    print(plan_text(planned, args.budget_s), flush=True)
    if args.dry_run:
        write_json(args.json, probed, planned, [], ceiling, complete=False)
        return 0
    results: list[CaseResult] = []
    for family in families:
        rows = [r for r in planned if r["family"] == family]
        if not rows:
            continue
        print(f"\n{family}:", flush=True)
        if time.time() + FAMILY_OVERHEAD_S + min(r["estimate_s"] for r in rows) > deadline:
            results += [CaseResult(family, r["kernel"], r["tier"], r["mode"], r["size"], "SKIP budget",
                                   estimate_s=r["estimate_s"]) for r in rows]
            print(f"  skipped: the budget is spent ({time.time() - started:.0f} s of {args.budget_s:.0f} s)")
            continue
        family_deadline = min(deadline, time.time() + FAMILY_OVERHEAD_S + 3 * sum(r["estimate_s"] for r in rows))
        results += run_family(family, args, family_deadline, rows, ceiling)
        write_json(args.json, probed, planned, results, ceiling, complete=False)
    print("\n" + header_text(probed, ceiling))
    print("\n" + table(results))
    errors = [r for r in results if r.error]
    for r in errors:
        print(f"\n--- {r.key}\n{r.error.rstrip()}")
    print(f"\n{'GPU' if gpu else 'CPU smoke'} run, {len(results)} cases, {time.time() - started:.1f} s "
          f"(budget {args.budget_s:.0f} s)")
    write_json(args.json, probed, planned, results, ceiling, complete=True)
    failed = [r for r in results if not r.status.startswith(("PASS", "COMPILED", "SKIP"))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
