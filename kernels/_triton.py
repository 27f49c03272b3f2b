"""Shared helpers of the Triton tier: availability, tensor staging, launch settings."""

from __future__ import annotations

import os
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
        t = torch.from_numpy(np.ascontiguousarray(x)).to(device())
    elif isinstance(x, torch.Tensor):
        t = x if x.device.type == "cuda" or interpreting() else x.to(device())
    else:
        raise KernelUnavailableError(f"triton tier takes numpy arrays or torch tensors; got {type(x).__name__}")
    if dtype is not None:
        t = t.to(dtype)
    return t.contiguous()


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


def compile_kernels(kernels: dict[str, tuple[Any, dict[str, str], dict[str, Any]]], arch: str) -> dict[str, bytes]:
    """Ahead-of-time compile ``name -> (jit function, signature, constexprs)`` for ``arch``
    (``"sm_90"``) -> name -> cubin. Needs no GPU (Triton ships ptxas), but the real compiler:
    not in a process where ``TRITON_INTERPRET=1`` (the interpreter replaces the kernels)."""
    from triton import compile as triton_compile
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if interpreting():
        raise RuntimeError("AOT compilation needs a process without TRITON_INTERPRET=1")
    target = GPUTarget("cuda", int(arch.removeprefix("sm_")), 32)
    return {name: triton_compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                                 target=target).asm["cubin"]
            for name, (fn, signature, constexprs) in kernels.items()}
