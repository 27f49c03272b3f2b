"""Fixtures of the export tests: a tiny synthetic family ("tinynet") exported to ONNX.

The tiny family is a conv net (image (B, 3, H, W) -> anomaly map (B, H, W) and score (B,))
registered as ``edgesentry.export.tinynet`` for the duration of the session, so the shared
machinery (export_bundle, lint, validate, engine keys, Triton configs) is tested without
depending on any family's weights.
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

TINY = "tinynet"


def tiny_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv1.weight": (0.3 * rng.standard_normal((4, 3, 3, 3))).astype(np.float32),
        "conv1.bias": (0.1 * rng.standard_normal(4)).astype(np.float32),
        "conv2.weight": (0.3 * rng.standard_normal((1, 4, 1, 1))).astype(np.float32),
        "conv2.bias": np.zeros(1, np.float32),
    }


def _build(tensors: dict[str, np.ndarray]):
    import torch
    from torch import nn

    class TinyNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
            self.conv2 = nn.Conv2d(4, 1, 1)

        def forward(self, image):
            h = torch.relu(self.conv1(image))
            amap = torch.sigmoid(self.conv2(h))[:, 0] + (h * h).mean(1)
            return amap, amap.flatten(1).amax(1)

    net = TinyNet()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
    return net.eval()


def _graph_specs(bundle):
    from edgesentry.export.graph import GraphSpec

    tensors = bundle.load_tensors()
    rng = np.random.default_rng(1)
    return [
        GraphSpec(
            name="model",
            build=lambda: _build(tensors),
            inputs={"image": rng.standard_normal((2, 3, 16, 16)).astype(np.float32)},
            outputs=["anomaly_map", "score"],
            dynamic_axes={
                "image": {0: "batch", 2: "H", 3: "W"},
                "anomaly_map": {0: "batch", 1: "H", 2: "W"},
                "score": {0: "batch"},
            },
            profile_hints={"H": (8, 16, 64), "W": (8, 16, 64)},
        )
    ]


@pytest.fixture(scope="session")
def tiny_family():
    """Registers a ``tinynet`` exporter (graph_specs) for the session."""
    pytest.importorskip("torch")
    from edgesentry.export.onnx import EXPORTERS

    module = types.ModuleType(f"edgesentry.export.{TINY}")
    module.graph_specs = _graph_specs
    EXPORTERS[TINY] = module
    yield module
    EXPORTERS.pop(TINY, None)


def make_tiny_bundle(path: Path, *, simplify: bool = False):
    from edgesentry.bundle import write_bundle
    from edgesentry.export.onnx import export_bundle

    bundle = write_bundle(path, TINY, config={"channels": 4}, tensors=tiny_tensors(), overwrite=True)
    reports = export_bundle(bundle, simplify=simplify)
    return bundle, reports


@pytest.fixture(scope="session")
def tiny_bundle(tiny_family, tmp_path_factory):
    bundle, _ = make_tiny_bundle(tmp_path_factory.mktemp("tiny") / "bundle")
    return bundle


@pytest.fixture(scope="session")
def family_bundles(shared, tmp_path_factory):
    """name -> (Bundle, export parity reports) for every family whose reference is present."""
    from tests.export.families import CASES, exported_bundle

    out = {}
    root = tmp_path_factory.mktemp("families")
    for name in CASES:
        try:
            out[name] = exported_bundle(name, shared, root / name)
        except pytest.skip.Exception:
            continue
    if not out:
        pytest.skip("no family reference found under ../shared/reference")
    return out
