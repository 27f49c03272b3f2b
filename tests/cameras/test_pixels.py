"""Pixel formats -> RGB uint8, against frames whose expected RGB is known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from edgesentry.errors import ConfigError, InputError
from edgesentry.stream.cameras.aravis import import_aravis
from edgesentry.stream.cameras.pixels import FORMATS, frame_bytes, lookup, to_rgb8

cv2 = pytest.importorskip("cv2")


@pytest.mark.parametrize("bits", [8, 10, 12, 16])
def test_mono_keeps_the_top_eight_bits(bits: int, rng: np.random.Generator) -> None:
    h, w = 5, 7
    values = rng.integers(0, 1 << bits, (h, w), dtype=np.uint16 if bits > 8 else np.uint8)
    data = values.astype("<u2").tobytes() if bits > 8 else values.tobytes()
    rgb = to_rgb8(data, lookup(f"Mono{bits}"), w, h)
    expected = (values.astype(np.uint32) >> (bits - 8)).astype(np.uint8)
    assert rgb.shape == (h, w, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], expected)


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Sample an RGB image through a colour filter array named by its 2x2 pattern (row major)."""
    channel = {"R": 0, "G": 1, "B": 2}
    out = np.empty(rgb.shape[:2], dtype=rgb.dtype)
    for i, letter in enumerate(pattern):
        dy, dx = divmod(i, 2)
        out[dy::2, dx::2] = rgb[dy::2, dx::2, channel[letter]]
    return out


def _blocks(h: int, w: int, colours: list[tuple[int, int, int]], block: int) -> np.ndarray:
    img = np.zeros((h, w, 3), dtype=np.int64)
    for k, colour in enumerate(colours):
        x0 = k * block
        img[:, x0:x0 + block] = colour
    return img


@pytest.mark.parametrize("bits", [8, 10, 12, 16])
@pytest.mark.parametrize("pattern", ["RG", "GR", "GB", "BG"])
def test_bayer_demosaics_flat_colours_to_themselves(pattern: str, bits: int) -> None:
    # Flat, saturated colour blocks: away from block borders, any correct demosaic returns the
    # colour exactly; a wrong pattern swaps or mixes channels by up to 200 levels.
    colours = [(200, 40, 10), (10, 180, 60), (30, 20, 220), (250, 250, 5)]
    block, h = 16, 16
    rgb8 = _blocks(h, block * len(colours), colours, block)
    fmt = lookup(f"Bayer{pattern}{bits}")
    raw = _mosaic(rgb8 << (bits - 8), fmt.bayer)
    data = raw.astype("<u2").tobytes() if bits > 8 else raw.astype(np.uint8).tobytes()
    out = to_rgb8(data, fmt, rgb8.shape[1], h)
    for k, colour in enumerate(colours):
        inner = out[3:-3, k * block + 3:(k + 1) * block - 3].reshape(-1, 3)
        assert np.abs(inner.astype(int) - np.array(colour)).max() <= 1, (pattern, bits, colour)


@pytest.mark.parametrize("name, order, channels", [("RGB8", [0, 1, 2], 3), ("BGR8", [2, 1, 0], 3),
                                                   ("RGBa8", [0, 1, 2], 4), ("BGRa8", [2, 1, 0], 4),
                                                   ("RGB8Packed", [0, 1, 2], 3), ("BGR8Packed", [2, 1, 0], 3)])
def test_packed_colour(name: str, order: list[int], channels: int, rng: np.random.Generator) -> None:
    h, w = 4, 6
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    packed = np.empty((h, w, channels), dtype=np.uint8)
    packed[:, :, :3] = rgb[:, :, order]
    if channels == 4:
        packed[:, :, 3] = rng.integers(0, 256, (h, w))
    np.testing.assert_array_equal(to_rgb8(packed.tobytes(), lookup(name), w, h), rgb)


def test_padding_after_the_image_is_ignored_and_short_buffers_refused() -> None:
    fmt = lookup("Mono8")
    img = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = to_rgb8(img.tobytes() + b"\xff" * 5, fmt, 4, 3)
    np.testing.assert_array_equal(out[:, :, 0], img)
    with pytest.raises(InputError, match="needs 12 bytes, the buffer holds 11"):
        to_rgb8(img.tobytes()[:11], fmt, 4, 3)
    assert frame_bytes(lookup("Mono12"), 4, 3) == 24


def test_unsupported_formats_name_the_supported_ones() -> None:
    for bad in ("Mono12p", "YUV422Packed", 0x010C0006):  # packed 12-bit, YUV, Mono12Packed code
        with pytest.raises(InputError, match="is not supported; supported: Mono8, Mono10"):
            lookup(bad)


def test_pfnc_codes_match_the_camera_libraries() -> None:
    """Our PFNC table against Aravis' and pylon's own constants, where they are installed."""
    checked = 0
    try:
        Aravis = import_aravis()
    except ConfigError:
        Aravis = None
    if Aravis is not None:
        names = {"Mono8": "MONO_8", "Mono10": "MONO_10", "Mono12": "MONO_12", "Mono16": "MONO_16",
                 "RGB8": "RGB_8_PACKED", "BGR8": "BGR_8_PACKED", "RGBa8": "RGBA_8_PACKED", "BGRa8": "BGRA_8_PACKED"}
        for fmt in FORMATS.values():
            const = f"BAYER_{fmt.name[5:7]}_{fmt.bits}" if fmt.layout == "bayer" else names[fmt.name]
            assert getattr(Aravis, f"PIXEL_FORMAT_{const}") == fmt.code, fmt.name
            checked += 1
    try:
        from pypylon import pylon
    except ImportError:
        pylon = None
    if pylon is not None:
        for fmt in FORMATS.values():
            spelled = {"RGB8": "RGB8packed", "BGR8": "BGR8packed", "RGBa8": "RGBA8packed",
                       "BGRa8": "BGRA8packed"}.get(fmt.name, fmt.name)
            assert getattr(pylon, f"PixelType_{spelled}") == fmt.code, fmt.name
            checked += 1
    if not checked:
        pytest.skip("neither Aravis nor pypylon is installed: no library table to compare with")
