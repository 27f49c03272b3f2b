"""Shared helpers of the CUDA tier: NVRTC compilation and driver-API launches.

Kernels are CUDA C strings beside their Python launchers, compiled at run time with
NVRTC through cuda-python (``cuda.core.Program``) and launched through the driver API
(``cuda.bindings.driver``), so the tier needs neither torch nor nvcc: it is the GPU path
on Jetson and in torch-free runtimes. Compiling needs no GPU, so tests compile every
kernel for every target architecture (``TARGET_ARCHS``) on CPU-only machines.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesentry.errors import KernelUnavailableError

#: Jetson Orin (sm_87) and Hopper (sm_90).
TARGET_ARCHS = ("sm_87", "sm_90")


def nvrtc_unavailable_reason() -> str | None:
    try:
        _program_classes()
    except ImportError as exc:
        return f"cuda-python is not installed ({exc}); `pip install edgesentry[nvrtc]`"
    return None


def unavailable_reason() -> str | None:
    reason = nvrtc_unavailable_reason()
    if reason:
        return reason
    try:
        from cuda.bindings import driver

        (err,) = driver.cuInit(0)
        if err != driver.CUresult.CUDA_SUCCESS:
            return f"cuInit failed: {err.name}"
        err, count = driver.cuDeviceGetCount()
        if err != driver.CUresult.CUDA_SUCCESS or count == 0:
            return "no CUDA device"
    except Exception as exc:  # the driver library itself may be absent (CPU-only machine)
        return f"no NVIDIA driver ({type(exc).__name__}: {str(exc)[:120]})"
    return None


def _program_classes() -> tuple[Any, Any]:
    try:
        from cuda.core import Program, ProgramOptions
    except ImportError:  # cuda-core < 0.4 kept them under experimental
        from cuda.core.experimental import Program, ProgramOptions
    return Program, ProgramOptions


@functools.lru_cache(maxsize=256)
def _compile_cached(source: str, arch: str, options: tuple[str, ...]) -> bytes:
    Program, ProgramOptions = _program_classes()
    opts = ProgramOptions(arch=arch, std="c++17", use_fast_math=False, **dict(o.split("=", 1) for o in options))
    try:
        obj = Program(source, "c++", opts).compile("cubin")
    except Exception as exc:
        raise KernelUnavailableError(f"NVRTC failed to compile for {arch}: {exc}") from exc
    return bytes(obj.code)


def compile_cubin(source: str, *, arch: str, options: tuple[str, ...] = ()) -> bytes:
    """Compile CUDA C to a cubin for ``arch`` (e.g. ``"sm_87"``); cached per source and arch.

    Raises:
        KernelUnavailableError: cuda-python/NVRTC missing, or the source does not compile
            (the NVRTC log is in the message).
    """
    reason = nvrtc_unavailable_reason()
    if reason:
        raise KernelUnavailableError(reason)
    if not arch.startswith(("sm_", "compute_")):
        raise KernelUnavailableError(f"arch must look like 'sm_87'; got {arch!r}")
    return _compile_cached(source, arch, tuple(options))


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------- device runtime
def _check(result: Any) -> Any:
    from cuda.bindings import driver

    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != driver.CUresult.CUDA_SUCCESS:
        _, name = driver.cuGetErrorName(err)
        raise KernelUnavailableError(f"CUDA driver call failed: {name.decode() if name else err}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else tuple(rest)


@dataclass
class _Context:
    device: Any
    context: Any
    arch: str


@functools.lru_cache(maxsize=1)
def context() -> _Context:
    """The primary context of device 0, made current (created once per process)."""
    reason = unavailable_reason()
    if reason:
        raise KernelUnavailableError(f"cuda tier cannot run here: {reason}")
    from cuda.bindings import driver

    dev = _check(driver.cuDeviceGet(0))
    attr = driver.CUdevice_attribute
    major = _check(driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev))
    minor = _check(driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev))
    ctx = _check(driver.cuDevicePrimaryCtxRetain(dev))
    _check(driver.cuCtxSetCurrent(ctx))
    return _Context(dev, ctx, f"sm_{major}{minor}")


def ensure_current() -> _Context:
    from cuda.bindings import driver

    ctx = context()
    _check(driver.cuCtxSetCurrent(ctx.context))
    return ctx


@functools.lru_cache(maxsize=256)
def get_function(source: str, name: str) -> Any:
    """Compile ``source`` for this device and return the ``extern "C"`` kernel ``name``."""
    from cuda.bindings import driver

    ctx = ensure_current()
    cubin = compile_cubin(source, arch=ctx.arch)
    try:
        module = _check(driver.cuModuleLoadData(cubin))
    except KernelUnavailableError as exc:
        # The usual cause: an NVRTC newer (major version) than the driver can load.
        raise KernelUnavailableError(f"{exc} while loading the {ctx.arch} cubin of {name!r}; {versions()}") from exc
    return _check(driver.cuModuleGetFunction(module, name.encode()))


def versions() -> str:
    """'driver CUDA 12.8, NVRTC 13.5' (for error messages; never raises)."""
    parts = []
    try:
        from cuda.bindings import driver

        err, v = driver.cuDriverGetVersion()
        parts.append(f"driver CUDA {v // 1000}.{v % 1000 // 10}" if err == driver.CUresult.CUDA_SUCCESS else "driver ?")
    except Exception:  # no driver library: say so rather than fail while reporting
        parts.append("no driver")
    try:
        from cuda.bindings import nvrtc

        _, major, minor = nvrtc.nvrtcVersion()
        parts.append(f"NVRTC {major}.{minor}")
    except Exception:  # NVRTC missing
        parts.append("no NVRTC")
    return ", ".join(parts) + " (a cubin needs a driver at least as new as the NVRTC major version)"


class DeviceArray:
    """A minimal device buffer (driver API) holding one numpy-shaped array."""

    def __init__(self, shape: tuple[int, ...], dtype: Any):
        from cuda.bindings import driver

        ensure_current()
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = max(1, int(np.prod(self.shape)) * self.dtype.itemsize)
        self.ptr = _check(driver.cuMemAlloc(self.nbytes))

    @classmethod
    def from_host(cls, array: np.ndarray) -> DeviceArray:
        from cuda.bindings import driver

        host = np.ascontiguousarray(array)
        dev = cls(host.shape, host.dtype)
        if host.nbytes:
            _check(driver.cuMemcpyHtoD(dev.ptr, host.ctypes.data, host.nbytes))
        return dev

    def fill_nan(self) -> DeviceArray:
        """Poison the buffer (NaN bytes) so that unwritten outputs cannot pass by luck."""
        from cuda.bindings import driver

        _check(driver.cuMemsetD8(self.ptr, 0xFF, self.nbytes))
        return self

    def to_host(self) -> np.ndarray:
        from cuda.bindings import driver

        out = np.empty(self.shape, self.dtype)
        if out.nbytes:
            _check(driver.cuCtxSynchronize())
            _check(driver.cuMemcpyDtoH(out.ctypes.data, self.ptr, out.nbytes))
        return out

    def free(self) -> None:
        from cuda.bindings import driver

        if self.ptr is not None:
            driver.cuMemFree(self.ptr)
            self.ptr = None

    def __enter__(self) -> DeviceArray:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.free()


class DeviceBuffers:
    """Device buffers freed together when a kernel call ends (even on error).

    ``array_type``: the calling module's ``DeviceArray`` (the tests' CPU emulator swaps it per
    module, so it is passed in, not taken from here). New buffers have ``dtype`` unless one is
    given and are NaN-poisoned unless ``poison=False``, so an element a kernel never writes
    cannot pass; uploads are cast to ``upload_dtype`` when it is set. ``keep`` holds any other
    object (a CUDA tensor whose pointer is in use) until the call ends.
    """

    def __init__(self, array_type: Any = None, dtype: Any = np.float64, upload_dtype: Any = None):
        self.array_type = DeviceArray if array_type is None else array_type
        self.dtype, self.upload_dtype = dtype, upload_dtype
        self.items: list[Any] = []

    def new(self, shape: tuple[int, ...], dtype: Any = None, poison: bool = True) -> Any:
        buf = self.array_type(shape, self.dtype if dtype is None else dtype)
        self.items.append(buf)
        return buf.fill_nan() if poison else buf

    def upload(self, array: np.ndarray) -> Any:
        host = array if self.upload_dtype is None else np.ascontiguousarray(array, dtype=self.upload_dtype)
        buf = self.array_type.from_host(host)
        self.items.append(buf)
        return buf

    def keep(self, obj: Any) -> None:
        self.items.append(obj)

    def __enter__(self) -> DeviceBuffers:
        return self

    def __exit__(self, *exc: Any) -> None:
        for buf in self.items:
            if isinstance(buf, self.array_type):
                buf.free()


def pointer(x: Any) -> Any:
    """Device pointer of a ``DeviceArray`` or a CUDA torch tensor, for ``launch``."""
    from cuda.bindings import driver

    if isinstance(x, DeviceArray):
        return x.ptr
    if hasattr(x, "data_ptr"):
        return driver.CUdeviceptr(int(x.data_ptr()))
    raise KernelUnavailableError(f"cuda tier takes DeviceArray or CUDA tensors; got {type(x).__name__}")


def launch(function: Any, grid: tuple[int, ...], block: tuple[int, ...], args: list[tuple[Any, Any]],
           shared_bytes: int = 0, stream: Any = 0) -> None:
    """Launch ``function``; ``args`` is a list of ``(value, ctype)`` (``None`` for pointers)."""
    from cuda.bindings import driver

    ensure_current()
    gx, gy, gz = (*grid, 1, 1)[:3]
    bx, by, bz = (*block, 1, 1)[:3]
    values = tuple(a for a, _ in args)
    types = tuple(t for _, t in args)
    _check(driver.cuLaunchKernel(function, gx, gy, gz, bx, by, bz, shared_bytes, stream, (values, types), 0))


c_int = ctypes.c_int
c_long = ctypes.c_int64
c_float = ctypes.c_float
c_double = ctypes.c_double
