"""Tier selection shared by every kernel op."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from typing import Any

from edgesentry.errors import ConfigError, KernelUnavailableError

log = logging.getLogger("edgesentry.kernels")

TIERS = ("reference", "cpu", "triton", "cuda")
ENV_VAR = "EDGESENTRY_KERNELS"
_HOST_ORDER = ("cpu", "reference")
_DEVICE_ORDER = ("triton", "cuda", "cpu", "reference")


def validate_tier(tier: str) -> str:
    if tier != "auto" and tier not in TIERS:
        raise ConfigError(f"unknown kernel tier {tier!r}; expected 'auto' or one of {list(TIERS)}")
    return tier


def requested_tier(tier: str = "auto") -> str:
    """The tier asked for, after the ``EDGESENTRY_KERNELS`` override of ``auto``."""
    validate_tier(tier)
    if tier == "auto":
        forced = os.environ.get(ENV_VAR, "auto").strip() or "auto"
        if forced != "auto" and forced not in TIERS:
            raise ConfigError(f"{ENV_VAR}={forced!r} is not a kernel tier; expected one of {list(TIERS)} or 'auto'")
        return forced
    return tier


def on_device(x: Any) -> bool:
    """True for torch tensors on a CUDA device (the only device data the tiers take)."""
    return type(x).__module__.startswith("torch") and getattr(getattr(x, "device", None), "type", "") == "cuda"


class KernelOp:
    """One fused operation with an implementation per tier.

    ``impls`` maps a tier to ``"module:function"``; modules are imported on first use so
    that a CPU-only install never imports triton or cuda-python. A tier module may define
    ``unavailable_reason() -> str | None`` to say why it cannot run here.
    """

    def __init__(self, name: str, impls: dict[str, str]):
        unknown = set(impls) - set(TIERS)
        if unknown:
            raise ValueError(f"{name}: unknown tiers {sorted(unknown)}")
        self.name = name
        self.impls = dict(impls)
        self._cache: dict[str, Callable[..., Any]] = {}

    def load(self, tier: str) -> Callable[..., Any]:
        """Import one tier's implementation or raise ``KernelUnavailableError`` saying why."""
        if tier in self._cache:
            return self._cache[tier]
        if tier not in self.impls:
            raise KernelUnavailableError(
                f"kernel {self.name!r} has no {tier!r} tier; it has {sorted(self.impls)}"
            )
        module_name, func_name = self.impls[tier].split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise KernelUnavailableError(f"kernel {self.name!r} tier {tier!r} cannot be imported: {exc}") from exc
        reason = getattr(module, "unavailable_reason", lambda: None)()
        if reason:
            raise KernelUnavailableError(f"kernel {self.name!r} tier {tier!r} cannot run here: {reason}")
        fn = getattr(module, func_name)
        self._cache[tier] = fn
        return fn

    def resolve(self, tier: str = "auto", *, device: bool = False) -> tuple[str, Callable[..., Any]]:
        """Pick the tier to run: explicit (or forced by env) must work; ``auto`` falls back."""
        wanted = requested_tier(tier)
        if wanted != "auto":
            return wanted, self.load(wanted)
        errors = []
        for candidate in _DEVICE_ORDER if device else _HOST_ORDER:
            if candidate not in self.impls:
                continue
            try:
                return candidate, self.load(candidate)
            except KernelUnavailableError as exc:
                errors.append(str(exc))
                log.debug("auto tier skipped: %s", exc)
        raise KernelUnavailableError(f"no tier of kernel {self.name!r} can run here: {'; '.join(errors)}")

    def available(self) -> dict[str, str | None]:
        """Tier -> ``None`` if it can run here, else the reason it cannot."""
        out: dict[str, str | None] = {}
        for tier in self.impls:
            try:
                self.load(tier)
                out[tier] = None
            except KernelUnavailableError as exc:
                out[tier] = str(exc)
        return out


def tier_status() -> dict[str, str | None]:
    """Whether each GPU/compiled tier's machinery can run here (None = yes)."""
    from . import _cuda, _triton

    return {
        "reference": None,
        "cpu": _cpu_reason(),
        "triton": _triton.unavailable_reason(),
        "cuda": _cuda.unavailable_reason(),
    }


def _cpu_reason() -> str | None:
    try:
        importlib.import_module("edgesentry.kernels._cpu_rx")
    except ImportError as exc:
        return f"compiled CPU kernels not built ({exc}); reinstall with `pip install -e .`"
    return None
