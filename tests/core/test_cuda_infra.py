"""The CUDA-tier machinery of ``kernels/_cuda.py``: NVRTC compilation, caching, errors, availability."""

from __future__ import annotations

import ctypes.util

import pytest

from edgesentry.errors import KernelUnavailableError
from edgesentry.kernels import _cuda

NVRTC_REASON = _cuda.nvrtc_unavailable_reason()
needs_nvrtc = pytest.mark.skipif(NVRTC_REASON is not None, reason=f"NVRTC unavailable: {NVRTC_REASON}")

TINY = r"""
extern "C" __global__ void edgesentry_scale(double* x, double factor, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] *= factor;
}
"""


@needs_nvrtc
@pytest.mark.parametrize("arch", _cuda.TARGET_ARCHS)
def test_compile_gives_an_elf_cubin_with_the_kernel(arch):
    cubin = _cuda.compile_cubin(TINY, arch=arch)
    assert cubin[:4] == b"\x7fELF"
    assert b"edgesentry_scale" in cubin


@needs_nvrtc
def test_compile_is_cached_per_source_and_arch():
    source = TINY.replace("edgesentry_scale", "edgesentry_scale_cached")
    before = _cuda._build_cached.cache_info()
    first = _cuda.compile_cubin(source, arch="sm_90")
    second = _cuda.compile_cubin(source, arch="sm_90")
    after = _cuda._build_cached.cache_info()
    assert second is first  # the cached object, not a second compilation
    assert after.misses == before.misses + 1 and after.hits == before.hits + 1
    other = _cuda.compile_cubin(source, arch="sm_87")  # another arch is another entry
    assert other is not first and _cuda._build_cached.cache_info().misses == before.misses + 2


@needs_nvrtc
def test_targets_give_different_cubins():
    assert _cuda.compile_cubin(TINY, arch="sm_87") != _cuda.compile_cubin(TINY, arch="sm_90")


@needs_nvrtc
@pytest.mark.parametrize("arch", ["87", "gfx90a", ""])
def test_arch_without_sm_prefix_is_refused(arch):
    with pytest.raises(KernelUnavailableError, match=r"arch must look like 'sm_87'; got"):
        _cuda.compile_cubin(TINY, arch=arch)


@needs_nvrtc
def test_unknown_sm_arch_reports_the_nvrtc_option_error():
    with pytest.raises(KernelUnavailableError) as info:
        _cuda.compile_cubin(TINY, arch="sm_1")
    assert "NVRTC failed to compile for sm_1" in str(info.value)
    assert "--gpu-architecture" in str(info.value)


@needs_nvrtc
def test_syntax_error_message_holds_the_log_line():
    with pytest.raises(KernelUnavailableError) as info:
        _cuda.compile_cubin(TINY.replace("x[i] *= factor;", "x[i] *= factr;"), arch="sm_87")
    assert 'identifier "factr" is undefined' in str(info.value)


def test_unavailable_reason_says_why_without_a_gpu():
    reason = _cuda.unavailable_reason()
    if reason is None:
        pytest.skip("a CUDA device is present; nothing to explain")
    assert isinstance(reason, str)
    if ctypes.util.find_library("cuda") is None:  # no libcuda: this CPU machine, CI
        assert "NVIDIA driver" in reason
    else:
        assert any(word in reason for word in ("cuInit failed", "no CUDA device", "cuda-python"))


def test_running_without_a_gpu_raises_typed_error():
    if _cuda.unavailable_reason() is None:
        pytest.skip("a CUDA device is present")
    with pytest.raises(KernelUnavailableError, match="cuda tier cannot run here"):
        _cuda.DeviceArray((4,), "float64")


def test_public_dispatch_names_the_reason_when_cuda_is_forced():
    import numpy as np

    from edgesentry.kernels.rx import global_rx

    if _cuda.unavailable_reason() is None:
        pytest.skip("a CUDA device is present")
    with pytest.raises(KernelUnavailableError, match=r"tier 'cuda' cannot run here"):
        global_rx(np.zeros((4, 2)), tier="cuda")


def test_source_hash_is_stable_and_short():
    assert _cuda.source_hash(TINY) == _cuda.source_hash(TINY)
    assert _cuda.source_hash(TINY) != _cuda.source_hash(TINY + " ")
    assert len(_cuda.source_hash(TINY)) == 16


@needs_nvrtc
def test_versions_line_names_driver_and_nvrtc():
    line = _cuda.versions()
    assert "NVRTC " in line and "(a cubin needs a driver" in line
    if ctypes.util.find_library("cuda") is None:
        assert line.startswith("no driver, ")
