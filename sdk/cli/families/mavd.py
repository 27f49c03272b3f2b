"""``edgesentry convert mavd`` and ``edgesentry detect mavd``: official weights in; per-video features in, snippet
scores out (one video or folders of them, grouped by their XD-Violence names)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry.api import load
from edgesentry.bundle import Bundle
from edgesentry.cli._args import THRESHOLD_SCALE, add_backend_args, add_kernel_args, family_of_bundle, thresholds_of
from edgesentry.cli._detect import Item, exit_code, run_detector, verdict_text, write_records
from edgesentry.detectors.mavd import convert
from edgesentry.evaluation.mavd import xd_video_id
from edgesentry.io.files import NPY_SUFFIXES, expand
from edgesentry.result import Result

CONVERT_HELP = "convert the official MAVD weights (a directory with {v,a,f,va,vf,vaf}_model.pth) into a bundle"


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("weights", help="directory with {v,a,f,va,vf,vaf}_model.pth (official saved_models/ap86.07)")
    parser.add_argument("--trim", action="store_true", help="default to trimming unequal T across modalities")
    parser.add_argument("--onnx", action="store_true", help="also export features.onnx into the bundle")


def convert_from_args(args: argparse.Namespace) -> Bundle:
    return convert(args.weights, output=args.output, overwrite=args.force, trim=args.trim)


def add_detect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="MAVD bundle directory")
    parser.add_argument("--rgb", nargs="+", required=True,
                        help="RGB feature .npy files (one per crop), folders or quoted globs")
    parser.add_argument("--flow", nargs="+", required=True,
                        help="flow feature .npy files (one per crop), folders or quoted globs")
    parser.add_argument("--audio", nargs="+", required=True,
                        help="VGGish feature .npy files (one per video), folders or quoted globs")
    parser.add_argument("--trim", action="store_true", help="cut unequal streams to the shortest T")
    parser.add_argument("--threshold", type=float, default=None,
                        help=f"score threshold for the label, {THRESHOLD_SCALE} (default: the bundle's)")
    parser.add_argument("--out", default=None,
                        help="directory for <video>_frame_scores.npy, <video>_snippet_scores.npy and the records")
    add_backend_args(parser)
    add_kernel_args(parser)


def _by_video(paths: list[Path]) -> dict[str, list[str]]:
    videos: dict[str, list[str]] = {}
    for path in paths:
        videos.setdefault(xd_video_id(path), []).append(str(path))
    return videos


def video_items(rgb: list[str], flow: list[str], audio: list[str]) -> list[Item]:
    """Feature files grouped per video by their XD-Violence names (``<video>__<crop>.npy``,
    ``<video>__vggish.npy``); a video lacking a stream is a failed item. With one video per
    stream the files pair whatever their names."""
    streams = {name: _by_video(expand(given, NPY_SUFFIXES, what=f"{name} feature"))
               for name, given in (("rgb", rgb), ("flow", flow), ("audio", audio))}
    if all(len(v) == 1 for v in streams.values()):
        only = {name: next(iter(v.values())) for name, v in streams.items()}
        vid = next(iter(streams["rgb"]))
        return [Item(vid, {"rgb": only["rgb"], "flow": only["flow"], "audio": only["audio"][0]}, vid)]
    items = []
    for vid in sorted(set().union(*streams.values())):
        missing = [name for name, v in streams.items() if vid not in v]
        if missing:
            items.append(Item(vid, None, vid, error=f"no {' / '.join(missing)} features for video {vid!r}"))
        elif len(streams["audio"][vid]) != 1:
            items.append(Item(vid, None, vid, error=f"{len(streams['audio'][vid])} audio files for video {vid!r}; "
                                                    "expected one"))
        else:
            value = {"rgb": streams["rgb"][vid], "flow": streams["flow"][vid], "audio": streams["audio"][vid][0]}
            items.append(Item(vid, value, vid))
    return items


def detect_from_args(args: argparse.Namespace) -> int:
    family_of_bundle(args.bundle, "mavd", command="detect mavd")
    det = load(args.bundle, backend=args.backend, kernels=args.kernels, threshold=args.threshold,
               trim=args.trim or None)
    items = video_items(args.rgb, args.flow, args.audio)
    out = Path(args.out) if args.out else None

    def write(item: Item, res: Result) -> dict[str, Any]:
        np.save(out / f"{item.name}_frame_scores.npy", res.extras["frame_scores"])
        np.save(out / f"{item.name}_snippet_scores.npy", res.extras["snippet_scores"])
        return {"files": [f"{item.name}_frame_scores.npy", f"{item.name}_snippet_scores.npy"]}

    run = run_detector(det, items, out, kind="video", describe=_describe, write=write)
    write_records(run, out, {"bundle": args.bundle, "backend": det.backend, **thresholds_of(det)})
    return exit_code(run)


def _describe(res: Result, record: dict[str, Any]) -> str:
    return f"{res.info['snippets']} snippets x {res.info['crops']} crops, max snippet {verdict_text(res)}"
