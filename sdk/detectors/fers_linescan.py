"""FERS in line-scan mode: the networks line by line, then line-scan RX of the fused features.

    det = edgesentry.load("fers200", mode="linescan", warmup=10, value_range=(0, 4095))
    for line_result in det.stream(lines): ...

What each part needs from neighbouring lines, and the delay it costs:

- normalisation: the official global min-max of the cube cannot be known before the scan
  ends; a line scan uses fixed constants, ``value_range=(lo, hi)`` (the sensor's range), or
  the min and max of the first ``range_lines`` lines (held until then: a start-up delay).
- spectral branch (ConvH 1x1 after a 4-pixel reflect pad, three 3 x 3 bottlenecks, 1x1
  heads): each output line depends on the 3 lines on either side, so a ring buffer keeps the
  last lines, the branch runs on chunks of ``chunk`` new lines plus 3 lines of context each
  side, and line t comes out when line ``t + chunk + 2`` has arrived (delay ``chunk + 2``;
  the network's reflect padding applies only at the scan's first and last line, as on the
  whole cube). The output equals the whole-cube branch's on the same normalised input (up to
  float32 summation order).
- spatial branch (when the bundle has one): its SPP and SE pool over the *whole image*, so
  no finite ring buffer reproduces it; it runs on blocks of ``spatial_lines`` lines, each
  block pooled on its own (delay up to ``spatial_lines - 1`` more lines).
- RX: the line-scan model of ``edgesentry.detectors.linescan`` on ``x + spe_f (+ spa_f)``
  (its own warm-up / look-ahead delay on top).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgesentry.errors import ConfigError, InputError
from edgesentry.kernels.fers.reference import fuse

#: Lines of context either side for an exact spectral output line (three 3 x 3 convolutions).
CONTEXT = 3
#: The spectral branch reflect-pads 4 lines: a chunk it runs on needs at least 5.
MIN_LINES = 5


class FERSLineTransform:
    """Raw (W, B_raw) lines in, fused (W, B) float32 feature lines out, in order, with a delay."""

    def __init__(self, runners: dict[str, Any], bands: int, *, value_range: tuple[float, float] | None = None,
                 range_lines: int = 10, chunk: int = 4, spatial_lines: int = 64):
        if value_range is not None and not (len(value_range) == 2 and float(value_range[1]) > float(value_range[0])):
            raise ConfigError(f"value_range must be (lo, hi) with hi > lo; got {value_range!r}")
        if not (isinstance(chunk, int) and chunk >= 2):
            raise ConfigError(f"chunk must be an integer >= 2 lines (the branch needs 5-line inputs); got {chunk!r}")
        if value_range is None and not (isinstance(range_lines, int) and range_lines >= 1):
            raise ConfigError(f"range_lines must be an integer >= 1; got {range_lines!r}")
        if not (isinstance(spatial_lines, int) and spatial_lines >= MIN_LINES):
            raise ConfigError(f"spatial_lines must be an integer >= {MIN_LINES}; got {spatial_lines!r}")
        self.runners, self.bands = runners, bands
        self.value_range = None if value_range is None else (float(value_range[0]), float(value_range[1]))
        self.range_lines, self.chunk, self.spatial_lines = range_lines, chunk, spatial_lines
        self.has_spatial = "spatial" in runners
        self._raw: list[tuple[int, np.ndarray]] = []  # lines held until the range is known
        self._x: dict[int, np.ndarray] = {}  # normalised (B, W) lines still needed as context
        self._received = 0
        self._emitted = 0  # the next line whose spectral features are due
        self._spatial_block: list[tuple[int, np.ndarray, np.ndarray]] = []  # (index, x, spe) awaiting spa_f

    @property
    def delay_lines(self) -> int:
        """Lines between a line's arrival and its features, once past the start-up range lines."""
        return self.chunk + CONTEXT - 1 + (self.spatial_lines - 1 if self.has_spatial else 0)

    def push(self, index: int, line: np.ndarray) -> list[tuple[int, np.ndarray]]:
        if line.shape[1] < self.bands:
            raise InputError(f"line {index}: these FERS weights use the first {self.bands} bands; "
                             f"the line has {line.shape[1]}")
        if line.shape[0] < MIN_LINES:
            raise InputError(f"line {index}: FERS needs lines of at least {MIN_LINES} pixels (4-pixel reflect "
                             f"padding); got {line.shape[0]}")
        self._received += 1
        if self.value_range is None:
            self._raw.append((index, line))
            if len(self._raw) < self.range_lines:
                return []
            block = np.stack([raw[:, : self.bands] for _, raw in self._raw])
            lo, hi = float(block.min()), float(block.max())
            if not hi > lo:
                raise InputError(f"the first {self.range_lines} lines are constant ({lo}); give value_range=(lo, hi)")
            self.value_range = (lo, hi)
            held, self._raw = self._raw, []
            return [out for i, raw in held for out in self._add(i, raw)]
        return self._add(index, line)

    def flush(self) -> list[tuple[int, np.ndarray]]:
        out: list[tuple[int, np.ndarray]] = []
        if self._raw:  # fewer lines than range_lines: their own min-max
            block = np.stack([raw[:, : self.bands] for _, raw in self._raw])
            lo, hi = float(block.min()), float(block.max())
            self.value_range = (lo, hi) if hi > lo else (lo, lo + 1.0)
            held, self._raw = self._raw, []
            for i, raw in held:
                out += self._add(i, raw)
        if self._emitted < self._received:
            if self._received < MIN_LINES:
                raise InputError(f"FERS line scan needs at least {MIN_LINES} lines; got {self._received}")
            out += self._spectral(self._emitted, self._received, last=True)
        return out + self._spatial(final=True)

    # ------------------------------------------------------------------------ stages
    def _add(self, index: int, line: np.ndarray) -> list[tuple[int, np.ndarray]]:
        lo, hi = self.value_range
        v = (np.asarray(line[:, : self.bands], dtype=np.float64) - lo) / (hi - lo)
        self._x[index] = np.ascontiguousarray(((v * 2 - 1) * 0.1).T, dtype=np.float32)  # (B, W), as prepare_cube
        ready = index + 1 - self._emitted  # lines whose inputs have all arrived, plus their context
        if ready < self.chunk + CONTEXT:
            return []
        return self._spectral(self._emitted, self._emitted + self.chunk, last=False)

    def _spectral(self, start: int, stop: int, *, last: bool) -> list[tuple[int, np.ndarray]]:
        """spe_f of lines [start, stop) from a chunk with CONTEXT lines each side (fewer at the
        scan's ends, where the branch's own reflect padding is the whole cube's)."""
        lo = max(0, start - CONTEXT)
        hi = self._received if last else stop + CONTEXT
        x = np.stack([self._x[i] for i in range(lo, hi)], axis=1)[None]  # (1, B, lines, W)
        spe = self.runners["spectral"].infer({"x": x})["spe_f"][0]
        self._emitted = stop
        for i in [i for i in self._x if i < stop - CONTEXT]:
            del self._x[i]
        out = []
        for i in range(start, stop):
            xi = x[0, :, i - lo]
            out.append((i, xi, spe[:, i - lo]))
        if not self.has_spatial:
            return [(i, _fused(xi, spe_i)) for i, xi, spe_i in out]
        self._spatial_block += out
        return self._spatial(final=False)

    def _spatial(self, *, final: bool) -> list[tuple[int, np.ndarray]]:
        """Blocks of ``spatial_lines`` lines through the spatial branch (pooled per block)."""
        out: list[tuple[int, np.ndarray]] = []
        while self._spatial_block and (len(self._spatial_block) >= self.spatial_lines or final):
            block = self._spatial_block[: self.spatial_lines]  # the scan's last block may be shorter
            del self._spatial_block[: len(block)]
            x = np.stack([xi for _, xi, _ in block], axis=1)[None]
            spa = self.runners["spatial"].infer({"x": x})["spa_f"][0]
            out += [(i, _fused(xi, spe_i, spa[:, k])) for k, (i, xi, spe_i) in enumerate(block)]
        return out


def _fused(x: np.ndarray, spe: np.ndarray, spa: np.ndarray | None = None) -> np.ndarray:
    """(B, W) features of one line -> the (W, B) line that RX scores, summed in the official
    float32 order (``kernels.fers.reference.fuse``)."""
    as_cube = (lambda a: None if a is None else a[:, None, :])  # (B, 1, W): one row of a cube
    return np.ascontiguousarray(fuse(as_cube(x), as_cube(spe), as_cube(spa))[:, 0, :].T)


def build(features: Any, *, value_range: tuple[float, float] | None = None, range_lines: int = 10,
          chunk: int = 4, spatial_lines: int = 64, kernels: str = "auto", threshold: float | None = None,
          pixel_threshold: float | None = None, **options: Any) -> Any:
    """A line-scan detector whose lines go through ``features``' networks (a ``FERSDetector``:
    its runners and band count) before line-scan RX; ``options`` are ``LineScanConfig``'s."""
    from edgesentry.detectors.linescan import LineScanConfig, LineScanDetector

    if options.get("nan_policy", "raise") != "raise":
        raise ConfigError("FERS line scan needs finite lines (nan_policy='raise'): a 3 x 3 network spreads NaN")
    if options.get("bands") is not None:
        raise ConfigError("FERS takes the first bands its weights were trained on; drop bands=")
    window = options.pop("window", None)
    cfg = LineScanConfig(window=int(window or 0), **options)

    def transform() -> FERSLineTransform:
        return FERSLineTransform(features.runners, features.bands, value_range=value_range, range_lines=range_lines,
                                 chunk=chunk, spatial_lines=spatial_lines)

    transform()  # check the options now, not at the first line
    return LineScanDetector(cfg, transform_factory=transform, family="fers", kernels=kernels, threshold=threshold,
                            pixel_threshold=pixel_threshold)
