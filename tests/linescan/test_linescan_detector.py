"""``edgesentry.load("rx", mode="linescan")``: scheduling (causal, warm-up, look-ahead), the NaN
policy per line, bad lines, objects across lines, bundles.

Expected scores come from the reference kernel driven by hand with the documented rule (line t
is scored against the model of the lines ``< t`` / ``<= t + k`` / the warm-up block), so the
detector's scheduling is checked, not re-derived. Tolerance 1e-7 relative: the detector runs
the cpu tier (Cholesky) against the reference's SVD pseudo-inverse, and the first lines of these
short random scans are scored against models of a few times B pixels (condition numbers up to
~1e8: differences ~cond x eps); a wrong schedule changes scores by O(1).
"""

from __future__ import annotations

import numpy as np
import pytest

import edgesentry
from edgesentry import ConfigError, InputError
from edgesentry.detectors.linescan import LineScanDetector, ObjectTracker
from edgesentry.kernels.linescan import reference
from edgesentry.kernels.rx.reference import global_rx
from tests.linescan.helpers import scan
from tests.utils import assert_verbose_allclose

RTOL = 1e-7


def _scores(results) -> np.ndarray:
    return np.stack([r.scores for r in sorted(results, key=lambda r: r.index)])


def _expected(cube: np.ndarray, *, warmup: int = 0, lookahead: int = 0, **options) -> np.ndarray:
    """The documented schedule on the reference kernel."""
    model = reference.LineModel(cube.shape[-1], **options)
    h = len(cube)
    out = np.full(cube.shape[:2], np.nan)
    fed = 0
    for t in range(h):
        target = max(t + lookahead + 1 if lookahead else t, warmup if t < warmup else 0)
        target = min(target, h)
        while fed < target:
            model.step(cube[fed], want_scores=False)
            fed += 1
        out[t] = model.score(cube[t])
    return out


def _check(got: np.ndarray, want: np.ndarray) -> None:
    assert_verbose_allclose(got, want, atol=RTOL * np.nanmax(np.abs(want)), rtol=RTOL)


def test_load_gives_a_line_scan_detector():
    det = edgesentry.load("rx", mode="linescan", warmup=3)
    assert isinstance(det, LineScanDetector) and det.family == "rx" and det.kernels == "cpu"


def test_causal_result_is_returned_with_its_own_line(rng):
    """Causal mode: predict_line(line t) returns line t's scores before line t + 1 exists."""
    cube = scan(rng, 12, 10, 4)
    det = edgesentry.load("rx", mode="linescan")
    got = []
    for t, line in enumerate(cube):
        results = det.predict_line(line)
        assert [r.index for r in results] == [t] and results[0].info["delay_lines"] == 0
        got.append(results[0].scores)
    assert det.flush() == []
    _check(np.stack(got), _expected(cube))


@pytest.mark.parametrize("warmup, lookahead", [(4, 0), (0, 3), (5, 2), (12, 0)])
def test_schedule_matches_the_documented_rule(rng, warmup, lookahead):
    cube = scan(rng, 12, 9, 5)
    det = edgesentry.load("rx", mode="linescan", warmup=warmup, lookahead=lookahead)
    _check(_scores(det.stream(iter(cube))), _expected(cube, warmup=warmup, lookahead=lookahead))


def test_warmup_releases_its_block_at_once(rng):
    cube = scan(rng, 8, 9, 3)
    det = edgesentry.load("rx", mode="linescan", warmup=5)
    released = [len(det.predict_line(line)) for line in cube]
    assert released == [0, 0, 0, 0, 5, 1, 1, 1]


def test_lookahead_over_the_whole_scan_is_global_rx(rng):
    """Every line waits for every other: each is scored against the whole scene."""
    cube = scan(rng, 9, 11, 6)
    det = edgesentry.load("rx", mode="linescan", lookahead=len(cube))
    result = det.predict(cube)
    _check(result.extras["scores"], global_rx(cube.reshape(-1, 6)).reshape(9, 11))
    assert result.info["delay_lines"] == len(cube)


def test_lookahead_is_blind_beyond_k_lines(rng):
    cube = scan(rng, 14, 9, 4)
    other = cube.copy()
    other[9:] = scan(rng, 5, 9, 4, offset=3.0)
    a = edgesentry.load("rx", mode="linescan", lookahead=3).predict(cube).extras["scores"]
    b = edgesentry.load("rx", mode="linescan", lookahead=3).predict(other).extras["scores"]
    assert_verbose_allclose(a[:6], b[:6], atol=0, rtol=1e-12)  # line 5 waits for lines <= 8 only
    assert not np.allclose(a[6], b[6])  # line 6 sees line 9


def test_predict_scans_a_file_path_and_is_repeatable(rng, tmp_path):
    cube = scan(rng, 10, 8, 4)
    np.save(tmp_path / "scan.npy", cube)
    det = edgesentry.load("rx", mode="linescan", warmup=3)
    first = det.predict(str(tmp_path / "scan.npy"))
    second = det.predict(cube)
    _check(first.extras["scores"], _expected(cube, warmup=3))
    assert_verbose_allclose(first.anomaly_map, second.anomaly_map, atol=0, rtol=0)


def test_projection_on_all_bands_changes_nothing(rng):
    """dims = B is an orthogonal rotation: Mahalanobis distances are invariant."""
    cube = scan(rng, 10, 12, 5)
    full = edgesentry.load("rx", mode="linescan", warmup=4).predict(cube).extras["scores"]
    rotated = edgesentry.load("rx", mode="linescan", warmup=4, dims=5).predict(cube).extras["scores"]
    assert_verbose_allclose(rotated, full, atol=0, rtol=1e-8)
    fewer = edgesentry.load("rx", mode="linescan", warmup=4, dims=2).predict(cube).extras["scores"]
    assert np.nanmax(fewer) < np.nanmax(full)


def test_float32_and_update_threshold_pass_through(rng):
    cube = scan(rng, 10, 16, 4)
    cube[6:, 3] += 200.0
    det = edgesentry.load("rx", mode="linescan", warmup=3, update_threshold=30.0, dtype="float32")
    got = det.predict(cube).extras["scores"]
    model = reference.LineModel(4)
    want = np.full(cube.shape[:2], np.nan)
    for t in range(3):
        model.step(cube[t])
    for t in range(3):
        want[t] = model.score(cube[t])
    for t in range(3, 10):
        want[t] = model.step(cube[t], update_threshold=30.0)
    assert_verbose_allclose(got, want, atol=1e-4 * np.nanmax(want), rtol=1e-4)


# ------------------------------------------------------------------------------ bad input
def test_nan_policy_per_line(rng):
    cube = scan(rng, 8, 9, 4)
    cube[5, 2, 1] = np.nan
    cube[6, 0] = np.inf
    det = edgesentry.load("rx", mode="linescan")
    for t in range(5):
        det.predict_line(cube[t])
    with pytest.raises(InputError, match="line 5 has 1 pixels with NaN/Inf"):
        det.predict_line(cube[5])
    masked = edgesentry.load("rx", mode="linescan", nan_policy="mask").predict(cube).extras["scores"]
    valid = np.isfinite(cube).all(axis=-1)
    model = reference.LineModel(4)
    want = np.stack([model.step(np.where(valid[t][:, None], cube[t], 0.0), valid[t]) for t in range(8)])
    assert np.isnan(masked[5, 2]) and np.isnan(masked[6, 0])
    assert_verbose_allclose(masked, want, atol=RTOL * np.nanmax(want), rtol=RTOL)


@pytest.mark.parametrize(
    "line, match",
    [
        (np.zeros((9, 5)), r"line 1 is 9 pixels x 5 bands; this scan's lines are 9 x 4"),
        (np.zeros((8, 4)), r"line 1 is 8 pixels x 4 bands"),
        (np.zeros(4), r"line 1: expected a non-empty \(W, B\) real array"),
        ([[1.0, 2.0, 3.0, 4.0]], r"line 1: expected a \(W, B\) numpy array; got list"),
        (np.zeros((9, 4), dtype=complex), "real array"),
    ],
)
def test_bad_lines_raise(rng, line, match):
    det = edgesentry.load("rx", mode="linescan")
    det.predict_line(scan(rng, 1, 9, 4)[0])
    with pytest.raises(InputError, match=match):
        det.predict_line(line)


def test_reset_starts_a_new_scan(rng):
    det = edgesentry.load("rx", mode="linescan")
    det.predict_line(scan(rng, 1, 9, 4)[0])
    det.reset()
    assert det.predict_line(scan(rng, 1, 7, 3)[0])[0].index == 0


@pytest.mark.parametrize(
    "options, match",
    [
        ({"warmup": -1}, "warmup"),
        ({"lookahead": 1.5}, "lookahead"),
        ({"dims": 3}, "dims needs warmup"),
        ({"window": (3, 9)}, "number of lines"),
        ({"forgetting": 0.5, "window": 4}, "forgetting=1"),
        ({"nan_policy": "drop"}, "nan_policy"),
        ({"update_threshold": float("inf")}, "update_threshold"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises(ConfigError, match=match):
        edgesentry.load("rx", mode="linescan", **options)


def test_line_scan_options_outside_linescan_mode():
    with pytest.raises(ConfigError, match="only apply to mode='linescan'"):
        edgesentry.load("rx", warmup=3)


def test_held_lines_are_bounded_before_anything_is_kept(rng):
    det = edgesentry.load("rx", mode="linescan", lookahead=100_000)
    with pytest.raises(ConfigError, match="must each fit"):
        det.predict_line(np.zeros((640, 224)))


# ------------------------------------------------------------------------------ objects
def _components(mask: np.ndarray) -> set[tuple[int, int, int, int, int]]:
    """(first line, first col, last line, last col, pixels) of 8-connected components (oracle)."""
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    out = set()
    for k in range(1, count + 1):
        rows, cols = np.nonzero(labels == k)
        out.add((rows.min(), cols.min(), rows.max(), cols.max(), rows.size))
    return out


@pytest.mark.parametrize("density", [0.05, 0.3, 0.55])  # sparse specks to percolating tangles
def test_object_tracker_matches_8_connected_labelling(rng, density):
    mask = rng.random((40, 30)) < density
    tracker = ObjectTracker()
    closed = []
    for t, row in enumerate(mask):
        for obj in tracker.push(t, row, np.where(row, 1.0, np.nan)):
            assert obj.last_line == t - 1  # emitted on the first line that no longer touches it
            closed.append(obj)
    closed += tracker.close_all()
    got = {(o.first_line, o.first_col, o.last_line, o.last_col, o.pixels) for o in closed}
    assert len(got) == len(closed) and got == _components(mask)


def test_objects_come_out_of_the_detector(rng):
    cube = scan(rng, 30, 20, 4)
    cube[12:15, 5:7] += 400.0  # a 3 x 2 target
    cube[20, 15] += 400.0  # a single-pixel one
    det = edgesentry.load("rx", mode="linescan", warmup=8, update_threshold=60.0, pixel_threshold=150.0)
    results = list(det.stream(iter(cube)))
    objects = {o.bbox: o for r in results for o in r.objects}
    assert set(objects) == {(12, 5, 14, 6), (20, 15, 20, 15)}
    assert objects[(12, 5, 14, 6)].pixels == 6 and objects[(20, 15, 20, 15)].pixels == 1
    closer = next(r for r in results if any(o.bbox == (12, 5, 14, 6) for o in r.objects))
    assert closer.index == 15 and closer.label is not None and closer.summary()["record"]["objects"][0]["pixels"] == 6


# ------------------------------------------------------------------------------ bundles
def test_bundle_round_trip(rng, tmp_path):
    bundle = edgesentry.convert("rx", output=tmp_path / "ls", mode="linescan", warmup=4, lookahead=2,
                                forgetting=0.99)
    det = edgesentry.load(bundle.path if hasattr(bundle, "path") else tmp_path / "ls")
    assert isinstance(det, LineScanDetector)
    assert (det.cfg.warmup, det.cfg.lookahead, det.cfg.forgetting) == (4, 2, 0.99)
    cube = scan(rng, 9, 8, 3)
    _check(det.predict(cube).extras["scores"], _expected(cube, warmup=4, lookahead=2, forgetting=0.99))
