"""Top-level entry points: ``load`` and ``convert``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgesentry.bundle import Bundle
from edgesentry.detector import Detector
from edgesentry.detectors import FAMILIES, family_module
from edgesentry.errors import BundleError, ConfigError


def load(name_or_bundle: str | os.PathLike | Bundle, **options: Any) -> Detector:
    """Build a detector from a family name or a bundle directory.

    Args:
        name_or_bundle: a weight-free family name (``"rx"``), or the path of a bundle made
            by ``edgesentry convert`` (or an opened ``Bundle``).
        **options: family options, e.g. ``mode="local", window=(3, 9)`` for RX; for bundles
            ``backend="auto"|"torch"|"onnxruntime"|"tensorrt"`` and
            ``kernels="auto"|"reference"|"cpu"|"triton"|"cuda"``, plus ``threshold=``.

    Raises:
        ConfigError: unknown family or option.
        BundleError: the path is not a valid bundle (missing, corrupt, tampered, wrong schema).
        BackendUnavailableError: the requested backend cannot run here.
    """
    if isinstance(name_or_bundle, Bundle):
        return _call(family_module(name_or_bundle.family).from_bundle, name_or_bundle.family, name_or_bundle, **options)
    target = os.fspath(name_or_bundle)
    if target in FAMILIES and not Path(target).exists():
        return _call(family_module(target).build, target, **options)
    path = Path(target)
    if not path.exists():
        raise ConfigError(
            f"{target!r} is neither a family name ({', '.join(sorted(FAMILIES))}) nor an existing bundle directory"
        )
    bundle = Bundle.open(path)
    if bundle.family not in FAMILIES:
        raise BundleError(f"bundle {path} is of unknown family {bundle.family!r}; expected one of {sorted(FAMILIES)}")
    return _call(family_module(bundle.family).from_bundle, bundle.family, bundle, **options)


def _call(builder: Any, family: str, *args: Any, **options: Any) -> Detector:
    """Call a family builder; an option it does not take is a ``ConfigError`` naming it."""
    try:
        return builder(*args, **options)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise ConfigError(f"family {family!r} does not take that option: {exc}") from None


def convert(family: str, *args: Any, **kwargs: Any) -> Bundle:
    """Convert trained weights into a bundle (Python twin of ``edgesentry convert FAMILY``).

    The arguments are the family's; see ``edgesentry.detectors.<family>.convert``.
    """
    module = family_module(family)
    if not hasattr(module, "convert"):
        raise ConfigError(f"family {family!r} has no converter")
    return module.convert(*args, **kwargs)
