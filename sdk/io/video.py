"""Video: clips (a file or a span of it), frame decoding with OpenCV, the resize-and-crop of clips.

    frames = read_frames(Clip.parse("clip.mp4@0:0.5"), 8)   # [8, H, W, 3] uint8 RGB, seed's sampling
    x = prepare_frames(frames, short_side=256, crop=224)    # [8, 3, 224, 224] float32 in [0, 1]
    for rgb in iter_frames("clip.mp4"): ...                 # every frame, (H, W, 3) uint8 RGB

OpenCV (``edgesentry[video]``) is imported on first use.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry.errors import ConfigError, InputError, describe

#: video files a folder contributes (``edgesentry.io.files.expand``)
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass(frozen=True)
class Clip:
    """A video file, optionally a time span of it given as fractions of its length."""

    path: str
    start: float = 0.0
    end: float = 1.0

    @classmethod
    def parse(cls, text: str) -> Clip:
        """``"clip.mp4"`` or ``"clip.mp4@0:0.5"`` (first half)."""
        if "@" in text and not Path(text).exists():
            path, span = text.rsplit("@", 1)
            try:
                a, b = (float(v) for v in span.split(":"))
            except ValueError:
                raise ConfigError(f"clip span must look like PATH@START:END with fractions; got {text!r}") from None
            return cls(path, a, b)
        return cls(text)


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise ConfigError("decoding video needs OpenCV: pip install edgesentry[video]") from None
    return cv2


def sample_indices(n: int, frames: int) -> np.ndarray:
    """The seed's test-time sampling ``int(linspace(1, n - 2, frames))`` (all frames if too short)."""
    if n >= 3:
        return np.linspace(1, n - 2, frames).astype(int)
    return np.linspace(0, n - 1, frames).astype(int)


def iter_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Every frame of a video file, decoded with OpenCV, as (H, W, 3) uint8 RGB."""
    cv2 = _cv2()
    cap = cv2.VideoCapture(str(path))
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def read_frames(clip: Clip, frames: int) -> np.ndarray:
    """Decode ``clip`` with OpenCV and return ``frames`` sampled RGB uint8 frames [T, H, W, 3]."""
    cv2 = _cv2()
    if not (0.0 <= clip.start < clip.end <= 1.0):
        raise ConfigError(f"clip span must satisfy 0 <= start < end <= 1; got {clip.start}:{clip.end}")
    if not Path(clip.path).is_file():
        raise InputError(f"video file not found: {clip.path}")
    cap = cv2.VideoCapture(str(clip.path))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if n > 0:
            # Known length: grab (decode) every frame up to the last one needed, convert only those.
            lo = int(round(clip.start * n))
            hi = max(lo + 1, int(round(clip.end * n)))
            wanted = (lo + sample_indices(hi - lo, frames)).tolist()
            got: dict[int, np.ndarray] = {}
            for i in range(max(wanted) + 1):
                if not cap.grab():
                    break
                if i in wanted:
                    ok, frame = cap.retrieve()
                    if ok:
                        got[i] = frame
            if all(i in got for i in wanted):
                return np.stack([cv2.cvtColor(got[i], cv2.COLOR_BGR2RGB) for i in wanted])
    finally:
        cap.release()
    decoded = list(iter_frames(clip.path))  # the container's frame count was wrong (or absent): decode all
    if not decoded:
        raise InputError(f"OpenCV decoded no frames from {clip.path}; is it a video file?")
    n = len(decoded)
    lo = int(round(clip.start * n))
    span = decoded[lo:max(lo + 1, int(round(clip.end * n)))]
    return np.stack([span[i] for i in sample_indices(len(span), frames)])


def prepare_frames(frames: np.ndarray, short_side: int = 256, crop: int = 224) -> np.ndarray:
    """RGB frames [T, H, W, 3] (uint8, or float in [0, 1]) -> [T, 3, crop, crop] float32 in [0, 1].

    Bilinear resize of the short side to ``short_side`` (OpenCV ``INTER_LINEAR``; the seed uses
    PIL bilinear, which differs by at most a few grey levels), centre crop, no mean/std.
    """
    cv2 = _cv2()
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"expected RGB frames [T, H, W, 3]; got {describe(frames)}")
    out = []
    for f in frames:
        img = f.astype(np.float32) / 255.0 if f.dtype == np.uint8 else f.astype(np.float32)
        h, w = img.shape[:2]
        scale = short_side / min(h, w)
        nh, nw = max(crop, int(round(h * scale))), max(crop, int(round(w * scale)))
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        top, left = (nh - crop) // 2, (nw - crop) // 2
        out.append(img[top:top + crop, left:left + crop].transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(out), dtype=np.float32)
