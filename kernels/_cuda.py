"""Shared machinery of the CUDA tier: NVRTC builds, version checks, streams, memory, launches.

Kernels are CUDA C strings beside their Python launchers, compiled at run time with NVRTC
and launched through the driver API (``cuda.bindings``), so the tier needs neither torch nor
nvcc: it is the GPU path on Jetson and in torch-free runtimes. Compiling needs no GPU, so
tests compile every kernel for every target architecture (``TARGET_ARCHS``) on CPU machines.

What this module guarantees to the kernel modules:

- **Versions.** A driver loads code from an NVRTC of its own CUDA major version or older.
  ``unavailable_reason`` says so in one line (both versions and the fix) before anything is
  built; a cubin the driver refuses is retried as PTX for the driver to JIT where that can
  work, and NVRTC's raw C API (``cuda.bindings.nvrtc``) is used because it is the same on
  cuda-python 12 and 13.
- **Builds are cached** in memory and on disk (``EDGESENTRY_CACHE_DIR`` or the user cache
  folder), keyed by source, architecture, options and the NVRTC and driver versions; files are
  written atomically and checked by sha256 when read, so concurrent writers and torn or
  corrupt files cost a rebuild, never a bad module.
- **Device-resident calls.** ``KernelCall`` takes CUDA torch tensors, ``__cuda_array_interface__``
  arrays and ONNX Runtime CUDA ``OrtValue``s in place, and host arrays (numpy, CPU tensors)
  through pinned staging: a host pointer never reaches a kernel. Outputs come back in the
  caller's kind (numpy for host calls, a tensor or ``DeviceArray`` for device calls).
- **Streams.** Every copy, allocation and launch of a call goes to the caller's stream: the one
  set with ``use_stream``, else torch's current stream when torch tensors come in, else a
  non-blocking stream of our own (host calls synchronise it before returning).
- **Memory.** Scratch comes from the device's stream-ordered pool (``cuMemAllocAsync`` /
  ``cuMemFreeAsync`` with a release threshold, so a steady state does not go back to the
  driver), which never synchronises the device the way ``cuMemFree`` does.

Everything touching the driver goes through one ``Runtime`` object (``runtime()``), so tests
swap in the CPU emulator of ``tests/rx/_cuda_emulator.py`` in one place.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from edgesentry.errors import InputError, KernelUnavailableError

log = logging.getLogger("edgesentry.kernels.cuda")

#: Jetson Orin (sm_87) and Hopper (sm_90).
TARGET_ARCHS = ("sm_87", "sm_90")
#: Folder of the NVRTC disk cache (``<dir>/cuda``); ``EDGESENTRY_CUDA_CACHE=0`` turns it off.
CACHE_ENV = "EDGESENTRY_CACHE_DIR"
#: ``EDGESENTRY_POISON=1`` fills outputs and scratch with NaN bytes (tests: an unwritten element fails).
POISON_ENV = "EDGESENTRY_POISON"
_CACHE_FORMAT = 1

c_int = ctypes.c_int
c_long = ctypes.c_int64
c_float = ctypes.c_float
c_double = ctypes.c_double

# ----------------------------------------------------------------------------- device helpers
#: CUDA C included (prepended) by every kernel source: one copy of the block reductions and of
#: the centred Gram tile that RX and FERS share. Templates, so each kernel keeps its block size.
DEVICE_HELPERS = r"""
#ifndef EDGESENTRY_DEVICE_HELPERS
#define EDGESENTRY_DEVICE_HELPERS
#ifdef __CUDACC_RTC__
#define ES_INF __int_as_float(0x7f800000)
#else
#define ES_INF INFINITY
#endif
#define ES_TILE 16

// Min and max over a block of NT threads (a power of two); every thread gets both.
template <int NT>
__device__ __forceinline__ void es_block_min_max(float& lo, float& hi) {
  __shared__ float smin[NT];
  __shared__ float smax[NT];
  smin[threadIdx.x] = lo;
  smax[threadIdx.x] = hi;
  __syncthreads();
  for (int s = NT / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      smin[threadIdx.x] = fminf(smin[threadIdx.x], smin[threadIdx.x + s]);
      smax[threadIdx.x] = fmaxf(smax[threadIdx.x], smax[threadIdx.x + s]);
    }
    __syncthreads();
  }
  lo = smin[0];
  hi = smax[0];
  __syncthreads();
}

// Sum over a block of NT threads (a power of two); every thread gets it.
template <int NT, class T>
__device__ __forceinline__ T es_block_sum(T v) {
  __shared__ T ssum[NT];
  ssum[threadIdx.x] = v;
  __syncthreads();
  for (int s = NT / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) ssum[threadIdx.x] += ssum[threadIdx.x + s];
    __syncthreads();
  }
  const T out = ssum[0];
  __syncthreads();
  return out;
}

// One 16 x 16 tile of the centred Gram over pixels [r0, r1): thread (tx, ty) of a (16, 16) block
// gets sum_r z(r, i0 + ty) z(r, j0 + tx), z = load(r, c) - mean[c] (0 outside the image / bands).
// The band means come from the per-slice sums (slices x b) of the first pass. PIXEL_FAST picks
// which of pixel / band is contiguous in memory, so that the tile loads coalesce either way.
template <bool PIXEL_FAST, class Load>
__device__ __forceinline__ double es_centred_gram_tile(const Load& load, const double* __restrict__ sums,
                                                       int slices, long long n, int b, long long r0,
                                                       long long r1, int i0, int j0) {
  __shared__ double zi[ES_TILE][ES_TILE + 1];  // band x pixel
  __shared__ double zj[ES_TILE][ES_TILE + 1];
  __shared__ double mean_i[ES_TILE];
  __shared__ double mean_j[ES_TILE];
  const int tx = threadIdx.x, ty = threadIdx.y;
  if (ty < 2) {
    const int c = (ty == 0 ? i0 : j0) + tx;
    double s = 0.0;
    if (c < b) {
      for (int k = 0; k < slices; ++k) s += sums[(long long)k * b + c];
    }
    (ty == 0 ? mean_i : mean_j)[tx] = s / (double)n;
  }
  __syncthreads();
  double acc = 0.0;
  for (long long rb = r0; rb < r1; rb += ES_TILE) {
    // (band u, pixel v) of the tile this thread loads; consecutive threads walk the contiguous axis
    const int u = PIXEL_FAST ? ty : tx, v = PIXEL_FAST ? tx : ty;
    const long long r = rb + v;
    zi[u][v] = (r < r1 && i0 + u < b) ? load(r, i0 + u) - mean_i[u] : 0.0;
    zj[u][v] = (r < r1 && j0 + u < b) ? load(r, j0 + u) - mean_j[u] : 0.0;
    __syncthreads();
#pragma unroll
    for (int t = 0; t < ES_TILE; ++t) acc += zi[ty][t] * zj[tx][t];
    __syncthreads();
  }
  return acc;
}
#endif
"""


# ----------------------------------------------------------------------------- versions
def _nvrtc() -> Any:
    from cuda.bindings import nvrtc

    return nvrtc


def nvrtc_version() -> tuple[int, int] | None:
    """(major, minor) of the NVRTC library cuda-python loads, or None when it is missing."""
    try:
        err, major, minor = _nvrtc().nvrtcVersion()
    except Exception:  # ImportError, or cuda-pathfinder's DynamicLibNotFoundError
        return None
    return (int(major), int(minor)) if int(err) == 0 else None


def driver_version() -> tuple[int, int] | None:
    """(major, minor) CUDA version of the installed driver, or None when there is none."""
    try:
        from cuda.bindings import driver

        err, v = driver.cuDriverGetVersion()
    except Exception:  # no libcuda on this machine
        return None
    return (int(v) // 1000, int(v) % 1000 // 10) if int(err) == 0 else None


def version_mismatch(driver: tuple[int, int] | None, nvrtc: tuple[int, int] | None) -> str | None:
    """One line when ``driver`` cannot load what ``nvrtc`` builds (None when it can or is unknown).

    A driver loads cubins from NVRTC of its own CUDA major version or older (minor-version
    compatibility within a major); a newer major is refused at ``cuModuleLoadData``.
    """
    if driver is None or nvrtc is None or nvrtc[0] <= driver[0]:
        return None
    if driver[0] == 12:
        fix = ("install the CUDA 12 build: pip install 'edgesentry[gpu-cu12]' (on Jetson / JetPack 6: "
               "'edgesentry[jetson]', which uses JetPack's own NVRTC), or update the driver")
    else:
        fix = "update the NVIDIA driver (the cuda tier needs CUDA 12 or newer)"
    return (f"NVRTC {nvrtc[0]}.{nvrtc[1]} builds code the CUDA {driver[0]}.{driver[1]} driver cannot load "
            f"(a driver loads code from NVRTC of its own CUDA major version or older); {fix}")


def versions() -> str:
    """'driver CUDA 12.8, NVRTC 13.5 (...)' (for error messages; never raises)."""
    drv, nv = driver_version(), nvrtc_version()
    parts = [f"driver CUDA {drv[0]}.{drv[1]}" if drv else "no driver",
             f"NVRTC {nv[0]}.{nv[1]}" if nv else "no NVRTC"]
    return ", ".join(parts) + " (a cubin needs a driver at least as new as the NVRTC major version)"


def nvrtc_unavailable_reason() -> str | None:
    try:
        _nvrtc()
    except ImportError as exc:
        return f"cuda-python is not installed ({exc}); `pip install 'edgesentry[nvrtc]'`"
    if nvrtc_version() is None:
        return ("the NVRTC library was not found; `pip install nvidia-cuda-nvrtc` (CUDA 13), "
                "`nvidia-cuda-nvrtc-cu12` (CUDA 12) or use the CUDA toolkit's libnvrtc")
    return None


def unavailable_reason() -> str | None:
    """Why the cuda tier cannot run on this machine (None when it can)."""
    reason = nvrtc_unavailable_reason()
    if reason:
        return reason
    try:
        from cuda.bindings import driver

        (err,) = driver.cuInit(0)
        if int(err) != 0:
            return f"cuInit failed: {getattr(err, 'name', err)}"
        err, count = driver.cuDeviceGetCount()
        if int(err) != 0 or count == 0:
            return "no CUDA device"
    except Exception as exc:  # the driver library itself may be absent (CPU-only machine)
        return f"no NVIDIA driver ({type(exc).__name__}: {exc})"
    return version_mismatch(driver_version(), nvrtc_version())


# ----------------------------------------------------------------------------- NVRTC builds
@dataclass(frozen=True)
class Build:
    """One NVRTC output: ``code`` (cubin or PTX bytes) and the compile log (``ptxas -v`` lines)."""

    code: bytes
    log: str


def _nvrtc_check(nvrtc: Any, err: Any, what: str) -> None:
    if int(err) != 0:
        _, name = nvrtc.nvrtcGetErrorString(err)
        raise KernelUnavailableError(f"{what} failed: {name.decode() if isinstance(name, bytes) else name}")


def _nvrtc_compile(source: str, arch: str, options: tuple[str, ...], kind: Literal["cubin", "ptx"]) -> Build:
    nvrtc = _nvrtc()
    err, prog = nvrtc.nvrtcCreateProgram(source.encode(), b"edgesentry.cu", 0, [], [])
    _nvrtc_check(nvrtc, err, "nvrtcCreateProgram")
    try:
        opts = [f"--gpu-architecture={arch}", "--std=c++17", "--ptxas-options=-v", *options]
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), [o.encode() for o in opts])
        err_log, size = nvrtc.nvrtcGetProgramLogSize(prog)
        text = b" " * size
        nvrtc.nvrtcGetProgramLog(prog, text)
        build_log = text.rstrip(b"\x00 ").decode(errors="replace")
        if int(err) != 0:
            _, name = nvrtc.nvrtcGetErrorString(err)
            name = name.decode() if isinstance(name, bytes) else str(name)
            raise KernelUnavailableError(f"NVRTC failed to compile for {arch} ({name}): {build_log.strip()}")
        get_size, get_code = ((nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN) if kind == "cubin"
                              else (nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX))
        err, size = get_size(prog)
        _nvrtc_check(nvrtc, err, f"NVRTC {kind} size")
        code = b" " * size
        (err,) = get_code(prog, code)
        _nvrtc_check(nvrtc, err, f"NVRTC {kind}")
        return Build(bytes(code), build_log)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def cache_dir() -> Path | None:
    """Folder of the NVRTC disk cache, or None when it is turned off."""
    if os.environ.get("EDGESENTRY_CUDA_CACHE", "1") == "0":
        return None
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root) / "cuda"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgesentry" / "cuda"


class DiskCache:
    """NVRTC outputs on disk, one file per key: a magic line, a JSON header (sha256, size, log), the code.

    Writes go to a temporary file in the same folder and are renamed into place (atomic on POSIX
    and Windows), so concurrent writers of one key leave one whole file. A file whose magic,
    size or sha256 does not match is deleted and reported as a miss.
    """

    MAGIC = b"edgesentry-nvrtc-cache\n"

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", key):
            raise ValueError(f"cache keys are sha256 hex digests; got {key!r}")
        return self.folder / f"{key}.bin"

    def get(self, key: str) -> Build | None:
        path = self.path(key)
        try:
            blob = path.read_bytes()
        except OSError:
            return None
        build = self._parse(blob)
        if build is None:
            log.warning("ignoring the corrupt NVRTC cache file %s", path)
            with contextlib.suppress(OSError):
                path.unlink()
        return build

    def _parse(self, blob: bytes) -> Build | None:
        if not blob.startswith(self.MAGIC):
            return None
        header, sep, code = blob[len(self.MAGIC):].partition(b"\n")
        try:
            meta = json.loads(header)
        except ValueError:
            return None
        if not sep or not isinstance(meta, dict) or meta.get("size") != len(code):
            return None
        if meta.get("sha256") != hashlib.sha256(code).hexdigest():
            return None
        return Build(code, str(meta.get("log", "")))

    def put(self, key: str, build: Build) -> None:
        path = self.path(key)
        header = json.dumps({"sha256": hashlib.sha256(build.code).hexdigest(), "size": len(build.code),
                             "log": build.log}).encode()
        tmp = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{key[:16]}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(self.MAGIC + header + b"\n" + build.code)
            os.replace(tmp, path)
            tmp = None
        except OSError as exc:  # a read-only or full disk costs a rebuild next time, nothing else
            log.debug("NVRTC cache not written (%s): %s", path, exc)
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


def cache_key(source: str, arch: str, options: tuple[str, ...], kind: str) -> str:
    parts = [_CACHE_FORMAT, source, arch, list(options), kind, nvrtc_version(), driver_version()]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


@functools.lru_cache(maxsize=256)
def _build_cached(source: str, arch: str, options: tuple[str, ...], kind: Literal["cubin", "ptx"]) -> Build:
    folder = cache_dir()
    disk = DiskCache(folder) if folder is not None else None
    key = cache_key(source, arch, options, kind)
    found = disk.get(key) if disk is not None else None
    if found is not None:
        return found
    build = _nvrtc_compile(source, arch, options, kind)
    if disk is not None:
        disk.put(key, build)
    return build


def build(source: str, *, arch: str, options: Sequence[str] = (), kind: Literal["cubin", "ptx"] = "cubin") -> Build:
    """Compile CUDA C for ``arch`` (``"sm_87"`` for a cubin, ``"compute_87"`` for PTX); cached.

    Raises:
        KernelUnavailableError: cuda-python/NVRTC missing, or the source does not compile
            (the NVRTC log is in the message).
    """
    reason = nvrtc_unavailable_reason()
    if reason:
        raise KernelUnavailableError(reason)
    if not arch.startswith(("sm_", "compute_")):
        raise KernelUnavailableError(f"arch must look like 'sm_87'; got {arch!r}")
    return _build_cached(source, arch, tuple(options), kind)


def compile_cubin(source: str, *, arch: str, options: tuple[str, ...] = ()) -> bytes:
    """Compile CUDA C to a cubin for ``arch`` (e.g. ``"sm_87"``); cached in memory and on disk."""
    return build(source, arch=arch, options=options).code


def compile_ptx(source: str, *, arch: str, options: tuple[str, ...] = ()) -> bytes:
    """Compile CUDA C to PTX for ``arch`` (``"compute_90"``), for the driver to JIT."""
    return build(source, arch=arch, options=options, kind="ptx").code


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- resources
@dataclass(frozen=True)
class KernelResources:
    """What ``ptxas -v`` says about one kernel: registers per thread, spills, stack, static shared memory."""

    name: str
    registers: int
    spill_stores: int
    spill_loads: int
    stack_bytes: int
    shared_bytes: int


_PTXAS_ENTRY = re.compile(r"Compiling entry function '([^']+)'")
_PTXAS_PROPS = re.compile(r"Function properties for (\S+)")
_PTXAS_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def parse_ptxas_log(text: str) -> dict[str, KernelResources]:
    """Entry kernels of a ``ptxas -v`` log -> their resources (spills of called functions included)."""
    frames: dict[str, tuple[int, int, int]] = {}
    used: dict[str, tuple[int, int]] = {}
    entry = props = None
    for line in text.splitlines():
        if m := _PTXAS_ENTRY.search(line):
            entry = m.group(1)
        elif m := _PTXAS_PROPS.search(line):
            props = m.group(1)
        elif (m := _PTXAS_FRAME.search(line)) and props is not None:
            stack, stores, loads = (int(g) for g in m.groups())
            prev = frames.get(props, (0, 0, 0))
            frames[props] = (max(prev[0], stack), prev[1] + stores, prev[2] + loads)
        elif (m := _PTXAS_USED.search(line)) and entry is not None:
            used[entry] = (int(m.group(1)), int(m.group(2) or 0))
    out = {}
    for name, (regs, smem) in used.items():
        stack, stores, loads = frames.get(name, (0, 0, 0))
        # non-inlined device functions called by this entry spill on its behalf
        for other, (_, s, ld) in frames.items():
            if other not in used and other != name:
                stores, loads = stores + s, loads + ld
        out[name] = KernelResources(name, regs, stores, loads, stack, smem)
    return out


def resource_usage(source: str, *, arch: str, options: tuple[str, ...] = ()) -> dict[str, KernelResources]:
    """Registers and spills of every kernel of ``source`` for ``arch``, from NVRTC's ``ptxas -v`` log."""
    return parse_ptxas_log(build(source, arch=arch, options=options).log)


# ----------------------------------------------------------------------------- streams
_local = threading.local()


def _stream_handle(stream: Any) -> int:
    """A raw ``CUstream`` handle from an int, ``CUstream``, torch / CuPy stream or ``__cuda_stream__`` object."""
    if isinstance(stream, int):
        return stream
    if hasattr(stream, "__cuda_stream__"):
        return int(stream.__cuda_stream__()[1])
    for attr in ("cuda_stream", "ptr", "handle"):  # torch.cuda.Stream, cupy.cuda.Stream, cuda.core Stream
        value = getattr(stream, attr, None)
        if value is not None and not callable(value):
            return int(value)
    try:
        return int(stream)  # cuda.bindings CUstream
    except (TypeError, ValueError):
        raise InputError(f"cannot read a CUDA stream handle from {type(stream).__name__}") from None


@contextlib.contextmanager
def use_stream(stream: Any) -> Iterator[int]:
    """Run the cuda tier's copies and launches on ``stream`` in this thread (torch or CuPy
    stream, ``CUstream`` or raw handle). Without it: torch's current stream for torch tensors,
    else a stream of our own."""
    previous = getattr(_local, "stream", None)
    _local.stream = _stream_handle(stream)
    try:
        yield _local.stream
    finally:
        _local.stream = previous


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _is_torch_cuda(x: Any) -> bool:
    return _is_torch(x) and getattr(getattr(x, "device", None), "type", "") == "cuda"


def _is_ort_cuda(x: Any) -> bool:
    return type(x).__name__ == "OrtValue" and callable(getattr(x, "device_name", None)) and \
        str(x.device_name()).lower() == "cuda"


def is_device_array(x: Any) -> bool:
    """True for data already on the GPU: CUDA tensors, ``__cuda_array_interface__`` arrays, CUDA OrtValues."""
    return isinstance(x, DeviceArray) or _is_torch_cuda(x) or _is_ort_cuda(x) or \
        (not _is_torch(x) and hasattr(x, "__cuda_array_interface__"))


def torch_stream(x: Any) -> int:
    """torch's current stream on ``x``'s device (the stream torch's own work on ``x`` is queued on)."""
    import torch

    return int(torch.cuda.current_stream(x.device).cuda_stream)


def caller_stream(arrays: Sequence[Any]) -> int | None:
    """The stream a call must use: ``use_stream``'s, else torch's current one for torch CUDA
    inputs, else None (the runtime's own stream)."""
    explicit = getattr(_local, "stream", None)
    if explicit is not None:
        return explicit
    for x in arrays:
        if _is_torch_cuda(x):
            return torch_stream(x)
    return None


# ----------------------------------------------------------------------------- runtime
class Runtime(Protocol):
    """Everything the tier asks of a device; ``DriverRuntime`` (cuda.bindings) or a test emulator."""

    ordinal: int

    def function(self, source: str, name: str) -> Any: ...
    def own_stream(self) -> int: ...
    def alloc(self, nbytes: int, stream: int) -> int: ...
    def free(self, ptr: int, stream: int) -> None: ...
    def memset(self, ptr: int, byte: int, nbytes: int, stream: int) -> None: ...
    def upload(self, ptr: int, host: np.ndarray, stream: int) -> None: ...
    def download(self, host: np.ndarray, ptr: int, stream: int) -> None: ...
    def synchronize(self, stream: int) -> None: ...
    def launch(self, function: Any, grid: tuple[int, int, int], block: tuple[int, int, int], shared_bytes: int,
               stream: int, params: list[tuple[Any, Any]]) -> None: ...


def _check(result: Any) -> Any:
    from cuda.bindings import driver

    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
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
    pools: bool


@functools.lru_cache(maxsize=1)
def context() -> _Context:
    """The primary context of device 0 (the one torch uses too), made current once per process."""
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
    pools = bool(_check(driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED, dev)))
    if pools:  # keep freed blocks in the pool (like torch's caching allocator) instead of returning them
        pool = _check(driver.cuDeviceGetDefaultMemPool(dev))
        _check(driver.cuMemPoolSetAttribute(pool, driver.CUmemPool_attribute.CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                                            driver.cuuint64_t(2**64 - 1)))
    return _Context(dev, ctx, f"sm_{major}{minor}", pools)


def ensure_current() -> _Context:
    from cuda.bindings import driver

    ctx = context()
    _check(driver.cuCtxSetCurrent(ctx.context))
    return ctx


def _arch_number(arch: str) -> int:
    return int(re.sub(r"\D", "", arch))


def _load_module(image: bytes) -> Any:
    from cuda.bindings import driver

    return _check(driver.cuModuleLoadData(image))


@functools.lru_cache(maxsize=256)
def get_function(source: str, name: str) -> Any:
    """Compile ``source`` for this device and return its ``extern "C"`` kernel ``name``.

    The cubin for the device's architecture is tried first; where the driver refuses it (or
    NVRTC does not know the architecture), PTX for the newest architecture NVRTC supports that
    the device runs is handed to the driver's JIT. Both failing is an error naming the versions.
    """
    from cuda.bindings import driver

    ctx = ensure_current()
    supported = _supported_archs()
    errors = []
    if not supported or _arch_number(ctx.arch) in supported:
        try:
            module = _load_module(compile_cubin(source, arch=ctx.arch))
            return _check(driver.cuModuleGetFunction(module, name.encode()))
        except KernelUnavailableError as exc:
            errors.append(f"cubin: {exc}")
    ptx_arch = max((a for a in supported if a <= _arch_number(ctx.arch)), default=None)
    if ptx_arch is not None:
        try:
            module = _load_module(compile_ptx(source, arch=f"compute_{ptx_arch}"))
            log.info("loaded %s from compute_%d PTX (driver JIT) on %s", name, ptx_arch, ctx.arch)
            return _check(driver.cuModuleGetFunction(module, name.encode()))
        except KernelUnavailableError as exc:
            errors.append(f"PTX compute_{ptx_arch}: {exc}")
    raise KernelUnavailableError(f"cannot load kernel {name!r} on {ctx.arch} ({'; '.join(errors)}); {versions()}")


@functools.lru_cache(maxsize=1)
def _supported_archs() -> tuple[int, ...]:
    try:
        err, archs = _nvrtc().nvrtcGetSupportedArchs()
    except Exception:
        return ()
    return tuple(int(a) for a in archs) if int(err) == 0 else ()


class _Pinned:
    """Page-locked host blocks for staging copies, each guarded by an event (reused once its copy is done)."""

    LIMIT = 256 << 20  # total pinned bytes kept; bigger transfers go through pageable memory

    def __init__(self) -> None:
        self.blocks: list[list[Any]] = []  # [ptr, nbytes, event]
        self.total = 0

    def acquire(self, nbytes: int) -> list[Any] | None:
        from cuda.bindings import driver

        for block in self.blocks:
            if block[1] >= nbytes and int(driver.cuEventQuery(block[2])[0]) == 0:
                return block
        if self.total + nbytes > self.LIMIT:
            busy = [b for b in self.blocks if b[1] >= nbytes]
            if not busy:
                return None
            _check(driver.cuEventSynchronize(busy[0][2]))
            return busy[0]
        ptr = _check(driver.cuMemHostAlloc(nbytes, 0))
        event = _check(driver.cuEventCreate(driver.CUevent_flags.CU_EVENT_DISABLE_TIMING))
        block = [int(ptr), nbytes, event]
        self.blocks.append(block)
        self.total += nbytes
        return block

    @staticmethod
    def view(block: list[Any], nbytes: int) -> np.ndarray:
        return np.ctypeslib.as_array((ctypes.c_ubyte * nbytes).from_address(block[0]))


class DriverRuntime:
    """The real device, through ``cuda.bindings.driver``."""

    def __init__(self) -> None:
        self.ctx = ensure_current()
        self.ordinal = 0
        self._stream: int | None = None
        self._pinned = _Pinned()
        self._lock = threading.Lock()

    @staticmethod
    def _s(stream: int) -> Any:
        from cuda.bindings import driver

        return driver.CUstream(stream)

    def function(self, source: str, name: str) -> Any:
        return get_function(source, name)

    def own_stream(self) -> int:
        from cuda.bindings import driver

        if self._stream is None:
            stream = _check(driver.cuStreamCreate(driver.CUstream_flags.CU_STREAM_NON_BLOCKING.value))
            self._stream = int(stream)
        return self._stream

    def alloc(self, nbytes: int, stream: int) -> int:
        from cuda.bindings import driver

        ensure_current()
        if self.ctx.pools:
            return int(_check(driver.cuMemAllocAsync(nbytes, self._s(stream))))
        return int(_check(driver.cuMemAlloc(nbytes)))

    def free(self, ptr: int, stream: int) -> None:
        from cuda.bindings import driver

        if self.ctx.pools:
            _check(driver.cuMemFreeAsync(driver.CUdeviceptr(ptr), self._s(stream)))
        else:
            _check(driver.cuMemFree(driver.CUdeviceptr(ptr)))

    def memset(self, ptr: int, byte: int, nbytes: int, stream: int) -> None:
        from cuda.bindings import driver

        _check(driver.cuMemsetD8Async(driver.CUdeviceptr(ptr), byte, nbytes, self._s(stream)))

    def upload(self, ptr: int, host: np.ndarray, stream: int) -> None:
        from cuda.bindings import driver

        host = np.ascontiguousarray(host)
        with self._lock:
            block = self._pinned.acquire(host.nbytes)
            if block is None:  # larger than the pinned budget: the driver stages pageable memory itself
                _check(driver.cuMemcpyHtoDAsync(driver.CUdeviceptr(ptr), host.ctypes.data, host.nbytes,
                                                self._s(stream)))
                _check(driver.cuStreamSynchronize(self._s(stream)))  # host may be freed after we return
                return
            self._pinned.view(block, host.nbytes)[:] = host.reshape(-1).view(np.uint8)
            _check(driver.cuMemcpyHtoDAsync(driver.CUdeviceptr(ptr), block[0], host.nbytes, self._s(stream)))
            _check(driver.cuEventRecord(block[2], self._s(stream)))

    def download(self, host: np.ndarray, ptr: int, stream: int) -> None:
        from cuda.bindings import driver

        with self._lock:
            block = self._pinned.acquire(host.nbytes)
            if block is None:
                _check(driver.cuMemcpyDtoHAsync(host.ctypes.data, driver.CUdeviceptr(ptr), host.nbytes,
                                                self._s(stream)))
                _check(driver.cuStreamSynchronize(self._s(stream)))
                return
            _check(driver.cuMemcpyDtoHAsync(block[0], driver.CUdeviceptr(ptr), host.nbytes, self._s(stream)))
            _check(driver.cuEventRecord(block[2], self._s(stream)))
            _check(driver.cuStreamSynchronize(self._s(stream)))
            host.reshape(-1).view(np.uint8)[:] = self._pinned.view(block, host.nbytes)

    def synchronize(self, stream: int) -> None:
        from cuda.bindings import driver

        _check(driver.cuStreamSynchronize(self._s(stream)))

    def launch(self, function: Any, grid: tuple[int, int, int], block: tuple[int, int, int], shared_bytes: int,
               stream: int, params: list[tuple[Any, Any]]) -> None:
        from cuda.bindings import driver

        ensure_current()
        values = tuple(v for v, _ in params)
        types = tuple(t for _, t in params)
        _check(driver.cuLaunchKernel(function, *grid, *block, shared_bytes, self._s(stream), (values, types), 0))


_RUNTIME: Runtime | None = None


def runtime() -> Runtime:
    """The device runtime of this process (created on first use; raises where there is no GPU)."""
    global _RUNTIME
    if _RUNTIME is None:
        _RUNTIME = DriverRuntime()
    return _RUNTIME


def set_runtime(rt: Runtime | None) -> Runtime | None:
    """Replace the runtime (tests: the CPU emulator); returns the previous one."""
    global _RUNTIME
    previous, _RUNTIME = _RUNTIME, rt
    return previous


def poison_enabled() -> bool:
    return os.environ.get(POISON_ENV, "0") == "1"


# ----------------------------------------------------------------------------- memory
class DeviceArray:
    """A device buffer holding one C-contiguous array: from the stream-ordered pool, or borrowed.

    Exposes ``__cuda_array_interface__`` (v3), so CuPy, Numba and ``torch.as_tensor`` read it in place.
    """

    def __init__(self, shape: Sequence[int], dtype: Any, *, stream: int | None = None):
        self.runtime = runtime()
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = max(1, int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize)
        self.stream = self.runtime.own_stream() if stream is None else stream
        self.ptr: int | None = self.runtime.alloc(self.nbytes, self.stream)
        self.owner: Any = None

    @classmethod
    def borrowed(cls, ptr: int, shape: Sequence[int], dtype: Any, owner: Any, stream: int) -> DeviceArray:
        """A view of memory someone else owns (kept alive through ``owner``); ``free`` leaves it alone."""
        arr = cls.__new__(cls)
        arr.runtime = runtime()
        arr.shape, arr.dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        arr.nbytes = max(1, int(np.prod(arr.shape, dtype=np.int64)) * arr.dtype.itemsize)
        arr.stream, arr.ptr, arr.owner = stream, int(ptr), owner
        return arr

    @classmethod
    def from_host(cls, array: np.ndarray, *, stream: int | None = None) -> DeviceArray:
        host = np.ascontiguousarray(array)
        dev = cls(host.shape, host.dtype, stream=stream)
        if host.nbytes:
            dev.runtime.upload(dev.ptr, host, dev.stream)
        return dev

    def fill_nan(self) -> DeviceArray:
        """Poison the buffer (NaN bytes) so that unwritten outputs cannot pass by luck."""
        self.runtime.memset(self.ptr, 0xFF, self.nbytes, self.stream)
        return self

    def to_host(self) -> np.ndarray:
        out = np.empty(self.shape, self.dtype)
        if out.nbytes:
            self.runtime.download(out, self.ptr, self.stream)
        return out

    def free(self) -> None:
        if self.ptr is not None and self.owner is None:
            self.runtime.free(self.ptr, self.stream)
        self.ptr = None

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False), "version": 3,
                "strides": None, "stream": self.stream if self.stream > 2 else None}

    def __enter__(self) -> DeviceArray:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.free()


def _torch_dtype(dtype: np.dtype) -> Any:
    import torch

    return {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64,
            np.dtype(np.int32): torch.int32, np.dtype(np.uint8): torch.uint8,
            np.dtype(np.float16): torch.float16}[np.dtype(dtype)]


_ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
              "tensor(int32)": np.int32, "tensor(uint8)": np.uint8}


def _device_interface(x: Any) -> tuple[int, tuple[int, ...], np.dtype, bool]:
    """(pointer, shape, dtype, C-contiguous) of a non-torch device array."""
    if _is_ort_cuda(x):
        dtype = _ORT_TYPES.get(x.data_type())
        if dtype is None:
            raise InputError(f"cuda tier: OrtValue of type {x.data_type()} is not supported")
        return int(x.data_ptr()), tuple(x.shape()), np.dtype(dtype), True
    cai = x.__cuda_array_interface__
    shape = tuple(int(s) for s in cai["shape"])
    dtype = np.dtype(cai["typestr"])
    strides = cai.get("strides")
    contiguous = strides is None or tuple(strides) == tuple(
        int(np.prod(shape[i + 1:], dtype=np.int64)) * dtype.itemsize for i in range(len(shape)))
    return int(cai["data"][0]), shape, dtype, contiguous


#: Constants (weights, tables) kept on the device per runtime, by content.
_CONSTANTS_KEPT = 256


class KernelCall:
    """One call of a cuda-tier op: its stream, inputs, scratch and outputs.

    ``arrays`` are the op's inputs: any device array among them makes the call device-resident
    (outputs stay on the GPU, in torch's kind when torch tensors came in); otherwise it is a
    host call (inputs staged through pinned memory, outputs copied back as numpy). Scratch is
    freed stream-ordered when the ``with`` block ends, even on error.
    """

    def __init__(self, *arrays: Any):
        self.runtime = runtime()
        self.device = any(is_device_array(a) for a in arrays if a is not None)
        self.torch_device = next((a.device for a in arrays if _is_torch_cuda(a)), None)
        stream = caller_stream([a for a in arrays if a is not None])
        self.stream = self.runtime.own_stream() if stream is None else stream
        self._scratch: list[DeviceArray] = []
        self._keep: list[Any] = []

    # -- inputs
    def input(self, x: Any, dtype: Any, shape: Sequence[int] | None = None) -> DeviceArray:
        """``x`` on the device as a C-contiguous ``dtype`` array (in place when it is already there)."""
        dtype = np.dtype(dtype)
        if _is_torch_cuda(x):
            return self._torch_input(x, dtype, shape)
        if is_device_array(x):
            ptr, got_shape, got_dtype, contiguous = (
                (x.ptr, x.shape, x.dtype, True) if isinstance(x, DeviceArray) else _device_interface(x))
            if got_dtype != dtype or not contiguous:
                raise InputError(f"cuda tier needs C-contiguous {dtype} device arrays; got "
                                 f"{'non-contiguous ' if not contiguous else ''}{got_dtype}")
            want = tuple(got_shape) if shape is None else tuple(int(s) for s in shape)
            if int(np.prod(want, dtype=np.int64)) != int(np.prod(got_shape, dtype=np.int64)):
                raise InputError(f"cuda tier: device array of shape {tuple(got_shape)} cannot be read as {want}")
            self._keep.append(x)
            return DeviceArray.borrowed(ptr, want, dtype, owner=x, stream=self.stream)
        host = self._host_array(x, dtype)
        return self.upload(host if shape is None else host.reshape(shape))

    def _torch_input(self, x: Any, dtype: np.dtype, shape: Sequence[int] | None) -> DeviceArray:
        import torch

        if (x.device.index or 0) != self.runtime.ordinal:
            raise InputError(f"cuda tier runs on cuda:{self.runtime.ordinal}; got a tensor on {x.device}")
        with torch.cuda.stream(torch.cuda.ExternalStream(self.stream, device=x.device)):
            t = x.detach().to(_torch_dtype(dtype)).contiguous()  # on our stream: ordered before the launches
        if shape is not None:
            t = t.reshape(tuple(int(s) for s in shape))
        self._keep.append(t)
        return DeviceArray.borrowed(t.data_ptr(), tuple(t.shape), dtype, owner=t, stream=self.stream)

    @staticmethod
    def _host_array(x: Any, dtype: np.dtype) -> np.ndarray:
        if _is_torch(x) and hasattr(x, "detach"):
            x = x.detach().cpu().numpy()  # a CPU tensor: its memory is host memory, never a device pointer
        if not isinstance(x, np.ndarray):
            raise InputError(f"cuda tier takes numpy arrays, torch tensors or CUDA arrays; got {type(x).__name__}")
        return np.ascontiguousarray(x, dtype=dtype)

    def constant(self, x: Any, dtype: Any) -> DeviceArray:
        """A device array for a constant of the op (weights, tables): device arrays in place, host
        arrays uploaded once per content (blake2b of the bytes) and kept for later calls."""
        if is_device_array(x):
            return self.input(x, dtype)
        host = self._host_array(x, np.dtype(dtype))
        key = (host.dtype.str, host.shape, hashlib.blake2b(host.tobytes(), digest_size=16).digest())
        cache = self.runtime.__dict__.setdefault("_constants", {})
        buf = cache.get(key)
        if buf is None:
            buf = DeviceArray(host.shape, host.dtype, stream=self.stream)
            if host.nbytes:
                self.runtime.upload(buf.ptr, host, self.stream)
            self.runtime.synchronize(self.stream)  # complete: any stream may read it from now on
            if len(cache) < _CONSTANTS_KEPT:
                cache[key] = buf
            else:  # a full cache: this one lives as long as the call
                self._scratch.append(buf)
        return buf

    def upload(self, host: np.ndarray) -> DeviceArray:
        """A scratch copy of a host array (pinned staging, on the call's stream)."""
        buf = self.scratch(host.shape, host.dtype, poison=False)
        if host.nbytes:
            self.runtime.upload(buf.ptr, np.ascontiguousarray(host), self.stream)
        return buf

    # -- scratch and outputs
    def scratch(self, shape: Sequence[int], dtype: Any, poison: bool | None = None) -> DeviceArray:
        """A pool buffer freed when the call ends (NaN-poisoned under ``EDGESENTRY_POISON=1``)."""
        buf = DeviceArray(shape, dtype, stream=self.stream)
        self._scratch.append(buf)
        if poison_enabled() if poison is None else poison:
            buf.fill_nan()
        return buf

    def output(self, shape: Sequence[int], dtype: Any) -> Any:
        """An output in the caller's kind: a torch tensor (torch in), a ``DeviceArray`` the caller
        owns (other device arrays in), or scratch read back by ``result`` (host call)."""
        shape = tuple(int(s) for s in shape)
        if self.torch_device is not None:
            import torch

            with torch.cuda.stream(torch.cuda.ExternalStream(self.stream, device=self.torch_device)):
                out = torch.empty(shape, dtype=_torch_dtype(np.dtype(dtype)), device=self.torch_device)
                if poison_enabled():
                    out.fill_(float("nan")) if out.is_floating_point() else out.fill_(-1)
            return out
        if self.device:
            out = DeviceArray(shape, dtype, stream=self.stream)
            return out.fill_nan() if poison_enabled() else out
        return self.scratch(shape, dtype)

    def zero(self, buf: Any) -> None:
        """Fill a device buffer or CUDA tensor with zero bytes (0.0) on the call's stream."""
        nbytes = buf.numel() * buf.element_size() if _is_torch(buf) else buf.nbytes
        if nbytes:
            self.runtime.memset(address(buf), 0, nbytes, self.stream)

    # -- work
    def launch(self, source: str, name: str, grid: Sequence[int], block: Sequence[int],
               args: Sequence[tuple[Any, Any]], shared_bytes: int = 0) -> None:
        """Launch kernel ``name`` of ``source`` on the call's stream; ``args`` are ``(value, ctype)``
        with ``ctype`` None for device arrays (``DeviceArray``, CUDA tensors)."""
        function = self.runtime.function(source, name)
        self.runtime.launch(function, _dim3(grid), _dim3(block), int(shared_bytes), self.stream, _params(args))

    def host(self, buf: Any) -> np.ndarray:
        """A numpy copy of a device buffer or tensor (synchronises the call's stream)."""
        if _is_torch(buf):
            self.runtime.synchronize(self.stream)
            return buf.detach().cpu().numpy()
        return buf.to_host()

    def result(self, out: Any) -> Any:
        """What the caller gets for ``out``: numpy for a host call, the device object otherwise."""
        return out if self.device else self.host(out)

    def __enter__(self) -> KernelCall:
        return self

    def __exit__(self, *exc: Any) -> None:
        for buf in self._scratch:
            buf.free()
        self._scratch.clear()


def _dim3(dims: Sequence[int]) -> tuple[int, int, int]:
    x, y, z = (*(int(d) for d in dims), 1, 1)[:3]
    return x, y, z


def address(x: Any) -> int:
    """The device address of a ``DeviceArray``, CUDA tensor, device array, ``CUdeviceptr`` or int.

    Raises:
        InputError: ``x`` is host data (a CPU tensor, numpy): its address is not a device pointer.
    """
    if isinstance(x, DeviceArray):
        return int(x.ptr)
    if isinstance(x, int):
        return x
    if _is_torch(x):
        if not _is_torch_cuda(x):
            raise InputError(f"a {x.device} tensor is host memory, not a device pointer; "
                             "stage it with KernelCall.input")
        return int(x.data_ptr())
    if is_device_array(x):
        return _device_interface(x)[0]
    if type(x).__name__ == "CUdeviceptr":
        return int(x)
    raise InputError(f"cuda tier takes device arrays as kernel pointers; got {type(x).__name__}")


def _params(args: Sequence[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """``(value, ctype)`` kernel arguments with pointers as ``(address, c_void_p)``."""
    return [(address(v), ctypes.c_void_p) if t is None else (v, t) for v, t in args]


# ----------------------------------------------------------------------------- compatibility
class DeviceBuffers:
    """Device buffers freed together when a kernel call ends (even on error).

    Kept for launchers written against the first CUDA-tier API; new code uses ``KernelCall``.
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


def pointer(x: Any) -> int:
    """Device address of a ``DeviceArray`` or CUDA tensor (see ``address``)."""
    return address(x)


def launch(function: Any, grid: tuple[int, ...], block: tuple[int, ...], args: list[tuple[Any, Any]],
           shared_bytes: int = 0, stream: Any = None) -> None:
    """Launch a function from ``get_function`` on ``stream`` (default: the caller's, see ``caller_stream``)."""
    rt = runtime()
    handle = caller_stream([]) if stream is None else _stream_handle(stream)
    rt.launch(function, _dim3(grid), _dim3(block), int(shared_bytes),
              rt.own_stream() if handle is None else handle, _params(args))
