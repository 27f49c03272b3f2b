"""Tier selection shared by every kernel op."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
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


#: a tier's module, or a function that imports it on first use
TierModule = ModuleType | Callable[[], ModuleType]


class KernelOp:
    """One fused operation with an implementation per tier.

    ``tiers`` maps a tier to its module, or to a function that imports the module on first
    use (the triton and cuda tiers, so that a CPU-only install never imports triton or
    cuda-python); every import is an explicit statement a reader can follow. The op's
    implementation is the module's ``function``. A tier module may define
    ``unavailable_reason() -> str | None`` to say why it cannot run here.
    """

    def __init__(self, name: str, function: str, tiers: Mapping[str, TierModule]):
        unknown = set(tiers) - set(TIERS)
        if unknown:
            raise ValueError(f"{name}: unknown tiers {sorted(unknown)}")
        self.name = name
        self.function = function
        self.tiers = dict(tiers)
        self._cache: dict[str, Callable[..., Any]] = {}

    def load(self, tier: str) -> Callable[..., Any]:
        """Import one tier's implementation or raise ``KernelUnavailableError`` saying why."""
        if tier in self._cache:
            return self._cache[tier]
        if tier not in self.tiers:
            raise KernelUnavailableError(
                f"kernel {self.name!r} has no {tier!r} tier; it has {sorted(self.tiers)}"
            )
        module = self.tiers[tier]
        if not isinstance(module, ModuleType):
            try:
                module = module()
            except ImportError as exc:
                raise KernelUnavailableError(f"kernel {self.name!r} tier {tier!r} cannot be imported: {exc}") from exc
        reason = getattr(module, "unavailable_reason", lambda: None)()
        if reason:
            raise KernelUnavailableError(f"kernel {self.name!r} tier {tier!r} cannot run here: {reason}")
        fn = getattr(module, self.function)
        self._cache[tier] = fn
        return fn

    def resolve(self, tier: str = "auto", *, device: bool = False) -> tuple[str, Callable[..., Any]]:
        """Pick the tier to run: explicit (or forced by env) must work; ``auto`` falls back."""
        used = resolve_tier(tier, (self,), device=device)
        return used, self.load(used)

    def available(self) -> dict[str, str | None]:
        """Tier -> ``None`` if it can run here, else the reason it cannot."""
        out: dict[str, str | None] = {}
        for tier in self.tiers:
            try:
                self.load(tier)
                out[tier] = None
            except KernelUnavailableError as exc:
                out[tier] = str(exc)
        return out


def resolve_tier(tier: str, ops: Sequence[KernelOp], *, device: bool = False) -> str:
    """The one tier that runs every op of ``ops`` (a detector resolves its kernels once, at construction).

    An explicit tier (or one forced by ``EDGESENTRY_KERNELS``) must load for every op, else
    ``KernelUnavailableError`` says why; ``auto`` takes the first tier of the host order
    (cpu, reference) or, for device data, the device order (triton, cuda, cpu, reference)
    that every op can run.
    """
    wanted = requested_tier(tier)
    if not ops:  # nothing to run (a graph-only or test detector): the request stands as given
        return wanted
    if wanted != "auto":
        for op in ops:
            op.load(wanted)
        return wanted
    errors = []
    for candidate in _DEVICE_ORDER if device else _HOST_ORDER:
        try:
            for op in ops:
                op.load(candidate)
        except KernelUnavailableError as exc:
            errors.append(str(exc))
            log.debug("auto tier skipped: %s", exc)
            continue
        return candidate
    names = ", ".join(op.name for op in ops)
    raise KernelUnavailableError(f"no tier of kernel(s) {names} can run here: {'; '.join(errors)}")


def tier_status() -> dict[str, str | None]:
    """Whether each GPU/compiled tier's machinery can run here (None = yes)."""
    from edgesentry.kernels import _cuda, _triton

    return {
        "reference": None,
        "cpu": _cpu_reason(),
        "triton": _triton.unavailable_reason(),
        "cuda": _cuda.unavailable_reason(),
    }


def _cpu_reason() -> str | None:
    try:
        from edgesentry.kernels import _cpu_rx  # noqa: F401
    except ImportError as exc:
        return f"compiled CPU kernels not built ({exc}); reinstall with `pip install -e .`"
    return None
