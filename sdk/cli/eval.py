"""``edgesentry eval FAMILY BUNDLE ...``: score a labelled test set and print its metric.

MAVD: ``edgesentry eval mavd BUNDLE FEATURE_LIST ANNOTATIONS`` runs every video of an
XD-Violence-style list (``video_test.list``: one RGB ``.npy`` per crop, crop-major per
video; ``flow_test.list`` and ``audio_test.list`` beside it unless given) and prints the
frame-level AP exactly as the official test: mean of crop sigmoids, x16 repeat, area under
the precision-recall curve (``edgesentry.metrics.pr_auc``) against labels built from
``annotations.txt``.
"""

from __future__ import annotations

import argparse
import json

HELP = "evaluate a bundle on a labelled test set (mavd: frame-level AP on XD-Violence features)"
LONG_RUNNING = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edgesentry.cli._args import add_backend_args, add_kernel_args

    sub = parser.add_subparsers(dest="family", metavar="FAMILY", required=True)
    mavd = sub.add_parser("mavd", help="frame-level AP of a MAVD bundle on XD-Violence-style features")
    mavd.add_argument("bundle", help="MAVD bundle directory")
    mavd.add_argument("feature_list", help="RGB list file (one .npy per crop, crop-major per video)")
    mavd.add_argument("annotations", help="XD-Violence annotations.txt (violent intervals in frames)")
    mavd.add_argument(
        "--flow-list", default=None, help="flow list (default: the RGB list's name, video->flow)"
    )
    mavd.add_argument(
        "--audio-list", default=None, help="audio list (default: the RGB list's name, video->audio)"
    )
    mavd.add_argument("--trim", action="store_true", help="cut unequal streams to the shortest T")
    mavd.add_argument("--json", default=None, help="also write the summary to this JSON file")
    add_backend_args(mavd)
    add_kernel_args(mavd)
    mavd.set_defaults(_eval=_eval_mavd)


def _eval_mavd(args: argparse.Namespace) -> int:
    import edgesentry
    from edgesentry.evaluation.mavd import evaluate

    det = edgesentry.load(args.bundle, backend=args.backend, kernels=args.kernels, trim=args.trim or None)
    out = evaluate(
        det,
        args.feature_list,
        args.annotations,
        flow_list=args.flow_list,
        audio_list=args.audio_list,
        progress=False,
    )
    summary = {k: out[k] for k in ("ap", "videos", "frames", "positive_frames")}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=2)
    print(
        f"AP: {100 * out['ap']:.2f}  ({out['ap']:.6f}; {out['videos']} videos, {out['frames']} frames, "
        f"{out['positive_frames']} violent)"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    return args._eval(args)
