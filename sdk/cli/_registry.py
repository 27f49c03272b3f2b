"""Verb registry. Each verb module defines ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int`` (0 = done; ``main`` prints the ``done`` / ``failed`` status line).

Verbs are imported explicitly; their optional dependencies (torch, ONNX Runtime, TensorRT,
OpenCV ...) are imported inside ``run``, so every verb appears on a minimal install, and one
whose dependency is missing explains itself in one line (Polygraphy's ``MissingTool``) while
the other verbs keep working.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from types import ModuleType

from edgesentry.cli import (
    build,
    calibrate,
    classify,
    convert,
    detect,
    enroll,
    eval as eval_verb,
    export,
    info,
    line,
    quantize,
    recalibrate,
    sign,
    tune,
    validate,
    verify,
    watch,
)
from edgesentry.errors import BackendUnavailableError

VERBS: list[tuple[str, ModuleType]] = [
    ("info", info),
    ("convert", convert),
    ("detect", detect),
    ("calibrate", calibrate),
    ("recalibrate", recalibrate),
    ("export", export),
    ("build", build),
    ("validate", validate),
    ("quantize", quantize),
    ("tune", tune),
    ("eval", eval_verb),
    ("enroll", enroll),
    ("classify", classify),
    ("watch", watch),
    ("line", line),
    ("sign", sign),
    ("verify", verify),
]


@dataclass
class Verb:
    name: str
    help: str
    module: ModuleType

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        self.module.add_arguments(parser)

    def run(self, args: argparse.Namespace) -> int:
        try:
            return self.module.run(args)
        except ModuleNotFoundError as exc:
            if exc.name is None or exc.name.split(".")[0] == "edgesentry":
                raise  # a broken install of edgesentry itself is a bug, with its traceback
            raise BackendUnavailableError(
                f"verb {self.name!r} needs the package {exc.name!r}, which is not installed here ({exc})"
            ) from None


def load_verbs() -> list[Verb]:
    return [Verb(name, module.HELP, module) for name, module in VERBS]
