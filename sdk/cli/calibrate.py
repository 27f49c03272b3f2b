"""``edgesentry calibrate BUNDLE SAMPLES...``: learn thresholds from normal samples, store them.

Generic over families: the bundle is loaded with ``edgesentry.load``, every sample (files,
or folders expanded to the family's ``SAMPLE_SUFFIXES``) goes through
``Detector.calibrate`` (rule in ``edgesentry.calibration``: the ``--quantile`` of the normal
scores plus ``--margin`` times its distance to the median; the same over anomaly-map
pixels with ``--pixel-quantile``), and the fitted record is written into the bundle's
``meta.json`` (``Bundle.update_meta``), so later ``edgesentry.load`` calls label and mask.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edgesentry.cli._args import add_backend_args, add_kernel_args
from edgesentry.errors import InputError

HELP = "learn image/pixel thresholds from normal samples and store them in the bundle"
LONG_RUNNING = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="bundle directory to calibrate (updated in place)")
    parser.add_argument("samples", nargs="+", help="normal (defect-free) sample files and/or folders")
    parser.add_argument("--quantile", type=float, default=0.99, help="score quantile of the normal set (default: 0.99)")
    parser.add_argument("--pixel-quantile", type=float, default=0.999,
                        help="anomaly-map pixel quantile of the normal set (default: 0.999)")
    parser.add_argument("--margin", type=float, default=0.1,
                        help="extra margin, in units of (quantile - median) (default: 0.1)")
    parser.add_argument("--dry-run", action="store_true", help="print the thresholds without writing the bundle")
    add_backend_args(parser)
    add_kernel_args(parser)


def collect_samples(inputs: list[str], suffixes: tuple[str, ...] | None) -> list[str]:
    """Files as given; folders expanded recursively (sorted) to files with ``suffixes``."""
    files: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")
                           and (suffixes is None or f.suffix.lower() in suffixes))
            if not found:
                wanted = f" ({', '.join(suffixes)})" if suffixes else ""
                raise InputError(f"folder {item!r} holds no samples{wanted}")
            files.extend(str(f) for f in found)
        elif p.is_file():
            files.append(str(p))
        else:
            raise InputError(f"sample {item!r} is neither a file nor a folder")
    return files


def run(args: argparse.Namespace) -> int:
    from edgesentry.api import load
    from edgesentry.bundle import Bundle
    from edgesentry.cli.families import FAMILIES

    bundle = Bundle.open(args.bundle)
    suffixes = getattr(FAMILIES.get(bundle.family), "SAMPLE_SUFFIXES", None)
    samples = collect_samples(args.samples, tuple(suffixes) if suffixes else None)
    # Only non-default options are passed: weight-free families (rx) take no backend.
    options = {k: v for k, v in (("backend", args.backend), ("kernels", args.kernels)) if v != "auto"}
    det = load(bundle, **options)
    calib = det.calibrate(samples, quantile=args.quantile, pixel_quantile=args.pixel_quantile, margin=args.margin)
    # Families whose score scale depends on options (isstad's scoring) store that context too.
    record: dict[str, Any] = {**calib.to_dict(), **getattr(det, "calibration_context", dict)()}
    if not args.dry_run:
        bundle.update_meta(calibration=record)
    print(json.dumps({"bundle": str(bundle.path), "family": bundle.family, "samples": len(samples),
                      "written": not args.dry_run, "calibration": record}, indent=2))
    return 0
