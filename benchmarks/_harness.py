"""Timing and reporting helpers shared by ``latency.py`` and ``gpu_check.py``.

Timings follow Triton's ``do_bench`` / timm's ``benchmark.py``: warm up, then time
repeated calls and report the median with the 20th/80th (and 90th) percentiles. Rows carry
device, versions, timestamp and configuration (Liger's CSV rows), so a JSON dump stands on
its own.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class Timing:
    p20: float
    p50: float
    p80: float
    p90: float
    iters: int
    peak_mb: float | None = None

    @property
    def per_s(self) -> float:
        return 1.0 / self.p50 if self.p50 > 0 else float("inf")


def measure(fn: Callable[[], Any], *, warmup: int = 2, iters: int = 10, min_time: float = 0.0,
            track_memory: bool = True) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then at least ``iters`` timed ones.

    ``peak_mb`` is the tracemalloc peak of one extra call: Python and numpy allocations
    (numpy reports to tracemalloc); memory held by torch or ONNX Runtime is not seen.
    """
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < iters or (time.perf_counter() - start) < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return _timing(fn, times, track_memory)


def _timing(fn: Callable[[], Any], times: list[float], track_memory: bool) -> Timing:
    """Quantiles of ``times``; with ``track_memory``, the tracemalloc peak of one more call."""
    peak = None
    if track_memory:
        tracemalloc.start()
        fn()
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    q = np.quantile(times, [0.2, 0.5, 0.8, 0.9])
    return Timing(*(float(v) for v in q), iters=len(times), peak_mb=peak)


def measure_interleaved(fns: Mapping[str, Callable[[], Any]], *, rounds: int = 5, block: int = 2,
                        min_time: float = 0.0, pause: float = 0.0, track_memory: bool = True) -> dict[str, Timing]:
    """Time several implementations of one job in alternating blocks (A A B B C C A A ...).

    A VM's speed drifts by tens of percent within minutes; timed one after the other, each
    implementation would see a different machine and their ratio would carry the drift. In
    alternating blocks every implementation samples the same stretch of time. Each block
    starts with one untimed call, so that threads another runtime left spinning (ONNX
    Runtime's and OpenMP's pools keep spinning for a while after a call) and cold caches
    cost the warm-up call, not a timed one. ``pause`` seconds of idling before each block
    outlast pools that spin longer than one call (OpenBLAS workers spin ~0.1 s after a
    multi-threaded BLAS call: ``spectral.rx`` left them spinning through the next block of
    global RX, whose time doubled). Runs at least ``rounds`` rounds and ``min_time`` seconds.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    done = 0
    while done < rounds or (time.perf_counter() - start) < min_time:
        for name, fn in fns.items():
            if pause:
                time.sleep(pause)
            fn()
            for _ in range(block):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        done += 1
    return {name: _timing(fn, times[name], track_memory) for name, fn in fns.items()}


@dataclass
class Row:
    """One benchmark line: what ran, on what, and how fast."""

    family: str
    case: str
    impl: str
    size: str
    timing: Timing
    extra: dict[str, Any] = field(default_factory=dict)
    speedup: dict[str, float] = field(default_factory=dict)
    #: peak resident set of a fresh process that set up and ran this row once (``--rss``);
    #: unlike ``Timing.peak_mb`` (tracemalloc) it sees every allocation and mapped page
    peak_rss_mb: float | None = None


def environment() -> dict[str, Any]:
    import edgesentry

    env: dict[str, Any] = {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "edgesentry": edgesentry.__version__,
    }
    for mod in ("torch", "onnxruntime", "triton", "spectral", "scipy"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:  # absent or broken optional dependency: record that
            env[mod] = None
    from edgesentry import _machine

    cpu = _machine.cpu_info()
    env.update(cpu_model=cpu["model"], cpu_id=cpu["id"], cpu_flags=" ".join(cpu["flags"]), cpu_key=_machine.cpu_key())
    try:
        env["load_avg"] = " ".join(f"{v:.1f}" for v in os.getloadavg())  # a busy machine reads differently
    except OSError:
        env["load_avg"] = None
    return env


def add_speedups(rows: list[Row], baseline_impl: str, label: str) -> None:
    """For rows sharing (family, case, size), record p50 ratios against ``baseline_impl``."""
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.family, r.case, r.size), []).append(r)
    for group in groups.values():
        base = next((r for r in group if r.impl == baseline_impl), None)
        if base is None:
            continue
        for r in group:
            r.speedup[label] = base.timing.p50 / r.timing.p50


def markdown_table(rows: list[Row]) -> str:
    header = "| family | case | impl | size | p50 ms | p90 ms | per s | peak MB | peak RSS MB | speedup | notes |"
    lines = [header, "|" + "---|" * 11]
    for r in rows:
        t = r.timing
        speed = ", ".join(f"{v:.1f}x {k}" for k, v in r.speedup.items()) or ""
        notes = ", ".join(f"{k}={_fmt(v)}" for k, v in r.extra.items())
        peak = f"{t.peak_mb:.1f}" if t.peak_mb is not None else "-"
        rss = f"{r.peak_rss_mb:.0f}" if r.peak_rss_mb is not None else "-"
        lines.append(
            f"| {r.family} | {r.case} | {r.impl} | {r.size} | {t.p50 * 1e3:.3f} | {t.p90 * 1e3:.3f} | "
            f"{t.per_s:.1f} | {peak} | {rss} | {speed} | {notes} |"
        )
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def dump_json(path: str, rows: list[Row], env: dict[str, Any]) -> None:
    with open(path, "w") as fh:
        json.dump({"environment": env, "rows": [asdict(r) for r in rows]}, fh, indent=2, default=str)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b| (cast up to float64)."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a64 - b64)) / max(np.max(np.abs(b64)), 1e-300))


# --------------------------------------------------------------------------------- sweeps
#: a sweep row's role in its group (family, case, size): ``auto`` = what users get by default,
#: ``path`` = one forced alternative of the same implementation (auto must be within 10% of the
#: best of them), ``peer`` = another implementation (the seed's path, SPy), ``floor`` = the time
#: of the GEMM (or other bound) the job cannot beat
ROLES = ("auto", "path", "peer", "floor")


def race(family: str, case: str, size: str, impls: Mapping[str, tuple[Any, ...]], *,
         rounds: int = 3, block: int = 1, pause: float = 0.0, min_time: float = 0.5,
         extra: Mapping[str, Any] | None = None) -> list[Row]:
    """Time ``impls`` (name -> (role, thunk) or (role, thunk, units)) side by side
    (``measure_interleaved``) and return one row each, its role in ``extra["role"]``. With
    ``units`` (e.g. the pixels of the crop that impl runs on), ``extra["per_unit_us"]`` is the p50
    per unit, and rows compare per unit (implementations timed on different crops). Runs at least
    ``rounds`` rounds and ``min_time`` seconds: fast calls get enough samples for a median."""
    fns = {name: spec[1] for name, spec in impls.items()}
    start = time.perf_counter()
    timings = measure_interleaved(fns, rounds=rounds, block=block, pause=pause, min_time=min_time,
                                  track_memory=False)
    print(f"  [{time.perf_counter() - start:5.1f}s] {family} {case} {size}", file=sys.stderr, flush=True)
    rows = []
    for name, spec in impls.items():
        role = spec[0]
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        info = {"role": role, **(extra or {})}
        if len(spec) > 2:
            info["per_unit_us"] = timings[name].p50 / spec[2] * 1e6
        rows.append(Row(family, case, name, size, timings[name], extra=info))
    return rows


def _unit_cost(row: Row) -> float:
    return row.extra["per_unit_us"] / 1e6 if "per_unit_us" in row.extra else row.timing.p50


def _keep_worst(summary: dict[str, Any], key: str, value: float, size: str, higher_is_worse: bool) -> None:
    old = summary.get(key)
    if old is None or (value > old[0] if higher_is_worse else value < old[0]):
        summary[key] = (value, size)


def worst_ratios(rows: list[Row]) -> list[dict[str, Any]]:
    """Per (family, case) over its sizes: the worst ``auto / best of auto and paths`` (want <= 1.1),
    the worst ``peer / auto`` speed-up and the worst ``auto / floor``, each with its size."""
    groups: dict[tuple[str, str], dict[str, list[Row]]] = {}
    for r in rows:
        if r.extra.get("role") in ROLES:
            groups.setdefault((r.family, r.case), {}).setdefault(r.size, []).append(r)
    out = []
    for (family, case), sizes in groups.items():
        summary: dict[str, Any] = {"family": family, "case": case, "sizes": len(sizes)}
        for size, group in sizes.items():
            auto = [_unit_cost(r) for r in group if r.extra["role"] == "auto"]
            if not auto:
                continue
            a = min(auto)
            best = min(_unit_cost(r) for r in group if r.extra["role"] in ("auto", "path"))
            _keep_worst(summary, "auto_over_best", a / best, size, True)
            for r in group:
                if r.extra["role"] == "peer":
                    _keep_worst(summary, "peer_over_auto", _unit_cost(r) / a, size, False)
                elif r.extra["role"] == "floor":
                    _keep_worst(summary, "auto_over_floor", a / _unit_cost(r), size, True)
        out.append(summary)
    return out


def worst_ratio_table(rows: list[Row]) -> str:
    lines = ["| kernel | shapes | auto / best path (worst) | speed-up vs peer (worst) | auto / floor (worst) |",
             "|---|---|---|---|---|"]

    def cell(entry: tuple[float, str] | None, fmt: str) -> str:
        return "-" if entry is None else f"{entry[0]:{fmt}} ({entry[1]})"

    for s in worst_ratios(rows):
        lines.append(f"| {s['family']} {s['case']} | {s['sizes']} | {cell(s.get('auto_over_best'), '.2f')} | "
                     f"{cell(s.get('peer_over_auto'), '.1f')}x | {cell(s.get('auto_over_floor'), '.2f')} |")
    return "\n".join(lines)
