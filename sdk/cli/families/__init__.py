"""Per-family command-line hooks, one module a family, registered explicitly.

Each module provides ``CONVERT_HELP``, ``add_convert_arguments(parser)`` /
``convert_from_args(args) -> Bundle`` (``edgesentry convert FAMILY``) and
``add_detect_arguments(parser)`` / ``detect_from_args(args) -> int`` (``edgesentry detect
FAMILY``, over files, folders and globs through ``edgesentry.cli._detect``). The detectors know
nothing of the command line.
"""

from __future__ import annotations

from types import ModuleType

from edgesentry.cli.families import fers, isstad, mavd, mdmf, rx

FAMILIES: dict[str, ModuleType] = {"rx": rx, "fers": fers, "isstad": isstad, "mavd": mavd, "mdmf": mdmf}
