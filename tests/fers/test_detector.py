"""FERS detector end to end: official input preparation, modes, backends, bundles, CLI, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgesentry
from edgesentry.errors import ConfigError, InputError
from edgesentry.io.hsi import read_cube
from edgesentry.metrics import roc_auc

from .conftest import SCENES


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.fixture(scope="module")
def bundles(fers_ref, tmp_path_factory):
    """One spectral-only bundle per oracle scene (50 bands in the official 'ham' mode) and a
    200-band bundle with the int8-grid random spatial branch."""
    root = tmp_path_factory.mktemp("fers_bundles")
    out = {}
    for key, rel in SCENES.items():
        mode = "ham" if key.endswith("B50") else "global"
        out[key] = edgesentry.convert("fers", fers_ref / "weights" / rel, output=root / key, mode=mode).path
    out["full"] = edgesentry.convert("fers", fers_ref / "weights" / SCENES["abu-airport-2_B200"],
                                     fers_ref / "spa_fen_random_seed0_int8.npz", output=root / "full").path
    return out


@pytest.mark.parametrize("key", list(SCENES))
def test_end_to_end_matches_oracle(shared, oracle, manifest, bundles, key):
    """From the .mat file: x exact, spe_f within tolerance, final map by AUC and correlation."""
    scene = manifest["scenes"][key]
    det = edgesentry.load(bundles[key], backend="torch", return_features=True)
    assert det.info()["spectral_only"] is True
    result = det.predict(shared / "data" / "abu" / scene["source_mat"])
    assert np.array_equal(result.extras["x"], oracle[f"{key}/x"])
    np.testing.assert_allclose(result.extras["spe_f"], oracle[f"{key}/spe_f"], atol=1e-4, rtol=1e-5)
    gt, want = oracle[f"{key}/gt"], oracle[f"{key}/score_official_spe_only"]
    assert abs(roc_auc(gt, result.extras["scores"]) - scene["auc"]["score_official_spe_only"]) < 1e-4
    assert pearson(result.extras["scores"], want) > 0.9999
    assert result.info["mode"] == ("ham" if key.endswith("B50") else "global")
    assert result.anomaly_map.shape == (100, 100) and result.score == pytest.approx(result.extras["scores"].max())
    assert {"graph", "postprocess"} <= set(result.timings)


def test_full_path_with_random_spatial_branch(shared, oracle, manifest, bundles):
    key = "abu-airport-2_B200"
    det = edgesentry.load(bundles["full"], backend="torch", return_features=True)
    assert det.info()["spectral_only"] is False and det.info()["graphs"] == ["spatial", "spectral"]
    result = det.predict(read_cube(shared / "data" / "abu" / "abu-airport-2.mat"))
    np.testing.assert_allclose(result.extras["spa_f"], oracle[f"{key}/spa_f"], atol=1e-4, rtol=1e-5)
    gt = oracle[f"{key}/gt"]
    assert abs(roc_auc(gt, result.extras["scores"]) - manifest["scenes"][key]["auc"]["rx_fused_full"]) < 1e-4
    assert pearson(result.extras["scores"], oracle[f"{key}/score_official_full"]) > 0.9999


def test_local_mode_and_kernel_override(bundles, rng):
    cube = rng.integers(0, 1000, size=(12, 12, 55)).astype(np.int16)
    det = edgesentry.load(bundles["abu-urban-1_B50"], backend="torch", mode="local", window=(3, 9),
                          kernels="cpu")
    local = det.predict(cube)
    assert local.info["mode"] == "local" and local.info["kernel_tier"] == "cpu"
    assert local.anomaly_map.shape == (12, 12) and np.isfinite(local.anomaly_map).all()
    glob = edgesentry.load(bundles["abu-urban-1_B50"], backend="torch", mode="global").predict(cube)
    assert glob.info["mode"] == "global" and not np.allclose(local.anomaly_map, glob.anomaly_map)


def test_save_round_trip(bundles, rng, tmp_path):
    """Detector.save writes a bundle that loads back to the same detector (weights, mode)."""
    cube = rng.integers(0, 1000, size=(9, 8, 52)).astype(np.uint16)
    det = edgesentry.load(bundles["abu-urban-1_B50"], backend="torch", mode="global", kernels="reference")
    want = det.predict(cube)
    det.save(tmp_path / "saved")
    again = edgesentry.load(tmp_path / "saved", backend="torch", kernels="reference").predict(cube)
    assert again.info["mode"] == "global" and again.info["spectral_only"]
    np.testing.assert_array_equal(again.extras["scores"], want.extras["scores"])


def test_bad_inputs_raise(bundles, tmp_path):
    det = edgesentry.load(bundles["abu-urban-1_B50"], backend="torch")
    with pytest.raises(InputError, match="first 50 bands; the cube has only 20"):
        det.predict(np.zeros((8, 8, 20), np.float32))
    with pytest.raises(InputError, match=r"\(H, W, B\)"):
        det.predict(np.zeros((8, 60), np.float32))
    with pytest.raises(InputError, match="H and W >= 5"):
        det.predict(np.ones((4, 9, 60), np.float32))
    with pytest.raises(InputError, match="constant"):
        det.predict(np.ones((8, 8, 60), np.float32))
    nan = np.random.default_rng(0).random((8, 8, 60)).astype(np.float32)
    nan[1, 1, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        det.predict(nan)
    with pytest.raises(InputError, match="numpy array or a cube file path"):
        det.predict([1, 2, 3])
    with pytest.raises(ConfigError, match="window"):
        edgesentry.load(bundles["abu-urban-1_B50"], mode="local")
    with pytest.raises(ConfigError, match="needs trained weights"):
        edgesentry.load("fers")


def test_cli_convert_and_detect(fers_ref, shared, tmp_path, capsys):
    from edgesentry.cli import main

    bundle = tmp_path / "b50"
    assert main(["convert", "fers", "--spectral", str(fers_ref / "weights/saved_models/50bands"), "-o", str(bundle),
                 "--mode", "ham"]) == 0
    meta = json.loads((bundle / "meta.json").read_text())
    assert meta["config"]["spatial"] is False and meta["config"]["arch"]["bands"] == 50
    mat = shared / "data" / "abu" / "abu-urban-1.mat"
    assert main(["detect", "fers", str(bundle), str(mat), "--gt", str(mat), "--out", str(tmp_path / "out"),
                 "--backend", "torch"]) == 0
    summary = json.loads((tmp_path / "out" / "abu-urban-1_summary.json").read_text())
    assert abs(summary["auc"] - 0.9965635429016199) < 1e-4  # the official ham score's AUC
    assert (tmp_path / "out" / "abu-urban-1_scores.npy").is_file()


@pytest.mark.parametrize("dtype", [np.float32, np.uint16, np.float64])
def test_prepare_cube_in_blocks_equals_one_pass(rng, monkeypatch, dtype):
    """Blocks of 1 row (ragged: 7 rows) give the one-pass float64 preparation: each value goes
    through the same float64 operations, so they agree to within one float32 rounding (the
    outputs are float32 in [-0.1, 0.1]: 1e-8 is about one ulp at 0.1)."""
    from edgesentry.detectors import fers

    cube = (rng.random((7, 6, 12)) * 4000).astype(dtype)
    v = cube[..., :10].astype(np.float64)
    one_pass = (((v - v.min()) / (v.max() - v.min()) * 2 - 1) * 0.1).transpose(2, 0, 1)[None].astype(np.float32)
    monkeypatch.setattr(fers, "_PREPARE_BLOCK_BYTES", 1)
    got = fers.prepare_cube(cube, 10)
    assert got.shape == (1, 10, 7, 6) and got.dtype == np.float32
    np.testing.assert_allclose(got, one_pass, rtol=0, atol=1e-8)
    bad = cube.astype(np.float32)
    bad[6, 5, 3] = np.inf  # in the last block
    assert fers._all_finite(cube) and not fers._all_finite(bad)
