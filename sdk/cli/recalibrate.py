"""``edgesentry recalibrate BUNDLE --from-log AUDIT.jsonl``: refit thresholds from a line's passed parts.

Reads the line's audit log (``outputs.audit`` of ``edgesentry line run``), keeps the accepted,
complete parts (optionally those triggered ``--since`` a time), refits the thresholds with the
rule of ``edgesentry calibrate`` and writes a **new bundle version** (``BUNDLE.vN`` beside it, or
``--out``) with a hash-chained audit record: when, from which parts, old and new thresholds, who
(the name of the token in ``--token-file`` or ``EDGESENTRY_TOKEN``, written ``NAME:SECRET``).
The source bundle is never changed; ``edgesentry info BUNDLE`` shows the lineage. The new
version is loaded again before the verb says ``done``.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime

from edgesentry.errors import ConfigError

HELP = "refit thresholds from a line audit log's passed parts into a new, audited bundle version"
TOKEN_ENV = "EDGESENTRY_TOKEN"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="bundle directory (left unchanged)")
    parser.add_argument("--from-log", required=True, metavar="AUDIT_JSONL", help="the line's audit log")
    parser.add_argument("--since", help="only parts triggered at or after this time (ISO 8601 or Unix seconds)")
    parser.add_argument("--out", help="the new version's directory (default: BUNDLE.vN beside BUNDLE)")
    parser.add_argument("--token-file", help=f"file holding NAME:SECRET (default: ${TOKEN_ENV}); NAME is recorded")
    parser.add_argument("--quantile", type=float, default=0.99,
                        help="score quantile of the passed parts (default: 0.99)")
    parser.add_argument("--margin", type=float, default=0.1,
                        help="extra margin, in units of (quantile - median) (default: 0.1)")
    parser.add_argument("--min-parts", type=int, default=20, help="fewest usable parts (default: 20)")


def parse_since(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since {text!r} is neither ISO 8601 nor Unix seconds") from None
    return moment.timestamp()


def token_name(token_file: str | None) -> str:
    """The name part of the ``NAME:SECRET`` token (``--token-file`` or ``$EDGESENTRY_TOKEN``)."""
    from edgesentry.line.outputs.webhook import read_token

    token = read_token(token_env=None if token_file else TOKEN_ENV, token_file=token_file,
                       what="--token-file" if token_file else f"${TOKEN_ENV}")
    if not token:
        raise ConfigError(f"recalibrate needs a token: --token-file or ${TOKEN_ENV} (NAME:SECRET)")
    name, sep, secret = token.partition(":")
    if not sep or not name.strip() or not secret or len(name) > 64 or not name.isprintable():
        raise ConfigError("the token must read NAME:SECRET (a printable name of at most 64 characters)")
    return name.strip()


def run(args: argparse.Namespace) -> int:
    from edgesentry.api import load
    from edgesentry.recalibration import recalibrate

    bundle = recalibrate(args.bundle, args.from_log, who=token_name(args.token_file), since=parse_since(args.since),
                         out=args.out, quantile=args.quantile, margin=args.margin, min_parts=args.min_parts)
    det = load(bundle)  # the new version loads and applies what was written
    record = bundle.meta["lineage"][-1]
    print(json.dumps({"bundle": str(bundle.path), "version": record["version"], "parent": record["parent"]["path"],
                      "who": record["who"], "parts": record["parts"]["count"], "scores": record["parts"]["scores"],
                      "old_raw_threshold": record["old"]["raw_threshold"],
                      "new_raw_threshold": record["new"]["raw_threshold"], "loaded_raw_threshold": det.raw_threshold},
                     indent=2))
    return 0
