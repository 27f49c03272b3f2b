"""The cuda tier's first-run guarantees, checked without a GPU (``kernels/_cuda.py``).

- Versions: a CUDA 12 driver with NVRTC 13 is refused up front, in one line naming both
  versions and the fix; a cubin the driver refuses is retried as PTX (stubbed driver).
- Host data never reaches a kernel as a device pointer: every op is given CPU torch tensors on
  the CPU emulator, whose runtime faults (``IllegalAddress``) on any pointer outside device
  memory, as the GPU does with ``CUDA_ERROR_ILLEGAL_ADDRESS``.
- Device-resident calls: device arrays (``__cuda_array_interface__``) are used in place and the
  outputs stay on the device.
- Streams: every allocation, copy and launch of every op goes to the caller's stream.
- The NVRTC disk cache: keys, corrupt files, concurrent writers.

Tolerances as in each family's kernel tests (float64 RX: 1e-8 relative; float32 kernels:
their float32 accumulation against float64 references).
"""

from __future__ import annotations

import ast
import multiprocessing
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgesentry.errors import InputError, KernelUnavailableError
from edgesentry.kernels import _cuda
from tests.rx import _cuda_emulator as emu
from tests.utils import assert_verbose_allclose

ROOT = Path(__file__).resolve().parents[2]
NVRTC_REASON = _cuda.nvrtc_unavailable_reason()
needs_nvrtc = pytest.mark.skipif(NVRTC_REASON is not None, reason=f"NVRTC unavailable: {NVRTC_REASON}")
needs_emulator = pytest.mark.skipif(emu.available() is not None, reason=f"CPU emulator: {emu.available()}")
torch = pytest.importorskip("torch")


# ----------------------------------------------------------------------------- versions
@pytest.mark.parametrize(("driver", "nvrtc", "refused"), [
    ((12, 6), (13, 5), True),  # JetPack 6 with the package index's NVRTC: the first-run failure
    ((12, 2), (12, 9), False),  # minor-version compatibility inside a major
    ((13, 0), (13, 5), False),
    ((13, 1), (12, 6), False),  # an older NVRTC is always fine
    ((11, 8), (12, 4), True),
])
def test_version_mismatch_rule(driver, nvrtc, refused):
    line = _cuda.version_mismatch(driver, nvrtc)
    assert (line is not None) == refused
    if refused:
        assert f"NVRTC {nvrtc[0]}.{nvrtc[1]}" in line and f"CUDA {driver[0]}.{driver[1]}" in line
        assert "\n" not in line


class FakeDriver:
    """The parts of ``cuda.bindings.driver`` the tier calls, for a device that is not here."""

    def __init__(self, monkeypatch, version: int, refuse_cubins: bool = False):
        from cuda.bindings import driver

        self.ok = driver.CUresult.CUDA_SUCCESS
        self.loaded: list[bytes] = []
        self.refuse_cubins = refuse_cubins
        for name in ("cuInit", "cuDeviceGetCount", "cuDriverGetVersion", "cuDeviceGet", "cuDeviceGetAttribute",
                     "cuDevicePrimaryCtxRetain", "cuCtxSetCurrent", "cuDeviceGetDefaultMemPool",
                     "cuMemPoolSetAttribute", "cuModuleLoadData", "cuModuleGetFunction", "cuGetErrorName"):
            monkeypatch.setattr(driver, name, getattr(self, name))
        self.version = version
        for cached in (_cuda.context, _cuda.get_function, _cuda._supported_archs):
            cached.cache_clear()
        monkeypatch.setattr(_cuda, "_RUNTIME", None)

    def cuInit(self, flags):
        return (self.ok,)

    def cuDeviceGetCount(self):
        return self.ok, 1

    def cuDriverGetVersion(self):
        return self.ok, self.version

    def cuDeviceGet(self, ordinal):
        return self.ok, 0

    def cuDeviceGetAttribute(self, attr, dev):
        name = getattr(attr, "name", str(attr))
        return self.ok, {"CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR": 8,
                         "CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR": 7}.get(name, 1)

    def cuDevicePrimaryCtxRetain(self, dev):
        return self.ok, "ctx"

    def cuCtxSetCurrent(self, ctx):
        return (self.ok,)

    def cuDeviceGetDefaultMemPool(self, dev):
        return self.ok, "pool"

    def cuMemPoolSetAttribute(self, pool, attr, value):
        return (self.ok,)

    def cuModuleLoadData(self, image):
        from cuda.bindings import driver

        self.loaded.append(bytes(image[:4]))
        if self.refuse_cubins and bytes(image[:4]) == b"\x7fELF":
            return driver.CUresult.CUDA_ERROR_NO_BINARY_FOR_GPU, None
        return self.ok, "module"

    def cuGetErrorName(self, err):
        return self.ok, err.name.encode()

    def cuModuleGetFunction(self, module, name):
        return self.ok, ("function", name)


@needs_nvrtc
def test_cuda12_driver_refuses_nvrtc13_with_one_clear_line(monkeypatch, rng):
    """JetPack 6 (CUDA 12.6 driver) with NVRTC 13 from the package index: the public call says
    what is wrong and what to install, before any device work (``kernels/_cuda.py``)."""
    from edgesentry.kernels.rx import global_rx

    FakeDriver(monkeypatch, version=12060)
    monkeypatch.setattr(_cuda, "nvrtc_version", lambda: (13, 5))
    with pytest.raises(KernelUnavailableError) as info:
        global_rx(rng.normal(size=(20, 3)), tier="cuda")
    message = str(info.value)
    assert "NVRTC 13.5" in message and "CUDA 12.6 driver cannot load" in message
    assert "edgesentry[gpu-cu12]" in message and "edgesentry[jetson]" in message
    assert _cuda.unavailable_reason() == _cuda.version_mismatch((12, 6), (13, 5))


@needs_nvrtc
def test_refused_cubin_is_retried_as_ptx_for_the_driver_jit(monkeypatch):
    fake = FakeDriver(monkeypatch, version=13050, refuse_cubins=True)
    source = 'extern "C" __global__ void es_ptx_probe(float* x) { x[threadIdx.x] = 1.0f; }'
    assert _cuda.get_function(source, "es_ptx_probe") == ("function", b"es_ptx_probe")
    assert fake.loaded[0] == b"\x7fELF" and fake.loaded[1].startswith(b"//")  # cubin refused, then PTX text


@needs_nvrtc
def test_load_failure_names_both_versions(monkeypatch):
    from cuda.bindings import driver

    fake = FakeDriver(monkeypatch, version=13050)
    monkeypatch.setattr(driver, "cuModuleLoadData", lambda image: (driver.CUresult.CUDA_ERROR_INVALID_IMAGE, None))
    with pytest.raises(KernelUnavailableError) as info:
        _cuda.get_function('extern "C" __global__ void es_bad_probe() {}', "es_bad_probe")
    assert "driver CUDA 13.5" in str(info.value) and "NVRTC" in str(info.value)
    assert fake.version == 13050


# ----------------------------------------------------------------------------- every op
@dataclass
class Op:
    """One cuda-tier op with small inputs, its reference and its comparison."""

    module: str
    call: Callable[..., Any]
    inputs: Callable[[np.random.Generator], tuple[np.ndarray, ...]]
    reference: Callable[..., Any]
    atol: float
    rtol: float
    prepare: Callable[[Any, Any], None] = field(default=lambda monkeypatch, module: None)


def _cube(rng, shape):
    return (rng.normal(size=shape) * 30 + 300).astype(np.float64)


def _fers_inputs(rng):
    x = (rng.random((1, 5, 6, 7)) * 0.2 - 0.1).astype(np.float32)
    spe = np.maximum(x * 40 + rng.random(x.shape), 0).astype(np.float32)
    spa = (rng.random(x.shape) * 2).astype(np.float32)
    return x, spe, spa


def _isstad_inputs(rng):
    heads = (rng.normal(size=(1, 2, 2, 6, 9)) * 3).astype(np.float32)
    return heads, rng.normal(size=(1, 3, 6, 9)).astype(np.float32), rng.uniform(-1, 1, (1, 3, 6, 9)).astype(np.float32)


def _small_threads(monkeypatch, module):
    if hasattr(module, "_LOCAL_THREADS"):
        monkeypatch.setattr(module, "_LOCAL_THREADS", 32)
    if hasattr(module, "FUSION_SOURCE"):  # isstad: 32-thread blocks keep the OS-thread count low
        source = "#define THREADS 32\n" + module.FUSION_SOURCE
        monkeypatch.setattr(module, "FUSION_SOURCE", source)
        monkeypatch.setattr(module, "SOURCES", {"isstad_fusion": source})


def _ops() -> dict[str, Op]:
    from edgesentry.kernels.fers import reference as fers_ref
    from edgesentry.kernels.isstad import reference as isstad_ref
    from edgesentry.kernels.mavd import reference as mavd_ref
    from edgesentry.kernels.otam import reference as otam_ref
    from edgesentry.kernels.rx import reference as rx_ref
    from tests.mavd.test_mavd_kernels import random_params

    params = random_params(np.random.default_rng(5))
    return {
        "rx.global_rx": Op("rx", lambda m, x: m.global_rx(x), lambda rng: (_cube(rng, (37, 5)),),
                           rx_ref.global_rx, 0.0, 1e-8),
        "rx.local_rx": Op("rx", lambda m, x: m.local_rx(x, inner=1, outer=5), lambda rng: (_cube(rng, (7, 6, 3)),),
                          lambda x: rx_ref.local_rx(x, inner=1, outer=5), 0.0, 1e-8, _small_threads),
        "fers.fers_rx": Op("fers", lambda m, *a: m.fers_rx(*a), _fers_inputs, fers_ref.fers_rx, 1e-6, 1e-5),
        "isstad.isstad_fusion": Op("isstad", lambda m, *a: m.isstad_fusion(*a)["pixel_map"], _isstad_inputs,
                                   lambda *a: isstad_ref.isstad_fusion(*a)["pixel_map"], 1e-3, 1e-5, _small_threads),
        "mavd.align_fuse": Op("mavd", lambda m, v, a, f: m.align_fuse(v, a, f, params),
                              lambda rng: (np.maximum(rng.standard_normal((19, 128)), 0).astype(np.float32),
                                           rng.standard_normal((19, 32)).astype(np.float32),
                                           np.maximum(rng.standard_normal((19, 64)), 0).astype(np.float32)),
                              lambda v, a, f: mavd_ref.align_fuse(v, a, f, params), 2e-5, 2e-5),
        "mavd.positional": Op("mavd", lambda m, t: m.positional(t),
                              lambda rng: (rng.standard_normal((2, 40, 33)).astype(np.float32),),
                              mavd_ref.positional, 2e-6, 2e-6),
        "otam.fuse": Op("otam", lambda m, *a: m.fuse(*a)[1],
                        lambda rng: tuple(rng.standard_normal((b, 5, 16)).astype(np.float32) for b in (2, 3, 2, 3)),
                        lambda *a: otam_ref.fuse_reference(*a)[1], 4e-4, 1e-5),
    }


OPS = _ops()


def _emulated(monkeypatch, op: Op) -> tuple[types.ModuleType, emu.EmuRuntime]:
    import importlib

    module = importlib.import_module(f"edgesentry.kernels.{op.module}.cuda")
    op.prepare(monkeypatch, module)
    return module, emu.patch(monkeypatch, module)


def _check(op: Op, got: Any, inputs: tuple[np.ndarray, ...]) -> None:
    want = np.asarray(op.reference(*inputs), dtype=np.float64)
    scale = float(np.abs(want).max()) or 1.0
    assert_verbose_allclose(emu.to_numpy(got), want, atol=op.atol * scale, rtol=op.rtol)


@needs_emulator
@pytest.mark.parametrize("name", sorted(OPS))
def test_cpu_tensors_are_staged_never_passed_as_device_pointers(monkeypatch, rng, name):
    """Finding 4: a CPU tensor's address given to a kernel faults on the GPU and poisons the
    context; the emulator faults the same way, so a pass means every input was staged."""
    op = OPS[name]
    module, rt = _emulated(monkeypatch, op)
    inputs = op.inputs(rng)
    got = op.call(module, *(torch.from_numpy(a) for a in inputs))
    assert isinstance(got, np.ndarray)  # host in, host out
    _check(op, got, inputs)
    assert ("upload", rt.OWN_STREAM) in rt.ops


@needs_emulator
def test_emulator_faults_on_a_host_pointer(monkeypatch):
    rt = emu.patch(monkeypatch)
    host = np.zeros(4)
    with pytest.raises(emu.IllegalAddress):
        rt.launch(None, (1, 1, 1), (1, 1, 1), 0, rt.OWN_STREAM, [(host.ctypes.data, _cuda.ctypes.c_void_p)])
    with pytest.raises(InputError, match="host memory, not a device pointer"):
        _cuda.address(torch.zeros(3))


@needs_emulator
@pytest.mark.parametrize("name", sorted(OPS))
def test_device_arrays_are_used_in_place_and_answers_stay_on_the_device(monkeypatch, rng, name):
    op = OPS[name]
    module, rt = _emulated(monkeypatch, op)
    inputs = op.inputs(rng)
    device_inputs = [emu.device_array(a) for a in inputs]
    got = op.call(module, *device_inputs)
    assert isinstance(got, _cuda.DeviceArray)
    _check(op, got, inputs)
    rt.ops.clear()
    _check(op, op.call(module, *device_inputs), inputs)
    # a second call uploads nothing but what it computed on the host (RX / FERS eigenvectors):
    # inputs are read in place and constant tables (weights, taps, window starts) stay cached
    assert len([o for o in rt.ops if o[0] == "upload"]) <= 2, rt.ops


@needs_emulator
@pytest.mark.parametrize("name", sorted(OPS))
def test_every_copy_and_launch_goes_to_the_callers_stream(monkeypatch, rng, name):
    """Finding 5: under ``use_stream(s)`` nothing of the op runs on another stream (legacy 0 included)."""
    op = OPS[name]
    module, rt = _emulated(monkeypatch, op)
    inputs = op.inputs(rng)
    with _cuda.use_stream(0x777):
        _check(op, op.call(module, *inputs), inputs)
    assert rt.ops and {stream for _, stream in rt.ops} == {0x777}, sorted(set(rt.ops))
    assert "launch" in {kind for kind, _ in rt.ops}


def test_torch_inputs_take_torchs_current_stream(monkeypatch):
    """A CUDA tensor's call runs on torch's current stream (the one torch queued its work on)."""
    marker = types.SimpleNamespace()
    monkeypatch.setattr(_cuda, "_is_torch_cuda", lambda x: x is marker)
    monkeypatch.setattr(_cuda, "torch_stream", lambda x: 0xABC)
    assert _cuda.caller_stream([np.zeros(2), marker]) == 0xABC
    assert _cuda.caller_stream([np.zeros(2)]) is None  # host call: the runtime's own stream
    with _cuda.use_stream(types.SimpleNamespace(cuda_stream=0x55)):  # a torch.cuda.Stream-like object
        assert _cuda.caller_stream([marker]) == 0x55  # an explicit stream wins
    assert _cuda.caller_stream([marker]) == 0xABC


def test_no_kernel_module_launches_outside_its_call():
    """Static half of finding 5: launches go through ``KernelCall.launch`` (the call's stream),
    never straight to the driver or to the stream-less helpers."""
    for path in sorted((ROOT / "kernels").glob("*/cuda.py")):
        tree = ast.parse(path.read_text())
        names = {n.attr if isinstance(n, ast.Attribute) else n.id for n in ast.walk(tree)
                 if isinstance(n, (ast.Attribute, ast.Name))}
        assert not names & {"cuLaunchKernel", "get_function", "DeviceBuffers", "cuMemcpyHtoD"}, path
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                 and n.func.attr == "launch"]
        assert calls and all(isinstance(c.func.value, ast.Name) and c.func.value.id == "call" for c in calls), path


# ----------------------------------------------------------------------------- disk cache
TINY = 'extern "C" __global__ void es_cache_probe(float* x) { x[threadIdx.x] *= 2.0f; }'


@pytest.fixture
def disk_cache(monkeypatch, tmp_path):
    monkeypatch.setenv(_cuda.CACHE_ENV, str(tmp_path))
    monkeypatch.delenv("EDGESENTRY_CUDA_CACHE", raising=False)
    _cuda._build_cached.cache_clear()
    yield tmp_path / "cuda"
    _cuda._build_cached.cache_clear()


@needs_nvrtc
def test_disk_cache_serves_a_new_process_and_keys_on_arch_and_versions(disk_cache, monkeypatch):
    first = _cuda.compile_cubin(TINY, arch="sm_90")
    files = list(disk_cache.glob("*.bin"))
    assert len(files) == 1
    _cuda._build_cached.cache_clear()  # as a new process would start
    calls = []
    monkeypatch.setattr(_cuda, "_nvrtc_compile", lambda *a: calls.append(a))
    assert _cuda.compile_cubin(TINY, arch="sm_90") == first and not calls
    keys = {_cuda.cache_key(TINY, "sm_90", (), "cubin"), _cuda.cache_key(TINY, "sm_87", (), "cubin"),
            _cuda.cache_key(TINY, "sm_90", ("-DX=1",), "cubin"), _cuda.cache_key(TINY, "sm_90", (), "ptx")}
    monkeypatch.setattr(_cuda, "nvrtc_version", lambda: (12, 9))
    keys.add(_cuda.cache_key(TINY, "sm_90", (), "cubin"))
    monkeypatch.setattr(_cuda, "driver_version", lambda: (12, 6))
    keys.add(_cuda.cache_key(TINY, "sm_90", (), "cubin"))
    assert len(keys) == 6


@needs_nvrtc
@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_corrupt_cache_file_is_rebuilt(disk_cache, damage):
    good = _cuda.compile_cubin(TINY, arch="sm_87")
    (path,) = disk_cache.glob("*.bin")
    blob = bytearray(path.read_bytes())
    if damage == "flip":
        blob[-10] ^= 0xFF
    elif damage == "truncate":
        blob = blob[: len(blob) // 2]
    else:
        blob = bytearray(b"not a cache file")
    path.write_bytes(bytes(blob))
    _cuda._build_cached.cache_clear()
    assert _cuda.compile_cubin(TINY, arch="sm_87") == good
    assert _cuda.DiskCache(disk_cache)._parse(path.read_bytes()) is not None  # rewritten whole


def test_cache_refuses_keys_that_are_not_digests(tmp_path):
    with pytest.raises(ValueError, match="sha256"):
        _cuda.DiskCache(tmp_path).path("../../etc/passwd")


def _write_many(folder: str, key: str, payload: bytes) -> None:
    cache = _cuda.DiskCache(Path(folder))
    for _ in range(50):
        cache.put(key, _cuda.Build(payload, "log"))


def test_concurrent_writers_leave_one_whole_file(tmp_path):
    key = "ab" * 32
    payloads = [bytes([i]) * 200_000 for i in (1, 2)]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(str(tmp_path), key, p)) for p in payloads]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    got = _cuda.DiskCache(tmp_path).get(key)
    assert got is not None and got.code in payloads
    assert [p.name for p in tmp_path.iterdir()] == [f"{key}.bin"]  # no temporary files left
