"""Graph backends: runners with a lifecycle, in the spirit of Polygraphy's runners.

Every runner has ``activate()`` / ``infer(feed)`` / ``deactivate()`` and works as a context
manager. ``infer`` checks the feed against the graph's input metadata (names, ranks, static
dims, dtypes), calls ``infer_impl`` and records ``last_inference_time``. torch, ONNX Runtime
and TensorRT are imported lazily, so a CPU-only install imports edgesentry.
"""

from __future__ import annotations

from edgesentry.backends.base import InputSpec, Runner, resolve_backend
from edgesentry.backends.onnxruntime import OrtRunner
from edgesentry.backends.tensorrt import TensorRTRunner
from edgesentry.backends.torch import TorchRunner

__all__ = ["InputSpec", "Runner", "resolve_backend", "OrtRunner", "TensorRTRunner", "TorchRunner"]
