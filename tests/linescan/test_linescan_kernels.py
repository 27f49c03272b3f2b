"""Line-scan RX kernels on the host: the reference's own anchors, the cpu tier against it.

Tolerances: the cpu tier computes the statistics in float64 like the reference but factorises
with Cholesky (the reference takes an SVD pseudo-inverse of the covariance it recomputes from
the kept pixels), so on full-rank models scores agree to ~1e-12 relative; ``rtol=1e-9`` leaves
room and still fails on any float32 step (~1e-6). Models with fewer pixels than bands take the
pseudo-inverse path capped at the model's rank (n pixels: n - 1 directions), so no score
depends on round-off directions near the cutoff; the smallest kept directions of near-square
models are still ill-conditioned, where eigh and SVD differ by ~cond x eps (``rtol=1e-6``).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgesentry import ConfigError, InputError
from edgesentry.kernels import linescan
from edgesentry.kernels.linescan import cpu, reference
from edgesentry.kernels.rx.reference import global_rx
from tests.linescan.helpers import MODES, compare_with_reference, masks, run, scan
from tests.utils import assert_verbose_allclose

HOST_TIERS = ["reference", "cpu"]


def _model(tier: str, bands: int, **options):
    model, used = linescan.line_model(bands, tier=tier, **options)
    assert used == tier
    return model


@pytest.mark.parametrize("tier", HOST_TIERS)
def test_whole_scene_model_is_global_rx(rng, tier):
    """With every line in the model (forgetting 1), scoring afterwards is global RX exactly."""
    cube = scan(rng, 9, 11, 6)
    model = _model(tier, 6)
    run(model, cube, want_scores=False)
    got = np.stack([model.score(line) for line in cube])
    expected = global_rx(cube.reshape(-1, 6)).reshape(9, 11)
    assert_verbose_allclose(got, expected, atol=0, rtol=1e-10)


def test_reference_first_lines():
    """No model yet (N <= 1): NaN; one pixel of background: still no covariance."""
    model = reference.LineModel(3)
    first = model.step(np.ones((1, 3)))
    second = model.step(np.full((1, 3), 2.0))
    assert np.isnan(first).all() and np.isnan(second).all()  # N = 0, then N = 1
    third = model.step(np.array([[1.0, 2.0, 3.0]]))
    assert np.isfinite(third).all()  # two pixels: a rank-1 covariance, pinv scores


def test_pseudo_inverse_keeps_at_most_the_model_rank(rng):
    """A model of n pixels has rank n - 1 at most: a round-off direction above the pinv cutoff
    (here 1e-14 relative, as summation order on another CPU can leave) is cut by the rank cap in
    the reference and in the tiers' eigh path alike, and nothing else changes."""
    import torch

    from edgesentry.kernels.rx import cpu as rx_cpu, triton as rx_triton

    axes, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    exact = axes[:, :3] @ np.diag([4.0, 2.0, 0.5]) @ axes[:, :3].T
    noisy = exact + 1e-14 * 4.0 * np.outer(axes[:, 5], axes[:, 5])
    expected = np.linalg.pinv(exact, rcond=1e-15)
    assert not np.allclose(np.linalg.pinv(noisy, rcond=1e-15), expected)  # the cutoff alone keeps it
    assert_verbose_allclose(reference.pinv(noisy, 1e-15, rank=3), expected, atol=1e-12, rtol=0)
    for vectors, values in (rx_cpu.whitening(noisy, 1e-15, rank=3),
                            (lambda v, iw: (v.numpy(), 1.0 / iw.numpy()))(
                                *rx_triton.whitening(torch.from_numpy(noisy), 1e-15, rank=3))):
        assert_verbose_allclose((vectors / values) @ vectors.T, expected, atol=1e-12, rtol=0)
    assert rx_cpu.whitening(noisy, 1e-15)[1].size == 4  # without a cap: the round-off direction stays


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize(
    "width, bands, lines",
    [
        (1, 3, 12),  # one-pixel lines: the model needs two lines before anything scores
        (5, 7, 10),  # W < B: the first lines are rank-deficient (pseudo-inverse path)
        (13, 7, 10),  # full rank from the second line on
        (37, 16, 8),  # prime width
        (2, 48, 40),  # narrow lines: the carried factor (rank-k update) path
        (200, 110, 6),  # W B^2 > 2e6: the line is split between two threads
    ],
)
def test_cpu_matches_reference(rng, mode, width, bands, lines):
    options = MODES[mode]
    cube = scan(rng, lines, width, bands)
    compare_with_reference(_model("cpu", bands, **options), cube, options)


def test_cpu_lines_on_one_or_two_threads_match_the_reference(rng):
    """A line big enough to split (W B^2 > 2e6) runs on two threads or one, whichever has
    measured faster so far, and every 128 lines a probe runs the other: both kinds of line
    score as the reference does."""
    cube = scan(rng, 140, 200, 110)
    model = _model("cpu", 110, forgetting=0.99)
    compare_with_reference(model, cube, {"forgetting": 0.99})
    info = model.info()
    if info["openmp_threads"] < 2:
        pytest.skip("one OpenMP thread here: no line is split")
    assert info["threaded_lines"] + info["serial_lines"] == 140
    assert info["threaded_lines"] > 0 and info["serial_lines"] > 0, info
    assert info["us_per_pixel_threaded"] > 0 and info["us_per_pixel_serial"] > 0


@pytest.mark.parametrize("mode", ["cumulative", "window"])
def test_cpu_invalid_pixels_and_update_threshold(rng, mode):
    """Invalid pixels score NaN and stay out; pixels scoring above the threshold stay out."""
    options = MODES[mode]
    cube = scan(rng, 12, 23, 6)
    cube[5:, 3] += 400.0  # a column of strong anomalies: well above the threshold
    valid = masks(rng, 12, 23, 0.15)
    cube[~valid] = np.nan  # what the caller masked may hold anything
    compare_with_reference(_model("cpu", 6, **options), cube, options, valid=valid, update_threshold=50.0)


def test_update_threshold_keeps_targets_out_of_the_background(rng):
    cube = scan(rng, 30, 20, 5)
    cube[10:, 7] += 300.0  # a target that runs along the scan
    taught = run(_model("cpu", 5), cube)
    guarded = run(_model("cpu", 5), cube, update_threshold=40.0)
    # once the target has joined the model it stops looking anomalous; kept out, it does not
    assert guarded[-1, 7] > 5 * taught[-1, 7]


def test_cpu_float32_matches_reference_loosely(rng):
    """float32 products: scores within ~cond(C) * 6e-8 (the scan's covariances have cond ~1e2)."""
    cube = scan(rng, 10, 64, 12)
    compare_with_reference(_model("cpu", 12, dtype="float32"), cube, {}, rtol=1e-4)


@pytest.mark.parametrize(
    "width, bands, options, plan",
    [
        (640, 224, {}, "refactor"),  # the camera at full frame: potrf is far cheaper
        (100, 205, {}, "refactor"),  # the ABU geometry
        (2, 48, {}, "update"),  # 3 rank-1 terms against B^3 / 6
        (2, 48, {"forgetting": 0.99}, "update"),
        (2, 48, {"ridge": 1e-3}, "refactor"),  # a trace-scaled ridge is not a low-rank change
        (2, 48, {"window": 5}, "refactor"),  # the departing line is not a low-rank change
    ],
)
def test_cost_model_plan(rng, width, bands, options, plan):
    model = cpu.LineModel(bands, **options)
    run(model, scan(rng, 30, max(width, 2), bands)[:, :width] if width < 50 else scan(rng, 2, width, bands))
    assert model.plan(width) == plan


def test_rank_update_path_runs_and_the_guard_stays_quiet(rng):
    model = cpu.LineModel(48)
    run(model, scan(rng, 80, 2, 48))
    info = model.info()
    assert info["rank_updates"] > 40 and info["guard_trips"] == 0
    assert info["last_guard_residual"] < cpu.GUARD_TOL


# ------------------------------------------------------------------- exactness over long scans
def _fresh_statistics(cube: np.ndarray, forgetting: float, window: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted count, mean and covariance recomputed from the raw lines (two passes, float64)."""
    lines = cube[-window:] if window else cube
    ages = np.arange(len(lines))[::-1]
    w = np.repeat(forgetting ** ages.astype(np.float64), lines.shape[1])
    x = lines.reshape(-1, lines.shape[-1])
    count = w.sum()
    mean = w @ x / count
    z = x - mean
    return count, mean, (z * w[:, None]).T @ z / (count - 1)


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.slow
@pytest.mark.parametrize(
    "width, bands, options, path",
    [
        (2, 48, {}, "update"),  # every line carried by rank-1 updates (refreshed every 1024)
        (2, 48, {"forgetting": 0.999}, "update"),
        (8, 16, {"forgetting": 0.99}, "refactor"),
        (4, 16, {"window": 50}, "refactor"),  # add / subtract 10,000 times: the recombination guard
    ],
)
def test_exact_after_10000_lines(rng, width, bands, options, path):
    """After 10,000 lines the maintained statistics and factor agree with a fresh factorisation
    of statistics recomputed from the lines to 1e-8 relative (the issue's bound)."""
    cube = scan(rng, 10_000, width, bands, offset=1e4)  # offset: cancellation in add/subtract
    model = cpu.LineModel(bands, **options)
    run(model, cube, want_scores=False)
    assert model.plan(width) == path
    count, mean, cov = _fresh_statistics(cube, options.get("forgetting", 1.0), options.get("window", 0))
    got_count, got_mean, got_cov = model.statistics()
    assert abs(got_count - count) <= 1e-10 * count
    assert _relative(got_mean, mean) < 1e-12
    assert _relative(got_cov, cov) < 1e-8
    factor = model.factor()
    fresh = np.linalg.cholesky(cov)
    assert _relative(factor, fresh) < 1e-8
    precision = np.linalg.inv(factor @ factor.T)
    assert _relative(precision, np.linalg.inv(cov)) < 1e-8
    info = model.info()
    if path == "update":  # most lines carried; the guard may refactorise (forgetting keeps rounding
        assert info["rank_updates"] > 5_000  # at ~eps x cond / (1 - lambda), near its 1e-10 bound)
    if "window" in options:
        assert info["window_recombinations"] >= 10_000 // options["window"]  # once per turn of the ring


def _perturbed(factor: np.ndarray, rng: np.random.Generator, size: float) -> np.ndarray:
    return np.tril(factor * (1 + size * rng.normal(size=factor.shape)))


@pytest.mark.parametrize("guarded", [True, False])
def test_drift_guard_repairs_forced_drift(rng, guarded):
    """Force 1e-6 drift into the carried factor: the guard sees it on the next line and
    refactorises; with the guard off (infinite tolerance, no refresh) the drift stays."""
    cube = scan(rng, 300, 2, 48)
    options = {} if guarded else {"guard_tol": np.inf, "refresh_every": 10**9}
    model = cpu.LineModel(48, **options)
    run(model, cube[:200], want_scores=False)
    model.set_factor(_perturbed(model.factor(), rng, 1e-6))
    trips = model.info()["guard_trips"]
    run(model, cube[200:], want_scores=False)
    _, _, cov = model.statistics()
    error = _relative(model.factor(), np.linalg.cholesky(cov))
    if guarded:
        assert model.info()["guard_trips"] == trips + 1
        assert error < 1e-10
    else:  # what the guard prevents: the factor no longer fits the statistics
        assert error > 1e-8, model.info()


def test_periodic_refresh(rng):
    model = cpu.LineModel(48, refresh_every=10)
    run(model, scan(rng, 60, 2, 48), want_scores=False)
    info = model.info()
    assert info["rank_updates"] > 0 and info["refactorisations"] >= 60 // 10


# ----------------------------------------------------------------------------- causality
@pytest.mark.parametrize("tier", HOST_TIERS)
def test_scores_never_depend_on_later_lines(rng, tier):
    """Line t's score is fixed once line t is scored: other lines after it change nothing."""
    cube = scan(rng, 16, 9, 5)
    other = cube.copy()
    other[9:] = scan(rng, 7, 9, 5, offset=50.0)  # a different future after line 8
    a = run(_model(tier, 5), cube)
    b = run(_model(tier, 5), other)
    assert_verbose_allclose(a[:9], b[:9], atol=0, rtol=1e-12)
    assert not np.allclose(a[10:], b[10:])  # the future itself is scored differently


@pytest.mark.parametrize("tier", HOST_TIERS)
def test_score_does_not_change_the_model(rng, tier):
    cube = scan(rng, 6, 9, 5)
    a, b = _model(tier, 5), _model(tier, 5)
    run(a, cube[:3])
    run(b, cube[:3])
    a.score(cube[4])  # look-ahead style scoring of another line
    assert_verbose_allclose(a.step(cube[3]), b.step(cube[3]), atol=0, rtol=1e-13)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("tier", HOST_TIERS)
@pytest.mark.parametrize(
    "line, valid, match",
    [
        (np.zeros((4, 6)), None, r"\(W, 5\).*got shape \(4, 6\)"),  # wrong band count
        (np.zeros(5), None, r"got shape \(5,\)"),  # not a line
        (np.zeros((0, 5)), None, "W >= 1"),
        (np.zeros((4, 5)), np.ones(3, bool), r"\(4,\) mask"),
    ],
)
def test_bad_lines_raise(tier, line, valid, match):
    model = _model(tier, 5)
    with pytest.raises(InputError, match=match):
        model.step(line, valid)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"forgetting": 0.0}, "forgetting"),
        ({"forgetting": 1.5}, "forgetting"),
        ({"window": -1}, "window"),
        ({"window": 5, "forgetting": 0.9}, "forgetting=1"),
        ({"ridge": -1e-3}, "ridge"),
        ({"dtype": "float16"}, "dtype"),
    ],
)
def test_bad_options_raise(options, match):
    with pytest.raises(ConfigError, match=match):
        linescan.line_model(5, **options)


def test_auto_tier_on_the_host_is_cpu_and_env_forces(monkeypatch):
    _, used = linescan.line_model(4)
    assert used == "cpu"
    monkeypatch.setenv("EDGESENTRY_KERNELS", "reference")
    _, used = linescan.line_model(4)
    assert used == "reference"
