"""Verb registry. Each verb module defines ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int`` (and optionally ``LONG_RUNNING = True`` for a PASSED/FAILED footer).

A verb whose module or dependency cannot be imported still appears and explains itself
(Polygraphy's ``MissingTool``), so the other verbs keep working on a minimal install.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from typing import Any

from edgesentry.errors import BackendUnavailableError

VERBS: list[tuple[str, str]] = [
    ("info", "edgesentry.cli.info"),
    ("convert", "edgesentry.cli.convert"),
    ("detect", "edgesentry.cli.detect"),
    ("calibrate", "edgesentry.cli.calibrate"),
    ("bench", "edgesentry.cli.bench"),
    ("export", "edgesentry.cli.export"),
    ("build", "edgesentry.cli.build"),
    ("validate", "edgesentry.cli.validate"),
    ("eval", "edgesentry.cli.eval"),
    ("enroll", "edgesentry.cli.enroll"),
    ("classify", "edgesentry.cli.classify"),
    ("watch", "edgesentry.cli.watch"),
]


@dataclass
class Verb:
    name: str
    help: str
    module: Any
    long_running: bool

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        self.module.add_arguments(parser)

    def run(self, args: argparse.Namespace) -> int:
        return self.module.run(args)


class _Missing:
    """Stands in for a verb whose module failed to import."""

    def __init__(self, name: str, error: Exception):
        self.name, self.error = name, error

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("rest", nargs=argparse.REMAINDER)

    def run(self, args: argparse.Namespace) -> int:
        raise BackendUnavailableError(f"verb {self.name!r} is unavailable here: {self.error}")


def load_verbs() -> list[Verb]:
    verbs = []
    for name, module_name in VERBS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # not implemented in this build: omit rather than advertise
            module = _Missing(name, exc)
            verbs.append(Verb(name, f"(unavailable: {exc})", module, False))
            continue
        verbs.append(Verb(name, module.HELP, module, getattr(module, "LONG_RUNNING", False)))
    return verbs
