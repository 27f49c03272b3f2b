"""The ``edgesentry`` command line: one entry point, verbs registered in ``_registry``.

``main(argv=None) -> int`` is callable in-process (tests do). User errors (any
``EdgesentryError``) print one line and exit 1 without a traceback; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from edgesentry._version import __version__
from edgesentry.cli._registry import load_verbs
from edgesentry.errors import EdgesentryError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgesentry",
        description="Edge inference SDK: convert, export, run and benchmark anomaly and event detectors.",
    )
    parser.add_argument("--version", action="version", version=f"edgesentry {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in load_verbs():
        verb_parser = sub.add_parser(verb.name, help=verb.help, description=verb.help)
        verb.add_arguments(verb_parser)
        verb_parser.set_defaults(_verb=verb)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    verb = getattr(args, "_verb", None)
    if verb is None:
        parser.print_help()
        return 2
    start = time.perf_counter()
    try:
        code = verb.run(args)
    except EdgesentryError as exc:
        print(f"edgesentry {verb.name}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"edgesentry {verb.name}: interrupted", file=sys.stderr)
        return 130
    if verb.long_running:
        status = "PASSED" if code == 0 else "FAILED"
        print(f"{status} | edgesentry {verb.name} | runtime {time.perf_counter() - start:.3f}s", file=sys.stderr)
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
