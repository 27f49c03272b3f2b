"""Run CUDA C kernels on the CPU: one OS thread per CUDA thread, blocks one after another.

``EmuRuntime`` stands in for ``kernels._cuda.DriverRuntime`` (``patch`` installs it), so the
cuda tier's kernels *and* its Python launchers (``KernelCall``: staging, streams, scratch,
outputs) run end to end without a GPU. "Device memory" is host memory the runtime allocated
or registered (``device_array``); a kernel pointer outside it raises ``IllegalAddress``, as
the GPU would fault with ``CUDA_ERROR_ILLEGAL_ADDRESS`` (a CPU tensor's address, for
instance). Every allocation, copy and launch is recorded with its stream (``runtime.ops``).

The kernel source is compiled by g++ with a prelude that maps the CUDA built-ins used by
edgesentry kernels to C++20: ``threadIdx``/``blockIdx`` are thread_local, ``__syncthreads``
is a ``std::barrier`` over the block, ``__shared__`` arrays are ``static`` (blocks run
sequentially, so one copy is the block's shared memory), dynamic shared memory is a buffer
of the launch's size, and ``__shfl_down_sync`` goes through a per-warp buffer and barrier.

What it checks: indexing, bounds, synchronisation placement (a missing ``__syncthreads``
shows up as a race between real threads), the maths, pointer provenance and streams of the
host code. What it cannot: GPU memory-model subtleties beyond barriers, warp-synchronous
code without ``__syncwarp``, launch limits, performance, and cuda-bindings' argument packing.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

PRELUDE = r"""
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

struct emu_dim3 { unsigned x, y, z; };
thread_local emu_dim3 threadIdx, blockIdx;
static emu_dim3 blockDim, gridDim;
static std::barrier<>* emu_block_barrier = nullptr;
static std::vector<std::barrier<>*> emu_warp_barriers;
static std::vector<double> emu_shfl;
static double* emu_dynamic_shared = nullptr;
thread_local int emu_linear_tid;

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static
#define __syncthreads() emu_block_barrier->arrive_and_wait()

static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline int min(int a, int b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline double __longlong_as_double(long long v) { double d; std::memcpy(&d, &v, 8); return d; }
static inline float __int_as_float(int v) { float f; std::memcpy(&f, &v, 4); return f; }
template <class T>
static inline T __shfl_down_sync(unsigned, T v, int off) {
  const int warp = emu_linear_tid / 32, lane = emu_linear_tid % 32;
  emu_shfl[warp * 32 + lane] = (double)v;
  emu_warp_barriers[warp]->arrive_and_wait();
  const T r = lane + off < 32 ? (T)emu_shfl[warp * 32 + lane + off] : v;
  emu_warp_barriers[warp]->arrive_and_wait();
  return r;
}

template <class... P, class... A>
static void emu_launch(void (*kernel)(P...), unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                       unsigned bz, unsigned long long shared_bytes, A... args) {
  const unsigned threads = bx * by * bz;
  std::vector<double> dynamic(shared_bytes / 8 + 1, std::nan(""));
  emu_dynamic_shared = dynamic.data();
  gridDim = {gx, gy, gz};
  blockDim = {bx, by, bz};
  const unsigned warps = (threads + 31) / 32;
  emu_shfl.assign(warps * 32, 0.0);
  for (unsigned z = 0; z < gz; ++z)
    for (unsigned y = 0; y < gy; ++y)
      for (unsigned x = 0; x < gx; ++x) {
        std::barrier<> block(threads);
        emu_block_barrier = &block;
        std::vector<std::barrier<>*> warp_barriers;
        for (unsigned w = 0; w < warps; ++w)
          warp_barriers.push_back(new std::barrier<>(std::min(32u, threads - 32 * w)));
        emu_warp_barriers = warp_barriers;
        std::vector<std::thread> pool;
        for (unsigned t = 0; t < threads; ++t) {
          pool.emplace_back([&, t] {
            threadIdx = {t % bx, (t / bx) % by, t / (bx * by)};
            blockIdx = {x, y, z};
            emu_linear_tid = (int)t;
            kernel(args...);
            // a thread that returns early must not leave the others waiting at a barrier
            emu_block_barrier->arrive_and_drop();
            emu_warp_barriers[t / 32]->arrive_and_drop();
          });
        }
        for (auto& th : pool) th.join();
        for (auto* b : warp_barriers) delete b;
      }
}
"""

_SIGNATURE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', re.S)
_DYNAMIC_SHARED = re.compile(r"extern\s+__shared__\s+(\w+)\s+(\w+)\s*\[\s*\]\s*;")


def check_tier_sources(tier: Any, name: str, arch: str) -> None:
    """A CUDA tier's ``SOURCES[name]`` compiles with NVRTC for ``arch`` to an ELF cubin that holds
    every kernel its ``KERNELS[name]`` lists, and that table names exactly the source's
    ``extern "C"`` kernels (what the emulator and the launchers look up)."""
    from edgesentry.kernels import _cuda

    source = tier.SOURCES[name]
    assert {k for k, _ in _SIGNATURE.findall(source)} == set(tier.KERNELS[name])
    cubin = _cuda.compile_cubin(source, arch=arch)
    assert cubin[:4] == b"\x7fELF"
    for kernel in tier.KERNELS[name]:
        assert kernel.encode() in cubin, f"{kernel} missing from the {arch} cubin of {name}"


class IllegalAddress(RuntimeError):
    """A kernel got a pointer outside device memory (the GPU's CUDA_ERROR_ILLEGAL_ADDRESS)."""


def available() -> str | None:
    """None if g++ with C++20 barriers is here, else why not."""
    if shutil.which("g++") is None:
        return "g++ not found"
    return None


def _wrappers(index: int, source: str) -> str:
    out = []
    for name, params in _SIGNATURE.findall(source):
        plist = [p.strip() for p in params.split(",") if p.strip()]
        names = [re.findall(r"\w+", p)[-1] for p in plist]
        out.append(
            f'extern "C" void emu_{index}_{name}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, '
            f"unsigned bz, unsigned long long shm, {', '.join(plist)}) {{\n"
            f"  emu_launch(emu_src_{index}::{name}, gx, gy, gz, bx, by, bz, shm, {', '.join(names)});\n}}\n"
        )
    return "\n".join(out)


def _body(index: int, source: str, helpers: str) -> str:
    """One source in its own namespace (sources of a group may share kernel names, e.g. the RX
    statistics in both RX sources), with the shared device helpers hoisted out and its macros
    undefined afterwards so that they cannot leak into the next source."""
    body = _DYNAMIC_SHARED.sub(r"\1* \2 = (\1*)emu_dynamic_shared;", source.replace(helpers, ""))
    body = body.replace('extern "C" __global__', "__global__")
    macros = sorted(set(re.findall(r"#define\s+(\w+)", body)))
    return f"namespace emu_src_{index} {{\n{body}\n}}\n" + "".join(f"#undef {m}\n" for m in macros)


@functools.lru_cache(maxsize=32)
def build(sources: tuple[str, ...]) -> ctypes.CDLL:
    """Compile ``sources`` into one shared library with the prelude (cached per set of sources;
    one translation unit, because parsing the C++ thread headers dominates the build time)."""
    from edgesentry.kernels._cuda import DEVICE_HELPERS

    bodies = [_body(i, src, DEVICE_HELPERS) for i, src in enumerate(sources)]
    text = PRELUDE + DEVICE_HELPERS + "\n".join(bodies) + "\n" + "\n".join(
        _wrappers(i, src) for i, src in enumerate(sources))
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / "edgesentry_cuda_emu"
    folder.mkdir(exist_ok=True)
    lib = folder / f"k_{digest}.so"
    if not lib.exists():
        src = folder / f"k_{digest}.cpp"
        src.write_text(text)
        tmp = folder / f"k_{digest}.{os.getpid()}.so"
        subprocess.run(["g++", "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-w", str(src), "-o", str(tmp)],
                       check=True, capture_output=True, text=True)
        tmp.replace(lib)
    return ctypes.CDLL(str(lib))


#: Sources built together (``patch``); any other source is built on its own.
_GROUPS: dict[str, tuple[str, ...]] = {}


class EmuRuntime:
    """``kernels._cuda.Runtime`` on host memory, with pointer checks and a log of (operation, stream)."""

    OWN_STREAM = 0x51
    ordinal = 0

    def __init__(self) -> None:
        self.memory: dict[int, np.ndarray] = {}  # base address -> bytes (allocated or registered)
        self.ops: list[tuple[str, int]] = []
        self.live_bytes = self.peak_bytes = 0  # of allocations (registered arrays not counted)

    # -- memory
    def _region(self, ptr: int, nbytes: int) -> np.ndarray:
        for base, buf in self.memory.items():
            if base <= ptr and ptr + nbytes <= base + buf.nbytes:
                return buf[ptr - base: ptr - base + nbytes]
        raise IllegalAddress(f"address {ptr:#x} (+{nbytes} bytes) is not device memory")

    def alloc(self, nbytes: int, stream: int) -> int:
        buf = np.empty(int(nbytes) + 256, np.uint8)
        offset = (-buf.ctypes.data) % 256  # 256-byte aligned, like cuMemAlloc
        view = buf[offset: offset + int(nbytes)]
        self.memory[view.ctypes.data] = view
        self.ops.append(("alloc", stream))
        self.live_bytes += int(nbytes)
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        return view.ctypes.data

    def register(self, host: np.ndarray) -> int:
        """Make ``host``'s memory count as device memory (a fake CUDA array); returns its address."""
        view = host.reshape(-1).view(np.uint8)
        self.memory[view.ctypes.data] = view
        return view.ctypes.data

    def free(self, ptr: int, stream: int) -> None:
        buf = self.memory.pop(ptr, None)
        if buf is None:
            raise IllegalAddress(f"free of {ptr:#x}, which was not allocated")
        self.live_bytes -= buf.nbytes
        self.ops.append(("free", stream))

    def memset(self, ptr: int, byte: int, nbytes: int, stream: int) -> None:
        self._region(ptr, nbytes)[:] = byte
        self.ops.append(("memset", stream))

    def upload(self, ptr: int, host: np.ndarray, stream: int) -> None:
        self._region(ptr, host.nbytes)[:] = np.ascontiguousarray(host).reshape(-1).view(np.uint8)
        self.ops.append(("upload", stream))

    def download(self, host: np.ndarray, ptr: int, stream: int) -> None:
        host.reshape(-1).view(np.uint8)[:] = self._region(ptr, host.nbytes)
        self.ops.append(("download", stream))

    def synchronize(self, stream: int) -> None:
        self.ops.append(("synchronize", stream))

    def own_stream(self) -> int:
        return self.OWN_STREAM

    # -- kernels
    def function(self, source: str, name: str) -> Any:
        group = _GROUPS.get(source, (source,))
        return getattr(build(group), f"emu_{group.index(source)}_{name}")

    def launch(self, function: Any, grid: tuple[int, int, int], block: tuple[int, int, int], shared_bytes: int,
               stream: int, params: list[tuple[Any, Any]]) -> None:
        values = []
        for value, ctype in params:
            if ctype is ctypes.c_void_p:
                self._region(int(value), 1)  # the GPU faults on a pointer outside device memory
                values.append(ctypes.c_void_p(int(value)))
            else:
                values.append(ctype(value))
        self.ops.append(("launch", stream))
        function(*(ctypes.c_uint(int(v)) for v in (*grid, *block)), ctypes.c_ulonglong(shared_bytes), *values)


class FakeDeviceArray:
    """A "device" array for device-resident calls: host memory the emulator counts as device
    memory, exposed through ``__cuda_array_interface__`` (as a CuPy or Numba array would be)."""

    def __init__(self, host: np.ndarray, runtime: EmuRuntime):
        self.host = np.ascontiguousarray(host)
        self.ptr = runtime.register(self.host)
        self.shape, self.dtype = self.host.shape, self.host.dtype

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": self.host.shape, "typestr": self.host.dtype.str, "data": (self.ptr, False),
                "version": 3, "strides": None}


def device_array(host: np.ndarray) -> FakeDeviceArray:
    """``host`` as a device array of the installed emulator runtime (after ``patch``)."""
    from edgesentry.kernels import _cuda

    return FakeDeviceArray(host, _cuda.runtime())


def to_numpy(x: Any) -> np.ndarray:
    """A result of a device-resident emulated call (``DeviceArray``) as numpy."""
    return x.to_host() if hasattr(x, "to_host") else np.asarray(x)


def patch(monkeypatch: Any, *modules: Any) -> EmuRuntime:
    """Run the cuda tier on the emulator for one test (pytest ``monkeypatch``): installs an
    ``EmuRuntime``, turns NaN poisoning of outputs and scratch on, and builds each module's
    ``SOURCES`` (if any) as one library."""
    from edgesentry.kernels import _cuda

    for module in modules:
        group = tuple(getattr(module, "SOURCES", {}).values())
        for source in group:
            _GROUPS[source] = group
    rt = EmuRuntime()
    monkeypatch.setattr(_cuda, "_RUNTIME", rt)
    monkeypatch.setenv(_cuda.POISON_ENV, "1")
    return rt
