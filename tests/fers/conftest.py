"""FERS test fixtures: the oracle archive, official weight folders, small random cubes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.utils import load_oracle, reference_dir

SCENES = {
    "abu-airport-2_B200": "saved_models/200bands",
    "abu-beach-2_B100": "saved_models/100bands",
    "abu-urban-1_B50": "saved_models/50bands",
}
WEIGHT_DIRS = ["saved_models/50bands", "saved_models/100bands", "saved_models/200bands",
               "FERS_ABU/saved_models/aviris/200bands"]


@pytest.fixture(scope="session")
def fers_ref(shared: Path) -> Path:
    return reference_dir(shared, "fers")


@pytest.fixture(scope="session")
def oracle(fers_ref: Path) -> dict[str, np.ndarray]:
    return load_oracle(fers_ref)


@pytest.fixture(scope="session")
def manifest(fers_ref: Path) -> dict:
    return json.loads((fers_ref / "oracle_manifest.json").read_text())


@pytest.fixture(scope="session")
def spectral_models(fers_ref: Path) -> dict:
    """Scene key -> SpectralBranch with that scene's official weights (loaded once)."""
    from edgesentry.models.fers import build_spectral, load_spectral_dir

    out = {}
    for key, rel in SCENES.items():
        cfg, sd = load_spectral_dir(fers_ref / "weights" / rel)
        out[key] = build_spectral(cfg, sd)
    return out


@pytest.fixture(scope="session")
def spectral_outputs(spectral_models: dict, oracle: dict) -> dict:
    """Scene key -> forward_features of our spectral branch on the oracle's x (run once per scene)."""
    import torch

    out = {}
    with torch.inference_mode():
        for key, model in spectral_models.items():
            feats = model.forward_features(torch.from_numpy(oracle[f"{key}/x"]))
            out[key] = {k: v.numpy() for k, v in feats.items()}
    return out


@pytest.fixture(scope="session")
def spectral_bundle(fers_ref: Path, tmp_path_factory) -> Path:
    """A spectral-only 50-band bundle (the smallest official weights)."""
    import edgesentry

    out = tmp_path_factory.mktemp("fers") / "b50"
    edgesentry.convert("fers", fers_ref / "weights" / "saved_models/50bands", output=out)
    return out


def random_features(rng: np.random.Generator, bands: int, h: int, w: int, spa: bool = True):
    """x in [-0.1, 0.1] and non-negative, correlated features like the networks' outputs."""
    x = (rng.random((1, bands, h, w)) * 0.2 - 0.1).astype(np.float32)
    mix = rng.standard_normal((bands, bands)) * 0.3
    spe = np.maximum(np.einsum("ij,njhw->nihw", mix, x) * 50 + rng.random((1, bands, h, w)), 0).astype(np.float32)
    spa_f = (rng.random((1, bands, h, w)) * 2).astype(np.float32) if spa else None
    return x, spe, spa_f
