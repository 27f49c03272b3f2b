"""``edgesentry convert isstad`` and ``edgesentry detect isstad``: arguments, images in, overlays out."""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry.api import load
from edgesentry.bundle import Bundle
from edgesentry.cli._args import THRESHOLD_SCALE, add_backend_args, add_kernel_args, family_of_bundle, thresholds_of
from edgesentry.cli._detect import Item, exit_code, run_detector, verdict_text, write_records
from edgesentry.detectors.isstad import convert
from edgesentry.io.files import expand, names_for
from edgesentry.io.image import IMAGE_SUFFIXES
from edgesentry.kernels import isstad as isstad_kernels
from edgesentry.result import Result

CONVERT_HELP = "convert an ISSTAD stage-2 checkpoint (net_ad.pth) into a bundle"


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ckpt", help="stage-2 checkpoint net_ad.pth (raw state_dict or {'model': ...})")
    parser.add_argument("--config", default=None,
                        help="architecture JSON (official constructor names; default: ViT-L/16)")
    parser.add_argument("--object-class", default=None, help="object class the model was trained on (recorded)")
    _add_scoring_arguments(parser, default="original")


def _add_scoring_arguments(parser: argparse.ArgumentParser, default: str | None) -> None:
    where = "" if default else "the bundle's; "
    parser.add_argument("--scoring", default=default, choices=list(isstad_kernels.SCORINGS),
                        help=f"score fusion (default: {default or 'the bundle' + chr(39) + 's'})")
    parser.add_argument("--top-p", type=float, default=None,
                        help=f"weighted score: top fraction (default: {where}0.1)")
    parser.add_argument("--w-m", type=float, default=None, help=f"weighted score: P exponent (default: {where}1)")
    parser.add_argument("--w-r", type=float, default=None, help=f"weighted score: R exponent (default: {where}1)")


def convert_from_args(args: argparse.Namespace) -> Bundle:
    return convert(args.ckpt, output=args.output, config=args.config, overwrite=args.force,
                   object_class=args.object_class, scoring=args.scoring or "original",
                   top_p=0.1 if args.top_p is None else args.top_p, w_m=1.0 if args.w_m is None else args.w_m,
                   w_r=1.0 if args.w_r is None else args.w_r)


# ------------------------------------------------------------------------------- detect
SAVE_CHOICES = ("none", "maps", "panels", "all")
#: ``maps`` (the .npy map and the binary mask PNG, a few ms) by default: a 4-picture panel PNG
#: costs about as much as the tiny model's whole pipeline (see docs/isstad.md, "Pictures")
DEFAULT_SAVE = "maps"


def add_detect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="bundle directory (edgesentry convert isstad)")
    parser.add_argument("images", nargs="+", help="image files, folders (searched recursively) and/or quoted globs")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--save", default=DEFAULT_SAVE, choices=SAVE_CHOICES,
                        help="per image: maps = <name>_map.npy + binary <name>_mask.png; panels = <name>_panel.png "
                             "(image | heat map | mask | contours); all = both; none = records only "
                             f"(default: {DEFAULT_SAVE})")
    parser.add_argument("--threshold", type=float, default=None,
                        help=f"image score threshold, {THRESHOLD_SCALE} (default: the bundle's)")
    parser.add_argument("--pixel-threshold", type=float, default=None,
                        help="anomaly-map threshold for the mask, on the map's scale (default: the bundle's)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per graph call (default: 8)")
    _add_scoring_arguments(parser, default=None)
    add_backend_args(parser)
    add_kernel_args(parser)


def collect_images(inputs: Sequence[str]) -> list[Item]:
    """Files, folders and globs -> run items with unique, stable output names."""
    paths = expand(inputs, IMAGE_SUFFIXES, what="image")
    return [Item(name, str(path), str(path)) for path, name in zip(paths, names_for(paths))]


def detect_from_args(args: argparse.Namespace) -> int:
    items = collect_images(args.images)
    options = {k: v for k, v in {"scoring": args.scoring, "top_p": args.top_p, "w_m": args.w_m, "w_r": args.w_r,
                                 "batch_size": args.batch_size}.items() if v is not None}
    family_of_bundle(args.bundle, "isstad", command="detect isstad")
    keep = args.save in ("panels", "all")
    det = load(args.bundle, backend=args.backend, kernels=args.kernels, keep_rgb=keep, **options)
    if args.threshold is not None:
        det.threshold = args.threshold
    if args.pixel_threshold is not None:
        det.pixel_threshold = args.pixel_threshold
    if det.effective_pixel_threshold is None and keep:
        print("note: no pixel threshold (run `edgesentry calibrate`): each heat map uses its own colour scale",
              file=sys.stderr)
    out = Path(args.out)
    run = run_detector(det, items, out, kind="image", describe=_describe,
                       write=lambda item, res: write_image_outputs(item.name, res, out, args.save))
    write_records(run, out, {"bundle": args.bundle, "scoring": det.options.scoring, "backend": det.backend,
                             "save": args.save, **thresholds_of(det)})
    _write_csv(run.records, out / "summary.csv")
    return exit_code(run)


def _describe(res: Result, record: dict[str, Any]) -> str:
    mask = f", mask {int(res.mask.sum())} px" if res.mask is not None else ""
    return f"{res.shape[0]}x{res.shape[1]} {verdict_text(res)}{mask}"


def write_image_outputs(name: str, res: Result, out: Path, save: str) -> dict[str, Any]:
    """The files ``--save`` asks for: ``<name>_map.npy`` + binary ``<name>_mask.png`` (maps),
    ``<name>_panel.png`` (panels)."""
    from PIL import Image

    written = []
    if save in ("maps", "all"):
        np.save(out / f"{name}_map.npy", res.anomaly_map)
        written.append(f"{name}_map.npy")
        if res.mask is not None:
            Image.fromarray(res.mask.astype(np.uint8) * 255, mode="L").save(out / f"{name}_mask.png",
                                                                           compress_level=1)
            written.append(f"{name}_mask.png")
    if save in ("panels", "all"):
        Image.fromarray(res.plot()).save(out / f"{name}_panel.png", compress_level=1)
        written.append(f"{name}_panel.png")
    return {"files": written}


_CSV_FIELDS = ("name", "input", "status", "score", "raw_score", "label", "mask_pixels", "ms", "error")


def _write_csv(records: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(_CSV_FIELDS), extrasaction="ignore")
        writer.writeheader()
        for r in records:
            writer.writerow({**r, "ms": round(1e3 * r.get("timings", {}).get("total", float("nan")), 3)})
