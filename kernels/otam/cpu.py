"""Soft-OTAM fusion, CPU tier: one call into compiled C++ (``kernels/cpu/otam.cpp``).

The kernel computes the frame norms; the frame dot products in blocks of ~32 query frames x ~32
prototype frames (register blocks of 2 x 4 rows with AVX2 + FMA or NEON, 4 x 4 with AVX-512,
chosen at run time; both blocks stay in L2, so a gallery's frames are read a few times per call
rather than once per pair: the frame-similarity GEMM near BLAS speed, without BLAS threads to
fight the kernel's own); the cosine-distance tiles; the four OTAM DPs per pair in float32 with a
stabilised soft-min, eight DPs in lockstep across SIMD lanes; and the fusion. OpenMP over blocks
and DPs when the call is large enough to pay for waking the threads: a thread model measured once
per CPU model (``threads_for``) decides. ``otam`` (single direction, any R x M) runs in float64.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edgesentry.kernels.otam.reference import COS_EPS, LAMBDA


def unavailable_reason() -> str | None:
    try:
        from edgesentry.kernels import _cpu_otam  # noqa: F401
    except ImportError as exc:
        return f"compiled CPU kernels not built ({exc}); reinstall with `pip install -e .`"
    return None


def _host(x: object) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()  # type: ignore[union-attr]
    return np.ascontiguousarray(x, dtype=np.float32)


def fuse(z_local: np.ndarray, p_local: np.ndarray, z_global: np.ndarray, p_global: np.ndarray, *,
         lam: float = LAMBDA, eps: float = COS_EPS, threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(dists [4, Q, N], logits [Q, N]) float32; see ``reference.fuse_reference``.

    One compiled call for any episode or gallery. ``threads``: 0 decides by the thread model
    measured on this machine (``threads_for``), else that many (benchmarks compare them).
    """
    from edgesentry.kernels import _cpu_otam

    z_l, p_l, z_g, p_g = (_host(a) for a in (z_local, p_local, z_global, p_global))
    if threads == 0:
        q, t, d = z_l.shape
        threads = threads_for(q, p_l.shape[0], t, d)
    return _cpu_otam.fuse(z_l, p_l, z_g, p_g, float(lam), float(eps), int(threads))


#: version of the cached thread model: 2 measures alternating calls (medians), 1 kept the fastest
THREAD_MODEL_VERSION = 2
#: the thread model when measuring is off: ~20 us to wake the threads, 1.8x from two
DEFAULT_THREAD_MODEL = {"dot_ns": 0.04, "cell_ns": 3.0, "fork_ns": 20000.0, "speedup": 1.8}


def thread_model() -> dict[str, float]:
    """ns per frame multiply-add and per DP cell on one thread, the fixed cost of a parallel
    call and its speed-up: measured once per CPU model (``edgesentry._machine``)."""
    from edgesentry import _machine

    return _machine.measured("otam.threads", THREAD_MODEL_VERSION, _measure_threads, default=DEFAULT_THREAD_MODEL,
                             keep=_trusted_thread_model)


#: a measured two-thread speed-up below this on a multi-core CPU says the other core was busy
#: during the 0.2 s of measuring, not that the CPU cannot use it: such a model is not cached, or
#: every later process on this CPU would run single-threaded (a 25 x 100 gallery 1.9x slower)
MIN_TRUSTED_SPEEDUP = 1.2


def _trusted_thread_model(model: Mapping[str, float]) -> bool:
    from edgesentry.kernels import _cpu_otam

    return _cpu_otam.max_threads() < 2 or model["speedup"] >= MIN_TRUSTED_SPEEDUP


def threads_for(q: int, n: int, t: int, d: int, model: dict[str, float] | None = None,
                team: int | None = None) -> int:
    """Threads for a Q x N call: all of them when the model predicts the parallel call is faster
    (``fork + work / speedup < work``), else one."""
    from edgesentry.kernels import _cpu_otam

    team = _cpu_otam.max_threads() if team is None else team
    if team < 2:
        return 1
    m = model or thread_model()
    work = _work(m, q, n, t, d)
    return team if m["fork_ns"] + work / m["speedup"] < work else 1


def _work(m: dict[str, float], q: int, n: int, t: int, d: int) -> float:
    """Predicted one-thread ns: 2 views x Q N T^2 D frame multiply-adds, 4 Q N T (T + 2) DP cells."""
    return m["dot_ns"] * 2.0 * q * n * t * t * d + m["cell_ns"] * 4.0 * q * n * t * (t + 2)


def _measure_threads(repeats: int = 7) -> dict[str, float]:
    """Time a frame-heavy and a DP-heavy call (D = 1024 and 16, 20 x 20 pairs) on one thread and
    on all: the one-thread times give the unit costs, the all-thread times the speed-up and the
    fixed cost of waking the threads. 0.05-0.08 s on a 2-core Zen 3.

    One- and all-thread calls alternate and the median is kept: back-to-back parallel calls
    find the threads still spinning, and the fastest of five put the cost of waking them at 0
    (three measurements on a 2-vCPU VM), while a call after other work pays it (in one
    measurement on that VM a 5-way episode at D = 1024 took 0.66 ms on two threads, 0.30 on one).
    """
    import time

    from edgesentry.kernels import _cpu_otam

    team = _cpu_otam.max_threads()
    rng = np.random.default_rng(0)
    calls = {}
    for d in (1024, 16):
        args = [rng.standard_normal((20, 8, d)).astype(np.float32) for _ in range(4)]
        seconds: dict[int, list[float]] = {1: [], team: []}
        for _ in range(repeats):
            for threads in seconds:
                start = time.perf_counter()
                _cpu_otam.fuse(*args, LAMBDA, COS_EPS, threads)
                seconds[threads].append(time.perf_counter() - start)
        for threads, times in seconds.items():
            calls[d, threads] = float(np.median(times)) * 1e9
    macs = {d: 2.0 * 20 * 20 * 64 * d for d in (1024, 16)}
    cells = 4.0 * 20 * 20 * 8 * 10
    dot_ns = max((calls[1024, 1] - calls[16, 1]) / (macs[1024] - macs[16]), 1e-6)
    cell_ns = max((calls[16, 1] - dot_ns * macs[16]) / cells, 1e-6)
    if team < 2:
        return {"dot_ns": dot_ns, "cell_ns": cell_ns, "fork_ns": 0.0, "speedup": 1.0}
    gain = (calls[1024, team] - calls[16, team]) / (calls[1024, 1] - calls[16, 1])  # = 1 / speedup
    speedup = min(max(1.0 / gain, 0.5), float(team)) if gain > 0 else 1.0
    fork_ns = max(calls[16, team] - calls[16, 1] / speedup, 0.0)
    return {"dot_ns": dot_ns, "cell_ns": cell_ns, "fork_ns": fork_ns, "speedup": speedup}


def otam(delta: np.ndarray, *, lam: float = LAMBDA) -> np.ndarray:
    """Stabilised single-direction OTAM of [..., R, M] cost matrices -> [...] float64."""
    from edgesentry.kernels import _cpu_otam

    d = np.asarray(delta, np.float64)
    lead = d.shape[:-2]
    out = _cpu_otam.otam(np.ascontiguousarray(d.reshape(-1, *d.shape[-2:])), float(lam))
    return out.reshape(lead)
