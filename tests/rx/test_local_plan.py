"""Local RX on the GPU stays within its working-memory budget at realistic scene sizes and forms
each image row a bounded number of times (``kernels/rx/local_plan.py``).

Before, both GPU tiers built integral images over a band of ``rows + outer`` image rows per chunk of
output rows; at realistic sizes the chunk collapsed to one output row (150 x 150 x 188 with outer 21:
~1 GB of B^2 moments rebuilt 150 times; 512 x 512 x 200: 3.8 GB per chunk in Triton, 2.1 GB in
CUDA, over a 1 GiB budget) and each image row was formed ~outer times.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgesentry.errors import InputError
from edgesentry.kernels.rx import cuda as rx_cuda, reference
from edgesentry.kernels.rx.local_plan import plan_local, ring_channels
from tests.rx import _cuda_emulator as emu
from tests.utils import assert_verbose_allclose

BUDGET = 1 << 30  # both tiers' LOCAL_CHUNK_BYTES
#: (h, w, B): ABU-like scenes (100^2 x 205, 150^2 x 188), larger airborne tiles, a 1024^2 scene.
SCENES = [(100, 100, 205), (150, 150, 188), (200, 200, 189), (512, 512, 200), (1024, 1024, 200), (1024, 1024, 224)]
WINDOWS = [(5, 21), (3, 9), (9, 31)]


def _triton_pixel_bytes(b: int) -> int:
    pytest.importorskip("triton")
    from edgesentry.kernels.rx import triton as rx_triton

    return rx_triton._PIXEL_BYTES_PER_BAND2 * b * b


@pytest.mark.parametrize("tier", ["cuda", "triton"])
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("scene", SCENES)
def test_realistic_scenes_fit_the_budget_and_form_each_row_a_few_times(tier, scene, window):
    h, w, b = scene
    inner, outer = window
    pixel_bytes = 0 if tier == "cuda" else _triton_pixel_bytes(b)
    assert (rx_cuda.LOCAL_CHUNK_BYTES if tier == "cuda" else BUDGET) == BUDGET
    plan = plan_local(h, w, b, inner, outer, BUDGET, pixel_bytes=pixel_bytes)
    assert plan.peak_bytes <= BUDGET
    assert 1 <= plan.rows <= h and plan.batches == -(-h // plan.rows)
    assert plan.pixels >= 1 and (pixel_bytes == 0 or plan.pixels >= min(plan.rows * w, 256))
    # each image row enters and leaves the outer and the inner running sums once: <= 4 h in all,
    # not ~outer per output row
    assert plan.row_passes <= 4 * h + outer + inner
    assert plan.row_passes < h * outer / 2


def test_a_budget_below_one_row_is_a_clear_error():
    need = plan_local(512, 512, 200, 5, 21, BUDGET)
    with pytest.raises(InputError, match=r"needs at least \d+ bytes .* 512-pixel row of 200 bands; the budget is 1000"):
        plan_local(512, 512, 200, 5, 21, 1000)
    assert need.fixed_bytes == 2 * 512 * ring_channels(200) * 8


@pytest.mark.skipif(emu.available() is not None, reason=f"CPU emulator: {emu.available()}")
def test_cuda_allocations_stay_within_the_plan(monkeypatch, rng):
    """The emulated device's peak allocation is the plan's working memory plus the cube, the map and
    small tables: the plan describes what the launcher really allocates."""
    emu_rt = emu.patch(monkeypatch, rx_cuda)
    monkeypatch.setattr(rx_cuda, "_LOCAL_THREADS", 32)
    h, w, b = 9, 8, 3
    plan = plan_local(h, w, b, 1, 5, 10**9)
    budget = plan.fixed_bytes + 2 * plan.row_bytes
    cube = rng.normal(size=(h, w, b))
    got = rx_cuda.local_rx(cube, inner=1, outer=5, chunk_bytes=budget)
    assert_verbose_allclose(got, reference.local_rx(cube, inner=1, outer=5), atol=1e-8 * np.abs(got).max(), rtol=1e-8)
    data = cube.nbytes + h * w * 8  # the cube and the map
    tables = 4 * 4 * 64 + (b * 8 + 256) * 4 + plan_local(h, w, b, 1, 5, budget).rows * w  # pairs, starts, sums, flags
    assert emu_rt.peak_bytes <= budget + data + tables + 16 * 256  # allocation rounding
