"""Shared helpers of the Triton tier: availability, tensor staging, launch settings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesentry.errors import KernelUnavailableError

MAX_FUSED_SIZE = 65536


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def unavailable_reason() -> str | None:
    try:
        import torch
        import triton  # noqa: F401
    except ImportError as exc:
        return f"triton/torch not installed ({exc.name}); `pip install edgesentry[torch,gpu]`"
    if not torch.cuda.is_available() and not interpreting():
        return "no CUDA device (set TRITON_INTERPRET=1 to run the Triton kernels on the CPU interpreter)"
    return None


def device() -> Any:
    import torch

    return torch.device("cuda") if torch.cuda.is_available() and not interpreting() else torch.device("cpu")


def to_tensor(x: Any, dtype: Any = None) -> Any:
    """A contiguous torch tensor on the Triton device (numpy in, or torch passed through)."""
    import torch

    if isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
        dev = device()
        # host arrays go up through torch's caching pinned allocator (async copy on the current
        # stream), not a pageable copy; under the interpreter the "device" is the CPU
        t = t.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else t
    elif isinstance(x, torch.Tensor):
        t = x if x.device.type == "cuda" or interpreting() else x.to(device())
    else:
        raise KernelUnavailableError(f"triton tier takes numpy arrays or torch tensors; got {type(x).__name__}")
    if dtype is not None:
        t = t.to(dtype)
    return t.contiguous()


def poison_enabled() -> bool:
    """``EDGESENTRY_POISON=1`` (tests): outputs start as NaN so an element a kernel never writes fails."""
    return os.environ.get("EDGESENTRY_POISON", "0") == "1"


def empty(shape: Any, dtype: Any, device: Any) -> Any:
    """An output tensor: uninitialised on the hot path, NaN-filled under ``EDGESENTRY_POISON=1``."""
    import torch

    out = torch.empty(shape, dtype=dtype, device=device)
    return out.fill_(float("nan")) if poison_enabled() else out


def to_like(t: Any, like: Any) -> Any:
    """Return ``t`` as numpy if ``like`` was numpy, else as a tensor."""
    if isinstance(like, np.ndarray):
        return t.detach().cpu().numpy()
    return t


def next_power_of_2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def calculate_settings(n: int) -> tuple[int, int]:
    """Block size (next power of two) and warp count for a row of ``n`` elements."""
    block = next_power_of_2(n)
    if block > MAX_FUSED_SIZE:
        raise KernelUnavailableError(
            f"row of {n} elements exceeds the fused limit of {MAX_FUSED_SIZE} elements per program"
        )
    num_warps = 4
    if block >= 32768:
        num_warps = 32
    elif block >= 8192:
        num_warps = 16
    elif block >= 2048:
        num_warps = 8
    return block, num_warps


# ----------------------------------------------------------------------------- ahead of time
#: Shared memory a block may use (opt-in maximum): Jetson Orin (sm_87) 163 KiB, Hopper (sm_90) 227 KiB.
MAX_SHARED_BYTES = {87: 163 * 1024, 90: 227 * 1024}
#: Jetson Orin and Hopper, as Triton capabilities.
TARGET_CAPABILITIES = (87, 90)


@dataclass(frozen=True)
class AotConfig:
    """One Triton kernel at one launch setting (its signature types, constexprs and warps), as the
    launcher uses it: compiled ahead of time for every target without a GPU."""

    kernel: str
    signature: dict[str, str]
    constexprs: dict[str, Any]
    num_warps: int = 4

    @property
    def label(self) -> str:
        consts = ",".join(f"{k}={v}" for k, v in self.constexprs.items())
        return f"{self.kernel}[{consts},warps={self.num_warps}]"


@dataclass(frozen=True)
class AotResult:
    label: str
    capability: int
    cubin_bytes: int
    shared_bytes: int
    registers: int
    spill_stores: int
    spill_loads: int
    stack_bytes: int

    @property
    def ok(self) -> bool:
        """No spills and the shared memory fits the target."""
        return (self.spill_stores == 0 and self.spill_loads == 0
                and self.shared_bytes <= MAX_SHARED_BYTES.get(self.capability, 48 * 1024))


def compile_ahead(fn: Any, config: AotConfig, capability: int) -> AotResult:
    """Lower ``fn`` (a ``@triton.jit`` function) for ``sm_<capability>`` and read ``ptxas -v``.

    Needs no GPU (Triton ships ptxas) but the real compiler: it cannot run where
    ``TRITON_INTERPRET=1`` (the interpreter replaces the kernels at import).
    """
    import contextlib
    import io

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from edgesentry.kernels._cuda import parse_ptxas_log

    if interpreting():
        raise RuntimeError("compile_ahead needs a process without TRITON_INTERPRET=1")
    signature = {**config.signature, **{k: "constexpr" for k in config.constexprs}}
    source = ASTSource(fn=fn, signature=signature, constexprs=dict(config.constexprs))
    # Triton runs ptxas with -v itself (backends/nvidia/compiler.py: make_cubin) and prints the log
    # when TRITON_DUMP_PTXAS_LOG is set; its cache would skip ptxas, hence a fresh cache folder.
    log = io.StringIO()
    env = {"TRITON_DUMP_PTXAS_LOG": "1", "TRITON_ALWAYS_COMPILE": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(source, target=GPUTarget("cuda", capability, 32),
                                      options={"num_warps": config.num_warps})
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    usage = parse_ptxas_log(log.getvalue())
    (res,) = usage.values() if len(usage) == 1 else (max(usage.values(), key=lambda r: r.registers),)
    return AotResult(config.label, capability, len(compiled.asm["cubin"]), int(compiled.metadata.shared),
                     res.registers, res.spill_stores, res.spill_loads, res.stack_bytes)


def compile_module_ahead(module: Any, capabilities: tuple[int, ...] = TARGET_CAPABILITIES) -> list[AotResult]:
    """Every ``module.AOT_CONFIGS`` entry for every capability."""
    return [compile_ahead(getattr(module, c.kernel), c, cap) for cap in capabilities for c in module.AOT_CONFIGS]
