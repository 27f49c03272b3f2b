"""FERS networks: strict loading of every official file, oracle parity of both branches."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from edgesentry.errors import WeightsError
from edgesentry.kernels.fers.reference import fuse
from edgesentry.models.fers import (
    FERSConfig,
    build_spatial,
    build_spectral,
    load_spa_fen_int8_npz,
    load_spatial,
    load_spectral_dir,
    load_strict,
    read_checkpoint,
)
from tests.utils import assert_verbose_allclose

from .conftest import SCENES, WEIGHT_DIRS

# Windows of the oracle's padded ConvH map and of the cropped encoder / pc maps.
WINDOWS = {
    "convh_out_win_tl": ("convh", slice(0, 20)),
    "enc_out_win_tl": ("enc", slice(0, 12)),
    "enc_out_win_c": ("enc", slice(44, 56)),
    "pc_hidden_win_tl": ("pc_hidden", slice(0, 12)),
    "pc_hidden_win_c": ("pc_hidden", slice(44, 56)),
}
# Thread-count changes alone move spe_f by <= 9.2e-5 (oracle README): atol 1e-4 + rtol 1e-5.
ATOL, RTOL = 1e-4, 1e-5


@pytest.mark.parametrize("rel", WEIGHT_DIRS)
def test_official_files_load_strictly(fers_ref, rel):
    manifest = json.loads((fers_ref / "state_dict_manifest.json").read_text())
    tag = "abu_aviris_200bands" if rel.startswith("FERS_ABU") else f"had100_{rel.split('/')[-1]}"
    for part in ("convh", "enc", "pc"):
        sd = read_checkpoint(fers_ref / "weights" / rel / f"{part}.pt")
        expected = manifest[f"{tag}/{part}"]["keys"]
        assert list(sd) == list(expected)
        assert all(list(sd[k].shape) == v["shape"] for k, v in expected.items())
    cfg, sd = load_spectral_dir(fers_ref / "weights" / rel)
    model = build_spectral(cfg, sd)  # strict: raises WeightsError on any mismatch
    assert cfg.bands == int(rel.split("/")[-1].replace("bands", ""))
    assert cfg.pc_hidden == (256 if cfg.bands > 128 else 128)
    assert not any(k.startswith("pc.conv3") for k in model.state_dict())


def test_spa_fen_int8_npz_loads_strictly(fers_ref):
    manifest = json.loads((fers_ref / "state_dict_manifest.json").read_text())["spa_fen_200bands"]["keys"]
    cfg, sd = load_spatial(fers_ref / "spa_fen_random_seed0_int8.npz")
    assert cfg.bands == 200 and cfg.se_hidden == 25
    model = build_spatial(cfg, sd)
    assert list(model.state_dict()) == list(manifest)
    # int8 grid: every parameter is q * 2**exp2 exactly
    with np.load(fers_ref / "spa_fen_random_seed0_int8.npz") as archive:
        exp2 = int(archive["exp2/spp.fuse.0.weight"])
        q = archive["q/spp.fuse.0.weight"].astype(np.float32) * np.float32(2.0) ** exp2
    assert np.array_equal(model.state_dict()["spp.fuse.0.weight"].numpy(), q)


@pytest.mark.parametrize("bands", [50, 100, 200])
def test_spatial_architecture_matches_manifest(fers_ref, bands):
    keys = json.loads((fers_ref / "state_dict_manifest.json").read_text())[f"spa_fen_{bands}bands"]["keys"]
    own = build_spatial(FERSConfig(bands=bands)).state_dict()
    assert list(own) == list(keys)
    assert all(list(own[k].shape) == v["shape"] for k, v in keys.items())


def test_strict_loading_lists_missing_and_unexpected(fers_ref):
    cfg, sd = load_spectral_dir(fers_ref / "weights" / "saved_models/50bands")
    sd = dict(sd)
    sd.pop("enc.layer1.0.conv1.weight")
    sd["pc.conv3.weight"] = torch.zeros(1, 50, 1, 1)
    with pytest.raises(WeightsError, match=r"1 missing keys \['enc.layer1.0.conv1.weight'\].*1 unexpected keys"):
        load_strict(build_spectral(cfg), sd, "spectral")
    cfg100, _ = load_spectral_dir(fers_ref / "weights" / "saved_models/100bands")
    with pytest.raises(WeightsError, match="shape mismatches"):
        build_spectral(cfg100, load_spectral_dir(fers_ref / "weights" / "saved_models/50bands")[1])


def test_bad_checkpoints_raise(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="weights_only=True"):
        read_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(WeightsError, match="convh.pt, enc.pt and pc.pt"):
        load_spectral_dir(tmp_path)
    np.savez(tmp_path / "bad.npz", **{"q/a": np.zeros(3, np.int8)})
    with pytest.raises(WeightsError, match="exp2/a"):
        load_spa_fen_int8_npz(tmp_path / "bad.npz")
    with pytest.raises(WeightsError, match=r"1 unexpected keys \['a'\]"):
        load_spa_fen_int8_npz(tmp_path / "bad.npz", keys=["b"])


@pytest.mark.parametrize("key", list(SCENES))
def test_spectral_branch_matches_oracle(oracle, spectral_outputs, key):
    ours = spectral_outputs[key]
    for name, (feat, win) in WINDOWS.items():
        assert_verbose_allclose(ours[feat][:, :, win, win], oracle[f"{key}/{name}"], atol=ATOL, rtol=RTOL)
    assert_verbose_allclose(ours["spe_f"], oracle[f"{key}/spe_f"], atol=ATOL, rtol=RTOL)


def test_fused_cube_md5(oracle, manifest, spectral_outputs):
    """``fuse`` adds x + spe_f in the official float32 order, bit for bit: on the oracle's arrays
    its md5 is the official fused cube's. That order is ours (elementwise IEEE-754 adds, the
    same on every CPU), so this holds everywhere. Our network's spe_f is not bit-exact across
    CPUs (oneDNN orders the convolution sums by the CPU's SIMD width): the cube fused from it
    agrees with the official one within the network's tolerance (ATOL, RTOL), exactly as
    spe_f does, since adding the same x is exact up to one rounding."""
    for key in SCENES:
        x, want = oracle[f"{key}/x"], fuse(oracle[f"{key}/x"], oracle[f"{key}/spe_f"])
        assert hashlib.md5(np.ascontiguousarray(want).tobytes()).hexdigest() == manifest["scenes"][key]["fused_spe_md5"]
        assert_verbose_allclose(fuse(x, spectral_outputs[key]["spe_f"]), want, atol=ATOL, rtol=RTOL)


@pytest.fixture(scope="module")
def spatial_outputs(fers_ref, oracle):
    cfg, sd = load_spatial(fers_ref / "spa_fen_random_seed0_int8.npz")
    x = torch.from_numpy(oracle["abu-airport-2_B200/x"])
    out = {}
    with torch.inference_mode():
        for friendly in (False, True):
            feats = build_spatial(cfg, sd, export_friendly=friendly).forward_features(x)
            out[friendly] = {k: v.numpy() for k, v in feats.items()}
    return out


@pytest.mark.parametrize("export_friendly", [False, True], ids=["native", "export_friendly"])
def test_spatial_branch_matches_oracle(oracle, manifest, spatial_outputs, export_friendly):
    ours = spatial_outputs[export_friendly]
    names = {"false_rgb": "spa_false_rgb", "backbone": "spa_backbone", "pool1": "spa_pool1", "pool2": "spa_pool2",
             "pool4": "spa_pool4", "se_weight": "spa_se_weight", "spa_f": "spa_f"}
    for mine, theirs in names.items():
        assert_verbose_allclose(ours[mine], oracle[f"abu-airport-2_B200/{theirs}"], atol=ATOL, rtol=RTOL)
    # The full fused cube: bit for bit from the oracle's features (our float32 order, see
    # test_fused_cube_md5); from our spatial branch within the network's tolerance.
    key = "abu-airport-2_B200"
    x, spe = oracle[f"{key}/x"], oracle[f"{key}/spe_f"]
    want = fuse(x, spe, oracle[f"{key}/spa_f"])
    assert hashlib.md5(np.ascontiguousarray(want).tobytes()).hexdigest() == manifest["scenes"][key]["fused_full_md5"]
    assert_verbose_allclose(fuse(x, spe, ours["spa_f"]), want, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("hw", [(5, 5), (37, 53), (29, 16)], ids=["min", "non_square", "tall"])
def test_shapes_on_random_cubes(hw):
    cfg = FERSConfig(bands=16)
    x = torch.rand(1, 16, *hw) * 0.2 - 0.1
    spatial = build_spatial(cfg)
    friendly = build_spatial(cfg, export_friendly=True)
    friendly.load_state_dict(spatial.state_dict())
    with torch.inference_mode():
        spe = build_spectral(cfg)(x)
        native, matrix = spatial(x), friendly(x)
    assert spe.shape == x.shape and native.shape == x.shape
    assert (spe >= 0).all() and (native >= 0).all()
    # the export-friendly pooling/upsampling matrices equal the native ops (overlapping bins included)
    assert_verbose_allclose(matrix, native, atol=1e-6, rtol=1e-5)
