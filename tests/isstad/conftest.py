"""ISSTAD fixtures: the reference folder, the oracle arrays, a converted tiny bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.utils import load_oracle, reference_dir

#: oracle key per (scoring -> pixel map key, image score key)
FORMULAS = {
    "original": ("O_pixel_map", "O_image_score"),
    "ham": ("E_pixel_ham", "E_image_ham"),
    "alpha": ("E_pixel_alpha", "E_image_alpha"),
    "max": ("E_pixel_max", "E_image_ham"),
}
MODES = ("identity", "official_seed123")
# float32 re-implementation vs the float32 oracle (README "Observed tolerances"): maps 1e-5
# abs, the x255 map 2e-3 abs, scores 1e-5 relative.
ATOL_MAP = 1e-5
ATOL_O_MAP = 2e-3
RTOL_SCORE = 1e-5


@pytest.fixture(scope="session")
def isstad_ref(shared: Path) -> Path:
    return reference_dir(shared, "isstad")


@pytest.fixture(scope="session")
def oracle(isstad_ref: Path) -> dict[str, np.ndarray]:
    return load_oracle(isstad_ref)


@pytest.fixture(scope="session")
def tiny_config(isstad_ref: Path) -> dict:
    return json.loads((isstad_ref / "tiny_stage2_config.json").read_text())


@pytest.fixture(scope="session")
def manifest(isstad_ref: Path) -> dict:
    return json.loads((isstad_ref / "state_dict_manifest.json").read_text())


@pytest.fixture(scope="session")
def tiny_bundle(isstad_ref: Path, tmp_path_factory) -> Path:
    """tiny_stage2_seed0.pt converted once (read-only for tests: copy before changing it)."""
    import edgesentry

    out = tmp_path_factory.mktemp("isstad") / "tiny"
    edgesentry.convert("isstad", isstad_ref / "tiny_stage2_seed0.pt", output=out,
                       config=isstad_ref / "tiny_stage2_config.json", object_class="synthetic")
    return out


@pytest.fixture(scope="session")
def tiny_onnx_bundle(tiny_bundle: Path, tmp_path_factory):
    """The tiny bundle with model.onnx exported (and the export's parity report)."""
    from edgesentry.bundle import Bundle
    from edgesentry.export.onnx import export_bundle

    out = tmp_path_factory.mktemp("isstad_onnx") / "tiny"
    shutil.copytree(tiny_bundle, out)
    reports = export_bundle(Bundle.open(out))
    return out, reports


@pytest.fixture
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)
    return out


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: the tiny model is ~25 ms per image on one thread, while two
    spinning OpenMP threads on the shared 2-core CI box take 10x longer. Restored after."""
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
