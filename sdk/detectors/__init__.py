"""Family registry: name -> the module implementing that family's detector.

A family module provides:

- ``build(**options) -> Detector``: a detector without a bundle (weight-free families such
  as ``rx``; others raise ``ConfigError`` saying a bundle is needed);
- ``from_bundle(bundle, **options) -> Detector``;
- ``convert(..., output=PATH, **options) -> Bundle``: trained weights -> bundle (the Python
  twin of ``edgesentry convert``; the command line itself lives in ``edgesentry.cli.families``);
- ``DETECTOR``: the family's ``Detector`` subclass (its input kinds and file suffixes);
- ``SERVING_INPUTS`` / ``serving_feed(x, **options)`` for families a Triton repository serves:
  the ensemble's raw inputs, and how a client turns what ``predict`` accepts into them.

The modules are imported on first use, by the explicit imports in ``family_module``, and they
import torch (or ONNX Runtime) lazily, so ``import edgesentry``, ``edgesentry info`` and the
weight-free families work on a minimal install.
"""

from __future__ import annotations

from types import ModuleType

from edgesentry.errors import ConfigError

FAMILIES: tuple[str, ...] = ("rx", "fers", "isstad", "mavd", "mdmf")


def family_module(name: str) -> ModuleType:
    """The module of family ``name`` (``ConfigError`` for an unknown family)."""
    if name not in FAMILIES:
        raise ConfigError(f"unknown detector family {name!r}; expected one of {sorted(FAMILIES)}")
    from edgesentry.detectors import fers, isstad, mavd, mdmf, rx

    return {"rx": rx, "fers": fers, "isstad": isstad, "mavd": mavd, "mdmf": mdmf}[name]
