"""``edgesentry convert rx`` and ``edgesentry detect rx``: options, cubes in, scores / heatmaps / summaries out."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry.bundle import Bundle
from edgesentry.cli._args import THRESHOLD_SCALE, add_kernel_args, parse_bands, parse_pair, thresholds_of
from edgesentry.cli._detect import Item, exit_code, run_detector, verdict_text, write_records
from edgesentry.detector import Detector
from edgesentry.detectors.rx import build, convert
from edgesentry.errors import ConfigError, InputError
from edgesentry.io.files import CUBE_SUFFIXES, expand, names_for
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


def add_scene_arguments(parser: argparse.ArgumentParser) -> None:
    """The inputs and outputs of ``detect rx`` / ``detect fers``: scenes, ground truth, --out."""
    parser.add_argument("scenes", nargs="+",
                        help="cube files (.mat v5/v7.3, .npy, ENVI .hdr), folders and/or quoted globs")
    parser.add_argument("--gt", default=None,
                        help="ground truth for the AUC: a map file (.mat 'map', .npy, PNG) for one scene, a folder of "
                             "maps named like the scenes, or 'scene' to read each scene file's own 'map'")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--threshold", type=float, default=None,
                        help=f"score threshold for label and mask, {THRESHOLD_SCALE} (default: none)")


def add_detect_arguments(parser: argparse.ArgumentParser) -> None:
    add_scene_arguments(parser)
    _add_rx_options(parser)


def scene_items(scenes: list[str]) -> list[Item]:
    paths = expand(scenes, CUBE_SUFFIXES, what="cube")
    return [Item(name, str(path), str(path)) for path, name in zip(paths, names_for(paths))]


def ground_truth_for(gt: str | None, scene: str, n_scenes: int) -> np.ndarray | None:
    """The ground-truth map of ``scene`` under ``--gt`` (see ``add_scene_arguments``)."""
    if gt is None:
        return None
    if gt == "scene":
        return read_ground_truth(scene)
    path = Path(gt)
    if path.is_dir():
        matches = sorted(p for p in path.iterdir() if p.stem == Path(scene).stem)
        if not matches:
            raise InputError(f"--gt folder {gt!r} has no map named like the scene {Path(scene).stem!r}")
        return read_ground_truth(matches[0])
    if n_scenes > 1:
        raise InputError(f"--gt {gt!r} is one map but {n_scenes} scenes were given; pass a folder of maps "
                         "named like the scenes, or 'scene'")
    return read_ground_truth(path)


def write_scene_report(result: Result, name: str, out_dir: str | os.PathLike, *, title: str,
                       truth: np.ndarray | None) -> dict[str, Any]:
    """Write ``<name>_scores.npy``, ``<name>_heatmap.png`` and ``<name>_summary.json`` (with the
    AUC over the scored pixels when ground truth is given); return the summary's extra fields."""
    out = Path(out_dir)
    scores = result.extras["scores"]
    np.save(out / f"{name}_scores.npy", scores)
    save_heatmap(result.anomaly_map, out / f"{name}_heatmap.png", title=title)
    extra: dict[str, Any] = {"shape": list(scores.shape) + [result.info["bands"]],
                             "seconds": result.timings.get("total")}
    if truth is not None:
        if truth.shape != result.anomaly_map.shape:
            raise InputError(f"ground truth has shape {truth.shape}; the score map is {result.anomaly_map.shape}")
        valid = result.extras.get("valid", np.ones(truth.shape, bool))
        extra["auc"] = roc_auc(truth[valid], scores[valid])
    (out / f"{name}_summary.json").write_text(json.dumps({**result.summary(), **extra}, indent=2))
    return extra


def describe_scene(res: Result, record: dict[str, Any]) -> str:
    h, w = res.anomaly_map.shape
    auc = f", AUC {record['auc']:.4f}" if "auc" in record else ""
    mask = f", {int(res.mask.sum())} px above threshold" if res.mask is not None else ""
    return f"{h}x{w}x{res.info['bands']} {verdict_text(res)}{mask}{auc}"


def run_scenes(det: Detector, args: argparse.Namespace, title: str) -> int:
    """``detect rx`` / ``detect fers`` over every scene: records, reports, exit code."""
    items = scene_items(args.scenes)
    out = Path(args.out)

    def write(item: Item, res: Result) -> dict[str, Any]:
        truth = ground_truth_for(args.gt, item.value, len(items))
        return write_scene_report(res, item.name, out, title=f"{title}: {item.name}", truth=truth)

    run = run_detector(det, items, out, kind="cube", describe=describe_scene, write=write)
    aucs = [r["auc"] for r in run.records if "auc" in r]
    extra = {"mean_auc": float(np.mean(aucs))} if aucs else {}
    write_records(run, out, {**extra, **thresholds_of(det)})
    return exit_code(run)


def detect_from_args(args: argparse.Namespace) -> int:
    det = build(threshold=args.threshold, **_options_from_args(args))
    mode = "linescan" if args.linescan else det.cfg.mode
    return run_scenes(det, args, f"RX {mode}")
