"""TensorRT runner: executes a serialized plan with cuda-python buffers and a CUDA stream.

No torch: device memory comes from ``cudaMalloc``, copies are ``cudaMemcpyAsync`` on one
stream, and the plan runs with ``IExecutionContext.execute_async_v3`` (TensorRT 10/11
name-based I/O: ``set_input_shape``, ``set_tensor_address``). TensorRT and cuda-python are
imported in ``activate`` only, after a device check, because the TensorRT runtime crashes the
process on a machine without a driver.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry.backends.base import InputSpec, Runner
from edgesentry.errors import BackendUnavailableError, InputError


def _check(err: Any, what: str) -> None:
    if int(err) != 0:
        raise BackendUnavailableError(f"CUDA call {what} failed: {err!r}")


def _np_dtype(trt: Any, dtype: Any) -> np.dtype:
    table = {
        trt.float32: np.float32,
        trt.float16: np.float16,
        trt.int32: np.int32,
        trt.int8: np.int8,
        trt.bool: np.bool_,
        getattr(trt, "int64", None): np.int64,
        getattr(trt, "uint8", None): np.uint8,
    }
    if dtype not in table:
        raise BackendUnavailableError(f"TensorRT tensor dtype {dtype} has no numpy equivalent in this runner")
    return np.dtype(table[dtype])


def cuda_device_capability(device: int = 0) -> tuple[int, int]:
    """Compute capability of ``device`` via cuda-python's runtime (no torch).

    Raises:
        BackendUnavailableError: cuda-python missing, no driver, or no device.
    """
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        raise BackendUnavailableError("TensorRT needs cuda-python (pip install edgesentry[gpu])") from None
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception as exc:  # cuda-pathfinder raises when the driver library is absent
        raise BackendUnavailableError(f"no CUDA driver on this machine ({exc}); TensorRT needs an NVIDIA GPU") from None
    if int(err) != 0 or not count:
        raise BackendUnavailableError(
            f"no CUDA device available (cudaGetDeviceCount -> {err!r}); TensorRT needs an NVIDIA GPU"
        )
    err, major = cudart.cudaDeviceGetAttribute(cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor, device)
    err2, minor = cudart.cudaDeviceGetAttribute(cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMinor, device)
    if int(err) != 0 or int(err2) != 0:
        raise BackendUnavailableError(f"cannot read the compute capability of CUDA device {device}: {err!r}")
    return int(major), int(minor)


def import_tensorrt(*, lean_ok: bool = False) -> Any:
    """Import TensorRT after checking that a CUDA device exists.

    ``lean_ok`` accepts the lean runtime (``tensorrt_lean``: deserialize/execute only). Calling
    TensorRT without a driver can crash the process, so the device check comes first.

    Raises:
        BackendUnavailableError: no GPU, or TensorRT (or its builder) is not installed.
    """
    import importlib.util

    try:
        cuda_device_capability()
    except BackendUnavailableError as exc:
        # Say everything that is missing at once (do not import TensorRT: no driver -> crash).
        have = [m for m in ("tensorrt", "tensorrt_lean") if importlib.util.find_spec(m) is not None]
        trt_state = (
            f"TensorRT: {', '.join(have)} installed"
            if have
            else "TensorRT: not installed (JetPack ships it; on x86 `pip install tensorrt`)"
        )
        raise BackendUnavailableError(
            f"TensorRT engines need an NVIDIA GPU and TensorRT. GPU: {exc}. {trt_state}"
        ) from None
    try:
        import tensorrt as trt

        return trt
    except ImportError as exc:
        full_error = exc
    if lean_ok:
        try:
            import tensorrt_lean as trt_lean

            return trt_lean
        except ImportError:
            pass
    raise BackendUnavailableError(
        f"TensorRT is not importable ({full_error}); on Jetson use JetPack's python3-libnvinfer, on x86 "
        "`pip install tensorrt` (needs pypi.nvidia.com for the libraries)"
    )


class TensorRTRunner(Runner):
    """Runs a TensorRT plan. ``plan``: path or bytes of a serialized engine."""

    name = "tensorrt"

    def __init__(
        self, plan: str | Path | bytes, inputs: Mapping[str, InputSpec], outputs: Sequence[str], device: int = 0
    ):
        super().__init__(inputs, outputs)
        self.plan = plan
        self.device = device
        self._trt: Any = None
        self._cudart: Any = None
        self.engine: Any = None
        self.context: Any = None
        self.stream: Any = None
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def activate_impl(self) -> None:
        trt = import_tensorrt(lean_ok=True)  # raises BackendUnavailableError without a GPU
        from cuda.bindings import runtime as cudart

        self._trt, self._cudart = trt, cudart
        _check(cudart.cudaSetDevice(self.device)[0], "cudaSetDevice")
        blob = self.plan if isinstance(self.plan, bytes) else Path(self.plan).read_bytes()
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        # Version-compatible plans embed a lean runtime that must be allowed to run.
        if hasattr(runtime, "engine_host_code_allowed"):
            runtime.engine_host_code_allowed = True
        self.engine = runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            raise BackendUnavailableError(
                "TensorRT could not deserialize the plan (built by another TensorRT version or for another GPU?); "
                "rebuild it with `edgesentry build BUNDLE`"
            )
        self.context = self.engine.create_execution_context()
        err, self.stream = cudart.cudaStreamCreate()
        _check(err, "cudaStreamCreate")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        missing = [n for n in (*self.inputs, *self.outputs) if n not in names]
        if missing:
            raise BackendUnavailableError(f"TensorRT plan lacks tensors {missing}; it has {names}")

    def _device_buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self._cudart.cudaFree(ptr)[0], "cudaFree")
            err, ptr = self._cudart.cudaMalloc(max(nbytes, 1))
            _check(err, "cudaMalloc")
            self._buffers[name] = (int(ptr), nbytes)
        return int(self._buffers[name][0])

    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart, trt = self._cudart, self._trt
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        hosts = []
        for name in self.inputs:
            arr = np.ascontiguousarray(feed[name], dtype=_np_dtype(trt, self.engine.get_tensor_dtype(name)))
            if not self.context.set_input_shape(name, tuple(arr.shape)):
                raise InputError(
                    f"input {name!r} shape {arr.shape} is outside the engine's optimisation profile; "
                    "rebuild with a wider --shape-hint"
                )
            ptr = self._device_buffer(name, arr.nbytes)
            _check(cudart.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, h2d, self.stream)[0], "cudaMemcpyAsync")
            self.context.set_tensor_address(name, ptr)
            hosts.append(arr)  # keep host memory alive until the stream syncs
        outs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            out = np.empty(shape, dtype=_np_dtype(trt, self.engine.get_tensor_dtype(name)))
            self.context.set_tensor_address(name, self._device_buffer(name, out.nbytes))
            outs[name] = out
        if not self.context.execute_async_v3(int(self.stream)):
            raise BackendUnavailableError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        for name, out in outs.items():
            ptr = self._buffers[name][0]
            _check(cudart.cudaMemcpyAsync(out.ctypes.data, ptr, out.nbytes, d2h, self.stream)[0], "cudaMemcpyAsync")
        _check(cudart.cudaStreamSynchronize(self.stream)[0], "cudaStreamSynchronize")
        del hosts
        return outs

    def deactivate_impl(self) -> None:
        if self._cudart is not None:
            for ptr, _ in self._buffers.values():
                self._cudart.cudaFree(ptr)
            if self.stream is not None:
                self._cudart.cudaStreamDestroy(self.stream)
        self._buffers.clear()
        self.context = self.engine = self.stream = None

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "device": self.device,
            "tensorrt": None if self._trt is None else str(self._trt.__version__),
        }
