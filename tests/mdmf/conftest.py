"""Fixtures of the MDMF tests: the oracle files and a features-in detector on the oracle heads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.utils import load_oracle, reference_dir


@pytest.fixture(scope="session")
def mdmf_ref(shared: Path) -> Path:
    return reference_dir(shared, "mdmf")


@pytest.fixture(scope="session")
def oracle(mdmf_ref: Path) -> dict[str, np.ndarray]:
    return load_oracle(mdmf_ref)


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
