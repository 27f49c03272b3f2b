"""Torch eager runner: the reference backend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgesentry.backends.base import InputSpec, Runner


class TorchRunner(Runner):
    """Runs an ``nn.Module`` whose forward takes the inputs positionally (in spec order)."""

    name = "torch"

    def __init__(self, module: Any, inputs: Mapping[str, InputSpec], outputs: Sequence[str], device: str = "cpu"):
        super().__init__(inputs, outputs)
        self.module = module
        self.device = device

    def activate_impl(self) -> None:
        self.module.eval().to(self.device)

    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(feed[k])).to(self.device) for k in self.inputs]
            out = self.module(*args)
        if isinstance(out, torch.Tensor):
            out = (out,)
        if isinstance(out, Mapping):
            out = [out[k] for k in self.outputs]
        return {k: v.detach().cpu().numpy() for k, v in zip(self.outputs, out)}

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": str(self.device)}
