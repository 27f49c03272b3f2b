"""CLIP-MDMF export: the visual tower and the two prompted views as ONNX graphs.

Two graphs, because the prompt selector sits between them (it needs the query's frame
features to pick the prompt the views are conditioned on):

- ``visual``: ``frames`` [B, T, 3, S, S] float32 in [0, 1] -> ``features`` [B, T, D]
  (absent from features-in bundles);
- ``views``:  ``features`` [B, T, D] + ``prompt`` [B, D] -> ``z_local``, ``z_global`` [B, T, D].

T = 8 is static (the global view broadcasts the TCN's last step over T), the batch B is
dynamic. The legacy weight norm is constant-folded. The soft-OTAM fusion stays outside the
graph (``edgesentry.kernels.otam``): it is a few kilobytes of work with a sequential DP that
ONNX would unroll into hundreds of nodes.
"""

from __future__ import annotations

import numpy as np

from edgesentry.bundle import Bundle
from edgesentry.export.graph import GraphSpec


def graph_specs(bundle: Bundle, *, batch: int = 2, seed: int = 0) -> list[GraphSpec]:
    """The bundle's exportable graphs with seeded example inputs (batch 2, T static)."""
    from edgesentry.models.mdmf import MDMFViews, MDMFVisual, build_from_tensors, config_from_dict

    cfg = bundle.config
    model = build_from_tensors(config_from_dict(cfg["model"]), bundle.load_tensors())
    t, d, crop = int(cfg.get("frames", 8)), int(cfg["model"]["dim"]), int(cfg.get("crop", 224))
    rng = np.random.default_rng(seed)
    specs = []
    if model.backbone is not None:
        frames = rng.uniform(0, 1, size=(batch, t, 3, crop, crop)).astype(np.float32)
        specs.append(GraphSpec("visual", lambda: MDMFVisual(model), {"frames": frames}, ["features"],
                               dynamic_axes={"frames": {0: "batch"}, "features": {0: "batch"}}, atol=1e-4, rtol=1e-4))
    feats = rng.standard_normal((batch, t, d)).astype(np.float32)
    prompt = rng.standard_normal((batch, d)).astype(np.float32)
    specs.append(GraphSpec("views", lambda: MDMFViews(model), {"features": feats, "prompt": prompt},
                           ["z_local", "z_global"],
                           dynamic_axes={"features": {0: "batch"}, "prompt": {0: "batch"}, "z_local": {0: "batch"},
                                         "z_global": {0: "batch"}}, atol=1e-4, rtol=1e-4))
    return specs


def serving_example(bundle: Bundle, seed: int = 0) -> np.ndarray:
    """A raw input the served ensemble takes, for the repository check: one query's frame
    features [T, D]."""
    cfg = bundle.config
    t, d = int(cfg.get("frames", 8)), int(cfg["model"]["dim"])
    return np.random.default_rng(seed).standard_normal((t, d)).astype(np.float32)
