"""RX (Reed-Xiaoli) hyperspectral anomaly detector: global and dual-window local.

    det = edgesentry.load("rx")                                  # global RX
    det = edgesentry.load("rx", mode="local", window=(3, 9))     # local RX, 3x3 guard, 9x9 outer
    result = det.predict(cube)                                   # (H, W, B) array or a file path
    det = edgesentry.load("rx", mode="linescan", warmup=10)      # push-broom lines: see linescan.py

The graph stage is empty; the post-processing kernel is the whole detector
(``edgesentry.kernels.rx``; float64 statistics and a pseudo-inverse, so singular scenes are
handled; see ``edgesentry/kernels/rx/reference.py`` for the specification and border rule).
``Result.anomaly_map`` is the (H, W) squared Mahalanobis distance (float32),
``Result.score`` its maximum, ``extras["scores"]`` the float64 map and ``extras["valid"]``
the pixels that were scored (all, unless NaN masking was asked for).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np

from edgesentry.bundle import Bundle, write_bundle
from edgesentry.detector import Detector
from edgesentry.errors import ConfigError, InputError, option
from edgesentry.io.files import CUBE_SUFFIXES
from edgesentry.io.hsi import as_cube, max_cube_bytes, select_bands
from edgesentry.kernels import rx as rx_kernels
from edgesentry.kernels.rx.cpu import release_pages
from edgesentry.result import Result

from .linescan import LineScanConfig

Mode = Literal["global", "local", "linescan"]
NanPolicy = Literal["raise", "mask"]


@dataclass
class RXConfig:
    """RX options. ``window=(inner, outer)`` is required for ``mode="local"``."""

    mode: Mode = "global"
    window: tuple[int, int] | None = None
    ridge: float = 0.0
    rcond: float = rx_kernels.DEFAULT_RCOND
    bands: int | list[int] | None = None
    nan_policy: NanPolicy = "raise"
    variable: str | None = None  # .mat variable to read when given a path

    def __post_init__(self) -> None:
        if self.mode not in ("global", "local"):
            raise ConfigError(f"RX mode must be 'global' or 'local'; got {self.mode!r}")
        if self.nan_policy not in ("raise", "mask"):
            raise ConfigError(f"nan_policy must be 'raise' or 'mask'; got {self.nan_policy!r}")
        if self.mode == "local":
            if self.window is None:
                raise ConfigError(f"local RX needs {option('window', (3, 9))} (inner, outer)")
            if len(self.window) != 2:
                raise ConfigError(f"window must be (inner, outer); got {self.window!r}")
            self.window = (int(self.window[0]), int(self.window[1]))
            if not 1 <= self.window[0] < self.window[1]:
                raise ConfigError(f"window must satisfy 1 <= inner < outer; got {self.window}")
            if self.nan_policy == "mask":
                raise ConfigError("nan_policy='mask' is only supported by global RX (a window would mix masked pixels)")
        elif self.window is not None:
            raise ConfigError(f"window is only used by mode 'local'; pass {option('mode', 'local')} or drop the window")
        if isinstance(self.bands, tuple):
            self.bands = list(self.bands)


@dataclass
class _Prepared:
    cube: np.ndarray  # (H, W, B) in the input's dtype (float64 only when rescaled); may be a memory map
    valid: np.ndarray  # (H, W) bool
    source: dict[str, Any] = field(default_factory=dict)
    exponent: int = 0  # the cube was multiplied by 2**exponent (extreme magnitudes only)


#: per-pixel band sums beyond these magnitudes make the covariance overflow or underflow
_SCALE_HI, _SCALE_LO = 2.0**300, 2.0**-300
#: float64 bytes of one block of image rows in the checks of ``preprocess`` (the cube is never
#: converted whole: a float32 scene would double, a memory-mapped file would be read at once)
_CHECK_BYTES = 16 << 20


def _row_blocks(cube: np.ndarray) -> list[slice]:
    h, w, b = cube.shape
    rows = max(1, _CHECK_BYTES // (8 * w * b))
    return [slice(r, r + rows) for r in range(0, h, rows)]


def _pixel_sums(cube: np.ndarray) -> np.ndarray:
    """(H, W) float64 band sums, computed block by block of image rows."""
    sums = np.empty(cube.shape[:2])
    mapping = getattr(cube, "_mmap", None)
    for rows in _row_blocks(cube):
        sums[rows] = cube[rows].sum(axis=-1, dtype=np.float64)
        release_pages(mapping)
    return sums


def _finite_pixels(cube: np.ndarray) -> np.ndarray:
    finite = np.empty(cube.shape[:2], dtype=bool)
    mapping = getattr(cube, "_mmap", None)
    for rows in _row_blocks(cube):
        finite[rows] = np.isfinite(cube[rows]).all(axis=-1)
        release_pages(mapping)
    return finite


def _rescale_exponent(cube: np.ndarray, sums: np.ndarray, valid: np.ndarray) -> int:
    """A power of two that brings an extreme cube's largest magnitude into [0.5, 1), else 0.

    RX is invariant to scaling the cube (covariance scales by c^2, the centred pixel by c),
    and multiplying by a power of two is exact, so a cube of 1e200 (whose covariance would
    overflow to Inf) or of 1e-200 (whose covariance would underflow to 0) gives the scores of
    the same cube near 1. The per-pixel sums (already computed for the NaN check) tell
    cheaply whether the exact peak is worth computing (never for float32 or integer cubes).
    """
    hint = float(np.max(np.abs(sums), where=valid, initial=0.0))
    if _SCALE_LO <= hint <= _SCALE_HI or hint == 0.0:
        return 0
    peak = max(float(np.max(np.abs(cube[rows]), where=valid[rows, :, None], initial=0.0))
               for rows in _row_blocks(cube))
    return 0 if peak == 0.0 else -int(np.frexp(peak)[1])


def _check_copy(nbytes: int, what: str, source: dict[str, Any]) -> None:
    """A memory-mapped cube is not bound by the reader's limit; a copy made of it is."""
    limit = max_cube_bytes()
    if nbytes > limit:
        raise InputError(f"{source.get('path', 'cube')}: {what} take {nbytes} bytes in memory, above the limit "
                         f"of {limit} bytes (EDGESENTRY_MAX_CUBE_BYTES raises it)")


def _pixels_in_place(cube: np.ndarray) -> tuple[np.ndarray, Literal["C", "F"]]:
    """The cube as the kernel should read it, and the order of its pixels.

    A contiguous cube becomes (N, B) pixels without a copy (a Fortran-ordered one, as MATLAB
    files store them, stays band-major); any other layout (a band slice, a band-interleaved
    memory map) stays (H, W, B), which the kernel reads in blocks of rows.
    """
    b = cube.shape[-1]
    if cube.flags.c_contiguous:
        return cube.reshape(-1, b), "C"
    if cube.flags.f_contiguous:
        return cube.reshape(-1, b, order="F"), "F"
    return cube, "C"


class RXDetector(Detector):
    """Global or local RX. Input: (H, W, B) numeric cube (band-last) or a cube file path."""

    family = "rx"
    map_shares_score_scale = True
    input_suffixes = CUBE_SUFFIXES
    input_kinds = "one hyperspectral cube: an (H, W, B) array or a .mat / .npy / ENVI .hdr file"

    def __init__(self, config: RXConfig | None = None, **kwargs: Any):
        self.cfg = config or RXConfig()
        op = rx_kernels.GLOBAL_RX if self.cfg.mode == "global" else rx_kernels.LOCAL_RX
        super().__init__(kernel_ops=(op,), **kwargs)

    # ------------------------------------------------------------------------- stages
    def preprocess(self, x: Any) -> _Prepared:
        # both modes read a file block by block (a memory map)
        x, source = as_cube(x, variable=self.cfg.variable, who="RX", mapped=True)
        # the input's dtype is kept: the kernel converts block by block (no float64 copy)
        mapped = isinstance(x, np.memmap)
        if mapped and self.cfg.bands is not None and not isinstance(self.cfg.bands, (int, np.integer)):
            _check_copy(x.shape[0] * x.shape[1] * len(self.cfg.bands) * x.itemsize, "the listed bands", source)
        cube = select_bands(x, self.cfg.bands)
        # a per-pixel sum is non-finite whenever a band is (NaN and Inf propagate); only then
        # is the exact, B-times-larger check made
        sums = _pixel_sums(cube)
        finite = np.isfinite(sums)
        if not finite.all():
            finite = _finite_pixels(cube)
        if not finite.all():
            bad = int((~finite).sum())
            if self.cfg.nan_policy == "raise":
                raise InputError(
                    f"cube has {bad} pixels with NaN/Inf values; clean them or pass "
                    f"{option('nan_policy', 'mask')} to skip them"
                )
        if int(finite.sum()) < 2:
            raise InputError(f"RX needs at least 2 valid pixels; got {int(finite.sum())}")
        if mapped and not finite.all():  # the valid pixels are gathered into memory
            _check_copy(int(finite.sum()) * cube.shape[-1] * cube.itemsize, "the valid pixels", source)
        exponent = _rescale_exponent(cube, sums, finite)
        if exponent:
            cube = np.ldexp(cube, exponent, dtype=np.float64)
        return _Prepared(cube, finite, source, exponent)

    def postprocess(self, raw: _Prepared, prepared: _Prepared) -> Result:
        try:
            return self._rx(prepared)
        except np.linalg.LinAlgError as exc:
            raise InputError(f"RX could not factorise this cube's covariance ({exc}); the cube is degenerate "
                             "(constant bands, or values too extreme); try ridge > 0") from None

    def _rx(self, prepared: _Prepared) -> Result:
        cube, valid = prepared.cube, prepared.valid
        h, w, b = cube.shape
        # the ridge is in the units of the input's covariance; follow the exact rescaling
        ridge = float(np.ldexp(self.cfg.ridge, 2 * prepared.exponent))
        if not np.isfinite(ridge):
            raise InputError(f"ridge {self.cfg.ridge} overflows for a cube this small (largest magnitude "
                             f"~2^{-prepared.exponent}); use a smaller ridge")
        if self.cfg.mode == "global":
            every = bool(valid.all())
            pixels, order = _pixels_in_place(cube) if every else (cube[valid], "C")
            values, tier = rx_kernels.global_rx(pixels, ridge=ridge, rcond=self.cfg.rcond, tier=self.kernels)
            if every:
                scores = np.asarray(values, dtype=np.float64).reshape(h, w, order=order)
            else:
                scores = np.full((h, w), np.nan)
                scores[valid] = values
        else:
            inner, outer = self.cfg.window
            scores, tier = rx_kernels.local_rx(
                cube, inner=inner, outer=outer, ridge=ridge, rcond=self.cfg.rcond, tier=self.kernels
            )
        scores = np.asarray(scores, dtype=np.float64)
        return Result(
            score=float(np.nanmax(scores)),
            anomaly_map=scores.astype(np.float32),
            extras={"scores": scores, "valid": valid},
            info={"kernel_tier": tier, "mode": self.cfg.mode, "bands": b, **prepared.source},
        )

    # ---------------------------------------------------------------------- config
    def config(self) -> dict[str, Any]:
        return asdict(self.cfg)

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["graph"] = None  # RX has no network
        return out


# ------------------------------------------------------------------------ family hooks
def build(
    *,
    mode: Mode = "global",
    window: Sequence[int] | None = None,
    ridge: float = 0.0,
    rcond: float = rx_kernels.DEFAULT_RCOND,
    bands: int | Sequence[int] | None = None,
    nan_policy: NanPolicy = "raise",
    variable: str | None = None,
    kernels: str = "auto",
    threshold: float | None = None,
    pixel_threshold: float | None = None,
    **linescan_options: Any,
) -> Detector:
    """``edgesentry.load("rx", ...)``: see ``RXConfig`` for the options; ``mode="linescan"``
    takes the line-scan options of ``linescan.build`` (``window`` is then a number of lines)."""
    if mode == "linescan":
        from . import linescan

        return linescan.build(window=window, ridge=ridge, rcond=rcond, bands=bands, nan_policy=nan_policy,
                              variable=variable, kernels=kernels, threshold=threshold,
                              pixel_threshold=pixel_threshold, **linescan_options)
    if linescan_options:
        known = set(LineScanConfig.__dataclass_fields__)
        unknown = sorted(set(linescan_options) - known)
        if unknown:  # as Python says it: load() turns this into "does not take that option"
            raise TypeError(f"build() got an unexpected keyword argument {unknown[0]!r}")
        raise ConfigError(f"{sorted(linescan_options)} only apply to mode='linescan'")
    cfg = RXConfig(
        mode=mode,
        window=tuple(window) if window is not None else None,
        ridge=ridge,
        rcond=rcond,
        bands=bands,
        nan_policy=nan_policy,
        variable=variable,
    )
    return RXDetector(cfg, kernels=kernels, threshold=threshold, pixel_threshold=pixel_threshold)


#: the options ``build`` and ``from_bundle`` forward: ``RXConfig``'s, and ``LineScanConfig``'s for
#: ``mode="linescan"`` (``edgesentry.load(bundle, mode=...)``)
OPTIONS = tuple(dict.fromkeys([f.name for f in fields(RXConfig)] + [f.name for f in fields(LineScanConfig)]))


def from_bundle(
    bundle: Bundle, *, kernels: str = "auto", threshold: float | None = None, **overrides: Any
) -> Detector:
    cfg = {**bundle.config, **overrides}
    if cfg.get("mode") == "linescan":
        from . import linescan

        cfg.pop("mode")
        return linescan.build(kernels=kernels, threshold=threshold, **cfg)
    try:
        if cfg.get("window") is not None:
            cfg["window"] = tuple(cfg["window"])
        config = RXConfig(**cfg)
    except (TypeError, ValueError) as exc:  # ConfigError (a ValueError) names the option itself
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"RX bundle/option mismatch: {exc}") from None
    det = RXDetector(config, kernels=kernels, calibration=bundle.calibration)
    if threshold is not None:
        det.threshold = threshold
    return det


def convert(*, output: str | os.PathLike, overwrite: bool = False, **options: Any) -> Bundle:
    """Write an RX bundle (configuration only; RX has no weights)."""
    det = build(**options)
    return write_bundle(
        output,
        "rx",
        config=det.config(),
        overwrite=overwrite,
        io={"input": "(H, W, B) cube", "output": "(H, W) float32 anomaly map"},
    )


DETECTOR = RXDetector
