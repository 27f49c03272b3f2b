"""Working memory of local RX on the GPU tiers: how many output rows one batch may take.

Both GPU tiers form the ring (outer minus inner box) moments of every pixel without integral
images: running column sums of the outer and inner window rows (``w x C`` doubles each, with
``C = B + B(B+1)/2`` channels: the band sums and the packed lower triangle of ``z z^T``) are
built once and then updated by one row entering and one leaving per output row, and a batch of
output rows keeps its pixels' ring moments (``rows x w x C``). The CUDA tier factors each
pixel's covariance in place in those moments; the Triton tier expands them, a chunk of pixels at
a time, into full ``B x B`` matrices for torch's batched Cholesky (``pixel_bytes`` each).

Every image row is formed about four times in all (once entering and once leaving each running
sum, ``row_passes``), instead of ``outer`` times per output row as with a band of integral
images per output row, and the working memory does not grow with the image height.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgesentry.errors import InputError


def window_starts(size: int, window: int) -> np.ndarray:
    """``reference.window_bounds`` start for every index (windows shifted inside the image).

    A window longer than the image would start before it: the device tiers would read outside
    their buffers, so it is refused here, below every tier, not only by the public entry point.
    """
    if window > size:
        raise InputError(f"a window of {window} does not fit an image side of {size}")
    return np.clip(np.arange(size) - window // 2, 0, size - window).astype(np.int32)


def ring_channels(b: int) -> int:
    """Moments per pixel: b sums and the b (b + 1) / 2 products of the packed lower triangle."""
    return b + b * (b + 1) // 2


def packed_pairs(b: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the lower triangle in column-major order (the packed covariance layout:
    element (r, k), r >= k, at k b - k (k - 1) / 2 + (r - k))."""
    cols, rows = np.triu_indices(b)  # (k, r) with r >= k, k-major
    return rows.astype(np.int32), cols.astype(np.int32)


def window_moves(size: int, window: int) -> dict[int, tuple[int, int]]:
    """Output row -> (image row entering, image row leaving) of a ``window``-row running sum, for the
    rows where the (border-shifted) window moves down by one."""
    starts = window_starts(size, window)
    return {i: (int(starts[i]) + window - 1, int(starts[i - 1])) for i in range(1, size) if starts[i] != starts[i - 1]}


@dataclass(frozen=True)
class LocalPlan:
    """``rows`` output rows per batch and ``pixels`` per factorisation chunk within ``budget`` bytes."""

    rows: int
    pixels: int
    fixed_bytes: int
    row_bytes: int
    pixel_bytes: int
    batches: int
    row_passes: int

    @property
    def peak_bytes(self) -> int:
        return self.fixed_bytes + self.rows * self.row_bytes + self.pixels * self.pixel_bytes


def plan_local(h: int, w: int, b: int, inner: int, outer: int, budget: int, *, pixel_bytes: int = 0) -> LocalPlan:
    """The batch sizes of one local-RX call (see the module docstring).

    ``pixel_bytes``: extra bytes per pixel of a factorisation chunk (0 when factored in place).
    When chunks are needed, half of what the running sums leave goes to ring rows, half to the
    chunk of pixels.

    Raises:
        InputError: not even one output row (and one pixel) fits; the message gives the bytes needed.
    """
    row_bytes = w * ring_channels(b) * 8
    if row_bytes // 8 >= 2**31:
        raise InputError(f"local RX on the GPU indexes a row's ring moments with 32-bit offsets: w x C must be "
                         f"below 2^31; got w = {w}, B = {b}")
    fixed = 2 * row_bytes  # running outer and inner column sums
    need = fixed + row_bytes + pixel_bytes
    if budget < need:
        raise InputError(f"local RX on the GPU needs at least {need} bytes of working memory for a {w}-pixel row "
                         f"of {b} bands; the budget is {budget} (raise chunk_bytes)")
    avail = budget - fixed
    rows = min(h, (avail // 2 if pixel_bytes else avail) // row_bytes)
    rows = max(1, rows)
    pixels = min(rows * w, (avail - rows * row_bytes) // pixel_bytes) if pixel_bytes else rows * w
    shifts = sum(int(np.count_nonzero(np.diff(window_starts(h, k)))) for k in (outer, inner))
    return LocalPlan(rows, max(1, pixels), fixed, row_bytes, pixel_bytes, -(-h // rows),
                     outer + inner + 2 * shifts)
