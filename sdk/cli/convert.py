"""``edgesentry convert FAMILY ... -o BUNDLE``: trained weights -> bundle."""

from __future__ import annotations

import argparse

from edgesentry.detectors import FAMILIES, family_module

HELP = "convert trained weights (official checkpoints or your own) into a bundle"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="family", metavar="FAMILY", required=True)
    for name in FAMILIES:
        module = family_module(name) if _importable(name) else None
        if module is None or not hasattr(module, "add_convert_arguments"):
            continue
        fam = sub.add_parser(name, help=f"convert a {name} model", description=getattr(module, "CONVERT_HELP", None))
        module.add_convert_arguments(fam)
        fam.add_argument("-o", "--output", required=True, help="bundle directory to write")
        fam.add_argument("--force", action="store_true", help="overwrite an existing bundle (default: refuse)")
        fam.set_defaults(_convert=module.convert_from_args)


def _importable(name: str) -> bool:
    try:
        family_module(name)
    except ImportError:
        return False
    return True


def run(args: argparse.Namespace) -> int:
    bundle = args._convert(args)
    print(
        f"wrote bundle {bundle.path} (family {bundle.family}, files: {', '.join(sorted(bundle.files)) or 'meta only'})"
    )
    return 0
