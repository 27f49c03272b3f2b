"""ONNX export of ISSTAD: one graph, ``model``: image -> (recon, prob).

``image (batch, 3, S, S)`` float32 in [-1, 1] (S = img_size, static: the position
embeddings are fixed) -> ``recon (batch, 3, S, S)`` and ``prob (batch, S, S)``, P already
averaged over the 12 pixel heads inside the graph (``ISSTADNet.forward_prob``: one GEMM with
the difference weights, sigmoid, mean), which is what ``edgesentry.kernels.isstad`` needs next
to the input. The batch axis is dynamic. Only the identity token permutation is exportable
(the official random permutation draws from an RNG on every call).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from edgesentry.bundle import Bundle
from edgesentry.export.graph import GraphSpec

OUTPUTS = ["recon", "prob"]
DYNAMIC_AXES = {"image": {0: "batch"}, "recon": {0: "batch"}, "prob": {0: "batch"}}


def example_input(size: int = 224, batch: int = 2, seed: int = 0) -> np.ndarray:
    """Image-like normalised inputs: a smooth random field plus noise, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(batch, 3, 7, 7))
    smooth = np.kron(coarse, np.ones((size // 7 + 1, size // 7 + 1)))[..., :size, :size] * 0.3
    return np.clip(smooth + rng.normal(scale=0.1, size=smooth.shape), -1, 1).astype(np.float32)


def model_spec(arch: Mapping[str, Any],
               tensors: Mapping[str, np.ndarray] | Callable[[], Mapping[str, np.ndarray]], *, batch: int = 2,
               atol: float = 1e-4, rtol: float = 1e-4) -> GraphSpec:
    """The ``model`` graph of an ISSTAD architecture and its tensors (or a function reading them
    when the graph is built, so the weights live only while the module does)."""

    def build() -> Any:
        from edgesentry.models.isstad import ISSTADGraph, build_from_tensors

        return ISSTADGraph(build_from_tensors(arch, tensors() if callable(tensors) else tensors))

    size = int(arch.get("img_size", 224))
    return GraphSpec("model", build, {"image": example_input(size, batch)}, list(OUTPUTS),
                     {k: dict(v) for k, v in DYNAMIC_AXES.items()}, atol=atol, rtol=rtol)


def graph_specs(bundle: Bundle) -> list[GraphSpec]:
    """Graphs of an ISSTAD bundle (``edgesentry export`` calls this)."""
    return [model_spec(bundle.config["model"], bundle.load_tensors)]


def serving_example(bundle: Bundle, seed: int = 0) -> np.ndarray:
    """A raw input the served ensemble takes, for the repository check: a 96 x 128 uint8 RGB
    image (not the graph's 224 x 224: the ensemble resizes like ``predict``)."""
    return np.random.default_rng(seed).integers(0, 256, (96, 128, 3), dtype=np.uint8)
