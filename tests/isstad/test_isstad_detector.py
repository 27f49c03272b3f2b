"""The ISSTAD detector end to end: conversion, preprocessing, oracle parity through
``predict``, permutation modes, ONNX Runtime vs torch, calibration, CLI, bad inputs."""

from __future__ import annotations

import argparse
import csv
import json
import shutil

import numpy as np
import pytest
import torch

import edgesentry
from edgesentry.bundle import Bundle
from edgesentry.cli import main
from edgesentry.detectors.isstad import preprocess_rgb
from edgesentry.errors import BundleError, ConfigError, InputError, WeightsError
from edgesentry.io.image import resize_bilinear
from tests.isstad.conftest import ATOL_MAP, ATOL_O_MAP, FORMULAS, RTOL_SCORE
from tests.utils import assert_verbose_allclose


def _images(oracle) -> list[np.ndarray]:
    return [oracle[f"raw_uint8_{i}"] for i in range(3)]


# ----------------------------------------------------------------------- preprocessing
def test_preprocessing_matches_the_seed(oracle):
    for i, raw in enumerate(_images(oracle)):
        got = preprocess_rgb(raw)
        assert_verbose_allclose(got, oracle["preprocessed"][i], atol=1e-6, rtol=0)
    # and it is not the antialiased torchvision >= 0.17 default (images 1 and 2 are resized)
    assert np.abs(preprocess_rgb(_images(oracle)[2]) - oracle["preprocessed_antialias_true"][2]).max() > 0.1


def test_resize_equals_torch_interpolate(rng):
    x = rng.random((2, 37, 53)).astype(np.float32)
    for size in [(224, 224), (11, 90), (37, 53)]:
        want = torch.nn.functional.interpolate(torch.from_numpy(x)[None], size=size, mode="bilinear",
                                               align_corners=False, antialias=False)[0].numpy()
        assert_verbose_allclose(resize_bilinear(x, size), want, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------- oracle parity
@pytest.mark.parametrize("scoring", [*FORMULAS, "weighted"])
def test_predict_matches_oracle_identity(tiny_bundle, oracle, scoring):
    """Raw uint8 images in, the seed's P, R, pixel map and image score out (identity mode)."""
    det = edgesentry.load(tiny_bundle, backend="torch", scoring=scoring)
    results = det.predict_batch(_images(oracle))
    pixel_key, score_key = FORMULAS.get(scoring, ("E_pixel_ham", None))
    for i, res in enumerate(results):
        assert_verbose_allclose(res.extras["probability"], oracle["identity/P"][i], atol=ATOL_MAP, rtol=0)
        assert_verbose_allclose(res.extras["recon_error"], oracle["identity/R"][i], atol=ATOL_MAP, rtol=0)
        atol = ATOL_O_MAP if scoring == "original" else ATOL_MAP
        assert_verbose_allclose(res.extras["pixel_map"], oracle[f"identity/{pixel_key}"][i], atol=atol, rtol=0)
        want = oracle["identity/E_image_W"][i, 0] if scoring == "weighted" else oracle[f"identity/{score_key}"][i]
        assert res.score == pytest.approx(float(want), rel=RTOL_SCORE)
        assert res.anomaly_map.shape == oracle[f"raw_uint8_{i}"].shape[:2]
        assert res.info["kernel_tier"] in ("cpu", "reference") and res.info["backend"] == "torch"


def test_recorded_and_seeded_permutation_match_oracle(tiny_bundle, oracle):
    perm = oracle["official_seed123/perm"]
    recorded = edgesentry.load(tiny_bundle, backend="torch", permutation=perm, batch_size=3)
    seeded = edgesentry.load(tiny_bundle, backend="torch", permutation="official", seed=123, batch_size=3)
    for det in (recorded, seeded):
        for i, res in enumerate(det.predict_batch(_images(oracle))):
            assert_verbose_allclose(res.extras["probability"], oracle["official_seed123/P"][i], atol=ATOL_MAP, rtol=0)
            assert_verbose_allclose(res.extras["pixel_map"], oracle["official_seed123/O_pixel_map"][i],
                                    atol=ATOL_O_MAP, rtol=0)
            assert res.score == pytest.approx(float(oracle["official_seed123/O_image_score"][i]), rel=RTOL_SCORE)
            assert res.info["permutation"] in ("recorded", "official")


def test_color_and_input_kinds_agree(tiny_bundle, oracle, tmp_path):
    from PIL import Image

    det = edgesentry.load(tiny_bundle, backend="torch")
    rgb = oracle["raw_uint8_1"]
    Image.fromarray(rgb).save(tmp_path / "img.png")
    ref = det.predict(rgb)
    for other in (det.predict(np.ascontiguousarray(rgb[..., ::-1]), color="bgr"), det.predict(tmp_path / "img.png"),
                  det.predict(str(tmp_path / "img.png")), det.predict(Image.fromarray(rgb))):
        assert other.score == ref.score
        assert np.array_equal(other.anomaly_map, ref.anomaly_map)
    single = [det.predict(x).score for x in _images(oracle)]
    assert [r.score for r in det.predict_batch(_images(oracle))] == pytest.approx(single, rel=1e-6)


# --------------------------------------------------------------------------- ORT
def test_onnxruntime_matches_torch(tiny_onnx_bundle, oracle):
    path, reports = tiny_onnx_bundle
    report = reports["model"]
    assert report.passed, report.table()
    errors = {o.name: o.max_abs for o in report.outputs}
    assert errors["prob"] < 1e-5 and errors["recon"] < 1e-4
    ort_det = edgesentry.load(path, backend="onnxruntime")  # auto measures both (tests/core)
    assert ort_det.backend == "onnxruntime"
    torch_det = edgesentry.load(path, backend="torch")
    for a, b in zip(ort_det.predict_batch(_images(oracle)), torch_det.predict_batch(_images(oracle))):
        assert_verbose_allclose(a.extras["probability"], b.extras["probability"], atol=1e-5, rtol=0)
        assert_verbose_allclose(a.extras["recon_error"], b.extras["recon_error"], atol=1e-5, rtol=0)
        assert a.score == pytest.approx(b.score, rel=1e-4)
    # the exported graph is identity-only: other permutations must ask for torch
    with pytest.raises(ConfigError, match="needs the torch backend"):
        edgesentry.load(path, backend="onnxruntime", permutation="official", seed=1)


# ------------------------------------------------------------------ calibrate, CLI
def test_calibrate_save_and_adjustable_thresholds(bundle_copy, oracle, tmp_path):
    det = edgesentry.load(bundle_copy, backend="torch")
    calib = det.calibrate(_images(oracle), quantile=0.9, margin=0.2)
    assert det.threshold == 0.5 and det.raw_threshold == calib.threshold and calib.pixel_threshold is not None
    res = det.predict(oracle["raw_uint8_0"])
    assert res.label is not None and res.mask is not None and 0.0 <= res.score <= 1.0
    assert res.label == (res.score >= det.threshold)  # one scale
    with pytest.raises(ConfigError, match=r"must lie in \(0, 1\]"):
        det.threshold = -1.0  # the normalised scale ends at 0
    det.threshold = 1e-9  # adjustable after calibration: everything at or above it is anomalous
    assert det.predict(oracle["raw_uint8_2"]).label is (det.predict(oracle["raw_uint8_2"]).score >= 1e-9)
    det.threshold = 0.7
    raw = det.raw_threshold
    det.save(tmp_path / "saved")
    again = edgesentry.load(tmp_path / "saved", backend="torch")
    assert again.calibration == calib and again.threshold == 0.7 and again.raw_threshold == pytest.approx(raw)
    # thresholds belong to the scoring they were fitted with: another scoring does not use them
    assert edgesentry.load(tmp_path / "saved", backend="torch", scoring="ham").threshold is None


def test_cli_convert_calibrate_detect_on_hazelnut(shared, isstad_ref, tmp_path, capsys):
    """Pipeline check with the tiny random-init weights (not an accuracy check)."""
    data = shared / "data" / "hazelnut_toy"
    if not data.is_dir():
        pytest.skip(f"{data} not found")
    ckpt = tmp_path / "net_ad.pth"
    sd = torch.load(isstad_ref / "tiny_stage2_seed0.pt", weights_only=True)
    torch.save({f"module.{k}": v for k, v in sd.items()}, ckpt)  # a DataParallel-style checkpoint
    bundle = tmp_path / "bundle"
    assert main(["convert", "isstad", str(ckpt), "-o", str(bundle), "--config",
                 str(isstad_ref / "tiny_stage2_config.json"), "--object-class", "hazelnut"]) == 0
    assert main(["calibrate", str(bundle), str(data / "train" / "good"), "--quantile", "0.95"]) == 0
    meta = json.loads((bundle / "meta.json").read_text())
    assert meta["calibration"]["n_samples"] == 20 and np.isfinite(meta["calibration"]["threshold"])
    assert meta["calibration"]["scoring"] == "original"
    Bundle.open(bundle)  # checksums still valid after the in-place update
    out = tmp_path / "out"
    assert main(["detect", "isstad", str(bundle), str(data / "test"), "--out", str(out), "--save", "all"]) == 0
    tests = sorted((data / "test").rglob("*.jpg"))
    with open(out / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(tests) == 23
    for row in rows:  # good/04 and colour/04 share a stem: names carry the folder
        for suffix in ("_map.npy", "_mask.png", "_panel.png"):
            assert (out / f"{row['name']}{suffix}").is_file()
        assert row["label"] in ("True", "False") and row["status"] == "processed"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processed"] == 23 and summary["failed"] == 0
    assert summary["raw_threshold"] == meta["calibration"]["threshold"] and summary["threshold"] == 0.5


# ---------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(("value", "error", "match"), [
    (np.zeros((32, 32, 3), np.float32), InputError, "uint8"),
    (np.zeros((32, 32), np.uint8), InputError, r"\(H, W, 3\)"),
    (np.zeros((32, 32, 4), np.uint8), InputError, r"got shape \(32, 32, 4\)"),
    (np.zeros((0, 32, 3), np.uint8), InputError, "empty"),
    ("/nonexistent/part.png", InputError, "does not exist"),
    ([1, 2, 3], InputError, "list of length 3"),
])
def test_bad_inputs(tiny_bundle, value, error, match):
    det = edgesentry.load(tiny_bundle, backend="torch")
    with pytest.raises(error, match=match):
        det.predict(value)


def test_bad_files_options_and_bundles(tiny_bundle, isstad_ref, tmp_path, manifest):
    det = edgesentry.load(tiny_bundle, backend="torch")
    (tmp_path / "not_an_image.png").write_bytes(b"hello")
    with pytest.raises(InputError, match="not a readable image"):
        det.predict(tmp_path / "not_an_image.png")
    with pytest.raises(InputError, match="empty sequence"):
        det.predict_batch([])
    with pytest.raises(ConfigError, match="color"):
        det.predict(np.zeros((8, 8, 3), np.uint8), color="hsv")
    with pytest.raises(ConfigError, match="scoring"):
        edgesentry.load(tiny_bundle, scoring="best")
    with pytest.raises(ConfigError, match="explicit seed"):
        edgesentry.load(tiny_bundle, permutation="official")
    with pytest.raises(ConfigError, match="needs trained weights"):
        edgesentry.load("isstad")
    # a stage-1 MAE checkpoint ({'model': ..., 'args': Namespace}) is read safely and refused
    stage1 = {k: torch.zeros(v["shape"]) for k, v in manifest["stage1_mae"]["keys"].items()
              if not k.startswith("blocks.")}
    torch.save({"model": stage1, "epoch": 300, "args": argparse.Namespace(mask_ratio=0.75)}, tmp_path / "s1.pth")
    with pytest.raises(WeightsError, match="stage-1 MAE checkpoint"):
        edgesentry.convert("isstad", tmp_path / "s1.pth", output=tmp_path / "s1")
    with pytest.raises(WeightsError, match="weights_only"):
        (tmp_path / "junk.pth").write_bytes(b"\x80\x04junk")
        edgesentry.convert("isstad", tmp_path / "junk.pth", output=tmp_path / "junk")
    with pytest.raises(ConfigError, match="unknown ISSTAD config keys"):
        edgesentry.convert("isstad", isstad_ref / "tiny_stage2_seed0.pt", output=tmp_path / "x",
                           config={"embed": 3})
    # without --config the tiny weights do not fit the default ViT-L: say so
    with pytest.raises(WeightsError, match="--config"):
        edgesentry.convert("isstad", isstad_ref / "tiny_stage2_seed0.pt", output=tmp_path / "y")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    meta = json.loads((broken / "meta.json").read_text())
    del meta["config"]["model"]
    (broken / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="config.model"):
        edgesentry.load(broken)
