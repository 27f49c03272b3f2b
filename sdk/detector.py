"""``Detector``: the one pipeline every family follows.

    input --preprocess--> tensor --graph (backend)--> raw outputs --postprocess (kernel)--> Result

A family subclasses ``Detector`` and implements the three stages; this class runs them in
one timed loop (``predict_batch``, in chunks of ``batch_size`` inputs per graph call),
applies calibration (score normalisation, threshold, pixel mask) and offers the shared
surface: ``predict``, ``predict_batch``, ``calibrate``, ``threshold``, ``info``, ``save``.
The kernel tier is resolved once, at construction, for the family's kernel ops; ``info()``
and ``self.kernels`` name the tier that runs.

One threshold story: ``threshold`` is on the scale of ``Result.score`` and ``Result.label`` is
``score >= threshold``. Uncalibrated, both are the seed's raw scale; once calibrated, ``score`` is
normalised to [0, 1] with the calibrated threshold at 0.5, and ``threshold`` is a value in
(0, 1] on that scale (``raw_threshold`` reads and sets it on the raw scale). ``pixel_threshold``
is on the anomaly map's scale, which is never normalised. ``save`` keeps all of them.

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
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from edgesentry.calibration import Calibration, fit_calibration
from edgesentry.errors import ConfigError, EdgesentryError, InputError, describe, option
from edgesentry.io.files import expand, names_many
from edgesentry.kernels import KernelOp, resolve_tier
from edgesentry.result import Result

if TYPE_CHECKING:
    from edgesentry.bundle import Bundle

log = logging.getLogger("edgesentry.detector")

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
    #: files a folder or glob contributes to ``predict`` / ``calibrate`` (empty: a folder is not
    #: an input of this family)
    input_suffixes: ClassVar[tuple[str, ...]] = ()
    #: what one input is, for messages ("image path, PIL image or (H, W, 3) uint8 array")
    input_kinds: ClassVar[str] = "one input"
    #: True when a list of paths is one input of this family (several clips of one query)
    list_is_one_input: ClassVar[bool] = False
    #: the bundle this detector was loaded from (``save`` copies its graphs and weights)
    bundle: Bundle | None = None

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
        self._threshold: float | None = None  # on the score's scale
        self._pixel_threshold: float | None = None  # on the anomaly map's scale
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
    def predict(self, x: Any, **options: Any) -> Result | list[Result]:
        """Run the full pipeline on one input -> ``Result``; on a folder, a glob pattern or a
        list of paths -> one ``Result`` per file (sorted; see ``predict_batch``).

        See the family's docstring for what one input is and for the ``options`` its
        ``preprocess`` takes (e.g. ``color="bgr"``).
        """
        many = self._many(x)
        if many is not None:
            return self.predict_batch(many, **options)
        return self.predict_batch([x], **options)[0]

    def _many(self, x: Any) -> list[Any] | None:
        return many_inputs(x, type(self))

    def _inputs(self, xs: Any) -> list[Any]:
        """``xs`` of ``predict_batch`` / ``calibrate`` as a list: a folder, glob or one path expands
        to its files; any other iterable is taken item by item."""
        if isinstance(xs, (str, os.PathLike)):
            if not self.input_suffixes:
                raise InputError(f"{self.family} takes a sequence of inputs ({self.input_kinds} each); "
                                 f"got {describe(xs)}")
            return [os.fspath(p) for p in expand(xs, self.input_suffixes, what=f"{self.family} input")]
        if isinstance(xs, Mapping) or not isinstance(xs, Iterable):
            raise InputError(f"expected a sequence of inputs ({self.input_kinds} each), a folder or a glob; "
                             f"got {describe(xs)}")
        return list(xs)

    def predict_batch(self, xs: Iterable[Any] | str | os.PathLike, *, on_error: Literal["raise", "return"] = "raise",
                      **options: Any) -> list[Result]:
        """The pipeline over many inputs (a sequence, or a folder / glob of files), ``batch_size``
        per graph call, each stage timed.

        A chunk's stage times are shared equally by its results (``Result.timings``).
        ``on_error="return"`` puts the ``EdgesentryError`` of an input that cannot be prepared
        (an unreadable file, a wrong shape) in its place in the returned list, and the others
        run on (what ``edgesentry detect`` and ``watch`` record as failed).
        """
        items = self._inputs(xs)
        if not items:
            raise InputError("predict_batch() got an empty sequence; pass at least one input")
        if on_error not in ("raise", "return"):
            raise ConfigError(f"on_error must be 'raise' or 'return'; got {on_error!r}")
        step = max(1, int(self.batch_size))
        results: list[Any] = []
        for start in range(0, len(items), step):
            results.extend(self._run_chunk(items[start:start + step], on_error, options))
        return results

    def _run_chunk(self, chunk: list[Any], on_error: str, options: dict[str, Any]) -> list[Any]:
        t0 = time.perf_counter()
        prepared: list[Any] = []
        for x in chunk:
            try:
                prepared.append(self.preprocess(x, **options))
            except EdgesentryError as exc:
                if on_error == "raise":
                    raise
                prepared.append(exc)
        ok = [p for p in prepared if not isinstance(p, EdgesentryError)]
        if not ok:
            return prepared
        t1 = time.perf_counter()
        raw = self.forward_batch(ok)
        t2 = time.perf_counter()
        done = iter(self.postprocess_batch(raw, ok))
        t3 = time.perf_counter()
        n = len(ok)
        out = []
        for item in prepared:
            if isinstance(item, EdgesentryError):
                out.append(item)
                continue
            res = next(done)
            res.timings.update(preprocess=(t1 - t0) / n, graph=(t2 - t1) / n, postprocess=(t3 - t2) / n,
                               total=(t3 - t0) / n)
            if self.batches_graph:
                res.info["batch"] = n
            try:
                out.append(self.finalize(res))
            except EdgesentryError as exc:  # e.g. a non-finite score: that input fails, not the chunk
                if on_error == "raise":
                    raise
                out.append(exc)
        return out

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
            result.label = bool(result.score >= self._threshold)  # one scale: label == score >= threshold
            result.info.update(threshold=self._threshold, raw_threshold=self.raw_threshold)
        pixel_thr = self.effective_pixel_threshold
        if pixel_thr is not None and result.anomaly_map is not None:
            result.mask = result.anomaly_map >= pixel_thr
            result.info["pixel_threshold"] = pixel_thr
        result.info.setdefault("family", self.family)
        return result

    # ---------------------------------------------------------------------- calibration
    def calibrate(
        self,
        normal_samples: Iterable[Any] | str | os.PathLike,
        *,
        quantile: float = 0.99,
        pixel_quantile: float = 0.999,
        margin: float = 0.1,
    ) -> Calibration:
        """Learn score normalisation and image/pixel thresholds from normal samples.

        ``normal_samples``: a sequence of inputs, or a folder / glob of files. See
        ``edgesentry.calibration`` for the rule. Returns the fitted record, which is also applied
        to this detector (``threshold`` becomes 0.5 on the normalised scale) and written by ``save``.
        """
        items = self._inputs(normal_samples)
        if not items:
            raise InputError("calibrate() needs at least one normal sample; got none")
        scores, maps = [], []
        step = max(1, int(self.batch_size))
        for start in range(0, len(items), step):  # one chunk at a time: only scores and maps are kept
            for res in self.predict_batch(items[start:start + step]):
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
            if self._calibration is not None and self._threshold is not None:
                self._threshold = self.raw_threshold  # the same decision, back on the raw scale
            self._calibration = None
            return
        calib = value if isinstance(value, Calibration) else Calibration.from_dict(value)
        self._calibration = calib
        self._threshold = 0.5  # the calibrated threshold, on the normalised scale
        self._pixel_threshold = calib.pixel_threshold

    @property
    def score_scale(self) -> Literal["normalised", "raw"]:
        """The scale of ``Result.score`` and ``threshold``: ``normalised`` once calibrated."""
        return "raw" if self._calibration is None else "normalised"

    @property
    def threshold(self) -> float | None:
        """Score threshold behind ``Result.label`` (``label = score >= threshold``), on the
        scale of ``Result.score``: raw, or once calibrated normalised, in (0, 1] with the
        calibrated threshold at 0.5. Settable; ``None`` = no label."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float | None) -> None:
        value = _check_threshold("threshold", value)
        if value is not None and self._calibration is not None and not 0.0 < value <= 1.0:
            raise ConfigError(
                f"threshold is on the normalised score scale of this calibrated detector and must lie in (0, 1] "
                f"(0.5 = the calibrated threshold); got {value}. Set raw_threshold for a raw-scale value")
        self._threshold = value

    @property
    def raw_threshold(self) -> float | None:
        """``threshold`` on the raw score scale (``Result.raw_score``); settable."""
        if self._threshold is None or self._calibration is None:
            return self._threshold
        return self._calibration.denormalize(self._threshold)

    @raw_threshold.setter
    def raw_threshold(self, value: float | None) -> None:
        value = _check_threshold("raw_threshold", value)
        if value is None or self._calibration is None:
            self._threshold = value
            return
        where = self._calibration.normalize_unclipped(value)
        if not 0.0 < where <= 1.0:
            c = self._calibration
            raise ConfigError(
                f"raw_threshold {value:.6g} lies at {where:.4g} on the normalised scale, outside (0, 1]: normalised "
                f"scores are clipped there, so labels could not follow it. The calibrated range reaches raw "
                f"{c.denormalize(1e-9):.6g} .. {c.denormalize(1.0):.6g}; recalibrate for another range")
        self._threshold = where

    @property
    def pixel_threshold(self) -> float | None:
        """Anomaly-map threshold behind ``Result.mask``, on the map's (raw) scale; settable."""
        return self._pixel_threshold

    @pixel_threshold.setter
    def pixel_threshold(self, value: float | None) -> None:
        self._pixel_threshold = _check_threshold("pixel_threshold", value)

    @property
    def effective_pixel_threshold(self) -> float | None:
        """The pixel threshold, or the score threshold where map and score share a scale."""
        if self._pixel_threshold is not None:
            return self._pixel_threshold
        return self.raw_threshold if self.map_shares_score_scale else None

    def calibration_context(self) -> dict[str, Any]:
        """What the raw score scale depends on beyond the weights (e.g. ISSTAD's ``scoring``):
        stored beside the calibration and thresholds, which apply only where it matches."""
        return {}

    def calibration_record(self) -> dict[str, Any] | None:
        """The ``calibration`` section of ``meta.json``: the fitted record and its context."""
        if self._calibration is None:
            return None
        return {**self._calibration.to_dict(), **self.calibration_context()}

    def threshold_record(self) -> dict[str, Any]:
        """The ``thresholds`` section of ``meta.json``: what ``save`` keeps of the thresholds."""
        return {"score_scale": self.score_scale, "threshold": self._threshold, "raw_threshold": self.raw_threshold,
                "pixel_threshold": self._pixel_threshold, **self.calibration_context()}

    def restore_thresholds(self, record: Mapping[str, Any] | None) -> bool:
        """Apply a ``thresholds`` record written by ``save``; False (and a log line) when it was
        written for another score scale or context and so does not apply here."""
        if not record:
            return False
        context = self.calibration_context()
        saved = {k: record.get(k) for k in context}
        if record.get("score_scale") != self.score_scale or saved != context:
            log.warning("not applying the saved thresholds (score scale %s, %s) to this detector (score scale %s, "
                        "%s); set them again or recalibrate", record.get("score_scale"), saved, self.score_scale,
                        context)
            return False
        self.threshold = record.get("threshold")
        self.pixel_threshold = record.get("pixel_threshold")
        return True

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
            "score_scale": self.score_scale,
            "threshold": self._threshold,
            "raw_threshold": self.raw_threshold,
            "pixel_threshold": self._pixel_threshold,
            "calibration": self.calibration_record(),
        }

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Bundle:
        """Write this detector as a bundle directory; return it, opened again and verified.

        What this detector was loaded with comes along: the source bundle's weights, exported
        graphs (with their ``graphs`` record) and other files are copied, so a reloaded bundle
        runs on the same backend. ``config``, ``calibration`` and ``thresholds`` are this
        detector's, and every graph's ONNX ``metadata_props`` mirror them. Saving onto the
        source bundle itself updates it in place.

        Raises:
            ConfigError: a detector loaded at a reduced precision (its graphs and thresholds are
                a variant's; load the bundle at ``precision="fp32"`` to save it: the variants
                travel with it and keep their own thresholds).
        """
        from edgesentry.bundle import Bundle, write_bundle

        if self.precision != "fp32":
            raise ConfigError(f"this detector runs the bundle's {self.precision} graphs with that variant's "
                              f"thresholds; load the bundle with {option('precision', 'fp32')} to save it (its "
                              "precision variants travel with it and keep their own thresholds)")
        source = self.bundle
        config, calibration, thresholds = self.config(), self.calibration_record(), self.threshold_record()
        if source is not None and Path(path).resolve() == source.path.resolve():
            source.update_meta(config=config, calibration=calibration, thresholds=thresholds)
            source.mirror_metadata()
            return Bundle.open(source.path)
        if source is None:
            payload = {k: v for k, v in self.bundle_payload().items() if k != "config"}
        else:
            payload = {k: source.meta[k] for k in ("preprocessing", "io", "extra") if source.meta.get(k) is not None}
        bundle = write_bundle(path, self.family, config=config, calibration=calibration, overwrite=overwrite,
                              **payload)
        if source is not None:
            bundle.copy_files_from(source)
        bundle.update_meta(thresholds=thresholds)
        bundle.mirror_metadata()
        return Bundle.open(bundle.path)

    def bundle_payload(self) -> dict[str, Any]:
        """Keyword arguments for ``write_bundle`` (config, preprocessing, tensors ...) of a
        detector built without a bundle (one loaded from a bundle saves that bundle's files)."""
        return {"config": self.config()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config()})"


def many_inputs(x: Any, family: type[Detector]) -> list[str] | None:
    """The files ``x`` stands for when it is a folder, a glob or a list of paths (unless a list is
    one input of ``family``); else ``None`` (``x`` is one input). Shared by ``Detector.predict``
    and ``edgesentry.serving.Client.predict``."""
    paths = isinstance(x, (list, tuple)) and bool(x) and all(isinstance(i, (str, os.PathLike)) for i in x)
    if not names_many(x) and not (paths and not family.list_is_one_input):
        return None
    if not family.input_suffixes:
        raise InputError(f"{family.family} takes {family.input_kinds}; a folder or glob is not one of its inputs "
                         f"(got {describe(x)})")
    return [os.fspath(p) for p in expand(x, family.input_suffixes, what=f"{family.family} input")]


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
