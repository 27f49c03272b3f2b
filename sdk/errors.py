"""One exception tree for every user-facing failure.

Each message says what was expected, what came, and, where it helps, what to do next.
``EdgesentryError`` is what the CLI turns into one clear line and exit code 1; anything
else escaping the package is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
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


class SignatureError(BundleError):
    """A bundle's signature is missing, malformed, by an untrusted or revoked key, or does not
    match the bundle's files (OpenSSF model signing, ``edgesentry.signing``)."""


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


# ------------------------------------------------------------------- how options are spelt
#: option name -> its spelling on the command line (a function of the value), set while a CLI
#: verb runs (``spelling``); ``None`` = Python spelling.
_CLI_WORDS: ContextVar[Mapping[str, Callable[[Any], str]] | None] = ContextVar("edgesentry_cli_words", default=None)


def option(name: str, value: Any = ...) -> str:
    """How the user spells option ``name`` (set to ``value``) in an error message.

    In Python that is the keyword argument (``trim=True``); while a command-line verb runs it
    is the flag the CLI registered for it (``--trim``), so every message tells the user what
    to type where they are. Options the CLI does not offer keep their Python spelling.
    """
    words = _CLI_WORDS.get()
    if words is not None and name in words:
        return words[name](None if value is ... else value)
    return f"{name}=..." if value is ... else f"{name}={value!r}"


@contextmanager
def spelling(words: Mapping[str, Callable[[Any], str]]) -> Iterator[None]:
    """Spell options with ``words`` (option name -> flag for a value) inside the block."""
    token = _CLI_WORDS.set(words)
    try:
        yield
    finally:
        _CLI_WORDS.reset(token)


def cli_active() -> bool:
    """True while a command-line verb runs (messages name flags, not Python arguments)."""
    return _CLI_WORDS.get() is not None
