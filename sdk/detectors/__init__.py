"""Family registry: name -> module implementing that family's detector.

A family module provides:

- ``build(**options) -> Detector``: a detector without a bundle (weight-free families such
  as ``rx``; others raise ``ConfigError`` saying a bundle is needed);
- ``from_bundle(bundle, **options) -> Detector``;
- ``convert(..., output=PATH, **options) -> Bundle``: the Python twin of ``edgesentry convert``;
- ``add_convert_arguments(parser)`` / ``convert_from_args(args)`` and
  ``add_detect_arguments(parser)`` / ``detect_from_args(args) -> int`` for the CLI.

Modules are imported on first use, and import torch (or ONNX Runtime) lazily, so that
``edgesentry info`` and the weight-free families work on a minimal install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from edgesentry.errors import ConfigError

FAMILIES: dict[str, str] = {
    "rx": "edgesentry.detectors.rx",
    "fers": "edgesentry.detectors.fers",
    "isstad": "edgesentry.detectors.isstad",
    "mavd": "edgesentry.detectors.mavd",
    "mdmf": "edgesentry.detectors.mdmf",
}


def family_module(name: str) -> ModuleType:
    """Import the module of family ``name`` (``ConfigError`` for an unknown family)."""
    if name not in FAMILIES:
        raise ConfigError(f"unknown detector family {name!r}; expected one of {sorted(FAMILIES)}")
    return importlib.import_module(FAMILIES[name])
