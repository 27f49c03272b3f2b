"""Camera pixel formats (GenICam PFNC names and codes) -> the detectors' (H, W, 3) uint8 RGB.

What each supported format becomes (the detectors take 8-bit RGB):

=====================  =====================================================================
Mono8                  the grey value copied to R, G and B
Mono10 / 12 / 16       16-bit little-endian words, unpacked (one pixel per word); the top 8
                       significant bits (``value >> (bits - 8)``), then copied to R, G and B
BayerXY8               demosaiced by OpenCV (bilinear, ``cv2.COLOR_Bayer<XYZW>2RGB``), the
                       pattern named by the first two pixels of the first row, as the camera
                       reports it (BayerRG8 = R G / G B)
BayerXY10 / 12 / 16    shifted to 8 bits as Mono10/12/16, then demosaiced as BayerXY8
RGB8 / BGR8            packed 3 bytes per pixel; BGR8 is reordered to RGB
RGBa8 / BGRa8          packed 4 bytes per pixel; alpha dropped, BGRa reordered
=====================  =====================================================================

Packed 10/12-bit formats (Mono10p, Mono12Packed, ...) and YUV are refused with the list of
supported formats: set the camera to one of these instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from edgesentry.errors import InputError

Layout = Literal["mono", "bayer", "rgb", "bgr", "rgba", "bgra"]


@dataclass(frozen=True)
class PixelFormat:
    name: str
    code: int  # PFNC code (what a GigE Vision / USB3 Vision buffer carries)
    layout: Layout
    bits: int  # significant bits per sample
    bayer: str = ""  # the 2x2 pattern, first row then second row (RGGB, GRBG, ...)

    @property
    def bytes_per_sample(self) -> int:
        return 1 if self.bits == 8 else 2

    @property
    def channels(self) -> int:
        return {"rgb": 3, "bgr": 3, "rgba": 4, "bgra": 4}.get(self.layout, 1)


def _formats() -> dict[str, PixelFormat]:
    table = [PixelFormat("Mono8", 0x01080001, "mono", 8), PixelFormat("Mono10", 0x01100003, "mono", 10),
             PixelFormat("Mono12", 0x01100005, "mono", 12), PixelFormat("Mono16", 0x01100007, "mono", 16),
             PixelFormat("RGB8", 0x02180014, "rgb", 8), PixelFormat("BGR8", 0x02180015, "bgr", 8),
             PixelFormat("RGBa8", 0x02200016, "rgba", 8), PixelFormat("BGRa8", 0x02200017, "bgra", 8)]
    # PFNC Bayer codes: GR RG GB BG at 8 bits 0x08..0x0B, 10 bits 0x0C..0x0F, 12 bits 0x10..0x13,
    # 16 bits 0x2E..0x31 (GenICam PFNC 2.x table)
    for bits, base in ((8, 0x01080008), (10, 0x0110000C), (12, 0x01100010), (16, 0x0110002E)):
        for offset, pattern in enumerate(("GR", "RG", "GB", "BG")):
            full = {"GR": "GRBG", "RG": "RGGB", "GB": "GBRG", "BG": "BGGR"}[pattern]
            table.append(PixelFormat(f"Bayer{pattern}{bits}", base + offset, "bayer", bits, full))
    return {f.name: f for f in table}


FORMATS: dict[str, PixelFormat] = _formats()
_BY_CODE = {f.code: f for f in FORMATS.values()}
#: vendor spellings of the same formats (Basler's pre-PFNC names)
ALIASES = {"RGB8Packed": "RGB8", "BGR8Packed": "BGR8", "RGBA8Packed": "RGBa8", "BGRA8Packed": "BGRa8",
           "RGB8packed": "RGB8", "BGR8packed": "BGR8"}


def supported_names() -> list[str]:
    return list(FORMATS)


def lookup(name_or_code: str | int, *, who: str = "camera") -> PixelFormat:
    """The supported format of a name (PFNC or vendor alias) or PFNC code.

    Raises:
        InputError: an unsupported format, with the list of supported ones.
    """
    if isinstance(name_or_code, int):
        fmt = _BY_CODE.get(name_or_code)
        shown = f"0x{name_or_code:08x}"
    else:
        fmt = FORMATS.get(ALIASES.get(name_or_code, name_or_code))
        shown = repr(name_or_code)
    if fmt is None:
        raise InputError(f"{who}: pixel format {shown} is not supported; supported: {', '.join(FORMATS)}")
    return fmt


def frame_bytes(fmt: PixelFormat, width: int, height: int) -> int:
    return width * height * fmt.channels * fmt.bytes_per_sample


def to_rgb8(data: bytes | bytearray | memoryview | np.ndarray, fmt: PixelFormat, width: int, height: int,
            *, who: str = "frame") -> np.ndarray:
    """One camera buffer as a C-contiguous (height, width, 3) uint8 RGB array.

    Args:
        data: the buffer's image bytes (at least ``frame_bytes(fmt, width, height)``; a
            longer buffer, e.g. with row padding at the end, is cut).
        fmt: its pixel format.
        width, height: the image size the buffer declares.

    Raises:
        InputError: the buffer is shorter than its declared size (an incomplete frame).
    """
    need = frame_bytes(fmt, width, height)
    flat = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    if width <= 0 or height <= 0 or flat.size < need:
        raise InputError(f"{who}: {fmt.name} {width}x{height} needs {need} bytes, the buffer holds {flat.size}")
    flat = flat[:need]
    if fmt.bytes_per_sample == 2:
        words = flat.view("<u2")
        samples = (words >> (fmt.bits - 8)).astype(np.uint8) if fmt.bits > 8 else words.astype(np.uint8)
    else:
        samples = flat
    if fmt.layout == "mono":
        grey = samples.reshape(height, width)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if fmt.layout == "bayer":
        import cv2

        code = getattr(cv2, f"COLOR_Bayer{fmt.bayer}2RGB")
        return np.ascontiguousarray(cv2.cvtColor(np.ascontiguousarray(samples.reshape(height, width)), code))
    pixels = samples.reshape(height, width, fmt.channels)
    order = [0, 1, 2] if fmt.layout in ("rgb", "rgba") else [2, 1, 0]
    return np.ascontiguousarray(pixels[:, :, order])
