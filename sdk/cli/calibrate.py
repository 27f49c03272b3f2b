"""``edgesentry calibrate BUNDLE SAMPLES...``: learn thresholds from normal samples, store them.

Generic over families: the bundle is loaded with ``edgesentry.load``, the samples (files,
folders expanded to the family's input files, quoted globs) go through ``Detector.calibrate``
(rule in ``edgesentry.calibration``: the ``--quantile`` of the normal scores plus ``--margin``
times its distance to the median; the same over anomaly-map pixels with ``--pixel-quantile``),
and ``Detector.save`` writes the record into the bundle in place: ``calibration`` and
``thresholds`` in ``meta.json``, mirrored into every graph's ONNX ``metadata_props``. The verb
then loads the bundle again and checks that it applies what was written before it says ``done``.
When the environment requires signatures (``EDGESENTRY_TRUSTED_KEYS``), the bundle is verified
before it is read; a signed bundle calibrated in place becomes a new, unsigned version (its
signature is removed, with a warning, and the output says so): sign it again.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from edgesentry.cli._args import add_backend_args, add_kernel_args
from edgesentry.errors import BundleError

HELP = "learn image/pixel thresholds from normal samples and store them in the bundle"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="bundle directory to calibrate (updated in place)")
    parser.add_argument("samples", nargs="+", help="normal (defect-free) sample files, folders and/or quoted globs")
    parser.add_argument("--quantile", type=float, default=0.99, help="score quantile of the normal set (default: 0.99)")
    parser.add_argument("--pixel-quantile", type=float, default=0.999,
                        help="anomaly-map pixel quantile of the normal set (default: 0.999)")
    parser.add_argument("--margin", type=float, default=0.1,
                        help="extra margin, in units of (quantile - median) (default: 0.1)")
    parser.add_argument("--dry-run", action="store_true", help="print the thresholds without writing the bundle")
    add_backend_args(parser)
    add_kernel_args(parser)


def check_reload(det: Any, bundle_path: str, options: dict[str, Any]) -> None:
    """Load the written bundle again: it must apply the same calibration and thresholds."""
    from edgesentry.api import load

    again = load(bundle_path, require_signature=False, **options)  # the version just written is unsigned
    mine, theirs = det.threshold_record(), again.threshold_record()
    if again.calibration != det.calibration or mine != theirs:
        raise BundleError(f"{bundle_path} does not load with what was written: calibration "
                          f"{again.calibration} vs {det.calibration}, thresholds {theirs} vs {mine}")


def run(args: argparse.Namespace) -> int:
    from edgesentry.api import load
    from edgesentry.bundle import Bundle
    from edgesentry.io.files import expand
    from edgesentry.signing import default_policy, is_signed

    bundle = Bundle.open(args.bundle, trust=default_policy())
    was_signed = is_signed(bundle.path)
    # Only non-default options are passed: weight-free families (rx) take no backend.
    options = {k: v for k, v in (("backend", args.backend), ("kernels", args.kernels)) if v != "auto"}
    det = load(bundle, **options)
    samples = [str(p) for p in expand(args.samples, det.input_suffixes or None, what="sample")]
    det.calibrate(samples, quantile=args.quantile, pixel_quantile=args.pixel_quantile, margin=args.margin)
    if not args.dry_run:
        det.save(bundle.path)  # in place: calibration + thresholds, mirrored into the ONNX metadata
        check_reload(det, str(bundle.path), options)
    print(json.dumps({"bundle": str(bundle.path), "family": bundle.family, "samples": len(samples),
                      "written": not args.dry_run, "checked": not args.dry_run,
                      "signature": ("removed: a new, unsigned version (edgesentry sign it again)"
                                    if was_signed and not is_signed(bundle.path) else
                                    "kept" if was_signed else None),
                      "calibration": det.calibration_record(), "thresholds": det.threshold_record()}, indent=2))
    return 0
