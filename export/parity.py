"""Polygraphy-style output comparison: per-output error statistics with explicit tolerances.

``compare_outputs`` casts both sides up to float64, computes absolute and relative errors
and their max / mean / median / p99, and passes an output when every element satisfies
``|a - e| <= atol + rtol * |e|`` (NaN/Inf disagreement fails). The report is truthy on
pass and renders as a table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class OutputParity:
    name: str
    shape: tuple[int, ...]
    max_abs: float
    mean_abs: float
    median_abs: float
    p99_abs: float
    max_rel: float
    mean_rel: float
    median_rel: float
    p99_rel: float
    atol: float
    rtol: float
    mismatches: int
    passed: bool
    note: str = ""

    @classmethod
    def failed(cls, name: str, shape: tuple[int, ...], atol: float, rtol: float, count: int, note: str) -> OutputParity:
        """An output that could not be compared at all (missing, or of another shape)."""
        nan = float("nan")
        return cls(name, shape, nan, nan, nan, nan, nan, nan, nan, nan, atol, rtol, count, False, note=note)


@dataclass
class ParityReport:
    reference: str
    candidate: str
    outputs: list[OutputParity] = field(default_factory=list)

    def __bool__(self) -> bool:
        return all(o.passed for o in self.outputs)

    @property
    def passed(self) -> bool:
        return bool(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "passed": self.passed,
            "outputs": [asdict(o) for o in self.outputs],
        }

    def table(self) -> str:
        head = (
            f"{self.candidate} vs {self.reference}\n"
            "| output | shape | max abs | mean abs | median abs | p99 abs | max rel | p99 rel "
            "| atol | rtol | result |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|"
        )
        rows = [
            f"| {o.name} | {'x'.join(map(str, o.shape))} | {o.max_abs:.3e} | {o.mean_abs:.3e} | {o.median_abs:.3e} | "
            f"{o.p99_abs:.3e} | {o.max_rel:.3e} | {o.p99_rel:.3e} | {o.atol:g} | {o.rtol:g} | "
            f"{'PASS' if o.passed else f'FAIL ({o.mismatches} el.)'}{' ' + o.note if o.note else ''} |"
            for o in self.outputs
        ]
        return "\n".join([head, *rows])


def compare_arrays(name: str, expected: np.ndarray, actual: np.ndarray, *, atol: float, rtol: float) -> OutputParity:
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape:
        return OutputParity.failed(name, tuple(a.shape), atol, rtol, a.size, f"shape {a.shape} != {e.shape}")
    finite = np.isfinite(e) & np.isfinite(a)
    finite_mismatch = int(np.count_nonzero(np.isfinite(e) != np.isfinite(a)))
    diff = np.abs(a - e)[finite]
    # Relative error against |expected|, floored at float32 eps times the output's scale so that
    # elements that are numerically zero do not report relative errors of 1e300.
    scale = float(np.abs(e[finite]).max()) if diff.size else 0.0
    floor = max(scale * float(np.finfo(np.float32).eps), np.finfo(np.float64).tiny)
    rel = diff / np.maximum(np.abs(e[finite]), floor)
    bad = int(np.count_nonzero(diff > atol + rtol * np.abs(e[finite]))) + finite_mismatch

    def stats(v: np.ndarray) -> tuple[float, float, float, float]:
        if v.size == 0:
            return 0.0, 0.0, 0.0, 0.0
        return float(v.max()), float(v.mean()), float(np.median(v)), float(np.quantile(v, 0.99))

    return OutputParity(
        name,
        tuple(e.shape),
        *stats(diff),
        *stats(rel),
        atol,
        rtol,
        bad,
        bad == 0,
        note=f"{finite_mismatch} NaN/Inf disagreements" if finite_mismatch else "",
    )


def compare_outputs(
    expected: Mapping[str, np.ndarray],
    actual: Mapping[str, np.ndarray],
    *,
    atol: float | Mapping[str, float],
    rtol: float | Mapping[str, float],
    names: tuple[str, str] = ("reference", "candidate"),
) -> ParityReport:
    """Compare every output present in ``expected`` (missing in ``actual`` fails)."""
    report = ParityReport(*names)
    for key, exp in expected.items():
        a_tol = atol[key] if isinstance(atol, Mapping) else atol
        r_tol = rtol[key] if isinstance(rtol, Mapping) else rtol
        if key not in actual:
            report.outputs.append(
                OutputParity.failed(key, tuple(np.shape(exp)), a_tol, r_tol, int(np.size(exp)), "missing")
            )
            continue
        report.outputs.append(compare_arrays(key, exp, actual[key], atol=a_tol, rtol=r_tol))
    return report
