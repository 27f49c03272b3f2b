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
from edgesentry.errors import ConfigError, InputError
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
    line = parser.add_argument_group("line scan (push-broom lines, docs/linescan.md)")
    line.add_argument("--linescan", action="store_true", help="score line by line against earlier lines")
    line.add_argument("--warmup", type=int, default=0, metavar="N",
                      help="hold the first N lines and score them against their own block (default: 0)")
    line.add_argument("--lookahead", type=int, default=0, metavar="K",
                      help="score each line against the lines up to K after it (delay K; default: 0)")
    line.add_argument("--forgetting", type=float, default=1.0, help="exponential forgetting factor (default: 1)")
    line.add_argument("--lines", type=int, default=None, metavar="L",
                      help="sliding block of the last L lines instead of forgetting (default: off)")
    line.add_argument("--dims", type=int, default=None, help="project on D principal axes of the warm-up lines")
    line.add_argument("--update-threshold", type=float, default=None, metavar="T",
                      help="pixels scoring above T do not join the background (default: all join)")
    line.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                      help="dtype of the scoring product (default: float64)")
    add_kernel_args(parser)


def _options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    common = {
        "ridge": args.ridge,
        "bands": parse_bands(args.bands),
        "variable": args.variable,
        "nan_policy": "mask" if args.mask_nan else "raise",
        "kernels": args.kernels,
    }
    if args.linescan:
        if args.window:
            raise ConfigError("--window is local RX; with --linescan use --lines L for a sliding block of lines")
        return {"mode": "linescan", "window": args.lines, "warmup": args.warmup, "lookahead": args.lookahead,
                "forgetting": args.forgetting, "dims": args.dims, "update_threshold": args.update_threshold,
                "dtype": args.dtype, **common}
    line_flags = {"--warmup": args.warmup, "--lookahead": args.lookahead, "--lines": args.lines,
                  "--dims": args.dims, "--update-threshold": args.update_threshold}
    given = [flag for flag, value in line_flags.items() if value] + (["--forgetting"] if args.forgetting != 1 else [])
    if given or args.dtype != "float64":
        raise ConfigError(f"{', '.join(given) or '--dtype'} only apply with --linescan")
    window = parse_pair(args.window, "--window") if args.window else None
    return {"mode": "local" if window else "global", "window": window, **common}


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
    mode = "linescan" if args.linescan else det.cfg.mode
    summary = write_scene_report(result, args.scene, args.out, title=f"RX {mode}: {stem}", gt=args.gt,
                                 summary={"seconds": elapsed, "shape": shape})
    auc = f", AUC {summary['auc']:.4f}" if "auc" in summary else ""
    print(f"{stem}: {shape} in {elapsed:.3f}s{auc} -> {args.out}")
    return 0
