"""``edgesentry detect FAMILY ...``: run a detector on files and write maps, images, JSON."""

from __future__ import annotations

import argparse

from edgesentry.cli.families import FAMILIES

HELP = "run a detector on input files and write score maps, heatmaps and a JSON summary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="family", metavar="FAMILY", required=True)
    for name, module in FAMILIES.items():
        fam = sub.add_parser(name, help=f"detect with {name}")
        module.add_detect_arguments(fam)
        fam.set_defaults(_detect=module.detect_from_args)


def run(args: argparse.Namespace) -> int:
    return args._detect(args)
