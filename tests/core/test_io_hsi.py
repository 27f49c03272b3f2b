"""Cube readers: MATLAB v5 and v7.3, .npy, ENVI (every interleave, both byte orders)."""

from __future__ import annotations

import numpy as np
import pytest

from edgesentry import InputError
from edgesentry.io.hsi import read_cube, read_envi, read_ground_truth, select_bands


def _write_envi(tmp_path, cube, interleave, byteorder):
    h, w, b = cube.shape
    layout = {"bsq": (2, 0, 1), "bil": (0, 2, 1), "bip": (0, 1, 2)}[interleave]
    dtype = cube.dtype.newbyteorder(">" if byteorder else "<")
    (tmp_path / "scene.img").write_bytes(np.ascontiguousarray(cube.transpose(layout)).astype(dtype).tobytes())
    code = {np.dtype("int16"): 2, np.dtype("float32"): 4, np.dtype("uint16"): 12}[cube.dtype]
    (tmp_path / "scene.hdr").write_text(
        "ENVI\ndescription = {test cube}\n"
        f"samples = {w}\nlines = {h}\nbands = {b}\nheader offset = 0\nfile type = ENVI Standard\n"
        f"data type = {code}\ninterleave = {interleave}\nbyte order = {byteorder}\n"
        "wavelength = {400.0, 500.0,\n 600.0}\n"
    )
    return tmp_path / "scene.hdr"


@pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
@pytest.mark.parametrize("byteorder", [0, 1])
@pytest.mark.parametrize("dtype", ["int16", "float32", "uint16"])
def test_envi_roundtrip(tmp_path, rng, interleave, byteorder, dtype):
    cube = (rng.normal(size=(5, 7, 3)) * 100).astype(dtype)
    header = _write_envi(tmp_path, cube, interleave, byteorder)
    for path in (header, tmp_path / "scene.img"):
        got = read_cube(path)
        assert got.shape == (5, 7, 3) and got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, cube)


def test_envi_truncated_file_is_reported(tmp_path, rng):
    header = _write_envi(tmp_path, rng.normal(size=(4, 4, 3)).astype("float32"), "bsq", 0)
    data = tmp_path / "scene.img"
    data.write_bytes(data.read_bytes()[:-10])
    with pytest.raises(InputError, match="truncated"):
        read_envi(header)


def test_mat_v5_picks_the_cube_and_the_map(shared):
    path = shared / "data/abu/abu-urban-3.mat"
    cube = read_cube(path)
    assert cube.shape == (100, 100, 191) and cube.dtype == np.uint16
    gt = read_ground_truth(path)
    assert gt.shape == (100, 100) and gt.sum() == 52


def test_mat_v73_is_read_through_hdf5(tmp_path, rng):
    h5py = pytest.importorskip("h5py", reason="MATLAB v7.3 files are HDF5")
    cube = rng.integers(-100, 100, size=(6, 5, 4)).astype(np.int16)
    path = tmp_path / "scene.mat"
    # MATLAB v7.3: a 512-byte text header in the HDF5 user block, arrays stored transposed
    with h5py.File(path, "w", userblock_size=512) as fh:
        fh["hsi_cube"] = cube.T
        fh["map"] = (cube[..., 0] > 50).T.astype(np.uint8)
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .")
    np.testing.assert_array_equal(read_cube(path), cube)
    np.testing.assert_array_equal(read_cube(path, variable="hsi_cube"), cube)
    np.testing.assert_array_equal(read_ground_truth(path), cube[..., 0] > 50)


def test_npy_and_variable_errors(tmp_path, rng):
    cube = rng.normal(size=(3, 4, 5))
    np.save(tmp_path / "c.npy", cube)
    np.testing.assert_array_equal(read_cube(tmp_path / "c.npy"), cube)
    np.save(tmp_path / "flat.npy", cube[0])
    with pytest.raises(InputError, match=r"\(H, W, B\) cube; got shape \(4, 5\)"):
        read_cube(tmp_path / "flat.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="plain .npy"):
        read_cube(tmp_path / "obj.npy")
    (tmp_path / "bad.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(InputError, match="MATLAB"):
        read_cube(tmp_path / "bad.mat")
    with pytest.raises(InputError, match="unsupported cube format"):
        read_cube(_touch(tmp_path / "c.tif"))


def _touch(path):
    path.write_bytes(b"")
    return path


def test_select_bands():
    cube = np.arange(2 * 2 * 6).reshape(2, 2, 6)
    assert select_bands(cube, 3).shape == (2, 2, 3)
    np.testing.assert_array_equal(select_bands(cube, [5, 0])[..., 0], cube[..., 5])
    with pytest.raises(InputError, match="band indices must lie"):
        select_bands(cube, [0, 6])
    with pytest.raises(InputError, match="non-empty list of integers"):
        select_bands(cube, [])
