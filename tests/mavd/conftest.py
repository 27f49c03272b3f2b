"""Fixtures of the MAVD tests: official weights, the oracle, a converted bundle (+ ONNX)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.utils import load_oracle, reference_dir

CASES = ("case_B5_T1", "case_B5_T7", "case_B5_T64", "case_B5_T300", "case_B1_T33")


@pytest.fixture(scope="session")
def mavd_ref(shared: Path) -> Path:
    return reference_dir(shared, "mavd")


@pytest.fixture(scope="session")
def weights_dir(mavd_ref: Path) -> Path:
    return mavd_ref / "weights" / "saved_models" / "ap86.07"


@pytest.fixture(scope="session")
def oracle(mavd_ref: Path) -> dict[str, np.ndarray]:
    return load_oracle(mavd_ref)


@pytest.fixture(scope="session")
def official(weights_dir: Path):
    pytest.importorskip("torch")
    from edgesentry.models.mavd import read_official

    return read_official(str(weights_dir))


@pytest.fixture(scope="session")
def model(official):
    import torch

    from edgesentry.models.mavd import MAVD, load_official

    torch.set_num_threads(2)
    return load_official(MAVD(), official)


@pytest.fixture(scope="session")
def bundle(weights_dir: Path, tmp_path_factory):
    import edgesentry

    return edgesentry.convert("mavd", weights_dir, output=tmp_path_factory.mktemp("mavd") / "bundle")


@pytest.fixture(scope="session")
def onnx_bundle(weights_dir: Path, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    import edgesentry
    from edgesentry.export.onnx import export_bundle

    b = edgesentry.convert("mavd", weights_dir, output=tmp_path_factory.mktemp("mavd_onnx") / "bundle")
    export_bundle(b)
    return b


def case_inputs(oracle: dict[str, np.ndarray], case: str) -> dict[str, np.ndarray]:
    return {k: oracle[f"{case}/{k}"] for k in ("rgb", "flow", "audio")}
