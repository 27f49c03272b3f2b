"""``edgesentry convert fers`` and ``edgesentry detect fers``: official weights in, scene reports out."""

from __future__ import annotations

import argparse

from edgesentry.api import load
from edgesentry.bundle import Bundle
from edgesentry.cli._args import add_backend_args, add_kernel_args, family_of_bundle, parse_pair
from edgesentry.cli.families.rx import add_scene_arguments, run_scenes
from edgesentry.detectors.fers import MODES, convert

CONVERT_HELP = (
    "Convert the official FERS weights: --spectral is a saved_models/<B>bands folder holding "
    "convh.pt, enc.pt and pc.pt; --spatial an optional spa_fen.pt (or an int8-grid .npz)."
)


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spectral", required=True, help="folder with the official convh.pt, enc.pt, pc.pt")
    parser.add_argument("--spatial", default=None, help="spa_fen.pt or int8-grid .npz (default: spectral-only)")
    parser.add_argument("--mode", default="global", choices=MODES,
                        help="detector mode stored in the bundle (default: global)")
    parser.add_argument("--window", default=None, help="local RX windows 'INNER,OUTER' (mode local)")
    parser.add_argument("--onnx", action="store_true", help="also export the networks to ONNX (default: no)")


def convert_from_args(args: argparse.Namespace) -> Bundle:
    window = parse_pair(args.window, "--window") if args.window else None
    return convert(args.spectral, args.spatial, output=args.output, overwrite=args.force, mode=args.mode,
                   window=window)


def add_detect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="FERS bundle directory (edgesentry convert fers ...)")
    add_scene_arguments(parser)
    parser.add_argument("--mode", default=None, choices=MODES, help="override the bundle's detector mode")
    parser.add_argument("--window", default=None, help="local RX windows 'INNER,OUTER' (with --mode local)")
    parser.add_argument("--variable", default=None, help=".mat variable of the cube (default: auto)")
    add_backend_args(parser)
    add_kernel_args(parser)


def detect_from_args(args: argparse.Namespace) -> int:
    family_of_bundle(args.bundle, "fers", command="detect fers")
    window = parse_pair(args.window, "--window") if args.window else None
    options = {"mode": args.mode, "window": window, "variable": args.variable}
    det = load(args.bundle, backend=args.backend, kernels=args.kernels, threshold=args.threshold,
               **{k: v for k, v in options.items() if v is not None})
    branches = "spectral-only" if not det.has_spatial else "spectral + spatial"
    return run_scenes(det, args, f"FERS {det.options.mode} ({branches}, {det.backend})")
