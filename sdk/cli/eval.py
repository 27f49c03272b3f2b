"""``edgesentry eval FAMILY BUNDLE ...``: score a labelled test set and print its metrics.

ISSTAD: ``edgesentry eval isstad BUNDLE DIR`` runs every test image of an MVTec AD-layout folder
(``test/<defect>/``, ``ground_truth/<defect>/<stem>_mask.png`` or ``<stem>.png``) and prints the
image AUROC, the pixel AUROC and the PRO up to FPR 0.3 (``edgesentry.evaluation.isstad``).

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
import sys

HELP = ("evaluate a bundle on a labelled test set (isstad: image/pixel AUROC and PRO on an MVTec-layout folder; "
        "mavd: frame-level AP on XD-Violence features)")


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

    isstad = sub.add_parser("isstad", help="image AUROC, pixel AUROC and PRO of an ISSTAD bundle on an MVTec-layout "
                                           "folder (test/<defect>/, ground_truth/<defect>/)")
    isstad.add_argument("bundle", help="ISSTAD bundle directory")
    isstad.add_argument("folder", help="MVTec-layout folder (holding test/ and ground_truth/)")
    isstad.add_argument("--max-fpr", type=float, default=0.3, help="PRO integration limit (default: 0.3, MVTec AD)")
    isstad.add_argument("--json", default=None, help="also write the metrics and per-image scores to this JSON file")
    isstad.add_argument("--batch-size", type=int, default=None, help="images per graph call (default: the bundle's)")
    add_backend_args(isstad)
    add_kernel_args(isstad)
    isstad.set_defaults(_eval=_eval_isstad)


def _eval_isstad(args: argparse.Namespace) -> int:
    import edgesentry
    from edgesentry.cli._args import family_of_bundle
    from edgesentry.evaluation.isstad import evaluate

    family_of_bundle(args.bundle, "isstad", command="eval isstad")
    options = {"batch_size": args.batch_size} if args.batch_size else {}
    det = edgesentry.load(args.bundle, backend=args.backend, kernels=args.kernels, **options)
    out = evaluate(det, args.folder, max_fpr=args.max_fpr,
                   progress=lambda done, total: print(f"\r{done}/{total} images", end="", file=sys.stderr))
    print(file=sys.stderr)
    keys = ("image_auroc", "pixel_auroc", "pro", "max_fpr", "images", "defective", "good", "regions")
    summary = {k: out[k] for k in keys}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({**summary, "bundle": args.bundle, "folder": args.folder, "records": out["records"]}, fh,
                      indent=2, default=str)
    print(f"image AUROC {out['image_auroc']:.4f} | pixel AUROC {out['pixel_auroc']:.4f} | "
          f"PRO (FPR <= {out['max_fpr']:g}) {out['pro']:.4f}  ({out['images']} images: {out['defective']} defective "
          f"with {out['regions']} regions, {out['good']} good)")
    return 0


def _eval_mavd(args: argparse.Namespace) -> int:
    import edgesentry
    from edgesentry.cli._args import family_of_bundle
    from edgesentry.evaluation.mavd import evaluate

    family_of_bundle(args.bundle, "mavd", command="eval mavd")
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
