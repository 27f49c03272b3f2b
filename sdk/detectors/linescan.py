"""Line-scan (push-broom) mode of the hyperspectral detectors: one line in, its scores out.

    det = edgesentry.load("rx", mode="linescan", warmup=10)        # causal after 10 lines
    for line_result in det.stream(lines):    # any iterable of (W, B) arrays, e.g. a camera
        line_result.index, line_result.scores, line_result.objects
    det.predict_line(line)    # -> the LineResults this line completes (several after a
                              #    warm-up, none while look-ahead lines are awaited)
    det.flush()               # end of the scan: the lines still waiting for look-ahead
    det.predict(cube)         # a whole (H, W, B) cube scanned top to bottom -> Result

Each line of W pixels x B bands is scored against a background model of earlier lines (the
``edgesentry.kernels.linescan`` model: exponentially weighted or a sliding window of lines,
float64 statistics, pseudo-inverse semantics of RX), then joins it. Delay: a line is scored
when it arrives (``lookahead=0``), except that

- ``warmup=n`` holds the first n lines until all of them are in, scores each against the
  model of those n lines, and is causal from line n on (a start-up delay only: the first
  lines of a scan would otherwise be scored against almost nothing);
- ``lookahead=k`` scores line t against the model of lines ``<= t + k`` (the line itself
  included, as global RX does), so every line waits k lines; ``flush()`` scores the last k
  against everything seen;
- a feature transform (FERS's networks) adds its own delay in lines (``delay_lines``).

Pixels: the cube's NaN policy applies per line (``raise``: a line with a NaN/Inf pixel is an
``InputError``; ``mask``: those pixels score NaN and never join the model). Pixels scoring
above ``update_threshold`` do not join the model either, so targets do not teach the
background (from the first line after the warm-up on: warm-up lines all join). With look-ahead,
a line joins before its own scores exist, so the threshold applies to its causal scores.
``dims=d`` projects every line on the d leading principal components of the warm-up lines (a
reduced dimension, like ERX's 5 projected dimensions).

Objects: pixels at or above the pixel threshold are grouped across lines into 8-connected
components; each is reported once, in the ``LineResult`` of the first line that no longer
touches it (or by ``flush()``), with its bounding box in line coordinates (first and last
line index, first and last column), its pixel count and its peak.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from edgesentry.detector import Detector
from edgesentry.errors import ConfigError, InputError, describe
from edgesentry.io.hsi import as_cube, select_bands
from edgesentry.kernels import linescan as linescan_kernels
from edgesentry.result import Result

NanPolicy = Literal["raise", "mask"]
#: Lines held for warm-up / look-ahead may take at most this much memory (float64).
MAX_HELD_BYTES = 1 << 30


@dataclass
class LineObject:
    """A connected group of anomalous pixels across lines (8-connected), in line coordinates."""

    id: int
    first_line: int
    last_line: int
    first_col: int
    last_col: int
    pixels: int
    peak: float
    peak_at: tuple[int, int]  # (line, column)

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """(first_line, first_col, last_line, last_col), inclusive."""
        return self.first_line, self.first_col, self.last_line, self.last_col

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LineResult:
    """The scores of one line.

    Attributes:
        index: the line's position in the scan (0 = first line received).
        scores: (W,) float64 squared Mahalanobis distances; NaN where a pixel was masked or
            before any background existed.
        score: the line's largest score (NaN if none).
        label: (W,) bool, ``scores >= pixel threshold``, when a threshold is set.
        objects: the objects closed once this line was scored.
        info: ``delay_lines`` (lines between arrival and scoring), ``model_lines`` (lines
            in the background model), the kernel tier.
        timings: seconds of the call that produced this result.
    """

    index: int
    scores: np.ndarray
    score: float
    label: np.ndarray | None = None
    objects: list[LineObject] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-able summary (the shape ``Result.summary`` has, for the stream's records);
        ``record`` holds the line's own fields."""
        score = float(self.score) if np.isfinite(self.score) else None
        return {
            "score": score,
            "raw_score": score,
            "label": None if self.label is None else bool(self.label.any()),
            "timings": {k: round(v, 6) for k, v in self.timings.items()},
            "info": dict(self.info),
            "record": {
                "line": self.index,
                "anomalous_pixels": None if self.label is None else int(self.label.sum()),
                "delay_lines": self.info.get("delay_lines"),
                "objects": [o.to_dict() for o in self.objects],
            },
        }


class ObjectTracker:
    """Streaming 8-connected components over a sequence of boolean lines."""

    def __init__(self) -> None:
        self._open: dict[int, LineObject] = {}
        self._runs: list[tuple[int, int, int]] = []  # (first col, last col, object id) of the last line
        self._next = 0

    def push(self, index: int, mask: np.ndarray, scores: np.ndarray) -> list[LineObject]:
        """Add line ``index``; return the objects it closes (no pixel of theirs touches it)."""
        runs = _runs(mask)
        parent: dict[int, int] = {}

        def root(i: int) -> int:
            while parent.get(i, i) != i:
                i = parent[i]
            return i

        current: list[tuple[int, int, int]] = []
        j = 0
        for c0, c1 in runs:
            touching = []
            while j < len(self._runs) and self._runs[j][1] < c0 - 1:
                j += 1
            k = j
            while k < len(self._runs) and self._runs[k][0] <= c1 + 1:
                touching.append(root(self._runs[k][2]))
                k += 1
            if touching:
                target = min(touching)
                for other in touching:
                    if other != target:
                        parent[other] = target
            else:
                target = self._new(index, c0)
            current.append((c0, c1, target))
        for old, new in list(parent.items()):  # fold merged objects into their roots
            self._merge(root(new), old)
        current = [(c0, c1, root(obj)) for c0, c1, obj in current]
        for c0, c1, obj in current:
            self._extend(self._open[obj], index, c0, c1, scores)
        alive = {obj for _, _, obj in current}
        closed = [self._open.pop(obj) for obj in sorted(self._open) if obj not in alive]
        self._runs = current
        return closed

    def close_all(self) -> list[LineObject]:
        closed = [self._open[obj] for obj in sorted(self._open)]
        self._open.clear()
        self._runs = []
        return closed

    def _new(self, index: int, col: int) -> int:
        obj = self._next
        self._next += 1
        self._open[obj] = LineObject(obj, index, index, col, col, 0, -np.inf, (index, col))
        return obj

    def _merge(self, into: int, other: int) -> None:
        if other == into or other not in self._open:
            return
        a, b = self._open[into], self._open.pop(other)
        a.first_line, a.last_line = min(a.first_line, b.first_line), max(a.last_line, b.last_line)
        a.first_col, a.last_col = min(a.first_col, b.first_col), max(a.last_col, b.last_col)
        a.pixels += b.pixels
        if b.peak > a.peak:
            a.peak, a.peak_at = b.peak, b.peak_at

    @staticmethod
    def _extend(obj: LineObject, index: int, c0: int, c1: int, scores: np.ndarray) -> None:
        obj.last_line = max(obj.last_line, index)
        obj.first_col, obj.last_col = min(obj.first_col, c0), max(obj.last_col, c1)
        obj.pixels += c1 - c0 + 1
        segment = scores[c0:c1 + 1]
        peak = int(np.nanargmax(segment)) if np.isfinite(segment).any() else 0
        if segment[peak] > obj.peak:
            obj.peak, obj.peak_at = float(segment[peak]), (index, c0 + peak)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (first, last) column of every run of True."""
    padded = np.concatenate(([False], np.asarray(mask, bool), [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2])]


class LineTransform(Protocol):
    """A per-line feature stage with a delay (FERS's networks): lines in, lines out, in order."""

    delay_lines: int

    def push(self, index: int, line: np.ndarray) -> list[tuple[int, np.ndarray]]: ...

    def flush(self) -> list[tuple[int, np.ndarray]]: ...


@dataclass
class LineScanConfig:
    """Line-scan options (see the module docstring)."""

    forgetting: float = 1.0
    window: int = 0
    warmup: int = 0
    lookahead: int = 0
    ridge: float = 0.0
    rcond: float = linescan_kernels.DEFAULT_RCOND
    update_threshold: float | None = None
    bands: int | list[int] | None = None
    dims: int | None = None
    dtype: Literal["float64", "float32"] = "float64"
    nan_policy: NanPolicy = "raise"
    variable: str | None = None  # .mat variable when ``predict`` gets a path

    def __post_init__(self) -> None:
        linescan_kernels.check_options(1, self.forgetting, self.window, self.ridge, self.rcond, self.dtype)
        for name in ("warmup", "lookahead"):
            value = getattr(self, name)
            if not (isinstance(value, (int, np.integer)) and value >= 0):
                raise ConfigError(f"{name} must be an integer >= 0 (lines); got {value!r}")
        if self.nan_policy not in ("raise", "mask"):
            raise ConfigError(f"nan_policy must be 'raise' or 'mask'; got {self.nan_policy!r}")
        if self.update_threshold is not None and not np.isfinite(self.update_threshold):
            raise ConfigError(f"update_threshold must be a finite number or None; got {self.update_threshold}")
        if self.dims is not None:
            if not (isinstance(self.dims, (int, np.integer)) and self.dims >= 1):
                raise ConfigError(f"dims must be an integer >= 1; got {self.dims!r}")
            if self.warmup < 1:
                raise ConfigError("dims needs warmup >= 1: the projection is fitted on the warm-up lines")
        if isinstance(self.bands, tuple):
            self.bands = list(self.bands)


@dataclass
class _Held:
    index: int
    line: np.ndarray  # (W, B') after bands and transform, before the projection
    valid: np.ndarray | None
    fed: bool = False


class LineScanDetector(Detector):
    """Line-scan RX (``edgesentry.load("rx", mode="linescan")``) and the scoring half of FERS
    line-scan. Not thread-safe while streaming (``predict_line`` changes the model);
    ``predict(cube)`` scans with a fresh model and may be shared."""

    family = "rx"
    map_shares_score_scale = True

    def __init__(self, config: LineScanConfig | None = None, *, transform_factory: Any = None,
                 family: str = "rx", **kwargs: Any):
        super().__init__(kernel_ops=(linescan_kernels.LINE_MODEL,), **kwargs)
        self.cfg = config or LineScanConfig()
        self.family = family
        self._transform_factory = transform_factory
        self.reset()

    # ---------------------------------------------------------------------- streaming
    def reset(self) -> None:
        """Forget every line: the next line starts a new scan."""
        self._model: Any = None
        self._tier: str | None = None
        self._projection: np.ndarray | None = None
        self._width: int | None = None
        self._raw_bands: int | None = None
        self._held: deque[_Held] = deque()
        self._received = 0
        self._fed = 0
        self._tracker = ObjectTracker()
        self._transform = self._transform_factory() if self._transform_factory else None

    @property
    def delay_lines(self) -> int:
        """Lines between a line's arrival and its result, once past the warm-up."""
        return self.cfg.lookahead + (self._transform.delay_lines if self._transform else 0)

    def predict_line(self, line: Any) -> list[LineResult]:
        """Add one (W, B) line; return the results it completes, oldest first.

        Raises:
            InputError: the line is not (W, B) real numbers, its width or band count differs
                from the scan's first line, or it holds NaN/Inf under ``nan_policy="raise"``.
        """
        t0 = time.perf_counter()
        index = self._received
        x, valid = self._validate(line, index)
        self._received += 1
        staged = [(index, x)] if self._transform is None else self._transform.push(index, x)
        out: list[LineResult] = []
        for i, feature in staged:
            self._held.append(_Held(i, feature, valid if self._transform is None else None))
            out += self._advance(final=False)
        return self._stamp(out, t0)

    def flush(self) -> list[LineResult]:
        """End of the scan: score the lines still waiting (look-ahead, warm-up, transform)
        against everything seen, and close every open object."""
        t0 = time.perf_counter()
        out: list[LineResult] = []
        if self._transform is not None:
            for i, feature in self._transform.flush():
                self._held.append(_Held(i, feature, None))
                out += self._advance(final=False)
        out += self._advance(final=True)
        if out:
            out[-1].objects += self._tracker.close_all()
        return self._stamp(out, t0)

    def stream(self, lines: Iterable[Any]) -> Iterator[LineResult]:
        """Results for every line of ``lines`` in order, the last ones after the input ends."""
        self.reset()
        for line in lines:
            yield from self.predict_line(line)
        yield from self.flush()

    def _validate(self, line: Any, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        x = line if isinstance(line, np.ndarray) else None
        if x is None:
            raise InputError(f"line {index}: expected a (W, B) numpy array; got {describe(line)}")
        if x.ndim != 2 or x.dtype.kind not in "iuf" or min(x.shape) == 0:
            raise InputError(f"line {index}: expected a non-empty (W, B) real array; got shape {x.shape} {x.dtype}")
        if self._width is None:
            self._width, self._raw_bands = x.shape
            self._check_memory()
        if x.shape != (self._width, self._raw_bands):
            raise InputError(
                f"line {index} is {x.shape[0]} pixels x {x.shape[1]} bands; this scan's lines are "
                f"{self._width} x {self._raw_bands} (call reset() to start a new scan)"
            )
        x = select_bands(x, self.cfg.bands)
        # float32 compute keeps float32 and 16-bit integer lines (exact) in float32
        narrow = x.dtype == np.float32 or (x.dtype.kind in "iu" and x.dtype.itemsize <= 2)
        x = x.astype(np.float32 if self.cfg.dtype == "float32" and narrow else np.float64, copy=False)
        finite = np.isfinite(x.sum(axis=1))
        if finite.all():
            return x, None
        finite = np.isfinite(x).all(axis=1)
        if self.cfg.nan_policy == "raise" or self._transform is not None:
            raise InputError(
                f"line {index} has {int((~finite).sum())} pixels with NaN/Inf values; clean them or use "
                "nan_policy='mask' to skip them" + (" (not available with a feature transform)" if self._transform
                                                    else "")
            )
        return x, finite

    def _check_memory(self) -> None:
        held = max(self.cfg.warmup, self.cfg.lookahead + 1) * self._width * self._raw_bands * 8
        bands = self.cfg.dims or self._raw_bands
        ring = self.cfg.window * bands * bands * 8
        if held > MAX_HELD_BYTES or ring > MAX_HELD_BYTES:
            raise ConfigError(
                f"warm-up/look-ahead lines ({held / 2**20:.0f} MiB) and window statistics ({ring / 2**20:.0f} MiB) "
                f"must each fit in {MAX_HELD_BYTES / 2**20:.0f} MiB; lower warmup, lookahead or window"
            )

    # ---------------------------------------------------------------------- scheduling
    def _target(self, index: int) -> int:
        """Lines the model must hold before line ``index`` is scored."""
        lines = index + self.cfg.lookahead + 1 if self.cfg.lookahead else index
        return max(lines, self.cfg.warmup) if index < self.cfg.warmup else lines

    def _advance(self, *, final: bool) -> list[LineResult]:
        """Feed held lines to the model and score those whose look-ahead is complete."""
        if self._model is None:
            if not final and len(self._held) < max(1, self.cfg.warmup if self.cfg.dims else 1):
                return []
            if not self._held:
                return []
            self._build_model()
        out: list[LineResult] = []
        for held in list(self._held):
            if held.fed:
                continue
            if held is self._held[0] and self._target(held.index) == self._fed:
                # causal: scored against the model before it joins, in one fused kernel call
                self._held.popleft()
                out.append(self._emit(held, self._step(held, want_scores=True)))
            else:
                self._step(held, want_scores=False)
        while self._held and (final or self._target(self._held[0].index) <= self._fed):
            held = self._held.popleft()
            out.append(self._emit(held, self._model.score(self._project(held.line, held.valid), held.valid)))
        return out

    def _step(self, held: _Held, *, want_scores: bool) -> np.ndarray:
        # warm-up lines all join: scores against the one or two lines before them mean nothing yet
        thr = np.inf if self.cfg.update_threshold is None or held.index < self.cfg.warmup \
            else self.cfg.update_threshold
        scores = self._model.step(self._project(held.line, held.valid), held.valid, thr, want_scores)
        held.fed = True
        self._fed += 1
        return scores

    def _build_model(self) -> None:
        if self.cfg.dims:
            block = np.concatenate([h.line if h.valid is None else h.line[h.valid] for h in self._held])
            self._projection = principal_axes(block, self.cfg.dims)
        bands = self._held[0].line.shape[1] if self._projection is None else self._projection.shape[1]
        self._model, self._tier = linescan_kernels.line_model(
            bands, forgetting=self.cfg.forgetting, window=self.cfg.window, ridge=self.cfg.ridge,
            rcond=self.cfg.rcond, dtype=self.cfg.dtype, tier=self.kernels,
        )

    def _project(self, line: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        if self._projection is None:
            return line
        from edgesentry._threads import single_threaded_blas

        if valid is not None:  # masked pixels may hold NaN; they are never scored or kept
            line = np.where(valid[:, None], line, 0.0)
        with single_threaded_blas():  # W x B x d: BLAS threads would only spin against the kernel
            return line @ self._projection.astype(line.dtype)

    def _emit(self, held: _Held, scores: Any) -> LineResult:
        scores = np.asarray(scores.detach().cpu() if hasattr(scores, "detach") else scores, dtype=np.float64)
        finite = np.isfinite(scores)
        score = float(scores[finite].max()) if finite.any() else float("nan")
        thr = self.effective_pixel_threshold
        label = None if thr is None else scores >= thr
        objects = self._tracker.push(held.index, label, scores) if label is not None else []
        info = {"delay_lines": self._received - 1 - held.index, "model_lines": self._fed, "kernel_tier": self._tier}
        return LineResult(held.index, scores, score, label, objects, info)

    @staticmethod
    def _stamp(results: list[LineResult], t0: float) -> list[LineResult]:
        elapsed = time.perf_counter() - t0
        for r in results:
            r.timings["call"] = elapsed
        return results

    # ------------------------------------------------------------- whole cube (Detector)
    def preprocess(self, x: Any) -> tuple[np.ndarray, dict[str, Any]]:
        return as_cube(x, variable=self.cfg.variable, who="line-scan RX")

    def postprocess(self, raw: Any, prepared: tuple[np.ndarray, dict[str, Any]]) -> Result:
        cube, source = prepared
        scanner = self.clone()
        h, w = cube.shape[:2]
        scores = np.full((h, w), np.nan)
        objects: list[LineObject] = []
        for r in scanner.stream(cube[i] for i in range(h)):
            scores[r.index] = r.scores
            objects += r.objects
        valid = np.isfinite(scores)
        return Result(
            score=float(np.nanmax(scores)) if valid.any() else float("nan"),
            anomaly_map=scores.astype(np.float32),
            extras={"scores": scores, "valid": valid, "objects": objects},
            info={"kernel_tier": scanner._tier, "mode": "linescan", "delay_lines": self.delay_lines,
                  "bands": select_bands(cube[:1, :1], self.cfg.bands).shape[-1], **source},
        )

    def clone(self) -> LineScanDetector:
        """A detector with the same configuration and thresholds and a fresh scan."""
        other = LineScanDetector(self.cfg, transform_factory=self._transform_factory, family=self.family,
                                 kernels=self.kernels)
        other._calibration, other._threshold, other._pixel_threshold = (
            self._calibration, self._threshold, self._pixel_threshold)
        return other

    def config(self) -> dict[str, Any]:
        return {"mode": "linescan", **asdict(self.cfg)}

    def info(self) -> dict[str, Any]:
        out = super().info()
        out.update(graph=None, delay_lines=self.delay_lines, lines_received=self._received,
                   model=None if self._model is None else self._model.info())
        return out


def principal_axes(pixels: np.ndarray, dims: int) -> np.ndarray:
    """(B, dims) leading eigenvectors of the covariance of (N, B) pixels (PCA)."""
    x = np.asarray(pixels, dtype=np.float64)
    if x.shape[0] < 2 or dims > x.shape[1]:
        raise InputError(f"dims={dims} needs at least 2 warm-up pixels and at most {x.shape[1]} dims; "
                         f"got {x.shape[0]} pixels")
    from edgesentry._threads import single_threaded_blas

    with single_threaded_blas():  # B x B: BLAS threads would only spin against the kernel's
        _, vectors = np.linalg.eigh(np.cov(x, rowvar=False))
    return np.ascontiguousarray(vectors[:, ::-1][:, :dims])


def build(
    *,
    window: int | None = None,
    forgetting: float = 1.0,
    warmup: int = 0,
    lookahead: int = 0,
    ridge: float = 0.0,
    rcond: float = linescan_kernels.DEFAULT_RCOND,
    update_threshold: float | None = None,
    bands: int | list[int] | None = None,
    dims: int | None = None,
    dtype: Literal["float64", "float32"] = "float64",
    nan_policy: NanPolicy = "raise",
    variable: str | None = None,
    kernels: str = "auto",
    threshold: float | None = None,
    pixel_threshold: float | None = None,
) -> LineScanDetector:
    """``edgesentry.load("rx", mode="linescan", ...)``: see ``LineScanConfig``; ``window`` is a
    number of lines here (a sliding block instead of exponential forgetting)."""
    if window is not None and not isinstance(window, (int, np.integer)):
        raise ConfigError(f"line-scan window is a number of lines (an int); got {window!r}")
    cfg = LineScanConfig(forgetting=forgetting, window=int(window or 0), warmup=warmup, lookahead=lookahead,
                         ridge=ridge, rcond=rcond, update_threshold=update_threshold, bands=bands, dims=dims,
                         dtype=dtype, nan_policy=nan_policy, variable=variable)
    return LineScanDetector(cfg, kernels=kernels, threshold=threshold, pixel_threshold=pixel_threshold)
