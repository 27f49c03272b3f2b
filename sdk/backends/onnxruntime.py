"""ONNX Runtime runner: providers in priority order, verified after session creation."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from edgesentry.errors import BackendUnavailableError

from .base import InputSpec, Runner

log = logging.getLogger("edgesentry.backends")

Provider = Union[str, tuple[str, dict[str, Any]]]


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        return os.cpu_count() or 1


def session_from_onnx(model: str | Path | bytes, providers: Sequence[Provider] = ("CPUExecutionProvider",),
                      threads: int | None = None) -> Any:
    """Create an ``InferenceSession`` and fail unless the first requested provider is active.

    ONNX Runtime silently falls back to the CPU when a provider cannot load; here that is an
    error listing the requested and the available providers.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailableError("onnxruntime is not installed (pip install edgesentry[ort])") from None
    available = ort.get_available_providers()
    names = [p if isinstance(p, str) else p[0] for p in providers]
    missing = [n for n in names if n not in available]
    if missing:
        raise BackendUnavailableError(
            f"ONNX Runtime providers {missing} are not available; requested {names}, available {available}"
            + (" (the CPU onnxruntime wheel may be shadowing onnxruntime-gpu)" if "CUDAExecutionProvider" in missing else "")
        )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or _cpu_count()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    source = str(model) if isinstance(model, (str, Path)) else model
    try:
        session = ort.InferenceSession(source, sess_options=opts, providers=list(providers))
    except Exception as exc:  # ORT raises its own exception types for invalid models
        raise BackendUnavailableError(f"ONNX Runtime could not load the model: {exc}") from None
    active = session.get_providers()
    if names and names[0] not in active:
        raise BackendUnavailableError(f"requested provider {names[0]} is not active; session runs on {active}")
    return session


class OrtRunner(Runner):
    name = "onnxruntime"

    def __init__(self, model: str | Path | bytes, inputs: Mapping[str, InputSpec], outputs: Sequence[str],
                 providers: Sequence[Provider] = ("CPUExecutionProvider",), threads: int | None = None):
        super().__init__(inputs, outputs)
        self.model = model
        self.providers = list(providers)
        self.threads = threads
        self.session: Any = None

    def activate_impl(self) -> None:
        self.session = session_from_onnx(self.model, self.providers, self.threads)

    def deactivate_impl(self) -> None:
        self.session = None

    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.outputs, {k: np.ascontiguousarray(v) for k, v in feed.items()})
        return dict(zip(self.outputs, outs))

    def describe(self) -> dict[str, Any]:
        active = self.session.get_providers() if self.session is not None else self.providers
        return {"backend": self.name, "providers": [p if isinstance(p, str) else p[0] for p in active]}
