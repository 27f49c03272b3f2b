"""Runner base class and backend resolution."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesentry.errors import BackendUnavailableError, ConfigError, InputError

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")


@dataclass(frozen=True)
class InputSpec:
    """One graph input: dtype and shape, ``None`` (or a name) for a dynamic dimension."""

    dtype: str
    shape: tuple[int | str | None, ...]

    def check(self, name: str, value: np.ndarray) -> None:
        if value.ndim != len(self.shape):
            raise InputError(
                f"graph input {name!r} expects rank {len(self.shape)} {self.shape}; got shape {value.shape}"
            )
        for axis, (want, got) in enumerate(zip(self.shape, value.shape)):
            if isinstance(want, int) and want != got:
                raise InputError(f"graph input {name!r} expects {self.shape} (axis {axis} = {want}); got {value.shape}")
        if np.dtype(self.dtype) != value.dtype:
            raise InputError(f"graph input {name!r} expects dtype {self.dtype}; got {value.dtype}")

    def to_dict(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSpec:
        return cls(str(data["dtype"]), tuple(data["shape"]))


class Runner:
    """Base runner. Subclasses implement ``activate_impl``, ``infer_impl``, ``deactivate_impl``."""

    name = "runner"

    def __init__(self, inputs: Mapping[str, InputSpec], outputs: Sequence[str]):
        self.inputs = dict(inputs)
        self.outputs = list(outputs)
        self.is_active = False
        self.last_inference_time: float | None = None

    # lifecycle -------------------------------------------------------------------------
    def activate(self) -> Runner:
        if not self.is_active:
            self.activate_impl()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self.deactivate_impl()
            self.is_active = False

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc: Any) -> None:
        self.deactivate()

    # inference -------------------------------------------------------------------------
    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph on ``feed`` (name -> array) and return name -> array outputs."""
        if not self.is_active:
            self.activate()
        missing = set(self.inputs) - set(feed)
        extra = set(feed) - set(self.inputs)
        if missing or extra:
            raise InputError(
                f"{self.name}: required inputs {sorted(self.inputs)}; feed has {sorted(feed)} "
                f"(missing {sorted(missing)}, unexpected {sorted(extra)})"
            )
        for key, spec in self.inputs.items():
            spec.check(key, feed[key])
        start = time.perf_counter()
        out = self.infer_impl(feed)
        self.last_inference_time = time.perf_counter() - start
        return out

    def activate_impl(self) -> None:  # pragma: no cover - trivial default
        pass

    def deactivate_impl(self) -> None:  # pragma: no cover - trivial default
        pass

    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name}


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def resolve_backend(requested: str, *, has_onnx: bool, has_weights: bool, measured: bool = False) -> str:
    """Choose the backend: an explicit one must be usable; ``auto`` prefers ONNX Runtime, then
    OpenVINO, then torch.

    With ``measured``, ``auto`` resolves to ``"auto"`` when both ONNX Runtime and torch can
    run the bundle: the runners then time both per input shape and keep the faster
    (``backends.measured.MeasuredRunner``).

    Raises:
        ConfigError: unknown backend name.
        BackendUnavailableError: the requested backend (or, for auto, every one) cannot run.
    """
    if requested not in ("auto", *BACKENDS):
        raise ConfigError(f"unknown backend {requested!r}; expected 'auto' or one of {list(BACKENDS)}")
    if requested == "auto":
        if (measured and has_onnx and has_weights and _importable("onnxruntime") and _importable("torch")):
            return "auto"
        if has_onnx and _importable("onnxruntime"):
            return "onnxruntime"
        if has_onnx and _importable("openvino"):
            return "openvino"
        if has_weights and _importable("torch"):
            return "torch"
        raise BackendUnavailableError(
            "no backend can run this bundle here: "
            f"onnxruntime {'installed' if _importable('onnxruntime') else 'missing'} (bundle has ONNX: {has_onnx}); "
            f"torch {'installed' if _importable('torch') else 'missing'} (bundle has weights: {has_weights}). "
            "Install edgesentry[ort] and run `edgesentry export BUNDLE`, or install edgesentry[torch]"
        )
    if requested == "torch":
        if not has_weights:
            raise BackendUnavailableError("backend 'torch' needs weights.safetensors in the bundle; it has none")
        if not _importable("torch"):
            raise BackendUnavailableError("backend 'torch' requested but torch is not installed (edgesentry[torch])")
    if requested == "onnxruntime":
        if not has_onnx:
            raise BackendUnavailableError(
                "backend 'onnxruntime' needs model.onnx; run `edgesentry export BUNDLE` first"
            )
        if not _importable("onnxruntime"):
            raise BackendUnavailableError(
                "backend 'onnxruntime' requested but onnxruntime is not installed (edgesentry[ort])"
            )
    if requested == "openvino":
        if not has_onnx:
            raise BackendUnavailableError("backend 'openvino' needs model.onnx; run `edgesentry export BUNDLE` first")
        if not _importable("openvino"):
            raise BackendUnavailableError(
                "backend 'openvino' requested but openvino is not installed (edgesentry[openvino])")
    if requested == "tensorrt" and not (_importable("tensorrt") or _importable("tensorrt_lean")):
        raise BackendUnavailableError(
            "backend 'tensorrt' requested but TensorRT is not installed "
            "(JetPack ships it; on x86 `pip install tensorrt`)"
        )
    return requested
