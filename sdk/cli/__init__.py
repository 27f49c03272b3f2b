"""The ``edgesentry`` command line: one entry point, verbs registered in ``_registry``.

``main(argv=None) -> int`` is callable in-process (tests do). User errors (any
``EdgesentryError``) print one line and exit 1 without a traceback; anything else is a bug
and keeps its traceback. Every verb ends with one status line on stderr, ``done`` or
``failed``, and its runtime. While a verb runs, error messages spell options as CLI flags
(``edgesentry.errors.option`` with the words of ``_words.CLI_WORDS``).
"""

from __future__ import annotations

import argparse
import difflib
import logging
import sys
import time
from collections.abc import Sequence

from edgesentry._version import __version__
from edgesentry.cli._registry import load_verbs
from edgesentry.cli._words import CLI_WORDS
from edgesentry.errors import EdgesentryError, spelling

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


def _chosen_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost (sub)parser the arguments selected (``detect`` -> ``detect rx``)."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = getattr(args, subs[0].dest, None) if subs else None
        if chosen is None or chosen not in subs[0].choices:
            return parser
        parser = subs[0].choices[chosen]


def _reject_unknown(parser: argparse.ArgumentParser, args: argparse.Namespace, extras: list[str]) -> None:
    """argparse's usage error for unknown arguments, naming the valid options and a close one."""
    target = _chosen_parser(parser, args)
    valid = sorted({s for a in target._actions for s in a.option_strings if s not in ("-h", "--help")})
    hints = []
    for extra in extras:
        close = difflib.get_close_matches(extra.split("=")[0], valid, n=1, cutoff=0.7) if extra.startswith("-") else []
        hints.append(f"{extra} (did you mean {close[0]}?)" if close else extra)
    message = f"unrecognized arguments: {' '.join(hints)}"
    if valid:
        message += f"; valid options: {', '.join(valid)}"
    target.error(message)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        _reject_unknown(parser, args, extras)
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
        with spelling(CLI_WORDS):
            code = int(verb.run(args) or 0)
    except EdgesentryError as exc:
        print(f"edgesentry {verb.name}: error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print(f"edgesentry {verb.name}: interrupted", file=sys.stderr)
        code = 130
    status = "done" if code == 0 else "failed"
    print(f"{status} | edgesentry {verb.name} | {time.perf_counter() - start:.2f} s", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
