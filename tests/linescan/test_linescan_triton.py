"""Triton tier of line-scan RX against the reference (Triton interpreter on CPU machines).

Tolerance as the cpu tier's (``test_linescan_kernels.py``): float64 statistics and Cholesky
against the reference's SVD pseudo-inverse, ``rtol=1e-9`` on full-rank models, ``1e-6`` where
the pseudo-inverse path cuts numerically zero directions; float32 scoring ``1e-4``.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgesentry.kernels import _triton, linescan
from tests.linescan.helpers import MODES, compare_with_reference, masks, run, scan
from tests.utils import assert_verbose_allclose

pytestmark = pytest.mark.skipif(_triton.unavailable_reason() is not None,
                                reason=f"triton tier unavailable: {_triton.unavailable_reason()}")


def _model(bands: int, **options):
    model, used = linescan.line_model(bands, tier="triton", **options)
    assert used == "triton"
    return model


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("width, bands", [(13, 7), (5, 17)])  # full rank soon; W < B: pinv path first
def test_matches_reference(rng, mode, width, bands):
    options = MODES[mode]
    cube = scan(rng, 7, width, bands)
    compare_with_reference(_model(bands, **options), cube, options)


def test_masked_pixels_and_update_threshold(rng):
    cube = scan(rng, 8, 21, 5)
    cube[4:, 2] += 300.0
    valid = masks(rng, 8, 21, 0.2)
    cube[~valid] = np.nan  # masked pixels are never read
    compare_with_reference(_model(5), cube, {}, valid=valid, update_threshold=40.0)


def test_float32_scoring(rng):
    cube = scan(rng, 6, 40, 9)
    compare_with_reference(_model(9, dtype="float32"), cube, {}, rtol=1e-4)


def test_building_blocks_write_every_element(rng):
    """Gram, sums and scores start as NaN; B = 19 leaves partial tiles of 16, W = 37 partial
    pixel blocks of 16 and 32."""
    from edgesentry.kernels.linescan import triton as tier

    x = rng.normal(size=(37, 19)) + 5
    keep = (rng.random(37) > 0.2).astype(np.int8)
    centre = x.mean(axis=0)
    gram, sums = tier.line_gram(_triton.to_tensor(x), _triton.to_tensor(keep), _triton.to_tensor(centre))
    z = (x - centre)[keep.astype(bool)]
    assert_verbose_allclose(gram, z.T @ z, atol=1e-10, rtol=1e-12)
    assert_verbose_allclose(sums, z.sum(axis=0), atol=1e-10, rtol=1e-12)
    inverse = np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False)))
    scores = tier.line_scores(_triton.to_tensor(x), _triton.to_tensor(keep), _triton.to_tensor(centre),
                              _triton.to_tensor(inverse))
    expected = np.where(keep.astype(bool), np.square((x - centre) @ inverse.T).sum(axis=1), np.nan)
    assert_verbose_allclose(scores, expected, atol=1e-9, rtol=1e-10)


def test_causal(rng):
    cube = scan(rng, 8, 9, 4)
    other = cube.copy()
    other[5:] = scan(rng, 3, 9, 4, offset=10.0)
    assert_verbose_allclose(run(_model(4), cube)[:5], run(_model(4), other)[:5], atol=0, rtol=1e-12)


def test_kernel_table_names_every_kernel():
    from edgesentry.kernels.linescan import triton as tier

    kernels = {name for name in dir(tier) if name.endswith("_kernel") and hasattr(getattr(tier, name), "fn")}
    assert kernels == set(tier.KERNEL_SIGNATURES)


@pytest.mark.slow
def test_kernels_compile_ahead_of_time_for_every_target():
    """Real lowering (TTIR -> PTX -> ptxas cubin) for sm_87 and sm_90 with both compute dtypes of
    the score kernel; in a child process, because the compiler cannot run where
    TRITON_INTERPRET=1 (the interpreter never lowers anything)."""
    import json
    import os
    import subprocess
    import sys

    code = (
        "import json\n"
        "from edgesentry.kernels.linescan import triton as T\n"
        "sig, const = T.KERNEL_SIGNATURES['_line_score_kernel']\n"
        "out = {a: {k: v[:4].hex() for k, v in T.compile_for(a).items()} for a in ('sm_87', 'sm_90')}\n"
        "T.KERNEL_SIGNATURES['_line_score_kernel'] = ({**sig, 'r_ptr': '*fp64'}, {**const, 'USE_F64': True})\n"
        "out['sm_90_f64'] = {k: v[:4].hex() for k, v in T.compile_for('sm_90').items()}\n"
        "print(json.dumps(out))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    heads = json.loads(done.stdout.strip().splitlines()[-1])
    for arch in ("sm_87", "sm_90", "sm_90_f64"):
        assert heads[arch] == {"_line_gram_kernel": "7f454c46", "_line_score_kernel": "7f454c46"}
