"""ONNX export of FERS: the spectral and the spatial network, each with dynamic H and W.

Graph ``spectral``: ``x (1, B, H, W)`` -> ``spe_f (1, B, H, W)``.
Graph ``spatial`` (only for bundles with spatial weights): ``x (1, B, H, W)`` -> ``spa_f``.
The RX on the fused features runs as the post-processing kernel (``edgesentry.kernels.fers``).

What keeps H and W dynamic: the spatial branch is built with
``LightSPP(export_friendly=True)``, whose adaptive pooling and bilinear upsampling are matrix
products built from the runtime H and W (PyTorch's overlapping bins and ``align_corners=False``
weights; equal to the native ops up to float32 rounding). The example input is deliberately
small and non-square (24 x 20: the layer3 map is 2 x 2, so the 4 x 4 pool exercises the
overlapping bins), and ``check_dynamic`` re-runs ONNX Runtime at other sizes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgesentry.bundle import Bundle, split_graph_tensors
from edgesentry.export.graph import GraphSpec, parity_torch_vs_ort
from edgesentry.export.parity import ParityReport

EXAMPLE_HW = (24, 20)


def example_input(bands: int, hw: tuple[int, int] = EXAMPLE_HW, seed: int = 0) -> np.ndarray:
    """A normalised-cube-like input in [-0.1, 0.1] with some spatial structure."""
    rng = np.random.default_rng(seed)
    x = rng.random((1, bands, *hw)) * 0.2 - 0.1
    return x.astype(np.float32)


def _dynamic(output: str) -> dict[str, dict[int, str]]:
    return {"x": {2: "H", 3: "W"}, output: {2: "H", 3: "W"}}


#: graph -> output name
OUTPUTS = {"spectral": "spe_f", "spatial": "spa_f"}


def branch_spec(arch: Mapping[str, Any], graph: str, state_dict: Mapping[str, np.ndarray], *, atol: float = 1e-4,
                rtol: float = 1e-4) -> GraphSpec:
    """The ``spectral`` or ``spatial`` graph of a FERS architecture and its state dict."""

    def build() -> Any:
        from edgesentry.models.fers import build_from_tensors

        return build_from_tensors(arch, state_dict, graph, export_friendly=True)

    out = OUTPUTS[graph]
    return GraphSpec(graph, build, {"x": example_input(int(arch["bands"]))}, [out], _dynamic(out), atol=atol,
                     rtol=rtol)


def graph_specs(bundle: Bundle) -> list[GraphSpec]:
    """The graphs of a FERS bundle: ``spectral``, plus ``spatial`` when it has spatial weights."""
    state_dicts = split_graph_tensors(bundle.load_tensors(), tuple(OUTPUTS), "FERS")
    arch = bundle.config["arch"]
    return [branch_spec(arch, graph, sd) for graph, sd in state_dicts.items() if sd]


def check_dynamic(spec: GraphSpec, path: str, sizes: Sequence[tuple[int, int]] = ((37, 53), (100, 100)),
                  ) -> list[ParityReport]:
    """torch vs ONNX Runtime at other H x W than the export example (proves the axes are dynamic)."""
    bands = next(iter(spec.inputs.values())).shape[1]
    return [parity_torch_vs_ort(spec, path, inputs={"x": example_input(bands, hw, seed=i + 1)})
            for i, hw in enumerate(sizes)]


def serving_example(bundle: Bundle, seed: int = 0) -> np.ndarray:
    """A raw input the served ensemble takes, for the repository check: a 16 x 14 cube with two
    bands more than the weights use (the detector takes the first ones)."""
    bands = int(bundle.config["arch"]["bands"]) + 2
    return np.random.default_rng(seed).random((16, 14, bands)) * 1000.0
