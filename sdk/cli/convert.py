"""``edgesentry convert FAMILY ... -o BUNDLE``: trained weights -> bundle (``--onnx``: with its graphs)."""

from __future__ import annotations

import argparse

from edgesentry.cli.families import FAMILIES

HELP = "convert trained weights (official checkpoints or your own) into a bundle"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="family", metavar="FAMILY", required=True)
    for name, module in FAMILIES.items():
        fam = sub.add_parser(name, help=f"convert a {name} model", description=module.CONVERT_HELP)
        module.add_convert_arguments(fam)
        fam.add_argument("-o", "--output", required=True, help="bundle directory to write")
        fam.add_argument("--force", action="store_true", help="overwrite an existing bundle (default: refuse)")
        fam.set_defaults(_convert=module.convert_from_args)


def run(args: argparse.Namespace) -> int:
    from edgesentry.bundle import Bundle

    bundle = args._convert(args)
    if getattr(args, "onnx", False):  # families with graphs offer --onnx
        from edgesentry.export.onnx import export_bundle

        export_bundle(bundle)
    bundle = Bundle.open(bundle.path)  # what was written opens, every file matching its sha256
    files = ", ".join(sorted(bundle.files)) or "meta only"
    print(f"wrote bundle {bundle.path} (family {bundle.family}, files: {files}); checked: it opens with every checksum")
    return 0
