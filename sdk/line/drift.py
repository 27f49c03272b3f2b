"""Drift of the detector's view of "good": passed-part scores against a reference distribution.

Each camera keeps a rolling window of the scores of its frames in parts that were accepted
(complete, not late, not fail-safe). Every ``every`` new scores, once the window holds
``min_samples``, the window is compared with the reference:

- **PSI** (population stability index) over ``bins`` quantile bins of the reference,
  ``sum((w - r) * ln(w / r))`` with both proportions floored at ``1e-4`` (an empty bin is not
  infinite);
- the two-sample **Kolmogorov-Smirnov** test (``scipy.stats.ks_2samp``), its p-value.

The state is ``alert`` when PSI >= ``psi_alert`` **and** p < ``ks_alert`` held at ``confirm``
evaluations in a row: two views must agree, and for a while, which keeps false alarms rare on
a stable line (overlapping windows are far from independent tests, so one small p-value alone
over-reacts). It is ``warn`` when PSI >= ``psi_warn`` or p < ``ks_warn`` (or an alert not yet
confirmed), else ``ok``. The reference is the bundle's ``drift_reference`` (written by
``edgesentry recalibrate``) when present, else the first ``reference`` passed scores of the run.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

DriftState = Literal["ok", "warn", "alert"]
PROPORTION_FLOOR = 1e-4


@dataclass(frozen=True)
class DriftSettings:
    """Window and thresholds of the drift monitor (the line file's ``[drift]`` table)."""

    window: int = 300
    min_samples: int = 100
    reference: int = 500
    every: int = 10
    bins: int = 10
    psi_warn: float = 0.1
    psi_alert: float = 0.25
    ks_warn: float = 0.01
    ks_alert: float = 1e-4
    confirm: int = 3

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftSettings:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def drift_reference(bundle: Any) -> list[float] | None:
    """The ``drift_reference`` scores a bundle carries (``edgesentry recalibrate`` writes them), or ``None``."""
    meta = getattr(bundle, "meta", None) or {}
    ref = meta.get("drift_reference")
    if not isinstance(ref, list) or not ref or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in ref):
        return None
    return [float(v) for v in ref]


def psi(reference: np.ndarray, window: np.ndarray, bins: int) -> float:
    """Population stability index of ``window`` against ``reference`` over quantile bins of the reference."""
    edges = np.unique(np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    ref = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=edges.size + 1) / reference.size
    win = np.bincount(np.searchsorted(edges, window, side="right"), minlength=edges.size + 1) / window.size
    ref, win = np.maximum(ref, PROPORTION_FLOOR), np.maximum(win, PROPORTION_FLOOR)
    return float(np.sum((win - ref) * np.log(win / ref)))


def ks_pvalue(reference: np.ndarray, window: np.ndarray) -> float:
    from scipy.stats import ks_2samp

    return float(ks_2samp(reference, window).pvalue)


class DriftMonitor:
    """The drift state of one camera (see the module docstring); ``add`` returns a changed state's record."""

    def __init__(self, camera: str, settings: DriftSettings, reference: Sequence[float] | None = None):
        self.camera, self.settings = camera, settings
        self._reference = None if reference is None else np.asarray(reference, dtype=np.float64)
        self._warmup: list[float] = []
        self._window: deque[float] = deque(maxlen=settings.window)
        self._since = 0
        self._alerting = 0
        self.state: DriftState = "ok"
        self.last: dict[str, Any] = {"drift": camera, "state": "ok", "psi": None, "ks_p": None, "n": 0,
                                     "reference_n": 0 if reference is None else len(reference)}
        self.evaluations = 0
        self.alerts = 0

    @property
    def has_reference(self) -> bool:
        return self._reference is not None

    def add(self, score: float) -> dict[str, Any] | None:
        """One passed frame's score; returns the drift record when the state changed."""
        if not math.isfinite(score):
            return None
        if self._reference is None:
            self._warmup.append(float(score))
            if len(self._warmup) >= self.settings.reference:
                self._reference = np.asarray(self._warmup)
                self.last["reference_n"] = self._reference.size
            return None
        self._window.append(float(score))
        self._since += 1
        if len(self._window) < self.settings.min_samples or self._since < self.settings.every:
            return None
        self._since = 0
        return self._evaluate()

    def _evaluate(self) -> dict[str, Any] | None:
        s = self.settings
        window = np.asarray(self._window)
        p_stat, p_value = psi(self._reference, window, s.bins), ks_pvalue(self._reference, window)
        state: DriftState = "ok"
        alerting = p_stat >= s.psi_alert and p_value < s.ks_alert
        self._alerting = self._alerting + 1 if alerting else 0
        if self._alerting >= s.confirm:
            state = "alert"
        elif alerting or p_stat >= s.psi_warn or p_value < s.ks_warn:
            state = "warn"
        self.evaluations += 1
        self.alerts += state == "alert"
        changed = state != self.state
        self.state = state
        self.last = {"drift": self.camera, "state": state, "psi": round(p_stat, 6), "ks_p": float(f"{p_value:.6g}"),
                     "n": int(window.size), "reference_n": int(self._reference.size),
                     "window_mean": round(float(window.mean()), 6),
                     "reference_mean": round(float(self._reference.mean()), 6), "at": round(time.time(), 3)}
        return dict(self.last) if changed else None
