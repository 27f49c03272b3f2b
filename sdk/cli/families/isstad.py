"""``edgesentry convert isstad`` and ``edgesentry detect isstad``: arguments, images in, overlays out."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry.api import load
from edgesentry.bundle import Bundle
from edgesentry.cli._args import add_backend_args, add_kernel_args
from edgesentry.detectors.isstad import ISSTADDetector, convert
from edgesentry.errors import ConfigError, InputError
from edgesentry.io.image import IMAGE_SUFFIXES, read_image
from edgesentry.kernels import isstad as isstad_kernels
from edgesentry.result import Result

#: Suffixes ``edgesentry calibrate`` picks from folders for this family.
SAMPLE_SUFFIXES = IMAGE_SUFFIXES

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
def add_detect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="bundle directory (edgesentry convert isstad)")
    parser.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--threshold", type=float, default=None, help="image score threshold (default: bundle's)")
    parser.add_argument("--pixel-threshold", type=float, default=None, help="anomaly-map threshold (default: bundle's)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per graph call (default: 8)")
    _add_scoring_arguments(parser, default=None)
    add_backend_args(parser)
    add_kernel_args(parser)


def collect_images(inputs: Sequence[str], suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[tuple[Path, str]]:
    """Expand files and folders into (path, output name) pairs, names unique and stable."""
    pairs: list[tuple[Path, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in suffixes)
            pairs.extend((f, "__".join(f.relative_to(p).with_suffix("").parts)) for f in files)
        elif p.is_file():
            pairs.append((p, p.stem))
        else:
            raise InputError(f"{item!r} is neither an image file nor a folder")
    if not pairs:
        raise InputError(f"no images ({', '.join(suffixes)}) found in {list(inputs)}")
    seen: dict[str, int] = {}
    unique = []
    for path, name in pairs:
        if name in seen:
            seen[name] += 1
            prefixed = f"{path.parent.name}__{name}"
            name = prefixed if prefixed not in seen else f"{name}_{seen[name]}"
        seen.setdefault(name, 0)
        unique.append((path, name))
    return unique


class Progress:
    """A small progress bar on stderr (a line per 10% when stderr is not a terminal)."""

    def __init__(self, total: int, label: str = "", stream: Any = None):
        self.total, self.label, self.done = total, label, 0
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_decile = -1
        self.start = time.perf_counter()

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        frac = self.done / max(self.total, 1)
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        if self.tty:
            bar = "#" * int(30 * frac)
            self.stream.write(f"\r{self.label} [{bar:<30}] {self.done}/{self.total} {rate:.1f} img/s {note[:30]:<30}")
            if self.done >= self.total:
                self.stream.write("\n")
        elif int(frac * 10) > self._last_decile:
            self._last_decile = int(frac * 10)
            self.stream.write(f"{self.label} {self.done}/{self.total} ({100 * frac:.0f}%, {rate:.1f} img/s)\n")
        self.stream.flush()


def detect_from_args(args: argparse.Namespace) -> int:
    pairs = collect_images(args.images)
    options = {k: v for k, v in {"scoring": args.scoring, "top_p": args.top_p, "w_m": args.w_m, "w_r": args.w_r,
                                 "batch_size": args.batch_size}.items() if v is not None}
    det = load(args.bundle, backend=args.backend, kernels=args.kernels, keep_rgb=True, **options)
    if det.family != "isstad":
        raise ConfigError(f"bundle {args.bundle} is a {det.family!r} bundle, not isstad")
    if args.threshold is not None:
        det.threshold = args.threshold
    if args.pixel_threshold is not None:
        det.pixel_threshold = args.pixel_threshold
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    progress = Progress(len(pairs), "isstad detect")
    step = det.options.batch_size
    for start in range(0, len(pairs), step):
        chunk = pairs[start:start + step]
        results = det.predict_batch([p for p, _ in chunk])
        for (path, name), res in zip(chunk, results):
            rows.append(_write_outputs(det, path, name, res, out))
        progress.update(len(chunk), chunk[-1][1])
    with open(out / "summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    flagged = sum(1 for r in rows if r["label"] is True)
    thr = det.threshold
    print(f"{len(rows)} images -> {out} (scoring {det.options.scoring}, backend {det.backend}"
          + (f", threshold {thr:.6g}: {flagged} anomalous" if thr is not None else ", no threshold: run calibrate")
          + ")")
    return 0


def _write_outputs(det: ISSTADDetector, path: Path, name: str, res: Result, out: Path) -> dict[str, Any]:
    from PIL import Image

    from edgesentry.viz import overlay

    rgb = read_image(path)
    Image.fromarray(overlay(rgb, res.anomaly_map, mask=res.mask)).save(out / f"{name}_overlay.png")
    contour_mask = res.mask if res.mask is not None else np.zeros(res.anomaly_map.shape, bool)
    Image.fromarray(overlay(rgb, res.anomaly_map, mask=contour_mask, alpha=0.0)).save(out / f"{name}_mask.png")
    summary = {"image": str(path), **res.summary(), "threshold": det.threshold,
               "pixel_threshold": det.effective_pixel_threshold}
    (out / f"{name}.json").write_text(json.dumps(summary, indent=2))
    return {"image": str(path), "name": name, "score": res.score, "raw_score": res.raw_score, "label": res.label,
            "mask_pixels": int(res.mask.sum()) if res.mask is not None else None,
            "height": res.anomaly_map.shape[0], "width": res.anomaly_map.shape[1],
            "ms": round(1e3 * res.timings.get("total", float("nan")), 3)}
