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

from typing import Any

import numpy as np

from edgesentry.bundle import Bundle
from edgesentry.export.onnx import GraphSpec


class _Visual:  # built lazily so that importing this module does not import torch
    @staticmethod
    def make(model: Any) -> Any:
        from torch import nn

        class Visual(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, frames: Any) -> Any:
                return self.model.encode_frames(frames)

        return Visual()


class _Views:
    @staticmethod
    def make(model: Any) -> Any:
        from torch import nn

        class Views(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, features: Any, prompt: Any) -> Any:
                return self.model(features, prompt)

        return Views()


def _model(bundle: Bundle) -> Any:
    from edgesentry.detectors.mdmf import from_bundle

    return from_bundle(bundle, backend="torch").graphs.model


def graph_specs(bundle: Bundle, *, batch: int = 2, seed: int = 0) -> list[GraphSpec]:
    """The bundle's exportable graphs with seeded example inputs (batch 2, T static)."""
    model = _model(bundle)
    cfg = bundle.config
    t, d, crop = int(cfg.get("frames", 8)), int(cfg["model"]["dim"]), int(cfg.get("crop", 224))
    rng = np.random.default_rng(seed)
    specs = []
    if model.backbone is not None:
        frames = rng.uniform(0, 1, size=(batch, t, 3, crop, crop)).astype(np.float32)
        specs.append(GraphSpec("visual", lambda: _Visual.make(model), {"frames": frames}, ["features"],
                               dynamic_axes={"frames": {0: "batch"}, "features": {0: "batch"}}, atol=1e-4, rtol=1e-4))
    feats = rng.standard_normal((batch, t, d)).astype(np.float32)
    prompt = rng.standard_normal((batch, d)).astype(np.float32)
    specs.append(GraphSpec("views", lambda: _Views.make(model), {"features": feats, "prompt": prompt},
                           ["z_local", "z_global"],
                           dynamic_axes={"features": {0: "batch"}, "prompt": {0: "batch"}, "z_local": {0: "batch"},
                                         "z_global": {0: "batch"}}, atol=1e-4, rtol=1e-4))
    return specs
