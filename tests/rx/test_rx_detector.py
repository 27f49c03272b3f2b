"""RX detector end to end: ABU AUCs, singular scenes, thresholds, calibration, bundles."""

from __future__ import annotations

import re

import numpy as np
import pytest

import edgesentry
from edgesentry import ConfigError, InputError
from edgesentry.io.hsi import read_cube, read_ground_truth
from edgesentry.kernels.rx import reference
from edgesentry.metrics import roc_auc
from tests.utils import assert_verbose_allclose


def _readme_aucs(shared):
    """Global RX AUC column of ../shared/data/abu/README.md: file -> AUC (4 decimals)."""
    table = {}
    for line in (shared / "data/abu/README.md").read_text().splitlines():
        m = re.match(r"\|\s*(\S+\.mat)\s*\|.*\|\s*([0-9.]+)\s*\|\s*$", line)
        if m:
            table[m.group(1)] = float(m.group(2))
    return table


def test_global_rx_auc_equals_the_abu_table(shared):
    table = _readme_aucs(shared)
    assert len(table) == 11
    det = edgesentry.load("rx")
    for name, expected in table.items():
        path = shared / "data/abu" / name
        result = det.predict(path)
        auc = roc_auc(read_ground_truth(path), result.extras["scores"])
        assert round(auc, 4) == pytest.approx(expected, abs=1e-12), name


def test_rank_deficient_scene_gives_the_reference(shared):
    """abu-beach-3 has 188 bands; repeating and zeroing bands makes its covariance singular."""
    cube = read_cube(shared / "data/abu/abu-beach-3.mat")[:40, :40].astype(np.float64)
    cube = np.concatenate([cube, cube[..., :5], np.zeros_like(cube[..., :3])], axis=-1)
    result = edgesentry.load("rx").predict(cube)
    expected = reference.global_rx(cube.reshape(-1, cube.shape[-1])).reshape(40, 40)
    assert_verbose_allclose(result.extras["scores"], expected, atol=0, rtol=1e-6)


def test_local_mode_and_tiers_agree(rng):
    cube = rng.normal(size=(12, 10, 4)) * 30 + 500
    fast = edgesentry.load("rx", mode="local", window=(3, 7)).predict(cube)
    ref = edgesentry.load("rx", mode="local", window=(3, 7), kernels="reference").predict(cube)
    assert fast.info["kernel_tier"] == "cpu" and ref.info["kernel_tier"] == "reference"
    assert_verbose_allclose(fast.extras["scores"], ref.extras["scores"], atol=0, rtol=1e-9)


def test_fortran_ordered_cube_maps_scores_to_the_right_pixels(rng):
    """MATLAB cubes arrive Fortran-ordered; the detector reads them band-major in place."""
    cube = rng.normal(size=(13, 9, 6)) * 30 + 500
    cube[4, 7] += 400  # an anomaly at a known, non-symmetric position
    det = edgesentry.load("rx")
    fortran = det.predict(np.asfortranarray(cube)).extras["scores"]
    expected = reference.global_rx(cube.reshape(-1, 6)).reshape(13, 9)
    assert_verbose_allclose(fortran, expected, atol=0, rtol=1e-9)
    assert np.unravel_index(np.argmax(fortran), fortran.shape) == (4, 7)


def test_integer_cubes_with_negative_values(rng):
    cube = rng.integers(-3000, 3000, size=(15, 15, 6)).astype(np.int16)
    result = edgesentry.load("rx").predict(cube)
    expected = reference.global_rx(cube.reshape(-1, 6).astype(np.float64)).reshape(15, 15)
    assert_verbose_allclose(result.extras["scores"], expected, atol=0, rtol=1e-9)
    assert result.anomaly_map.dtype == np.float32 and result.score == pytest.approx(expected.max())


def test_band_selection_first_n_and_indices(rng):
    cube = rng.normal(size=(10, 10, 8))
    first = edgesentry.load("rx", bands=5).predict(cube)
    picked = edgesentry.load("rx", bands=[0, 1, 2, 3, 4]).predict(cube)
    assert_verbose_allclose(first.anomaly_map, picked.anomaly_map, atol=0, rtol=0)
    assert first.info["bands"] == 5
    with pytest.raises(InputError, match="first 9 bands of a cube with 8"):
        edgesentry.load("rx", bands=9).predict(cube)


def test_nan_raises_by_default_and_is_masked_on_request(rng):
    cube = rng.normal(size=(10, 10, 4))
    cube[2, 3, 1] = np.nan
    cube[7, 7, 0] = np.inf
    with pytest.raises(InputError, match="2 pixels with NaN/Inf"):
        edgesentry.load("rx").predict(cube)
    result = edgesentry.load("rx", nan_policy="mask").predict(cube)
    assert np.isnan(result.anomaly_map[2, 3]) and np.isnan(result.anomaly_map[7, 7])
    valid = np.isfinite(cube).all(-1)
    expected = reference.global_rx(cube[valid])
    assert_verbose_allclose(result.extras["scores"][valid], expected, atol=0, rtol=1e-9)
    assert np.isfinite(result.score)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((10, 10)), r"\(H, W, B\).*got shape \(10, 10\)"),
        (np.zeros((0, 10, 3)), "empty cube"),
        (np.zeros((4, 4, 3), dtype=np.complex64), "real numeric"),
        (np.zeros((4, 4, 3), dtype=bool), "real numeric"),
        ([[1.0, 2.0]], "numpy array or a cube file path; got list"),
        ("/nonexistent/scene.mat", "does not exist"),
    ],
)
def test_bad_inputs_get_clear_errors(bad, match):
    with pytest.raises(InputError, match=match):
        edgesentry.load("rx").predict(bad)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"mode": "local"}, "needs window"),
        ({"mode": "fast"}, "'global' or 'local'"),
        ({"window": (3, 9)}, "only used by mode 'local'; pass mode='local'"),
        ({"mode": "local", "window": (9, 3)}, "inner < outer"),
        ({"kernels": "gpu"}, "unknown kernel tier"),
        ({"nan_policy": "ignore"}, "nan_policy"),
    ],
)
def test_bad_options_get_clear_errors(options, match):
    with pytest.raises(ConfigError, match=match):
        edgesentry.load("rx", **options)


def test_threshold_label_mask_and_changes_after_loading(rng):
    cube = rng.normal(size=(12, 12, 3))
    cube[5, 5] += 25  # one strong anomaly
    det = edgesentry.load("rx")
    plain = det.predict(cube)
    assert plain.label is None and plain.mask is None
    det.threshold = float(np.sort(plain.anomaly_map.ravel())[-2]) + 1e-3
    flagged = det.predict(cube)
    assert flagged.label is True and flagged.mask.sum() == 1 and flagged.mask[5, 5]
    det.threshold = plain.score * 2
    assert det.predict(cube).label is False
    with pytest.raises(ConfigError, match="finite"):
        det.threshold = float("nan")


def test_calibrate_save_load_roundtrip(rng, tmp_path):
    normals = [rng.normal(size=(10, 10, 3)) for _ in range(6)]
    det = edgesentry.load("rx")
    calib = det.calibrate(normals)
    scores = [det.predict(x).raw_score for x in normals]
    assert calib.n_samples == 6 and calib.threshold >= np.quantile(scores, 0.99)
    # one scale: a calibrated detector's threshold is on the normalised score scale (0.5), raw_threshold on the raw
    assert det.threshold == 0.5 and det.raw_threshold == calib.threshold and det.score_scale == "normalised"
    assert det.pixel_threshold == calib.pixel_threshold
    anomalous = normals[0].copy()
    anomalous[3, 3] += 40
    result = det.predict(anomalous)
    assert result.label is True and 0.5 < result.score <= 1.0 and result.raw_score > calib.threshold
    det.save(tmp_path / "rx_bundle")
    again = edgesentry.load(tmp_path / "rx_bundle")
    assert again.calibration == calib
    assert again.predict(anomalous).score == result.score
    assert again.info()["calibration"]["threshold"] == calib.threshold
    assert again.info()["raw_threshold"] == calib.threshold and again.info()["threshold"] == 0.5


def test_predict_batch_matches_predict(rng):
    cubes = [rng.normal(size=(8, 9, 3)) for _ in range(3)]
    det = edgesentry.load("rx")
    batch = det.predict_batch(cubes)
    for cube, res in zip(cubes, batch):
        assert_verbose_allclose(res.anomaly_map, det.predict(cube).anomaly_map, atol=0, rtol=0)
    with pytest.raises(InputError, match="empty sequence"):
        det.predict_batch([])


def test_result_has_stage_timings(rng):
    result = edgesentry.load("rx").predict(rng.normal(size=(6, 6, 2)))
    assert set(result.timings) == {"preprocess", "graph", "postprocess", "total"}
    assert result.timings["total"] >= result.timings["postprocess"] >= 0
    assert result.summary()["shape"] == [6, 6]


@pytest.mark.parametrize(("option", "hint"), [({"backend": "tensorrt"}, ""),
                                              ({"windw": (3, 9)}, "did you mean 'window'")])
def test_options_a_family_does_not_take_are_config_errors(option, hint):
    with pytest.raises(ConfigError, match=f"family 'rx' has no option '{next(iter(option))}'.*{hint}.*valid options: "
                                          "bands, .*kernels, .*mode, .*warmup, window"):  # line-scan ones too
        edgesentry.load("rx", **option)
