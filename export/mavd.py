"""ONNX export of MAVD: the unimodal feature graph with dynamic crops and T.

Graph ``features``: ``rgb (crops, T, 1024)``, ``flow (crops, T, 1024)``, ``audio
(audio_crops, T, 128)`` -> ``v_feat (crops, T, 128)``, ``a_feat (audio_crops, T, 32)``,
``f_feat (crops, T, 64)``. The align-and-fuse MLPs, TCN and MIL head run as the fused
post-processing kernel (``edgesentry.kernels.mavd``), so the graph holds the heavy part
(conv embeddings and transformers, ~99% of the FLOPs).

What keeps T dynamic: the positional matrix is built from ``arange`` (``linspace`` makes the
exporters specialise T), and there is no bare ``squeeze()``. The TorchScript-based exporter
(opset 17) is used, as everywhere in ``edgesentry.export``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry.bundle import Bundle
from edgesentry.export.graph import GraphSpec, parity_torch_vs_ort
from edgesentry.export.parity import ParityReport

DYNAMIC_AXES = {
    "rgb": {0: "crops", 1: "T"},
    "flow": {0: "crops", 1: "T"},
    "audio": {0: "audio_crops", 1: "T"},
    "v_feat": {0: "crops", 1: "T"},
    "a_feat": {0: "audio_crops", 1: "T"},
    "f_feat": {0: "crops", 1: "T"},
}


def example_inputs(crops: int = 2, t: int = 7, audio_crops: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Non-negative, I3D-like random features (the example also drives the parity check)."""
    rng = np.random.default_rng(seed)
    return {
        "rgb": np.maximum(rng.standard_normal((crops, t, 1024)), 0).astype(np.float32),
        "flow": np.maximum(rng.standard_normal((crops, t, 1024)), 0).astype(np.float32),
        "audio": (0.5 * rng.standard_normal((audio_crops, t, 128))).astype(np.float32),
    }


def feature_spec(tensors: dict[str, np.ndarray], *, atol: float = 1e-4, rtol: float = 1e-4) -> GraphSpec:
    def build() -> Any:
        from edgesentry.models.mavd import MAVDFeatures, build_from_tensors

        return MAVDFeatures(build_from_tensors(tensors)).eval()

    return GraphSpec(
        name="features",
        build=build,
        inputs=example_inputs(),
        outputs=["v_feat", "a_feat", "f_feat"],
        dynamic_axes=DYNAMIC_AXES,
        atol=atol,
        rtol=rtol,
    )


def graph_specs(bundle: Bundle) -> list[GraphSpec]:
    """The graphs of a MAVD bundle (``edgesentry export BUNDLE``)."""
    return [feature_spec(bundle.load_tensors())]


def parity_sweep(
    tensors: dict[str, np.ndarray],
    path: str | Path,
    lengths: Sequence[int] = (1, 2, 7, 300, 1000),
    crops: int = 5,
    atol: float = 1e-4,
    rtol: float = 1e-4,
) -> dict[int, ParityReport]:
    """ONNX Runtime vs torch on the exported graph at several T (``crops`` RGB/flow crops,
    one audio stream)."""
    spec = feature_spec(tensors, atol=atol, rtol=rtol)
    module = spec.build()
    out: dict[int, Any] = {}
    for i, t in enumerate(lengths):
        out[int(t)] = parity_torch_vs_ort(
            spec, path, module=module, inputs=example_inputs(crops, int(t), 1, seed=i)
        )
    return out


def serving_example(bundle: Bundle, seed: int = 0) -> dict[str, np.ndarray]:
    """A raw input the served ensemble takes, for the repository check: 2 crops x 6 snippets."""
    x = example_inputs(crops=2, t=6, seed=seed)
    return {**x, "audio": x["audio"][0]}  # audio as the XD release has it: (T, 128) once per video
