"""OpenVINO runner: the bundle's ONNX graphs on Intel's (and any x86 / ARM) CPU runtime.

``OpenVINORunner`` reads an ONNX file with ``openvino.Core.read_model`` (FP32, or the QDQ INT8
graph of ``edgesentry quantize``, which OpenVINO runs with its own INT8 kernels) and compiles
it for a device (``CPU``; ``GPU`` / ``NPU`` where the plugins and drivers are present) with:

- an inference precision hint, ``f32`` / ``bf16`` / ``f16``: OpenVINO runs FP32 graphs in the
  reduced precision where the CPU has it (BF16: AVX512_BF16 or AMX; FP16: AVX512_FP16 or ARM).
  Where it does not, OpenVINO silently keeps f32; here that is an error
  (``BackendUnavailableError``) naming the CPU's capabilities, so a "bf16" number is never an
  f32 one in disguise;
- a performance hint, ``latency`` (one request, all cores) or ``throughput`` (several streams);
- a thread count (default: the CPU affinity, as the ONNX Runtime runner).

No torch anywhere; ``openvino`` is imported when the runner is activated.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgesentry.backends.base import InputSpec, Runner
from edgesentry.errors import BackendUnavailableError, ConfigError

log = logging.getLogger("edgesentry.backends")

InferencePrecision = Literal["f32", "bf16", "f16"]
PerformanceHint = Literal["latency", "throughput"]
INFERENCE_PRECISIONS = ("f32", "bf16", "f16")
PERFORMANCE_HINTS = ("latency", "throughput")
#: the CPU plugin's OPTIMIZATION_CAPABILITIES entry that says a precision runs natively
_CAPABILITY = {"f32": "FP32", "bf16": "BF16", "f16": "FP16"}


def import_openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise BackendUnavailableError("backend 'openvino' needs the openvino wheel (pip install edgesentry[openvino])"
                                      ) from None
    return openvino


def device_capabilities(device: str = "CPU", core: Any = None) -> list[str]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of ``device`` (e.g. ``['FP32', 'INT8', 'BF16']``)."""
    core = core if core is not None else import_openvino().Core()
    try:
        return [str(c) for c in core.get_property(device, "OPTIMIZATION_CAPABILITIES")]
    except RuntimeError as exc:
        raise BackendUnavailableError(f"OpenVINO device {device!r} is not available here "
                                      f"(devices: {core.available_devices}): {str(exc).splitlines()[0]}") from None


def native_precisions(device: str = "CPU") -> list[str]:
    """The inference precisions ``device`` runs natively (``f32`` always; ``bf16`` / ``f16`` where the
    hardware has them). ``[]`` when OpenVINO is not installed."""
    try:
        caps = device_capabilities(device)
    except BackendUnavailableError:
        return []
    return [p for p, cap in _CAPABILITY.items() if cap in caps or p == "f32"]


class OpenVINORunner(Runner):
    """Runs one ONNX graph with OpenVINO; see the module docstring for the options.

    Args:
        model: the ONNX file (a path; OpenVINO reads the file itself).
        inputs, outputs: the graph's input specs and output names.
        device: OpenVINO device name (``"CPU"``, ``"GPU"``, ``"NPU"``, ``"AUTO"``).
        precision: inference precision hint (``"f32"``, ``"bf16"``, ``"f16"``).
        hint: performance hint (``"latency"`` or ``"throughput"``).
        threads: inference threads (default: the CPU affinity).
    """

    name = "openvino"

    def __init__(self, model: str | Path, inputs: Mapping[str, InputSpec], outputs: Sequence[str], *,
                 device: str = "CPU", precision: InferencePrecision = "f32", hint: PerformanceHint = "latency",
                 threads: int | None = None):
        super().__init__(inputs, outputs)
        if precision not in INFERENCE_PRECISIONS:
            raise ConfigError(f"OpenVINO precision must be one of {list(INFERENCE_PRECISIONS)}; got {precision!r}")
        if hint not in PERFORMANCE_HINTS:
            raise ConfigError(f"OpenVINO performance hint must be one of {list(PERFORMANCE_HINTS)}; got {hint!r}")
        if isinstance(model, (bytes, bytearray)):
            raise ConfigError("the OpenVINO runner reads an ONNX file; pass its path")
        self.model = Path(model)
        self.device = device
        self.precision = precision
        self.hint = hint
        self.threads = threads
        self.compiled: Any = None
        self._local = threading.local()  # one infer request per thread (requests are not thread-safe)

    def activate_impl(self) -> None:
        from edgesentry.backends.onnxruntime import _cpu_count

        ov = import_openvino()
        core = ov.Core()
        if self.device.split(".")[0] not in {d.split(".")[0] for d in core.available_devices} | {"AUTO"}:
            raise BackendUnavailableError(f"OpenVINO device {self.device!r} is not available here; "
                                          f"devices: {core.available_devices}")
        if self.precision != "f32" and self.device.startswith("CPU"):
            caps = device_capabilities(self.device, core)
            if _CAPABILITY[self.precision] not in caps:
                raise BackendUnavailableError(
                    f"this CPU ({_cpu_name(core)}) has no native {self.precision} (OpenVINO capabilities: {caps}; "
                    f"{self.precision} needs {'AVX512_BF16 or AMX' if self.precision == 'bf16' else 'AVX512_FP16'}); "
                    "OpenVINO would silently run f32. Use precision 'fp32' or 'int8' here")
        config = {
            "INFERENCE_PRECISION_HINT": self.precision,
            "PERFORMANCE_HINT": self.hint.upper(),
        }
        if self.device.startswith("CPU"):
            config["INFERENCE_NUM_THREADS"] = int(self.threads or _cpu_count())
        try:
            model = core.read_model(str(self.model))
            self.compiled = core.compile_model(model, self.device, config)
        except RuntimeError as exc:
            raise BackendUnavailableError(f"OpenVINO could not load {self.model.name}: "
                                          f"{str(exc).strip().splitlines()[0][:300]}") from None
        got = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        got = got.to_string() if hasattr(got, "to_string") else str(got)
        if self.device.startswith("CPU") and got != self.precision:
            raise BackendUnavailableError(f"OpenVINO compiled {self.model.name} for {got}, not the requested "
                                          f"{self.precision}")
        names = {n for port in self.compiled.outputs for n in port.get_names()}
        missing = [o for o in self.outputs if o not in names]
        if missing:
            raise ConfigError(f"{self.model.name} has no outputs {missing}; it has {sorted(names)}")

    def deactivate_impl(self) -> None:
        self.compiled = None
        self._local = threading.local()

    def _request(self) -> Any:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request

    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = self._request()
        # share_inputs=False: OpenVINO copies the inputs, so callers may reuse their arrays at once;
        # outputs are copied out of the request's buffers, which the next call overwrites.
        result = request.infer({k: np.ascontiguousarray(v) for k, v in feed.items()}, share_inputs=False)
        by_name = {n: v for port, v in result.items() for n in port.get_names()}
        return {k: np.array(by_name[k], copy=True) for k in self.outputs}

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.device, "precision": self.precision, "hint": self.hint}


def _cpu_name(core: Any) -> str:
    try:
        return str(core.get_property("CPU", "FULL_DEVICE_NAME"))
    except RuntimeError:
        return "CPU"
