"""MAVD on XD-Violence: frame-level AP exactly as the official ``test()``.

    out = evaluate(det, "list/video_test.list", "annotations.txt")   # det = edgesentry.load(BUNDLE)
    out["ap"], out["videos"], out["frames"], out["positive_frames"]

The lists hold one RGB ``.npy`` per crop, crop-major per video (``flow_test.list`` and
``audio_test.list`` beside them); the ground truth is built from ``annotations.txt`` as
XDVioDet's ``make_gt`` does; the metric is ``edgesentry.metrics.pr_auc`` over the frame scores
(each snippet score repeated 16 times).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry.detectors.mavd import FRAMES_PER_SNIPPET, MAVDDetector
from edgesentry.errors import InputError
from edgesentry.metrics import pr_auc

_CROP_SUFFIX = re.compile(r"(__\d+|__vggish)?\.npy$")


def xd_video_id(path: str | os.PathLike) -> str:
    """``.../v=abc__#1_label_B4-0-0__3.npy`` -> ``v=abc__#1_label_B4-0-0`` (XD-Violence names)."""
    return _CROP_SUFFIX.sub("", Path(path).name)


def read_annotations(path: str | os.PathLike) -> dict[str, list[tuple[int, int]]]:
    """XD-Violence ``annotations.txt``: ``<id> s1 e1 [s2 e2 ...]`` (frames) -> id -> intervals.

    A trailing ``.mp4`` on the id is dropped. Normal videos are absent (all-zero labels).
    """
    out: dict[str, list[tuple[int, int]]] = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        vid = parts[0][:-4] if parts[0].endswith(".mp4") else parts[0]
        nums = parts[1:]
        if len(nums) % 2:
            raise InputError(f"{path}:{lineno}: expected start/end frame pairs after the id; got {len(nums)} numbers")
        try:
            vals = [int(n) for n in nums]
        except ValueError:
            raise InputError(f"{path}:{lineno}: frame numbers must be integers; got {nums}") from None
        out[vid] = [(vals[i], vals[i + 1]) for i in range(0, len(vals), 2)]
    return out


def frame_labels(
    video_ids: Sequence[str],
    snippet_counts: Sequence[int],
    annotations: Mapping[str, Sequence[tuple[int, int]]],
) -> np.ndarray:
    """Frame-level 0/1 ground truth as the official ``gt.npy`` (XDVioDet ``make_gt``).

    Each video contributes ``16 T`` frames; frames in an annotated ``[start, end)`` interval
    (clipped to the video) are 1. Videos without annotations (normal, ``label_A``) are all 0;
    a violent-named video without annotations is an ``InputError``.
    """
    if len(video_ids) != len(snippet_counts):
        raise InputError(f"{len(video_ids)} video ids but {len(snippet_counts)} snippet counts")
    parts = []
    for vid, t in zip(video_ids, snippet_counts):
        n = FRAMES_PER_SNIPPET * int(t)
        gt = np.zeros(n, np.uint8)
        if vid in annotations:
            for s, e in annotations[vid]:
                gt[max(0, s) : max(0, min(e, n))] = 1
        elif "_label_A" not in vid:
            raise InputError(f"video {vid!r} is not normal (no '_label_A') but has no annotation")
        parts.append(gt)
    return np.concatenate(parts) if parts else np.zeros(0, np.uint8)


def read_feature_list(path: str | os.PathLike) -> list[str]:
    """A MAVD/XD ``.list`` file: one path per line (relative paths resolve against its folder)."""
    root = Path(path).parent
    lines = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    return [str(p if Path(p).is_absolute() else root / p) for p in lines]


def group_crops(rgb_paths: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Consecutive list lines of one video (crop-major per video) -> [(video id, paths)]."""
    videos: list[tuple[str, list[str]]] = []
    for p in rgb_paths:
        vid = xd_video_id(p)
        if videos and videos[-1][0] == vid:
            videos[-1][1].append(p)
        else:
            videos.append((vid, [p]))
    return videos


def evaluate(
    det: MAVDDetector,
    rgb_list: str | os.PathLike,
    annotations: str | os.PathLike,
    *,
    flow_list: str | os.PathLike | None = None,
    audio_list: str | os.PathLike | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Frame-level AP as the official ``test()``: every video of the lists through ``det``,
    frame scores concatenated in list order, ``pr_auc`` against labels from ``annotations``.

    ``flow_list``/``audio_list`` default to the RGB list's name with ``video`` replaced by
    ``flow``/``audio`` (the MAVD ``list/`` naming).
    """
    rgb_list = Path(rgb_list)
    flow_list = Path(flow_list) if flow_list else rgb_list.with_name(rgb_list.name.replace("video", "flow"))
    audio_list = Path(audio_list) if audio_list else rgb_list.with_name(rgb_list.name.replace("video", "audio"))
    for name, p in (("flow", flow_list), ("audio", audio_list)):
        if not p.is_file():
            raise InputError(f"{name} list {str(p)!r} not found; pass it explicitly")
    rgb_videos = group_crops(read_feature_list(rgb_list))
    flow_videos = group_crops(read_feature_list(flow_list))
    audio_paths = read_feature_list(audio_list)
    if not (len(rgb_videos) == len(flow_videos) == len(audio_paths)):
        raise InputError(
            f"lists disagree: {len(rgb_videos)} RGB videos, {len(flow_videos)} flow videos, "
            f"{len(audio_paths)} audio files"
        )
    annos = read_annotations(annotations)
    scores, ids, counts = [], [], []
    for i, ((vid, rgb), (fvid, flow), audio) in enumerate(zip(rgb_videos, flow_videos, audio_paths)):
        if fvid != vid or xd_video_id(audio) != vid:
            raise InputError(f"video {i}: RGB {vid!r}, flow {fvid!r} and audio {xd_video_id(audio)!r} differ")
        res = det.predict({"rgb": rgb, "flow": flow, "audio": audio})
        scores.append(res.extras["frame_scores"])
        ids.append(vid)
        counts.append(res.info["snippets"])
        if progress:
            print(f"\r{i + 1}/{len(rgb_videos)} videos", end="", flush=True)
    if progress:
        print()
    gt = frame_labels(ids, counts, annos)
    frame_scores = np.concatenate(scores)
    return {
        "ap": pr_auc(gt, frame_scores),
        "videos": len(ids),
        "frames": int(gt.size),
        "positive_frames": int(gt.sum()),
        "gt": gt,
        "frame_scores": frame_scores,
    }
