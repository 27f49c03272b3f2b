"""``Detector``: the one pipeline every family follows.

    input --preprocess--> tensor --graph (backend)--> raw outputs --postprocess (kernel)--> Result

A family subclasses ``Detector`` and implements the three stages; this class runs them in
one timed loop (``predict_batch``, in chunks of ``batch_size`` inputs per graph call),
applies calibration (score normalisation, threshold, pixel mask) and offers the shared
surface: ``predict``, ``predict_batch``, ``calibrate``, ``threshold``, ``info``, ``save``.
The kernel tier is resolved once, at construction, for the family's kernel ops; ``info()``
and ``self.kernels`` name the tier that runs.

Non-finite scores: a NaN or Inf raw score is neither above nor below any threshold, so it is
never turned into ``label=False``: ``finalize`` raises ``InputError`` naming the score (a
stream records that frame as failed). Weights are checked for NaN/Inf when a bundle is loaded,
so such a score comes from the input or a degenerate computation.

Thread safety: ``predict`` does not mutate the detector, so one instance may be shared by
threads once loaded; ``calibrate``, the threshold setters and ``save`` must not run
concurrently with ``predict``.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from edgesentry.calibration import Calibration, fit_calibration
from edgesentry.errors import ConfigError, InputError, describe
from edgesentry.kernels import KernelOp, resolve_tier
from edgesentry.result import Result

KernelTier = Literal["auto", "reference", "cpu", "triton", "cuda"]


def _check_threshold(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a finite number or None; got {value!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite; got {value}")
    return value


class Detector:
    """Base class of all detectors. Subclasses set ``family`` and implement the stages."""

    family: ClassVar[str] = ""
    #: True when ``forward_batch`` stacks a chunk into one graph call (``Result.info["batch"]``)
    batches_graph: ClassVar[bool] = False
    #: inputs per graph call in ``predict_batch``
    batch_size: int = 1
    #: precision of the graphs (``edgesentry.load(..., precision=...)`` sets it)
    precision: str = "fp32"

    def __init__(
        self,
        *,
        threshold: float | None = None,
        pixel_threshold: float | None = None,
        calibration: Calibration | dict | None = None,
        kernels: KernelTier = "auto",
        kernel_ops: Sequence[KernelOp] = (),
    ) -> None:
        """``kernels``: the tier to run ``kernel_ops`` (the family's post-processing ops) with;
        ``"auto"`` (or ``EDGESENTRY_KERNELS``) is resolved here, once, to the tier that runs."""
        self.kernels: str = resolve_tier(kernels, kernel_ops)
        self._calibration: Calibration | None = None
        self._threshold: float | None = None
        self._pixel_threshold: float | None = None
        if calibration is not None:
            self.calibration = calibration  # sets both thresholds
        if threshold is not None:
            self.threshold = threshold
        if pixel_threshold is not None:
            self.pixel_threshold = pixel_threshold

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "preprocess" in cls.__dict__:  # every family's own preprocess, however it is called
            cls.preprocess = _memory_guard(cls.__dict__["preprocess"])

    # ------------------------------------------------------------------ stages (override)
    def preprocess(self, x: Any) -> Any:
        """Validate and prepare one input; raise ``InputError`` naming expected vs received."""
        raise NotImplementedError

    def forward(self, prepared: Any) -> Any:
        """Run the graph on the prepared input (identity for graph-free families)."""
        return prepared

    def postprocess(self, raw: Any, prepared: Any) -> Result:
        """Fused post-processing: raw graph outputs to a raw ``Result``."""
        raise NotImplementedError

    def forward_batch(self, prepared: Sequence[Any]) -> Any:
        """The graph over a chunk of prepared inputs (one call each unless the family stacks them)."""
        return [self.forward(p) for p in prepared]

    def postprocess_batch(self, raw: Any, prepared: Sequence[Any]) -> list[Result]:
        """Post-processing of a chunk: ``raw`` is what ``forward_batch`` returned."""
        return [self.postprocess(r, p) for r, p in zip(raw, prepared)]

    # ----------------------------------------------------------------------- public API
    def predict(self, x: Any, **options: Any) -> Result:
        """Run the full pipeline on one input; see the family's docstring for ``x`` and the
        ``options`` its ``preprocess`` takes (e.g. ``color="bgr"``)."""
        return self.predict_batch([x], **options)[0]

    def predict_batch(self, xs: Iterable[Any], **options: Any) -> list[Result]:
        """The pipeline over many inputs, ``batch_size`` per graph call, each stage timed.

        A chunk's stage times are shared equally by its results (``Result.timings``).
        """
        items = list(xs)
        if not items:
            raise InputError("predict_batch() got an empty sequence; pass at least one input")
        step = max(1, int(self.batch_size))
        results: list[Result] = []
        for start in range(0, len(items), step):
            chunk = items[start:start + step]
            t0 = time.perf_counter()
            prepared = [self.preprocess(x, **options) for x in chunk]
            t1 = time.perf_counter()
            raw = self.forward_batch(prepared)
            t2 = time.perf_counter()
            chunk_results = self.postprocess_batch(raw, prepared)
            t3 = time.perf_counter()
            n = len(chunk)
            for res in chunk_results:
                res.timings.update(preprocess=(t1 - t0) / n, graph=(t2 - t1) / n, postprocess=(t3 - t2) / n,
                                   total=(t3 - t0) / n)
                if self.batches_graph:
                    res.info["batch"] = n
                results.append(self.finalize(res))
        return results

    def finalize(self, result: Result) -> Result:
        """Apply normalisation, threshold and pixel mask to a raw result.

        Raises:
            InputError: the raw score is NaN or infinite (see the module docstring).
        """
        raw = result.raw_score if result.raw_score is not None else result.score
        result.raw_score = float(raw)
        if not math.isfinite(result.raw_score):
            raise InputError(f"{self.family or type(self).__name__} produced a non-finite score ({result.raw_score}); "
                             "no label can be given: check the input for extreme or degenerate values")
        if self._calibration is not None:
            result.score = self._calibration.normalize(raw)
        if self._threshold is not None:
            result.label = bool(raw >= self._threshold)
        pixel_thr = self.effective_pixel_threshold
        if pixel_thr is not None and result.anomaly_map is not None:
            result.mask = result.anomaly_map >= pixel_thr
        result.info.setdefault("family", self.family)
        return result

    # ---------------------------------------------------------------------- calibration
    def calibrate(
        self,
        normal_samples: Iterable[Any],
        *,
        quantile: float = 0.99,
        pixel_quantile: float = 0.999,
        margin: float = 0.1,
    ) -> Calibration:
        """Learn score normalisation and image/pixel thresholds from normal samples.

        See ``edgesentry.calibration`` for the rule. Returns the fitted record, which is
        also applied to this detector and written by ``save``.
        """
        scores, maps = [], []
        for sample in normal_samples:
            res = self.predict(sample)
            scores.append(res.raw_score)
            if res.anomaly_map is not None:
                maps.append(res.anomaly_map)
        calib = fit_calibration(scores, maps or None, quantile=quantile, pixel_quantile=pixel_quantile, margin=margin)
        self.calibration = calib
        return calib

    @property
    def calibration(self) -> Calibration | None:
        return self._calibration

    @calibration.setter
    def calibration(self, value: Calibration | dict | None) -> None:
        if value is None:
            self._calibration = None
            return
        calib = value if isinstance(value, Calibration) else Calibration.from_dict(value)
        self._calibration = calib
        self._threshold = calib.threshold
        self._pixel_threshold = calib.pixel_threshold

    @property
    def threshold(self) -> float | None:
        """Raw-scale score threshold behind ``Result.label`` (settable; ``None`` = no label)."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float | None) -> None:
        self._threshold = _check_threshold("threshold", value)

    @property
    def pixel_threshold(self) -> float | None:
        """Raw-scale anomaly-map threshold behind ``Result.mask`` (settable)."""
        return self._pixel_threshold

    @pixel_threshold.setter
    def pixel_threshold(self, value: float | None) -> None:
        self._pixel_threshold = _check_threshold("pixel_threshold", value)

    @property
    def effective_pixel_threshold(self) -> float | None:
        """The pixel threshold, or the score threshold where map and score share a scale."""
        if self._pixel_threshold is not None:
            return self._pixel_threshold
        return self._threshold if self.map_shares_score_scale else None

    #: True when ``score`` is a statistic of the anomaly map (e.g. its max), so the score
    #: threshold is also meaningful per pixel.
    map_shares_score_scale: ClassVar[bool] = False

    # ----------------------------------------------------------------------------- info
    def config(self) -> dict[str, Any]:
        """JSON-able configuration that rebuilds this detector (family specific)."""
        return {}

    def info(self) -> dict[str, Any]:
        """Facts about this detector: family, configuration, kernels, backend, thresholds."""
        return {
            "family": self.family,
            "config": self.config(),
            "kernels": self.kernels,
            "precision": self.precision,
            "threshold": self._threshold,
            "pixel_threshold": self._pixel_threshold,
            "calibration": None if self._calibration is None else self._calibration.to_dict(),
        }

    def save(self, path: str | Path, *, overwrite: bool = False) -> Any:
        """Write this detector (config, weights, calibration) as a bundle directory."""
        from edgesentry.bundle import write_bundle

        payload = self.bundle_payload()
        return write_bundle(
            path,
            self.family,
            calibration=None if self._calibration is None else self._calibration.to_dict(),
            overwrite=overwrite,
            **payload,
        )

    def bundle_payload(self) -> dict[str, Any]:
        """Keyword arguments for ``write_bundle`` (config, preprocessing, tensors ...)."""
        return {"config": self.config()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config()})"


def _memory_guard(preprocess: Any) -> Any:
    """Turn a ``MemoryError`` inside ``preprocess`` into an ``InputError`` naming the input.

    A huge input (e.g. a broadcast view of 10^10 pixels) fails in numpy's first working copy;
    the user should hear that the input is too large, not numpy's allocator message.
    """
    if getattr(preprocess, "_memory_guarded", False):
        return preprocess

    @functools.wraps(preprocess)
    def guarded(self: Detector, x: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return preprocess(self, x, *args, **kwargs)
        except MemoryError:
            raise InputError(
                f"{self.family or type(self).__name__} input is too large to prepare in this process's memory: "
                f"got {describe(x)}; pass a smaller input (resize or tile it)"
            ) from None

    guarded._memory_guarded = True  # type: ignore[attr-defined]
    return guarded
