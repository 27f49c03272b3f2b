"""FERS line scan: the networks streamed line by line equal the whole-cube networks on the same
normalised input; the stated delays; the spatial branch per block; bad input.

Tolerance: the spectral branch runs on chunks of a few lines instead of the whole cube, so
convolutions sum in another order (float32): features agree to ~1e-6 of their largest value;
``atol = 1e-5 * max`` leaves room and still fails on a wrong context line (O(1e-2) changes).
"""

from __future__ import annotations

import numpy as np
import pytest

import edgesentry
from edgesentry import ConfigError, InputError
from edgesentry.detectors.fers import prepare_cube
from edgesentry.detectors.fers_linescan import CONTEXT, FERSLineTransform
from edgesentry.kernels.fers.reference import fuse
from edgesentry.kernels.rx.reference import global_rx
from tests.utils import assert_verbose_allclose


@pytest.fixture(scope="module")
def networks(spectral_bundle):
    return edgesentry.load(spectral_bundle)  # the official 50-band spectral branch


def _cube(rng, h=17, w=12, bands=60):
    return rng.uniform(200, 3000, size=(h, w, bands)) + rng.normal(size=(h, w, 1)) * 300


def _stream(transform, cube):
    out = {}
    for i, line in enumerate(cube):
        out.update(transform.push(i, line))
    out.update(transform.flush())
    return np.stack([out[i] for i in range(len(cube))])  # (H, W, B)


def _whole(networks, cube, with_spatial=False):
    x = prepare_cube(cube[..., : networks.bands], networks.bands)
    raw = networks.forward(type("P", (), {"x": x})())
    fused = fuse(x, raw["spe_f"], raw["spa_f"] if with_spatial else None)  # (B, H, W)
    return fused.transpose(1, 2, 0)


@pytest.mark.parametrize("chunk", [2, 4, 7])
def test_streamed_spectral_features_equal_the_whole_cube(networks, rng, chunk):
    cube = _cube(rng)
    lo, hi = cube[..., : networks.bands].min(), cube[..., : networks.bands].max()
    transform = FERSLineTransform(networks.runners, networks.bands, value_range=(lo, hi), chunk=chunk)
    assert transform.delay_lines == chunk + CONTEXT - 1
    expected = _whole(networks, cube)
    got = _stream(transform, cube)
    assert_verbose_allclose(got, expected, atol=1e-5 * np.abs(expected).max(), rtol=0)


def test_lines_come_out_after_the_stated_delay(networks, rng):
    cube = _cube(rng, h=20)
    transform = FERSLineTransform(networks.runners, networks.bands, value_range=(0, 4000), chunk=3)
    arrivals = {}
    for i, line in enumerate(cube):
        for j, _ in transform.push(i, line):
            arrivals[j] = i
    assert all(arrivals[j] - j <= transform.delay_lines for j in arrivals)
    assert max(arrivals[j] - j for j in arrivals) == transform.delay_lines
    assert sorted(j for j, _ in transform.flush()) == [j for j in range(20) if j not in arrivals]


def test_range_from_the_first_lines_holds_them(networks, rng):
    cube = _cube(rng, h=12)
    transform = FERSLineTransform(networks.runners, networks.bands, range_lines=6, chunk=2)
    released = [len(transform.push(i, line)) for i, line in enumerate(cube)]
    assert released[:5] == [0] * 5 and sum(released) > 0
    lo, hi = cube[:6, :, : networks.bands].min(), cube[:6, :, : networks.bands].max()
    assert transform.value_range == (lo, hi)


def test_spatial_branch_runs_per_block(spectral_bundle, fers_ref, rng, tmp_path):
    bundle = edgesentry.convert("fers", fers_ref / "weights" / "saved_models/200bands",
                                fers_ref / "spa_fen_random_seed0_int8.npz", output=tmp_path / "full")
    full = edgesentry.load(bundle.path)  # the random int8 spatial grid is for 200 bands
    cube = _cube(rng, h=16, w=10, bands=205)
    lo, hi = cube[..., :200].min(), cube[..., :200].max()
    transform = FERSLineTransform(full.runners, 200, value_range=(lo, hi), chunk=2, spatial_lines=8)
    got = _stream(transform, cube)
    x = prepare_cube(cube[..., :200], 200)
    spe = full.runners["spectral"].infer({"x": x})["spe_f"]
    for start in (0, 8):  # each block of 8 lines is pooled on its own
        block = np.ascontiguousarray(x[:, :, start:start + 8])
        spa = full.runners["spatial"].infer({"x": block})["spa_f"]
        expected = fuse(block, spe[:, :, start:start + 8], spa).transpose(1, 2, 0)
        assert_verbose_allclose(got[start:start + 8], expected, atol=1e-5 * np.abs(expected).max(), rtol=0)


def test_detector_with_full_lookahead_is_rx_of_the_streamed_features(spectral_bundle, networks, rng):
    cube = _cube(rng, h=14, w=12)
    lo, hi = cube[..., :50].min(), cube[..., :50].max()
    det = edgesentry.load(spectral_bundle, mode="linescan", lookahead=14, value_range=(lo, hi), chunk=2)
    result = det.predict(cube)
    assert result.info["family"] == "fers" and result.info["delay_lines"] == 14 + 2 + CONTEXT - 1
    fused = _whole(networks, cube).astype(np.float64)
    expected = global_rx(fused.reshape(-1, 50)).reshape(14, 12)
    assert_verbose_allclose(result.extras["scores"], expected, atol=1e-4 * expected.max(), rtol=1e-4)


def test_bad_input(spectral_bundle, rng):
    det = edgesentry.load(spectral_bundle, mode="linescan", value_range=(0, 1))
    with pytest.raises(InputError, match="at least 5 pixels"):
        det.predict_line(np.zeros((4, 60)))
    det.reset()
    with pytest.raises(InputError, match="first 50 bands"):
        det.predict_line(np.zeros((8, 20)))
    det.reset()
    line = np.ones((8, 60))
    line[3, 7] = np.nan
    with pytest.raises(InputError, match="NaN"):
        det.predict_line(line)
    with pytest.raises(InputError, match="at least 5 lines"):
        det = edgesentry.load(spectral_bundle, mode="linescan", value_range=(0, 1))
        list(det.stream(rng.uniform(size=(3, 8, 60))))
    with pytest.raises(ConfigError, match="nan_policy"):
        edgesentry.load(spectral_bundle, mode="linescan", nan_policy="mask")
    with pytest.raises(ConfigError, match="chunk"):
        edgesentry.load(spectral_bundle, mode="linescan", chunk=1)
