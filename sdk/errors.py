"""One exception tree for every user-facing failure.

Each message says what was expected, what came, and, where it helps, what to do next.
``EdgesentryError`` is what the CLI turns into one clear line and exit code 1; anything
else escaping the package is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any


class EdgesentryError(Exception):
    """Base class of every error edgesentry raises on purpose."""


class InputError(EdgesentryError, ValueError):
    """The data given to a detector or kernel has the wrong shape, dtype, values or kind."""


class ConfigError(EdgesentryError, ValueError):
    """An option, mode or argument combination is not valid."""


class BundleError(EdgesentryError):
    """A bundle is missing, unreadable, corrupt or of an unknown schema."""


class ChecksumError(BundleError):
    """A bundle file does not match the sha256 recorded in ``meta.json``."""


class WeightsError(EdgesentryError):
    """A checkpoint does not fit the architecture (missing, unexpected or mis-shaped keys)."""


class BackendUnavailableError(EdgesentryError, RuntimeError):
    """A requested inference backend (torch, onnxruntime, tensorrt) cannot run here."""


class KernelUnavailableError(EdgesentryError, RuntimeError):
    """A requested kernel tier (cpu, triton, cuda) cannot run here."""


class CallOrderError(EdgesentryError, RuntimeError):
    """A method was called before the step it depends on."""


def describe(value: Any) -> str:
    """Short description of a received value for error messages (type, shape, dtype)."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None:
        return f"{type(value).__name__} of shape {tuple(shape)} and dtype {dtype}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of length {len(value)}"
    return f"{type(value).__name__} {value!r}"[:200]
