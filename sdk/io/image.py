"""Images: read a file, bring any accepted form to (H, W, 3) uint8 RGB, resize like torch.

Every family and ``stream`` use these; none redefines them (supervision keeps its image
helpers in one module the same way).

    rgb = read_image("part.png")                        # (H, W, 3) uint8 RGB, decoded fully
    rgb, source = as_image(x, color="bgr", who="ISSTAD")  # path, PIL image or array
    rgb = to_rgb_uint8(frame, convert=True)             # grey / RGBA decoder output -> RGB
    small = resize_bilinear(chw, (224, 224))            # == F.interpolate(bilinear, antialias=False)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgesentry.errors import ConfigError, InputError, describe

Color = Literal["rgb", "bgr"]
#: the suffixes folder expansion, hot folders and ``edgesentry calibrate`` take as images
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB (PIL ``convert('RGB')``, as the seeds do).

    The file is decoded in full here, so a truncated file fails now with ``InputError``
    rather than later inside a detector.
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise InputError(f"image file {str(p)!r} does not exist")
    try:
        with Image.open(p) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(f"{str(p)!r} is not a readable image: {exc}") from None


def to_rgb_uint8(image: Any, *, color: Color = "rgb", convert: bool = False, who: str = "image") -> np.ndarray:
    """Validate an image array and return it as C-contiguous (H, W, 3) uint8 RGB.

    Args:
        image: (H, W, 3) uint8 array; with ``convert=True`` also (H, W), (H, W, 1) grey and
            (H, W, 4) RGBA (what decoders hand out; alpha is dropped).
        color: channel order of ``image``; ``"bgr"`` (OpenCV) is flipped to RGB.
        convert: accept grey and RGBA (decoder output) instead of refusing them (user input).
        who: names the caller in error messages.

    Raises:
        InputError: wrong shape, dtype or an empty image. ConfigError: unknown ``color``.
    """
    if color not in ("rgb", "bgr"):
        raise ConfigError(f"color must be 'rgb' or 'bgr'; got {color!r}")
    arr = np.asarray(image)
    if convert and arr.ndim == 2:
        arr = arr[:, :, None]
    if convert and arr.ndim == 3 and arr.shape[2] in (1, 4):
        arr = np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr[:, :, :3]
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"{who} expects an (H, W, 3) uint8 image (channel-last RGB); got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise InputError(f"{who} expects uint8 pixels in [0, 255]; got dtype {arr.dtype} (convert with "
                         "(img * 255).round().astype(np.uint8) for [0, 1] floats)")
    if min(arr.shape[:2]) < 1:
        raise InputError(f"{who} got an empty image of shape {arr.shape}")
    return np.ascontiguousarray(arr[..., ::-1] if color == "bgr" else arr)


def as_image(x: Any, *, color: Color = "rgb", who: str = "image") -> tuple[np.ndarray, dict[str, Any]]:
    """A detector's image input -> ((H, W, 3) uint8 RGB, source facts).

    ``x`` is an image path (decoded to RGB; ``color`` is for arrays), a PIL image or an
    (H, W, 3) uint8 array in ``color`` order. The source record holds ``path`` for files.
    """
    if isinstance(x, (str, os.PathLike)):
        return read_image(x), {"path": os.fspath(x)}
    if hasattr(x, "convert") and hasattr(x, "size") and not isinstance(x, np.ndarray):  # a PIL image
        return np.asarray(x.convert("RGB")), {}
    if not isinstance(x, np.ndarray):
        raise InputError(f"{who} expects an (H, W, 3) uint8 RGB array, a PIL image or an image path; got {describe(x)}")
    return to_rgb_uint8(x, color=color, who=who), {}


def _resize_axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # torch upsample_bilinear2d, align_corners=False, no antialias: source index
    # scale * (dst + 0.5) - 0.5 as one fused multiply-add (exact product, one float32
    # rounding: that is what torch's CPU kernel computes), clamped at 0; the right neighbour
    # clamped at the edge. A plain float32 multiply then subtract is off by up to 1.5e-5.
    scale = np.float32(n_in) / np.float32(n_out)
    dst = np.arange(n_out, dtype=np.float64) + 0.5
    real = (np.float64(scale) * dst - 0.5).astype(np.float32)
    real = np.maximum(real, np.float32(0.0))
    i0 = real.astype(np.int64)
    lam1 = (real - i0.astype(np.float32)).astype(np.float32)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (np.float32(1.0) - lam1).astype(np.float32), lam1


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of the last two axes, exactly as ``F.interpolate(mode='bilinear',
    align_corners=False, antialias=False)`` (float32; no torch needed)."""
    x = np.asarray(x, dtype=np.float32)
    h_in, w_in = x.shape[-2:]
    h_out, w_out = size
    if (h_in, w_in) == (h_out, w_out):
        return x.copy()
    y0, y1, hy0, hy1 = _resize_axis(h_in, h_out)
    x0, x1, wx0, wx1 = _resize_axis(w_in, w_out)
    top = x[..., y0, :]
    bottom = x[..., y1, :]
    row_top = wx0 * top[..., x0] + wx1 * top[..., x1]
    row_bottom = wx0 * bottom[..., x0] + wx1 * bottom[..., x1]
    return (hy0[:, None] * row_top + hy1[:, None] * row_bottom).astype(np.float32)
