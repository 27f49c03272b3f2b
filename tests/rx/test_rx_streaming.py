"""Global RX in bounded memory: chunked moments and whitening, cubes read in place from disk.

The cpu tier converts a float32, integer or memory-mapped cube to float64 one chunk of rows at
a time and merges the chunks' moments exactly, so any chunk size (1 row, ragged last chunks,
one chunk for everything) gives the reference's scores to 1e-9 relative: only the order of
float64 additions differs (the same tolerance as the single-pass cpu tier in
``test_rx_kernels.py``). The memory tests count numpy's allocations with tracemalloc (the
compiled kernel allocates its outputs through numpy too), which is exact and repeatable.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import edgesentry
from edgesentry import InputError
from edgesentry.io.hsi import read_cube
from edgesentry.kernels import rx
from edgesentry.kernels.rx import cpu, reference
from tests.core.test_io_hsi import _write_envi
from tests.utils import assert_verbose_allclose


def _scene(rng, h, w, b, dtype):
    cube = rng.normal(size=(h, w, b)) * rng.uniform(5, 50, size=b) + 1000.0
    return cube.astype(dtype)


def _close(got, expected):
    assert_verbose_allclose(got, expected, atol=1e-9 * np.abs(expected).max(), rtol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.float64])
@pytest.mark.parametrize("chunk_rows", [1, 2, 7, 64, 10_000, None])
def test_chunked_global_rx_equals_the_reference(rng, dtype, chunk_rows):
    x = _scene(rng, 150, 1, 9, dtype).reshape(150, 9)  # 150 = 21 * 7 + 3: ragged last chunk
    _close(cpu.global_rx(x, chunk_rows=chunk_rows), reference.global_rx(x))


@pytest.mark.parametrize("chunk_rows", [1, 3, 5, None])
def test_cube_of_any_layout_is_scored_in_place(rng, chunk_rows):
    """A band-sequential view (as an ENVI bsq memory map gives), a band slice and a
    Fortran-ordered cube: the kernel reads each as it lies, row block by row block."""
    bsq = _scene(rng, 4, 11, 13, np.float32).transpose(1, 2, 0)  # (11, 13, 4), not contiguous
    sliced = _scene(rng, 12, 10, 6, np.uint16)[..., :4]
    fortran = np.asfortranarray(_scene(rng, 9, 8, 5, np.float32)).reshape(-1, 5, order="F")
    for cube in (bsq, sliced, fortran):
        assert not cube.flags.c_contiguous
        _close(cpu.global_rx(cube, chunk_rows=chunk_rows), reference.global_rx(cube.reshape(-1, cube.shape[-1])))


@pytest.mark.parametrize("n", [2, 7, 8])
def test_chunks_never_hold_one_pixel(rng, n):
    x = _scene(rng, n, 1, 3, np.float32).reshape(n, 3)
    sizes = [data.shape[0] for _, data, _ in cpu._float64_chunks(x, 1)]
    assert sum(sizes) == n and min(sizes) >= 2
    mean, cov = cpu._merged_moments(cpu._float64_chunks(x, 1), 3)
    assert_verbose_allclose(mean, x.astype(np.float64).mean(axis=0), atol=0, rtol=1e-13)
    assert_verbose_allclose(cov, np.cov(x.astype(np.float64), rowvar=False), atol=0, rtol=1e-10)


def test_chunked_pinv_path_equals_the_reference(rng, monkeypatch):
    """The eigendecomposition path (taken for singular scenes) is chunked too; forced here on a
    well-conditioned cube so that no round-off cutoff decides the comparison."""
    monkeypatch.setattr(cpu, "inverse_cholesky", lambda cov, rcond=0.0: None)
    x = _scene(rng, 40, 3, 7, np.float32)
    _close(cpu.global_rx(x, chunk_rows=3), reference.global_rx(x.reshape(-1, 7)))


def test_dispatch_takes_a_cube_on_every_host_tier(rng):
    cube = _scene(rng, 9, 7, 4, np.float32)
    expected = reference.global_rx(cube.reshape(-1, 4))
    for tier in ("reference", "cpu"):
        got, used = rx.global_rx(cube, tier=tier)
        assert used == tier
        _close(got, expected)


def test_float32_cube_is_never_copied_to_float64(rng, monkeypatch):
    """Peak numpy allocation of global RX on a float32 cube: a few chunks, not the 2x-sized
    float64 copy the single pass made."""
    monkeypatch.setattr(cpu, "CHUNK_BYTES", 64 << 10)
    monkeypatch.setattr("edgesentry.detectors.rx._CHECK_BYTES", 64 << 10)
    cube = _scene(rng, 96, 96, 32, np.float32)  # 1.2 MB; its float64 copy would be 2.4 MB
    det = edgesentry.load("rx", kernels="cpu")
    det.predict(cube[:8, :8])  # first call: imports and lazy set-up are not the detector's memory
    tracemalloc.start()
    try:
        result = det.predict(cube)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _close(result.extras["scores"].ravel(), reference.global_rx(cube.reshape(-1, 32)))
    assert peak < cube.nbytes / 2, f"peak {peak} bytes for a {cube.nbytes}-byte cube"


@pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
def test_envi_and_npy_files_are_scored_from_memory_maps(tmp_path, rng, monkeypatch, interleave):
    """Files are mapped, not read: a cube above EDGESENTRY_MAX_CUBE_BYTES still scores with
    global and local RX (both read it block by block), while reading it whole keeps the limit."""
    cube = _scene(rng, 14, 12, 3, np.float32)
    header = _write_envi(tmp_path, cube, interleave, 1)  # big-endian: converted chunk by chunk
    np.save(tmp_path / "scene.npy", cube)
    expected = reference.global_rx(cube.reshape(-1, 3)).reshape(14, 12)
    expected_local = reference.local_rx(cube, inner=1, outer=3)
    monkeypatch.setenv("EDGESENTRY_MAX_CUBE_BYTES", str(cube.nbytes - 1))
    assert isinstance(read_cube(header, mapped=True), np.memmap)
    for path in (header, tmp_path / "scene.npy"):
        result = edgesentry.load("rx", kernels="cpu").predict(path)
        _close(result.extras["scores"], expected)
        local = edgesentry.load("rx", mode="local", window=(1, 3), kernels="cpu").predict(path)
        assert_verbose_allclose(local.extras["scores"], expected_local, atol=0, rtol=1e-9)
        with pytest.raises(InputError, match="above the limit"):
            read_cube(path)


def test_copies_of_a_mapped_cube_keep_the_limit(tmp_path, rng, monkeypatch):
    cube = _scene(rng, 10, 10, 4, np.float32)
    cube[0, 0, 1] = np.nan
    np.save(tmp_path / "scene.npy", cube)
    monkeypatch.setenv("EDGESENTRY_MAX_CUBE_BYTES", "1000")
    with pytest.raises(InputError, match="the valid pixels take 1584 bytes in memory, above the limit of 1000"):
        edgesentry.load("rx", nan_policy="mask").predict(tmp_path / "scene.npy")
    with pytest.raises(InputError, match="the listed bands take 1200 bytes"):
        edgesentry.load("rx", bands=[0, 2, 3]).predict(tmp_path / "scene.npy")
    monkeypatch.setenv("EDGESENTRY_MAX_CUBE_BYTES", "2000")
    masked = edgesentry.load("rx", nan_policy="mask").predict(tmp_path / "scene.npy")
    valid = masked.extras["valid"]
    assert not valid[0, 0] and np.isnan(masked.extras["scores"][0, 0])
    _close(masked.extras["scores"][valid], reference.global_rx(cube[valid]))


# ---------------------------------------------------------------- local RX in blocks of rows
# Each block of output rows is converted and centred on its own, with the rows its windows
# reach; the blocks' windows are the whole image's (``block_halo``), so every block size gives
# the reference's scores to 1e-9 relative (the tolerance of the one-block cpu tier in
# ``test_rx_kernels.py``: only the order of float64 additions in the mean and moments differs).


@pytest.mark.parametrize("height", [1, 5, 9, 10, 17, 40])
@pytest.mark.parametrize("inner, outer", [(1, 3), (3, 9), (2, 6), (4, 9)])
def test_block_halo_gives_every_row_its_image_windows(height, inner, outer):
    if outer > height:
        return
    for rows in (1, 2, 3, 7, height):
        for r0 in range(0, height, rows):
            r1 = min(height, r0 + rows)
            s0, s1 = cpu.block_halo(r0, r1, height, inner, outer)
            assert 0 <= s0 <= r0 and r1 <= s1 <= height and s1 - s0 >= outer
            for r in range(r0, r1):
                for size in (inner, outer):
                    start, stop = reference.window_bounds(r, size, height)
                    local = reference.window_bounds(r - s0, size, s1 - s0)
                    assert (local[0] + s0, local[1] + s0) == (start, stop)


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.float64])
@pytest.mark.parametrize("block_rows", [1, 2, 5, None])
@pytest.mark.parametrize("shared_windows", ["never", "always", "auto"])
def test_blocked_local_rx_equals_the_reference(rng, dtype, block_rows, shared_windows):
    cube = _scene(rng, 13, 11, 5, dtype)  # 13 = 2 * 5 + 3: a ragged last block
    expected = reference.local_rx(cube, inner=3, outer=7)
    got = cpu.local_rx(cube, inner=3, outer=7, shared_windows=shared_windows, block_rows=block_rows)
    assert got.shape == (13, 11)
    assert_verbose_allclose(got, expected, atol=0, rtol=1e-9)


@pytest.mark.parametrize("block_rows", [1, 3])
def test_blocked_local_rx_pinv_path_and_ridge(rng, block_rows):
    """Rings left to the decomposition path are found and scored block by block too."""
    cube = _scene(rng, 9, 10, 6, np.float64)
    cube[..., 2] = 3.0  # a constant band: every ring covariance is singular
    expected = reference.local_rx(cube, inner=1, outer=5)
    assert_verbose_allclose(cpu.local_rx(cube, inner=1, outer=5, block_rows=block_rows), expected, atol=0, rtol=1e-6)
    cube = _scene(rng, 8, 8, 4, np.float32)
    expected = reference.local_rx(cube, inner=1, outer=5, ridge=1e-3)
    got = cpu.local_rx(cube, inner=1, outer=5, ridge=1e-3, block_rows=block_rows)
    assert_verbose_allclose(got, expected, atol=0, rtol=1e-9)


def test_blocked_local_rx_reads_a_memory_map_and_a_band_slice(rng, tmp_path):
    cube = _scene(rng, 12, 9, 6, np.float32)
    np.save(tmp_path / "cube.npy", cube)
    mapped = np.load(tmp_path / "cube.npy", mmap_mode="r")
    _close(cpu.local_rx(mapped, inner=1, outer=5, block_rows=2), reference.local_rx(cube, inner=1, outer=5))
    sliced = mapped[..., 1:5]
    _close(cpu.local_rx(sliced, inner=1, outer=5, block_rows=4), reference.local_rx(cube[..., 1:5], inner=1, outer=5))


def test_blocked_local_rx_holds_a_block_not_a_float64_copy(rng, monkeypatch):
    """numpy's allocations during the call stay well under the float64 copy the cube would need
    (here 2.4 MB): the blocks (a few rows with their halo, and the mean's chunks) and the map."""
    monkeypatch.setattr(cpu, "CHUNK_BYTES", 64 << 10)
    cube = _scene(rng, 96, 32, 96, np.float32)
    tracemalloc.start()
    try:
        cpu.local_rx(cube, inner=1, outer=3, block_rows=8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.25 * cube.size * 8  # a block at a time (~0.1 here) and the map; before: two copies


def test_local_rx_kernel_refuses_a_bad_row_range(rng):
    from edgesentry.kernels import _cpu_rx

    centred = _scene(rng, 8, 8, 3, np.float64) - 1000.0
    for row0, row1 in ((-1, 4), (4, 4), (0, 9)):
        with pytest.raises(ValueError, match="row0 < row1"):
            _cpu_rx.local_rx(centred, 1, 3, 0.0, 1e-12, 1, True, (1.0, 1.0, 10.0), row0, row1)
