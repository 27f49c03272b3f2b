"""Line-scan RX, CPU tier: one compiled call per line (``kernels/cpu/linescan.cpp``).

Per line of W pixels x B bands the work is two W x B^2 / 2 products and one B^3 / 6
factorisation, all BLAS-3 shaped (scipy's BLAS and LAPACK, bound from
``scipy.linalg.cython_blas`` / ``cython_lapack``):

- the Gram ``G = Z^T Z`` of the line centred on the model's mean (``syrk``), folded into the
  float64 statistics ``M' = lam M + G - n^2 / N' d d^T``;
- the scores ``|L^-1 z|^2`` against the *previous* factor (``trsm``): the model before the line;
- the factor of the new statistics ``L' = chol(M' / (N' - 1) + ridge)`` (``potrf``), checked
  with LAPACK's condition estimate (``pocon``).

Scoring needs only the previous factor, so the Gram, statistics and factorisation of a line run
beside its scoring on two threads with single-threaded BLAS; the kernel splits the rows
between the threads from measured per-row costs so that both finish together. Whether a line
runs on two threads or one is measured too: each mode keeps a moving average of its seconds
per pixel, the faster runs, and every 128 lines two lines of the other refresh it (two threads
lose when the second core is busy; see ``docs/linescan.md``).

Cost model (``LineModel.plan``): a factor carried forward by k rank-1 updates (k kept pixels
plus the mean shift) costs ~``k B^2`` against ``B^3 / 6`` for ``potrf``; with the measured
speed ratio ``RANK_UPDATE_RATIO`` the update wins only for narrow lines (k < ~B / 12; never
at 640 x 224 or 100 x 205). It is used for exponential statistics without ridge (a ridge
scaled by ``tr(C)`` and a window's departing line are not low-rank changes). Its drift guard:
after every carried line the whitened probe residual ``|L^-1 C L^-T u - u| / |u|`` (2 B^2) is
checked against ``guard_tol``, and the factor is recomputed when it is exceeded and every
``refresh_every`` lines.

``dtype="float32"`` runs the scoring product (``strsm``) in float32; the Gram, statistics and
factorisation stay float64. A float32 Gram is not an option on real data: hyperspectral
covariances have condition numbers of 1e8..1e10 (ABU), and a float32 Gram's rounding
(~1e-7 x sqrt(W) of the largest entries) swamps their weakest directions (measured: ABU mean
AUC 0.868 against 0.935). Scores carry ~``sqrt(cond(C)) * 6e-8`` relative error (measured on
ABU: the same AUC as float64 to 4 digits).

A model that is not safely positive definite (fewer pixels than bands, dead or duplicated
bands, condition estimate above ``max_cond``) is scored on the pseudo-inverse path of the
specification in numpy (eigh with the pinv cutoff, ``rx.cpu.whitening``).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from edgesentry.kernels.rx.cpu import whitening
from edgesentry.kernels.rx.reference import DEFAULT_RCOND, _regularize

from .reference import check_line, check_options

#: Largest condition estimate (LAPACK ``pocon``) of the covariance for the Cholesky path.
#: Real hyperspectral covariances sit at 1e8..1e10 (ABU, measured); below 1e12 no eigenvalue is
#: near the pseudo-inverse's 1e-15 cutoff and Cholesky scores differ from it by ~cond * eps.
#: (Global RX's tier is stricter, 1e9: there the pinv path is one eigh per scene, here per line.)
MAX_COND = 1e12
#: Measured speed of k rank-1 factor updates relative to ``potrf`` per multiply-add (the
#: update path runs at about half the rate of LAPACK's blocked Cholesky).
RANK_UPDATE_RATIO = 2.0
#: Largest whitened probe residual a carried factor may show before it is recomputed.
GUARD_TOL = 1e-10
#: A carried factor is recomputed from the statistics at least this often (lines).
REFRESH_EVERY = 1024


def unavailable_reason() -> str | None:
    try:
        from scipy.linalg import cython_blas, cython_lapack  # noqa: F401

        from edgesentry.kernels import _cpu_linescan  # noqa: F401
    except ImportError as exc:
        return f"compiled CPU kernels or scipy's BLAS not available ({exc}); reinstall with `pip install -e .`"
    return None


@functools.lru_cache(maxsize=1)
def _core_module() -> Any:
    """The compiled module with scipy's BLAS and LAPACK bound (once per process)."""
    from scipy.linalg import cython_blas, cython_lapack

    from edgesentry.kernels import _cpu_linescan

    capsules = {name: cython_blas.__pyx_capi__[name] for name in ("dsyrk", "dtrsm", "strsm")}
    capsules.update({name: cython_lapack.__pyx_capi__[name] for name in ("dpotrf", "dpocon")})
    _cpu_linescan.bind_blas(capsules)
    return _cpu_linescan


def _as_line(line: Any, dtype: str) -> np.ndarray:
    """float32 and float64 lines go in as they are; integers to the compute dtype (exact for
    16-bit sensors in float32), anything else to float64."""
    x = np.asarray(line)
    if x.dtype in (np.float32, np.float64):
        return x
    if x.dtype.kind in "iu" and x.dtype.itemsize <= 2 and dtype == "float32":
        return x.astype(np.float32)
    return x.astype(np.float64)


class LineModel:
    """Line-scan RX model on the CPU; see ``reference.LineModel`` for the semantics.

    Extra args (tests and benchmarks): ``max_cond`` (largest condition estimate for the
    Cholesky path), ``refresh_every`` and ``guard_tol`` (the carried factor's drift guard),
    ``rank_update_ratio`` (the cost model's speed ratio).
    """

    def __init__(self, bands: int, *, forgetting: float = 1.0, window: int = 0, ridge: float = 0.0,
                 rcond: float = DEFAULT_RCOND, dtype: str = "float64", max_cond: float = MAX_COND,
                 refresh_every: int = REFRESH_EVERY, guard_tol: float = GUARD_TOL,
                 rank_update_ratio: float = RANK_UPDATE_RATIO):
        check_options(bands, forgetting, window, ridge, rcond, dtype)
        core = _core_module()
        cls = core.Model64 if dtype == "float64" else core.Model32
        self.bands, self.forgetting, self.window = int(bands), float(forgetting), int(window)
        self.ridge, self.rcond, self.dtype = float(ridge), float(rcond), dtype
        self._core = cls(self.bands, self.forgetting, self.window, self.ridge, float(max_cond), self.rcond,
                         int(refresh_every), float(guard_tol), float(rank_update_ratio))
        self.pinv_lines = 0  # lines scored on the pseudo-inverse path

    @property
    def lines(self) -> int:
        return self._core.lines

    def step(self, line: Any, valid: Any = None, update_threshold: float = np.inf,
             want_scores: bool = True) -> np.ndarray:
        """Score a line against the model, then add its kept pixels (``reference.LineModel.step``)."""
        from edgesentry._threads import single_threaded_blas

        line, mask = check_line(line, self.bands, valid)
        x = _as_line(line, self.dtype)
        given = None
        if (want_scores or np.isfinite(update_threshold)) and self._needs_pinv():
            given = self._pinv_scores(x, mask)
        # two threads each call BLAS: BLAS's own threads would only fight them for the cores
        with single_threaded_blas():
            return self._core.step(x, mask, given, float(update_threshold), bool(want_scores))

    def score(self, line: Any, valid: Any = None) -> np.ndarray:
        """(W,) scores against the current model, which does not change."""
        from edgesentry._threads import single_threaded_blas

        line, mask = check_line(line, self.bands, valid)
        x = _as_line(line, self.dtype)
        if self._needs_pinv():
            return self._pinv_scores(x, mask)
        with single_threaded_blas():
            return self._core.score(x, mask)

    def _needs_pinv(self) -> bool:
        return not self._core.factor_ok and self._core.count > 1

    def _pinv_scores(self, x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """The specification's pseudo-inverse path (eigh with the pinv cutoff), in numpy."""
        from edgesentry._threads import single_threaded_blas

        self.pinv_lines += 1
        _, mean, cov = self.statistics()
        z = np.asarray(x, dtype=np.float64) - mean
        if mask is not None:
            z = np.where(mask[:, None], z, 0.0)  # invalid pixels may hold NaN
        with single_threaded_blas():  # small: BLAS threads would only spin against the kernel's
            rank = None if self.ridge else self._core.pixels - 1  # reference.pinv's cap
            vectors, values = whitening(_regularize(cov, self.ridge), self.rcond, rank)
            scores = np.square(z @ vectors) @ (1.0 / values) if values.size else np.zeros(len(z))
        if mask is not None:
            scores[~mask] = np.nan
        return scores

    def statistics(self) -> tuple[float, np.ndarray, np.ndarray]:
        """(N, mean (B,), covariance (B, B) without ridge), float64."""
        count = self._core.count
        scatter = self._core.scatter()
        cov = scatter / (count - 1) if count > 1 else np.full_like(scatter, np.nan)
        return count, self._core.mean(), cov

    def factor(self) -> np.ndarray | None:
        """L (B, B) lower with ``C + ridge = L L^T`` for the next line, or None (pinv path)."""
        return self._core.factor() if self._core.factor_ok else None

    def set_factor(self, factor: np.ndarray) -> None:
        """Replace the maintained factor (tests force drift with it)."""
        self._core.set_factor(np.asarray(factor, dtype=np.float64))

    def plan(self, kept: int) -> str:
        """``"update"`` or ``"refactor"``: the cost model's choice for a line of ``kept`` pixels."""
        return self._core.plan(int(kept))

    def info(self) -> dict[str, Any]:
        return {"tier": "cpu", "lines": self.lines, "pinv_lines": self.pinv_lines, **self._core.counters()}
