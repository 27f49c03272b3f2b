"""Graph backends: runners with a lifecycle, in the spirit of Polygraphy's runners.

Every runner has ``activate()`` / ``infer(feed)`` / ``deactivate()`` and works as a context
manager. ``infer`` checks the feed against the graph's input metadata (names, ranks, static
dims, dtypes), calls ``infer_impl`` and records ``last_inference_time``. torch, ONNX Runtime
and TensorRT are imported lazily, so a CPU-only install imports edgesentry.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from edgesentry.backends.base import InputSpec, Runner, _importable, resolve_backend
from edgesentry.backends.measured import MeasuredRunner
from edgesentry.backends.onnxruntime import OrtOptions, OrtRunner, Provider
from edgesentry.backends.openvino import OpenVINORunner
from edgesentry.backends.tensorrt import TensorRTRunner
from edgesentry.backends.torch import TorchRunner
from edgesentry.errors import BackendUnavailableError, ConfigError, option

__all__ = ["InputSpec", "Runner", "resolve_backend", "make_runner", "runner_options", "available_backends",
           "DETECTOR_BACKENDS", "MeasuredRunner", "OrtOptions", "OrtRunner", "OpenVINORunner", "TensorRTRunner",
           "TorchRunner"]

#: backend -> the package it needs; the backends detectors run their graphs on (one branch each
#: in ``make_runner``). A new backend is one entry here and one branch there.
DETECTOR_BACKENDS: dict[str, str] = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}

#: options for the runners ``make_runner`` builds in this context (``runner_options``)
_RUNNER_OPTIONS: ContextVar[dict[str, Any] | None] = ContextVar("edgesentry_runner_options", default=None)


def available_backends() -> list[str]:
    """The detector backends this install can run (their package is importable)."""
    return [name for name, package in DETECTOR_BACKENDS.items() if _importable(package)]


@contextmanager
def runner_options(**options: Any) -> Iterator[None]:
    """Options for every runner built by ``make_runner`` inside the block, read once when the
    runner is built: ``openvino_precision`` (``"f32"``/``"bf16"``/``"f16"``), ``openvino_hint``
    (``"latency"``/``"throughput"``), ``openvino_device`` (``"CPU"``). ``edgesentry.load`` sets
    them from ``precision=`` and ``performance=`` so the families need not pass them along."""
    token = _RUNNER_OPTIONS.set({**(_RUNNER_OPTIONS.get() or {}), **options})
    try:
        yield
    finally:
        _RUNNER_OPTIONS.reset(token)


def make_runner(backend: str, inputs: Mapping[str, InputSpec], outputs: Sequence[str], *,
                module: Callable[[], Any] | None = None, onnx: str | os.PathLike | None = None,
                providers: Sequence[Provider] = ("CPUExecutionProvider",), device: str = "cpu",
                what: str = "this graph", ort_options: OrtOptions | None = None,
                graph_id: str | None = None) -> Runner:
    """The runner of one graph on ``backend`` (as chosen by ``resolve_backend``); every family
    builds its runners here, so a new backend is one more branch.

    Args:
        backend: ``"torch"``, ``"onnxruntime"``, ``"openvino"``, or ``"auto"`` (as
            ``resolve_backend(..., measured=True)`` returns it): ONNX Runtime and torch, the
            faster per input shape (``MeasuredRunner``).
        inputs, outputs: the graph's input specs and output names.
        module: builds the graph's ``nn.Module`` (called for the torch backend only, so torch
            stays unimported on the others).
        onnx: the graph's ONNX file (onnxruntime, openvino).
        providers: ONNX Runtime execution providers, in priority order.
        device: torch device.
        what: names the graph in error messages (e.g. ``"MAVD features"``).
        ort_options: the graph's ONNX Runtime session options (threads, optimisation level,
            spinning).
        graph_id: identifies the graph across processes (e.g. its ONNX file's sha256), so that
            a measured choice is remembered per CPU model.

    Raises:
        BackendUnavailableError: the graph has no form for that backend (e.g. not exported).
        ConfigError: a backend without a runner for detectors in this build.
    """
    if backend == "auto":
        candidates = {name: make_runner(name, inputs, outputs, module=module, onnx=onnx, providers=providers,
                                        device=device, what=what, ort_options=ort_options)
                      for name in ("onnxruntime", "torch")}
        return MeasuredRunner(candidates, graph_id=graph_id or _graph_identity(onnx, ort_options))
    if backend == "torch":
        if module is None:
            raise BackendUnavailableError(f"backend 'torch' needs the weights of {what}; the bundle has none")
        return TorchRunner(module(), inputs, outputs, device=device)
    if backend == "onnxruntime":
        if onnx is None:
            raise BackendUnavailableError(
                f"backend 'onnxruntime' needs {what} in ONNX; run `edgesentry export BUNDLE` first")
        return OrtRunner(onnx, inputs, outputs, providers=providers, options=ort_options)
    if backend == "openvino":
        if onnx is None:
            raise BackendUnavailableError(
                f"backend 'openvino' needs {what} in ONNX; run `edgesentry export BUNDLE` first")
        opts = _RUNNER_OPTIONS.get() or {}
        return OpenVINORunner(onnx, inputs, outputs, device=opts.get("openvino_device", "CPU"),
                              precision=opts.get("openvino_precision", "f32"),
                              hint=opts.get("openvino_hint", "latency"))
    raise ConfigError(f"{what} has no {backend!r} runner in this build; use "
                      f"{option('backend', 'onnxruntime')}, {option('backend', 'openvino')}, "
                      f"{option('backend', 'torch')} or {option('backend', 'auto')}")


def _graph_identity(onnx: str | os.PathLike | None, options: OrtOptions | None) -> str | None:
    """A key for remembering measured choices: the ONNX file (path, size, mtime), its session
    options and both runtimes' versions (a new export or a new release measures again)."""
    if onnx is None:
        return None
    import hashlib
    import importlib.metadata as md

    try:
        stat = os.stat(onnx)
    except OSError:
        return None
    versions = []
    for dist in ("onnxruntime", "onnxruntime-gpu", "torch"):
        try:
            versions.append(f"{dist}={md.version(dist)}")
        except md.PackageNotFoundError:
            pass
    ident = [os.path.abspath(onnx), stat.st_size, stat.st_mtime_ns, repr(options), *versions]
    return hashlib.sha256(repr(ident).encode()).hexdigest()[:24]
