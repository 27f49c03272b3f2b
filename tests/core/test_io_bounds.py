"""Every reader is bounded and typed (issue 21, findings 2, 5, 6, 8).

Hostile files are crafted byte by byte: PNG headers that declare 10^8 or 9 * 10^8 pixels,
16-bit and float images, ENVI headers with negative, fractional or absurd fields and data files
that are devices, MATLAB v7.3 files that declare a huge unused variable or are corrupt, and
cubes scaled to 1e200. Each must give the documented ``InputError`` (naming what was declared
and the limit), a correct value, or a bounded read, never a library exception or gigabytes.
"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import edgesentry
from edgesentry.errors import InputError
from edgesentry.io.hsi import read_cube
from edgesentry.io.image import as_image, read_image
from tests.hostile import png_bytes


# --------------------------------------------------------------------- images: findings 2, 5, 8
def test_png_declaring_nine_hundred_million_pixels_is_an_input_error(tmp_path: Path) -> None:
    """Findings 2 and 5: PIL's ``DecompressionBombError`` escaped (a traceback, a dead capture thread)."""
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bytes(30_000, 30_000))
    with pytest.raises(InputError, match=r"declares 900000000 pixels, above the decoder's limit of \d+ pixels"):
        read_image(path)


def test_png_over_our_limit_is_refused_from_its_header(tmp_path: Path) -> None:
    """Finding 8: a 10^8-pixel PNG of a few KB was decoded (1.8 GB). The header alone decides now."""
    from edgesentry.io.image import DEFAULT_MAX_IMAGE_PIXELS

    path = tmp_path / "big.png"
    path.write_bytes(png_bytes(10_000, 10_000))
    assert path.stat().st_size < 1000
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=f"declares 10000x10000 = 100000000 pixels, above the limit of "
                                             f"{DEFAULT_MAX_IMAGE_PIXELS} pixels"):
            read_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 << 20, f"refusing the header took {peak / 2**20:.0f} MiB"


def test_image_limit_is_configurable(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "small.png"
    path.write_bytes(png_bytes(40, 30, complete=True))
    assert read_image(path).shape == (30, 40, 3)
    with pytest.raises(InputError, match="declares 40x30 = 1200 pixels, above the limit of 1000 pixels"):
        read_image(path, max_pixels=1000)
    monkeypatch.setenv("EDGESENTRY_MAX_IMAGE_PIXELS", "1199")
    with pytest.raises(InputError, match="above the limit of 1199 pixels"):
        read_image(path)
    monkeypatch.setenv("EDGESENTRY_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(edgesentry.ConfigError, match="EDGESENTRY_MAX_IMAGE_PIXELS must be a positive integer"):
        read_image(path)


def test_fifo_named_like_an_image_is_refused_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    with pytest.raises(InputError, match="is a FIFO, socket or device, not a regular file"):
        read_image(path)


# ------------------------------------------------------------------------ images: finding 6
def _save(tmp_path: Path, array: np.ndarray, name: str, **kw) -> Path:
    from PIL import Image

    path = tmp_path / name
    Image.fromarray(array, **kw).save(path)
    return path


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    """Finding 6: a 16-bit PNG was clipped (99.6% of pixels became 255)."""
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    path = _save(tmp_path, ramp, "deep.png")
    rgb = read_image(path)
    expected = np.round(ramp.astype(np.float64) * 255 / 65535).astype(np.uint8)  # the documented rule
    np.testing.assert_array_equal(rgb, np.repeat(expected[:, :, None], 3, axis=2))
    assert (rgb == 255).mean() < 0.01


def test_16_bit_pgm_and_big_endian_are_scaled(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32768, 65535]], np.uint16)
    pgm = tmp_path / "deep.pgm"
    pgm.write_bytes(b"P5\n4 1\n65535\n" + values.astype(">u2").tobytes())
    np.testing.assert_array_equal(read_image(pgm)[0, :, 0], [0, 1, 128, 255])
    from PIL import Image

    big_endian = Image.frombytes("I;16B", (4, 1), values.astype(">u2").tobytes())
    np.testing.assert_array_equal(as_image(big_endian)[0][0, :, 0], [0, 1, 128, 255])


def test_float_and_wide_integer_images_are_refused(tmp_path: Path) -> None:
    path = _save(tmp_path, np.linspace(0, 3, 12, dtype=np.float32).reshape(3, 4), "float.tif")
    with pytest.raises(InputError, match="32-bit float image \\(mode F\\) with no fixed range"):
        read_image(path)
    path = _save(tmp_path, np.array([[-5, 70000]], np.int32), "wide.tif")
    with pytest.raises(InputError, match=r"32-bit integer image \(mode I\) with values in \[-5, 70000\]"):
        read_image(path)


@pytest.mark.parametrize("mode", ["1", "L", "P", "LA", "RGBA", "CMYK", "YCbCr"])
def test_eight_bit_modes_convert_like_pil(tmp_path: Path, mode: str) -> None:
    from PIL import Image

    rgb = (np.arange(8 * 6 * 3).reshape(8, 6, 3) * 5 % 256).astype(np.uint8)
    im = Image.fromarray(rgb).convert(mode)
    path = tmp_path / f"m.{'tif' if mode in ('CMYK', 'YCbCr', 'LA') else 'png'}"
    im.save(path)
    with Image.open(path) as again:
        expected = np.asarray(again.convert("RGB"))
    np.testing.assert_array_equal(read_image(path), expected)


# --------------------------------------------------------------------------- ENVI: findings 5, 8
def _envi(tmp_path: Path, fields: dict[str, str], data: bytes | None = b"\x00" * 64) -> Path:
    header = tmp_path / "scene.hdr"
    header.write_text("ENVI\n" + "".join(f"{k} = {v}\n" for k, v in fields.items()))
    if data is not None:
        (tmp_path / "scene.img").write_bytes(data)
    return header


GOOD = {"samples": "2", "lines": "2", "bands": "2", "data type": "4", "interleave": "bsq", "byte order": "0"}


@pytest.mark.parametrize("field, value, match", [
    ("samples", "-4", r"'samples' must be an integer >= 1; got '-4'"),
    ("lines", "2.5", r"'lines' must be an integer >= 1; got '2.5'"),
    ("bands", "0", r"'bands' must be an integer >= 1; got 0"),
    ("bands", "99999999999999999999", r"'bands' must be an integer >= 1; got '9999"),
    ("header offset", "-8", r"'header offset' must be an integer >= 0; got '-8'"),
    ("data type", "7", r"data type 7 is not supported"),
    ("byte order", "2", r"byte order must be 0 \(little endian\) or 1 \(big endian\); got 2"),
    ("interleave", "zigzag", r"unknown interleave 'zigzag'"),
], ids=["negative-samples", "fractional-lines", "zero-bands", "overlong", "negative-offset", "data-type",
        "byte-order", "interleave"])
def test_envi_header_fields_are_validated(tmp_path: Path, field: str, value: str, match: str) -> None:
    """Finding 5: negative or non-integer fields and negative offsets raised ``ValueError`` deep in numpy."""
    header = _envi(tmp_path, {**GOOD, field: value})
    with pytest.raises(InputError, match=match):
        read_cube(header)


def test_envi_reads_are_bounded_by_the_declared_size(tmp_path: Path) -> None:
    """Finding 8: a header pointing at an endless source read until a 2 GB cap. Now the data file
    must be a regular file holding the declared bytes before anything is read."""
    header = _envi(tmp_path, {**GOOD, "samples": "100", "lines": "100", "bands": "100", "data type": "5"},
                   data=None)
    os.symlink("/dev/zero", tmp_path / "scene.img")
    with pytest.raises(InputError, match="ENVI data file .* is a FIFO, socket or device, not a regular file"):
        read_cube(header)
    (tmp_path / "scene.img").unlink()
    (tmp_path / "scene.img").write_bytes(bytes(1000))
    with pytest.raises(InputError, match=r"expected 1000000 values for 100x100x100 .*the file has 1000 \(truncated"):
        read_cube(header)


def test_envi_declared_size_is_capped_before_reading(tmp_path: Path, monkeypatch) -> None:
    header = _envi(tmp_path, GOOD, data=np.arange(8, dtype="<f4").tobytes())
    np.testing.assert_array_equal(read_cube(header).shape, (2, 2, 2))
    monkeypatch.setenv("EDGESENTRY_MAX_CUBE_BYTES", "31")
    with pytest.raises(InputError, match=r"declares 32 bytes, above the limit of 31 bytes"):
        read_cube(header)


def test_envi_header_has_a_size_cap(tmp_path: Path) -> None:
    header = _envi(tmp_path, GOOD, data=np.arange(8, dtype="<f4").tobytes())
    header.write_text(header.read_text() + "description = {" + "x" * (2 << 20) + "}\n")
    with pytest.raises(InputError, match=r"ENVI header .* has \d+ bytes; the limit is 1048576"):
        read_cube(header)


def test_envi_values_in_every_interleave_and_byte_order(tmp_path: Path) -> None:
    cube = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # (lines, samples, bands)
    layouts = {"bsq": cube.transpose(2, 0, 1), "bil": cube.transpose(0, 2, 1), "bip": cube}
    for interleave, disk in layouts.items():
        for order, dt in (("0", "<f4"), ("1", ">f4")):
            folder = tmp_path / f"{interleave}{order}"
            folder.mkdir()
            header = _envi(folder, {"samples": "3", "lines": "2", "bands": "4", "data type": "4",
                                    "interleave": interleave, "byte order": order, "header offset": "5"},
                           data=b"HEAD!" + np.ascontiguousarray(disk).astype(dt).tobytes())
            np.testing.assert_array_equal(read_cube(header), cube)


# ----------------------------------------------------------------------- .mat v7.3: findings 5, 8
h5py = pytest.importorskip("h5py")


def test_mat73_reads_only_the_cube_variable(tmp_path: Path) -> None:
    """Finding 8: a 4.9 KB v7.3 file declaring an unused 2 GB variable peaked at 2 GB (every
    dataset was read). Here the unused variable declares 512 MiB; reading the cube stays small."""
    path = tmp_path / "scene.mat"
    cube = np.random.default_rng(0).random((6, 5, 4))
    with h5py.File(path, "w") as fh:
        fh.create_dataset("data", data=cube.T)  # MATLAB stores the transpose
        fh.create_dataset("unused", shape=(8192, 8192), dtype="f8", chunks=(256, 256))  # never written
    assert path.stat().st_size < 64 << 10
    tracemalloc.start()
    try:
        got = read_cube(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(got, cube)
    assert peak < 16 << 20, f"reading a 960-byte cube took {peak / 2**20:.0f} MiB"


def test_mat73_cube_size_is_checked_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "bomb.mat"
    with h5py.File(path, "w") as fh:
        fh.create_dataset("data", shape=(4096, 4096, 64), dtype="f8", chunks=(64, 64, 64))  # 8 GiB declared
    with pytest.raises(InputError, match=r"variable 'data' of shape \(64, 4096, 4096\) declares 8589934592 bytes, "
                                         r"above the limit of \d+ bytes"):
        read_cube(path)


def test_corrupt_mat73_is_an_input_error(tmp_path: Path) -> None:
    """Finding 5: a corrupt v7.3 file raised h5py's ``OSError`` with a traceback."""
    path = tmp_path / "scene.mat"
    with h5py.File(path, "w") as fh:
        fh.create_dataset("data", data=np.ones((3, 4, 5)))
    data = bytearray(path.read_bytes())
    data[600:1400] = bytes(range(200)) * 4  # scrambled object headers, then cut short
    path.write_bytes(bytes(data[:2048]))
    with pytest.raises(InputError, match="is not a readable MATLAB v7.3 \\(HDF5\\) file"):
        read_cube(path)


def test_mat_v5_reads_only_the_chosen_variable(tmp_path: Path, monkeypatch) -> None:
    import scipy.io

    path = tmp_path / "scene.mat"
    cube = np.random.default_rng(1).random((5, 4, 3))
    scipy.io.savemat(path, {"data": cube, "map": np.eye(5, 4), "other": np.zeros((60, 60, 60))})
    np.testing.assert_array_equal(read_cube(path), cube)
    monkeypatch.setenv("EDGESENTRY_MAX_CUBE_BYTES", "100")
    with pytest.raises(InputError, match=r"variable 'data' of shape \(5, 4, 3\) declares 480 bytes"):
        read_cube(path)


# ------------------------------------------------------------------------------ RX: finding 5
@pytest.mark.parametrize("scale", [1e200, 1e-200, 1e300])
@pytest.mark.parametrize("mode", ["global", "local"])
def test_rx_on_extreme_scales_equals_rx_on_the_cube(scale: float, mode: str) -> None:
    """Finding 5: RX on a cube scaled by 1e200 raised numpy's ``LinAlgError``. RX is scale
    invariant, so the scores must equal those of the unscaled cube (rtol 1e-9: the power-of-two
    rescaling is exact; the decimal scale factor itself rounds)."""
    cube = np.random.default_rng(2).random((12, 13, 5))
    options = {"mode": "local", "window": (1, 5)} if mode == "local" else {}
    det = edgesentry.load("rx", **options)
    base = det.predict(cube)
    scaled = det.predict(cube * scale)
    np.testing.assert_allclose(scaled.extras["scores"], base.extras["scores"], rtol=1e-9)
    assert scaled.score == pytest.approx(base.score, rel=1e-9)
