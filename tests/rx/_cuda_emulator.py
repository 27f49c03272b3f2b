"""Run CUDA C kernels on the CPU: one OS thread per CUDA thread, blocks one after another.

Used by ``test_rx_cuda.py`` where there is no GPU, to run the CUDA tier's kernels *and*
its Python launchers (chunking, poisoning, pinv fallback) end to end. The kernel source is
compiled by g++ with a prelude that maps the CUDA built-ins used by edgesentry kernels to
C++20: ``threadIdx``/``blockIdx`` are thread_local, ``__syncthreads`` is a
``std::barrier`` over the block, ``__shared__`` arrays are ``static`` (blocks run
sequentially, so one copy is the block's shared memory), dynamic shared memory is a buffer
of the launch's size, and ``__shfl_down_sync`` goes through a per-warp buffer and barrier.

What it checks: indexing, bounds, synchronisation placement (a missing ``__syncthreads``
shows up as a race between real threads), the maths, and the host code around launches.
What it cannot: GPU memory-model subtleties beyond barriers, warp-synchronous code
without ``__syncwarp``, launch limits, performance, and cuda-bindings' argument packing.
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
static inline double __longlong_as_double(long long v) { double d; std::memcpy(&d, &v, 8); return d; }
static inline double __shfl_down_sync(unsigned, double v, int off) {
  const int warp = emu_linear_tid / 32, lane = emu_linear_tid % 32;
  emu_shfl[warp * 32 + lane] = v;
  emu_warp_barriers[warp]->arrive_and_wait();
  const double r = lane + off < 32 ? emu_shfl[warp * 32 + lane + off] : v;
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


def available() -> str | None:
    """None if g++ with C++20 barriers is here, else why not."""
    if shutil.which("g++") is None:
        return "g++ not found"
    return None


def _wrappers(source: str) -> str:
    out = []
    for name, params in _SIGNATURE.findall(source):
        plist = [p.strip() for p in params.split(",") if p.strip()]
        names = [re.findall(r"\w+", p)[-1] for p in plist]
        out.append(
            f'extern "C" void emu_{name}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, '
            f"unsigned bz, unsigned long long shm, {', '.join(plist)}) {{\n"
            f"  emu_launch({name}, gx, gy, gz, bx, by, bz, shm, {', '.join(names)});\n}}\n"
        )
    return "\n".join(out)


@functools.lru_cache(maxsize=32)
def build(sources: tuple[str, ...]) -> ctypes.CDLL:
    """Compile ``sources`` into one shared library with the prelude (cached per set of sources;
    one translation unit, because parsing the C++ thread headers dominates the build time)."""
    bodies = [src.replace("extern __shared__ double sh[];", "double* sh = emu_dynamic_shared;") for src in sources]
    text = PRELUDE + "\n".join(bodies) + "\n" + "\n".join(_wrappers(src) for src in sources)
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


class EmuArray:
    """Stand-in for ``_cuda.DeviceArray``: host memory, same interface."""

    def __init__(self, shape: tuple[int, ...], dtype: Any):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.host = np.empty(max(1, int(np.prod(self.shape))), self.dtype)
        self.ptr = ctypes.c_void_p(self.host.ctypes.data)

    @classmethod
    def from_host(cls, array: np.ndarray) -> EmuArray:
        host = np.ascontiguousarray(array)
        dev = cls(host.shape, host.dtype)
        dev.host[: host.size] = host.reshape(-1)
        return dev

    def fill_nan(self) -> EmuArray:
        self.host.view(np.uint8)[:] = 0xFF
        return self

    def to_host(self) -> np.ndarray:
        return self.host[: int(np.prod(self.shape))].reshape(self.shape).copy()

    def free(self) -> None:
        pass


def get_function(source: str, name: str) -> Any:
    return getattr(build(_GROUPS.get(source, (source,))), f"emu_{name}")


def launch(function: Any, grid: tuple[int, ...], block: tuple[int, ...], args: list[tuple[Any, Any]],
           shared_bytes: int = 0, stream: Any = 0) -> None:
    gx, gy, gz = (*grid, 1, 1)[:3]
    bx, by, bz = (*block, 1, 1)[:3]
    values = [v if t is None else t(v) for v, t in args]
    function(*(ctypes.c_uint(int(v)) for v in (gx, gy, gz, bx, by, bz)), ctypes.c_ulonglong(shared_bytes), *values)


def patch(monkeypatch: Any, module: Any) -> None:
    """Make a CUDA-tier module launch on the emulator (pytest ``monkeypatch``); its
    ``SOURCES`` (if any) are built as one library."""
    group = tuple(getattr(module, "SOURCES", {}).values())
    for source in group:
        _GROUPS[source] = group
    monkeypatch.setattr(module, "DeviceArray", EmuArray)
    monkeypatch.setattr(module, "get_function", get_function)
    monkeypatch.setattr(module, "launch", launch)
