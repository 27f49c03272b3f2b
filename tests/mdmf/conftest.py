"""Fixtures of the MDMF tests: the oracle files and a features-in detector on the oracle heads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def mdmf_ref(shared: Path) -> Path:
    path = shared / "reference" / "mdmf"
    if not (path / "oracle.npz").is_file():
        pytest.skip(f"MDMF oracle not found under {path}")
    return path


@pytest.fixture(scope="session")
def oracle(mdmf_ref: Path) -> dict[str, np.ndarray]:
    with np.load(mdmf_ref / "oracle.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def manifest(mdmf_ref: Path) -> dict:
    return json.loads((mdmf_ref / "state_dict_manifest.json").read_text())


@pytest.fixture(scope="session")
def heads_bundle(mdmf_ref: Path, tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("torch")
    from edgesentry.detectors import mdmf

    return mdmf.convert(mdmf_ref / "heads_seed0_D256.npz", output=tmp_path_factory.mktemp("mdmf") / "heads")


@pytest.fixture(scope="session")
def heads_detector(heads_bundle):
    import edgesentry

    return edgesentry.load(heads_bundle.path, backend="torch", kernels="cpu")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The MDMF graphs are tiny here; one intra-op thread avoids OpenMP spinning on a busy CI box."""
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
