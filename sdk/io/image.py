"""Images: read a file, bring any accepted form to (H, W, 3) uint8 RGB, resize like torch.

Every family and ``stream`` use these; none redefines them (supervision keeps its image
helpers in one module the same way).

    rgb = read_image("part.png")                        # (H, W, 3) uint8 RGB, decoded fully
    rgb = pil_to_rgb(pil_image)                         # any PIL mode -> RGB, or InputError
    rgb, source = as_image(x, color="bgr", who="ISSTAD")  # path, PIL image or array
    rgb = to_rgb_uint8(frame, convert=True)             # grey / RGBA decoder output -> RGB
    small = resize_bilinear(chw, (224, 224))            # == F.interpolate(bilinear, antialias=False)
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgesentry.errors import ConfigError, InputError, describe
from edgesentry.io.paths import check_regular_file, limit_from_env

Color = Literal["rgb", "bgr"]
#: the suffixes folder expansion, hot folders and ``edgesentry calibrate`` take as images
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")
#: the largest image decoded, in pixels (8192 x 8192); ``EDGESENTRY_MAX_IMAGE_PIXELS`` changes it.
#: A 30 KB PNG can declare 10^8 pixels and take gigabytes to decode: the header is checked first.
DEFAULT_MAX_IMAGE_PIXELS = 1 << 26
#: PIL modes holding 16-bit samples (what 16-bit PNG and TIFF files open as)
_MODES_16BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def max_image_pixels() -> int:
    """The decompression-bomb limit in pixels: ``EDGESENTRY_MAX_IMAGE_PIXELS`` or the default."""
    return limit_from_env("EDGESENTRY_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS)


def read_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB (see ``pil_to_rgb`` for every mode).

    The header is read first: an image declaring more than ``max_pixels`` pixels (default
    ``max_image_pixels()``) is refused before any pixel is decoded. The file is then decoded
    in full, so a truncated file fails now with ``InputError`` rather than later inside a
    detector.

    Raises:
        InputError: missing or not a regular file, too many pixels (naming the count and
            the limit), not a readable image, or a mode with no defined 8-bit range.
    """
    from PIL import Image

    p = Path(path)
    check_regular_file(p, what="image file", error=InputError)
    limit = max_image_pixels() if max_pixels is None else int(max_pixels)
    try:
        with Image.open(p) as im:
            _check_pixels(im.size, limit, p)
            im.load()
            _check_pixels(im.size, limit, p)  # formats with several sizes (ICO) pick one on load
            return pil_to_rgb(im, who=repr(str(p)))
    except InputError:
        raise
    except Image.DecompressionBombError as exc:  # over PIL's own limit: it refuses before we can ask
        found = re.search(r"\((\d+) pixels\)", str(exc))
        count = f"{found.group(1)} pixels" if found else "too many pixels"
        raise InputError(f"{str(p)!r} declares {count}, above the decoder's limit of "
                         f"{2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels (decompression-bomb guard)") from None
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error ... on hostile files
        raise InputError(f"{str(p)!r} is not a readable image: {type(exc).__name__}: {exc}") from None


def _check_pixels(size: tuple[int, int], limit: int, path: Path) -> None:
    width, height = size
    if width * height > limit:
        raise InputError(f"{str(path)!r} declares {width}x{height} = {width * height} pixels, above the limit of "
                         f"{limit} pixels (decompression-bomb guard; EDGESENTRY_MAX_IMAGE_PIXELS raises it)")


def pil_to_rgb(im: Any, *, who: str = "image") -> np.ndarray:
    """A PIL image as (H, W, 3) uint8 RGB.

    - 8-bit modes (``1``, ``L``, ``P``, ``RGB``, ``CMYK``, ``YCbCr`` ...) and their alpha forms:
      PIL's ``convert("RGB")`` (alpha dropped), as the seeds do;
    - 16-bit grey (``I;16*``, and ``I`` holding values in [0, 65535], which is how PIL opens
      16-bit PGM/PPM): scaled to 8 bits with ``round(v * 255 / 65535)``, never clipped;
      48-bit RGB PNGs arrive from PIL already reduced to their high bytes;
    - 32-bit float (``F``) and ``I`` with values outside [0, 65535] have no fixed range and are
      refused, as is any mode PIL cannot convert to RGB.

    Raises:
        InputError: naming the mode.
    """
    mode = im.mode
    if mode in _MODES_16BIT or mode == "I":
        grey = np.asarray(im)
        if grey.size and (int(grey.min()) < 0 or int(grey.max()) > 65535):
            raise InputError(f"{who} is a 32-bit integer image (mode {mode}) with values in "
                             f"[{int(grey.min())}, {int(grey.max())}]; expected 8- or 16-bit samples")
        scaled = ((grey.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(scaled[:, :, None], 3, axis=2)
    if mode == "F":
        raise InputError(f"{who} is a 32-bit float image (mode F) with no fixed range; convert it to 8 or 16 bits")
    try:
        return np.asarray(im.convert("RGB"))
    except ValueError as exc:
        raise InputError(f"{who} has PIL mode {mode!r}, which cannot be converted to RGB: {exc}") from None


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
        return pil_to_rgb(x, who=who), {}
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
