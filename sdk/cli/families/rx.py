"""``edgesentry convert rx`` and ``edgesentry detect rx``: options, cube in, scores / heatmap / summary out."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry.bundle import Bundle
from edgesentry.cli._args import add_kernel_args, parse_bands, parse_pair
from edgesentry.detectors.rx import build, convert
from edgesentry.errors import InputError
from edgesentry.io.hsi import read_ground_truth
from edgesentry.metrics import roc_auc
from edgesentry.result import Result
from edgesentry.viz import save_heatmap

CONVERT_HELP = "write an RX bundle (configuration only: RX has no weights)"


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    _add_rx_options(parser)


def convert_from_args(args: argparse.Namespace) -> Bundle:
    return convert(output=args.output, overwrite=args.force, **_options_from_args(args))


def _add_rx_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--window", default=None, help="local RX windows 'INNER,OUTER' (default: global RX)")
    parser.add_argument("--bands", default=None, help="first N bands, 'i,j,k' or 'start:stop' (default: all)")
    parser.add_argument("--ridge", type=float, default=0.0, help="relative diagonal loading (default: 0)")
    parser.add_argument("--variable", default=None, help=".mat variable of the cube (default: auto)")
    parser.add_argument("--mask-nan", action="store_true", help="skip NaN/Inf pixels instead of failing")
    add_kernel_args(parser)


def _options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    window = parse_pair(args.window, "--window") if args.window else None
    return {
        "mode": "local" if window else "global",
        "window": window,
        "ridge": args.ridge,
        "bands": parse_bands(args.bands),
        "variable": args.variable,
        "nan_policy": "mask" if args.mask_nan else "raise",
        "kernels": args.kernels,
    }


def add_detect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scene", help="cube file: .mat (v5/v7.3), .npy or ENVI .hdr")
    parser.add_argument("--gt", default=None, help="ground-truth map (.mat 'map', .npy or PNG) to report AUC")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--threshold", type=float, default=None, help="score threshold for label/mask (default: none)")
    _add_rx_options(parser)


def write_scene_report(result: Result, scene: str, out_dir: str | os.PathLike, *, title: str,
                       gt: str | None, summary: dict[str, Any]) -> dict[str, Any]:
    """Write ``<stem>_scores.npy``, ``<stem>_heatmap.png`` and ``<stem>_summary.json`` (with
    the AUC over the scored pixels when ground truth is given); return the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(scene).stem
    scores = result.extras["scores"]
    np.save(out / f"{stem}_scores.npy", scores)
    save_heatmap(result.anomaly_map, out / f"{stem}_heatmap.png", title=title)
    summary = {"scene": scene, **result.summary(), **summary}
    if gt:
        truth = read_ground_truth(gt)
        if truth.shape != result.anomaly_map.shape:
            raise InputError(f"ground truth has shape {truth.shape}; the score map is {result.anomaly_map.shape}")
        valid = result.extras.get("valid", np.ones(truth.shape, bool))
        summary["auc"] = roc_auc(truth[valid], scores[valid])
    (out / f"{stem}_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def detect_from_args(args: argparse.Namespace) -> int:
    det = build(threshold=args.threshold, **_options_from_args(args))
    start = time.perf_counter()
    result = det.predict(args.scene)
    elapsed = time.perf_counter() - start
    stem = Path(args.scene).stem
    shape = list(result.extras["scores"].shape) + [result.info["bands"]]
    summary = write_scene_report(result, args.scene, args.out, title=f"RX {det.cfg.mode}: {stem}", gt=args.gt,
                                 summary={"seconds": elapsed, "shape": shape})
    auc = f", AUC {summary['auc']:.4f}" if "auc" in summary else ""
    print(f"{stem}: {shape} in {elapsed:.3f}s{auc} -> {args.out}")
    return 0
