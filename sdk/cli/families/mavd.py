"""``edgesentry convert mavd`` and ``edgesentry detect mavd``: official weights in, snippet scores out."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from edgesentry.api import load
from edgesentry.bundle import Bundle
from edgesentry.cli._args import add_backend_args, add_kernel_args
from edgesentry.detectors.mavd import convert
from edgesentry.evaluation.mavd import xd_video_id

CONVERT_HELP = "convert the official MAVD weights (a directory with {v,a,f,va,vf,vaf}_model.pth) into a bundle"


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("weights", help="directory with {v,a,f,va,vf,vaf}_model.pth (official saved_models/ap86.07)")
    parser.add_argument("--trim", action="store_true", help="default to trimming unequal T across modalities")
    parser.add_argument("--onnx", action="store_true", help="also export features.onnx into the bundle")


def convert_from_args(args: argparse.Namespace) -> Bundle:
    return convert(args.weights, output=args.output, overwrite=args.force, trim=args.trim)


def add_detect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="MAVD bundle directory")
    parser.add_argument("--rgb", nargs="+", required=True, help="RGB feature .npy: one per crop (XD layout)")
    parser.add_argument("--flow", nargs="+", required=True, help="flow feature .npy: one per crop")
    parser.add_argument("--audio", required=True, help="VGGish feature .npy of the video")
    parser.add_argument("--trim", action="store_true", help="cut unequal streams to the shortest T")
    parser.add_argument("--threshold", type=float, default=None, help="score threshold for the label")
    parser.add_argument("--out", default=None, help="directory for <stem>_frame_scores.npy and a JSON summary")
    add_backend_args(parser)
    add_kernel_args(parser)


def detect_from_args(args: argparse.Namespace) -> int:
    det = load(
        args.bundle,
        backend=args.backend,
        kernels=args.kernels,
        threshold=args.threshold,
        trim=args.trim or None,
    )
    start = time.perf_counter()
    res = det.predict({"rgb": list(args.rgb), "flow": list(args.flow), "audio": args.audio})
    elapsed = time.perf_counter() - start
    stem = xd_video_id(args.rgb[0])
    summary = {"video": stem, "seconds": elapsed, **res.summary()}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / f"{stem}_frame_scores.npy", res.extras["frame_scores"])
        np.save(out / f"{stem}_snippet_scores.npy", res.extras["snippet_scores"])
        (out / f"{stem}_summary.json").write_text(json.dumps(summary, indent=2))
    label = "" if res.label is None else f", violent={res.label}"
    print(
        f"{stem}: {res.info['snippets']} snippets x {res.info['crops']} crops, max score {res.score:.4f}"
        f"{label} in {elapsed:.3f}s"
    )
    return 0


