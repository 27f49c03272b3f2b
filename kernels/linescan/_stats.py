"""Line-scan statistics shared by the GPU tiers: count, mean and scatter of the model, updated
one line at a time from the line's Gram (exponential forgetting or a sliding window of lines).

Works on numpy arrays (the cuda tier keeps its statistics on the host) and on torch tensors
(the triton tier keeps them on the device): only arithmetic both support is used. The cpu
tier does the same in C++ (``kernels/cpu/linescan.cpp``); the formulas are the ones there:

    N' = lam N + n,  M' = lam M + G - (n^2 / N') d d^T,  m' = m + (n / N') d

with G the Gram of the kept pixels centred on m and d the mean of their centred values. A
window removes its departing line with the inverse combination and is recombined from its
stored lines once per turn of the ring (so add/subtract rounding cannot accumulate).
"""

from __future__ import annotations

from typing import Any


def _outer(a: Any, b: Any) -> Any:
    return a[:, None] * b[None, :]


def _copy(a: Any) -> Any:
    return a.clone() if hasattr(a, "clone") else a.copy()


class RunningStatistics:
    """Count, mean (B,) and scatter (B, B) of a line-scan model (float64 arrays or tensors)."""

    def __init__(self, mean: Any, scatter: Any, forgetting: float, window: int):
        self.count = 0.0
        self.mean, self.scatter = mean, scatter  # zero arrays of the backend in use
        self.forgetting, self.window = forgetting, window
        self._ring: list[tuple[float, Any, Any]] = []  # (n, mean, scatter) of each line in the window
        self._added = 0
        self.recombinations = 0
        self.pixels = 0  # distinct pixels in the model (all ever added, for exponential statistics)

    def covariance(self) -> Any:
        return self.scatter / (self.count - 1) if self.count > 1 else None

    def to_factor(self, bands: int, ridge: float, regularize: Any) -> tuple[Any, bool]:
        """(covariance with its ridge, True when it must take the pseudo-inverse path), or
        (None, False) while there is no covariance. ``regularize(cov, ridge)`` is the tier's."""
        cov = self.covariance()
        if cov is None:
            return None, False
        if ridge == 0 and self.singular(bands):
            return self.covariance(), True  # recombined (window) by ``singular``
        return regularize(cov, ridge), False

    def max_rank(self, ridge: float) -> int | None:
        """The pseudo-inverse's rank cap (``reference.pinv``): n - 1 for n pixels without ridge."""
        return None if ridge else self.pixels - 1

    def singular(self, bands: int) -> bool:
        """Whether the covariance is singular by construction: fewer than B + 1 distinct pixels.
        (Rounding can leave such a matrix numerically positive definite; then Cholesky would
        score noise where the pseudo-inverse cuts.) A window recombines first so that the
        pseudo-inverse sees exact zeros, not add/subtract noise."""
        if self.pixels - 1 >= bands:
            return False
        if self.window:
            self.recombine()
        return True

    def add(self, n: float, sums: Any, gram: Any) -> None:
        """Fold in a line of ``n`` kept pixels: ``sums`` and ``gram`` of them centred on ``mean``."""
        lam = self.forgetting
        self.pixels += int(round(n))
        d = sums / n if n > 0 else sums * 0.0
        total = lam * self.count + n
        line_mean = self.mean + d
        if total > 0:
            self.scatter = lam * self.scatter + gram - (n * n / total) * _outer(d, d)
            self.mean = self.mean + (n / total) * d
        self.count = total
        if self.window:
            self._slide(n, line_mean, gram - n * _outer(d, d))

    def _slide(self, n: float, line_mean: Any, line_scatter: Any) -> None:
        if len(self._ring) == self.window:
            self._remove(*self._ring.pop(0))
        self._ring.append((n, line_mean, line_scatter))
        self._added += 1
        if self._added % self.window == 0:
            self.recombine()

    def _remove(self, n: float, line_mean: Any, line_scatter: Any) -> None:
        self.pixels -= int(round(n))
        if n <= 0:
            return
        rest = self.count - n
        if rest <= 0.5:  # integer counts: nothing is left
            self.count, self.scatter = 0.0, self.scatter * 0.0
            return
        e = self.mean - line_mean
        self.scatter = self.scatter - line_scatter - (n * self.count / rest) * _outer(e, e)
        self.mean = self.mean + (n / rest) * e
        self.count = rest

    def recombine(self) -> None:
        """Recompute the window's statistics from its stored lines (exact combination)."""
        count, mean, scatter = 0.0, self.mean * 0.0, self.scatter * 0.0
        for n, line_mean, line_scatter in self._ring:
            if n <= 0:
                continue
            total = count + n
            e = line_mean - mean
            scatter = scatter + line_scatter + (count * n / total) * _outer(e, e)
            mean = mean + (n / total) * e
            count = total
        self.count, self.scatter = count, scatter
        if count > 0:
            self.mean = _copy(mean)
        self.recombinations += 1
