"""RX kernels: every host tier against the numpy reference on fresh random inputs.

The reference (``kernels/rx/reference.py``) is the per-pixel float64 pinv formulation; the
``cpu`` tier (compiled moments + Cholesky whitening for global, with the eigendecomposition
path for singular covariances; compiled sliding-window Cholesky for local) must equal it
to 1e-9 relative on well-conditioned data and to 1e-6 on rank-deficient data (where the
eigen- and singular-value cutoffs of numerically zero directions differ in the last bits).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgesentry import ConfigError, InputError, KernelUnavailableError
from edgesentry.kernels import rx
from edgesentry.kernels.rx import reference
from tests.utils import assert_verbose_allclose

HOST_TIERS = ["cpu"]


def _cube(rng, h, w, b, *, offset=1000.0):
    # radiance-like values: a large offset makes cancellation in the moments visible
    return rng.normal(size=(h, w, b)) * rng.uniform(5, 50, size=b) + offset


def _rank_deficient(rng, h, w, b):
    cube = _cube(rng, h, w, b)
    cube[..., 1] = 7.0  # a constant band: zero variance
    cube[..., -1] = cube[..., 0]  # a duplicated band: exactly singular covariance
    return cube


@pytest.mark.parametrize("tier", HOST_TIERS)
@pytest.mark.parametrize(
    "n, b",
    [
        (2, 1),  # the smallest valid input
        (37, 5),  # prime pixel count
        (500, 13),  # B not a power of two
        (1024, 64),
        (60, 100),  # fewer pixels than bands: rank-deficient by construction
    ],
)
def test_global_rx_matches_reference(rng, tier, n, b):
    x = _cube(rng, n, 1, b).reshape(n, b)
    expected = reference.global_rx(x)
    got, used = rx.global_rx(x, tier=tier)
    assert used == tier
    rtol = 1e-6 if n <= b else 1e-9  # rank-deficient: cutoff of numerically zero directions
    assert_verbose_allclose(got, expected, atol=1e-9 * np.abs(expected).max(), rtol=rtol)


# pixel counts around the 512-pixel chunks of the compiled passes, bands around the 4-band tiles
@pytest.mark.parametrize("n, b", [(2, 1), (511, 3), (512, 4), (513, 5), (1025, 13), (3000, 205)])
def test_global_rx_cpu_moments_and_cholesky_path(rng, n, b):
    from edgesentry.kernels import _cpu_rx_global
    from edgesentry.kernels.rx import cpu

    x = _cube(rng, n, 1, b).reshape(n, b)
    mean, cov = _cpu_rx_global.moments(x)
    assert_verbose_allclose(mean, x.mean(axis=0), atol=0, rtol=1e-13)
    assert_verbose_allclose(cov, np.atleast_2d(np.cov(x, rowvar=False)), atol=1e-12 * np.abs(cov).max(), rtol=1e-10)
    factor = cpu.inverse_cholesky(cov)
    assert factor is not None  # well conditioned: the triangular whitening path
    assert_verbose_allclose(factor @ cov @ factor.T, np.eye(b), atol=1e-8, rtol=0)
    expected = reference.global_rx(x)
    assert_verbose_allclose(cpu.global_rx(x), expected, atol=1e-9 * np.abs(expected).max(), rtol=1e-9)


@pytest.mark.parametrize("n, b", [(513, 5), (3000, 205)])
def test_global_rx_cpu_reads_band_major_pixels_in_place(rng, n, b):
    """A Fortran-ordered cube (as MATLAB stores it) gives band-major pixels: same scores."""
    from edgesentry.kernels.rx import cpu

    x = _cube(rng, n, 1, b).reshape(n, b)
    fortran = np.asfortranarray(x)
    assert not fortran.flags.c_contiguous and fortran.T.flags.c_contiguous
    assert_verbose_allclose(cpu.global_rx(fortran), cpu.global_rx(x), atol=0, rtol=1e-12)
    singular = np.asfortranarray(_rank_deficient(rng, 30, 30, 12).reshape(-1, 12))  # the pinv path too
    assert_verbose_allclose(cpu.global_rx(singular), reference.global_rx(singular), atol=0, rtol=1e-6)


def test_global_rx_cpu_singular_takes_the_pinv_path(rng):
    from edgesentry.kernels.rx import cpu

    x = _rank_deficient(rng, 30, 30, 12).reshape(-1, 12)
    assert cpu.inverse_cholesky(np.cov(x, rowvar=False)) is None
    # an explicit rcond above the conditioning also refuses the Cholesky path (pinv would cut)
    well = _cube(rng, 40, 40, 6).reshape(-1, 6)
    assert cpu.inverse_cholesky(np.cov(well, rowvar=False)) is not None
    assert cpu.inverse_cholesky(np.cov(well, rowvar=False), rcond=0.5) is None


@pytest.mark.parametrize("tier", HOST_TIERS)
def test_global_rx_rank_deficient_cube(rng, tier):
    x = _rank_deficient(rng, 30, 30, 12).reshape(-1, 12)
    expected = reference.global_rx(x)
    got, _ = rx.global_rx(x, tier=tier)
    assert np.all(np.isfinite(got))
    assert_verbose_allclose(got, expected, atol=0, rtol=1e-6)
    # pinv invariant: mean score = rank * (N - 1) / N
    assert got.mean() == pytest.approx(10 * (x.shape[0] - 1) / x.shape[0], rel=1e-9)


@pytest.mark.parametrize("tier", HOST_TIERS)
@pytest.mark.parametrize("ridge", [1e-6, 1e-2])
def test_global_rx_ridge(rng, tier, ridge):
    x = _rank_deficient(rng, 20, 10, 9).reshape(-1, 9)
    expected = reference.global_rx(x, ridge=ridge)
    got, _ = rx.global_rx(x, ridge=ridge, tier=tier)
    assert_verbose_allclose(got, expected, atol=0, rtol=1e-8)


@pytest.mark.parametrize("tier", HOST_TIERS)
@pytest.mark.parametrize(
    "h, w, b, inner, outer",
    [
        (7, 7, 3, 1, 7),  # outer window = whole image: every pixel shares one background
        (13, 11, 5, 3, 7),  # non-square, odd sizes, borders on every side
        (10, 12, 4, 2, 6),  # even windows (the shift rule takes size // 2 before the pixel)
        (16, 9, 8, 3, 5),  # background of 16 pixels for 8 bands
        (9, 9, 1, 1, 3),  # one band
        (12, 12, 13, 3, 9),  # three 4-column Cholesky panels + one leftover column
        (12, 12, 23, 1, 11),  # five panels + three leftover columns
    ],
)
def test_local_rx_matches_reference(rng, tier, h, w, b, inner, outer):
    cube = _cube(rng, h, w, b)
    expected = reference.local_rx(cube, inner=inner, outer=outer)
    got, used = rx.local_rx(cube, inner=inner, outer=outer, tier=tier)
    assert used == tier and got.shape == (h, w)
    assert_verbose_allclose(got, expected, atol=0, rtol=1e-9)


@pytest.mark.parametrize("shared_windows", ["never", "always"])
@pytest.mark.parametrize(
    "h, w, b, inner, outer",
    [
        (7, 7, 3, 1, 7),  # one window for the whole image: one group, guard window of 1 pixel
        (13, 11, 5, 3, 7),  # groups of 1 to 16 pixels, guard-window unions of odd sizes
        (10, 12, 4, 2, 6),  # even windows
        (12, 12, 13, 3, 9),  # bands not a multiple of 4: padded bands in the bordered factor
        (14, 15, 23, 4, 11),  # union rows not a multiple of 4, even guard window
        (9, 9, 1, 1, 3),  # one band
    ],
)
def test_local_rx_cpu_both_paths_match_reference(rng, shared_windows, h, w, b, inner, outer):
    """Shared outer window (one Cholesky + Woodbury per guard window) and per-pixel Cholesky."""
    from edgesentry.kernels.rx import cpu

    cube = _cube(rng, h, w, b)
    expected = reference.local_rx(cube, inner=inner, outer=outer)
    got = cpu.local_rx(cube, inner=inner, outer=outer, shared_windows=shared_windows)
    assert_verbose_allclose(got, expected, atol=0, rtol=1e-9)


@pytest.mark.parametrize("shared_windows", ["never", "always"])
def test_local_rx_cpu_spike_alone_in_its_band(rng, shared_windows):
    """A pixel that alone carries a band: the outer windows holding it stay positive definite,
    but the rings around it lose that direction (the Woodbury correction's K loses a pivot):
    those pixels must fall back to the per-pixel path and then to the pinv."""
    from edgesentry.kernels.rx import cpu

    cube = _cube(rng, 11, 11, 5)
    cube[..., 2] = 0.0
    cube[5, 5, 2] = 400.0
    expected = reference.local_rx(cube, inner=3, outer=7)
    got = cpu.local_rx(cube, inner=3, outer=7, shared_windows=shared_windows)
    assert np.all(np.isfinite(got))
    assert_verbose_allclose(got, expected, atol=0, rtol=1e-6)


@pytest.mark.parametrize(
    "shape, window, shared",
    [
        ((24, 24, 205), (5, 21), 24 * 24),  # the benchmark crop: 16 windows for 576 pixels
        ((100, 100, 205), (5, 21), 100 * 100 - 78 * 78),  # the 11-pixel border band only
        ((40, 40, 8), (3, 11), 0),  # few bands: factoring each pixel's ring is cheaper
    ],
)
def test_local_rx_cpu_cost_model_plan(shape, window, shared):
    from edgesentry.kernels import _cpu_rx

    plan = _cpu_rx.shared_window_plan(*shape, *window, 1)
    assert int(plan.sum()) == shared
    assert _cpu_rx.shared_window_plan(*shape, *window, 0).sum() == 0
    assert _cpu_rx.shared_window_plan(*shape, *window, 2).all()


def test_local_rx_cpu_auto_mixes_both_paths(rng):
    from edgesentry.kernels import _cpu_rx
    from edgesentry.kernels.rx import cpu

    h, w, b, inner, outer = 30, 30, 24, 3, 11
    plan = _cpu_rx.shared_window_plan(h, w, b, inner, outer, 1)
    assert 0 < plan.sum() < plan.size  # the corners are shared, the rest is per pixel
    cube = _cube(rng, h, w, b)
    expected = reference.local_rx(cube, inner=inner, outer=outer)
    assert_verbose_allclose(cpu.local_rx(cube, inner=inner, outer=outer), expected, atol=0, rtol=1e-9)


def test_local_rx_cpu_rejects_unknown_shared_windows(rng):
    from edgesentry.kernels.rx import cpu

    with pytest.raises(ConfigError, match="shared_windows"):
        cpu.local_rx(_cube(rng, 8, 8, 3), inner=1, outer=5, shared_windows="sometimes")


@pytest.mark.parametrize("tier", HOST_TIERS)
def test_local_rx_singular_windows_take_the_pinv_path(rng, tier):
    cube = _cube(rng, 9, 10, 6)
    cube[..., 2] = 3.0  # constant band: every window covariance is singular
    expected = reference.local_rx(cube, inner=1, outer=5)
    got, _ = rx.local_rx(cube, inner=1, outer=5, tier=tier)
    assert np.all(np.isfinite(got))
    assert_verbose_allclose(got, expected, atol=0, rtol=1e-6)


@pytest.mark.parametrize("tier", HOST_TIERS)
def test_local_rx_ridge(rng, tier):
    cube = _cube(rng, 8, 8, 4)
    expected = reference.local_rx(cube, inner=1, outer=5, ridge=1e-3)
    got, _ = rx.local_rx(cube, inner=1, outer=5, ridge=1e-3, tier=tier)
    assert_verbose_allclose(got, expected, atol=0, rtol=1e-9)


def test_local_rx_matches_spectral_windowed_rx(rng):
    """Same border rule as SPy's windowed RX (it returns float32)."""
    spectral = pytest.importorskip("spectral", reason="spectral (SPy) is the peer implementation")
    cube = _cube(rng, 11, 12, 4)
    got, _ = rx.local_rx(cube, inner=3, outer=7)
    assert_verbose_allclose(got, spectral.rx(cube, window=(3, 7)), atol=0, rtol=1e-5)


def test_global_rx_matches_spectral_on_full_rank(rng):
    spectral = pytest.importorskip("spectral", reason="spectral (SPy) is the peer implementation")
    cube = _cube(rng, 20, 20, 6)
    got, _ = rx.global_rx(cube.reshape(-1, 6))
    assert_verbose_allclose(got.reshape(20, 20), spectral.rx(cube), atol=0, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"inner": 3, "outer": 3}, ConfigError, "inner < outer"),
        ({"inner": 0, "outer": 3}, ConfigError, "inner < outer"),
        ({"inner": 1, "outer": 20}, InputError, "does not fit"),
        ({"inner": 1.5, "outer": 5}, ConfigError, "integers"),
        ({"inner": 1, "outer": 5, "ridge": -1.0}, ConfigError, "ridge"),
    ],
)
def test_local_rx_rejects_bad_windows(rng, kwargs, error, match):
    with pytest.raises(error, match=match):
        rx.local_rx(_cube(rng, 8, 8, 3), **kwargs)


def test_global_rx_rejects_bad_shapes():
    with pytest.raises(InputError, match=r"\(N, B\).*got shape \(5,\)"):
        rx.global_rx(np.zeros(5))
    with pytest.raises(InputError, match="N >= 2"):
        rx.global_rx(np.zeros((1, 3)))


def test_forced_tier_that_cannot_run_raises(rng, monkeypatch):
    from edgesentry.kernels import _cuda

    if _cuda.unavailable_reason() is None:
        pytest.skip("a CUDA device is present: the cuda tier can run here")
    with pytest.raises(KernelUnavailableError, match="cuda"):
        rx.global_rx(_cube(rng, 5, 5, 2).reshape(-1, 2), tier="cuda")
    monkeypatch.setenv("EDGESENTRY_KERNELS", "cuda")
    with pytest.raises(KernelUnavailableError, match="cuda"):
        rx.global_rx(_cube(rng, 5, 5, 2).reshape(-1, 2))


def test_env_var_forces_reference(rng, monkeypatch):
    monkeypatch.setenv("EDGESENTRY_KERNELS", "reference")
    _, used = rx.global_rx(_cube(rng, 5, 5, 2).reshape(-1, 2))
    assert used == "reference"
    monkeypatch.setenv("EDGESENTRY_KERNELS", "gpu-please")
    with pytest.raises(ConfigError, match="EDGESENTRY_KERNELS"):
        rx.global_rx(_cube(rng, 5, 5, 2).reshape(-1, 2))


def test_auto_prefers_the_compiled_cpu_tier(rng):
    _, used = rx.local_rx(_cube(rng, 7, 7, 2), inner=1, outer=3)
    assert used == "cpu"


@pytest.mark.parametrize("band_major", [False, True])
def test_global_rx_cpu_8_double_vectors_match_reference(rng, band_major):
    """The passes' 8-double code (AVX-512 CPUs run it by default; elsewhere it runs split into
    narrower registers, which checks its arithmetic on any machine) against the reference."""
    from edgesentry.kernels import _cpu_rx_global
    from edgesentry.kernels.rx import cpu

    x = _cube(rng, 23, 31, 37).reshape(-1, 37)  # 713 pixels: a partial chunk; 37 bands: padded tiles
    data = np.ascontiguousarray(x.T) if band_major else x
    mean, cov = _cpu_rx_global.moments(data, band_major, 8)
    assert_verbose_allclose(cov, np.cov(x, rowvar=False), atol=0, rtol=1e-10)
    assert_verbose_allclose(mean, x.mean(axis=0), atol=0, rtol=1e-12)
    factor = cpu.inverse_cholesky(cov)
    assert factor is not None
    for width in (0, 8, -1):
        got = _cpu_rx_global.mahalanobis(data, mean, factor, band_major, width)
        assert_verbose_allclose(got, reference.global_rx(x), atol=0, rtol=1e-9)
    with pytest.raises(ValueError, match="width"):
        _cpu_rx_global.moments(data, band_major, 3)
