"""Property-based tests (hypothesis) of every family's preprocessing, against oracles written
here from the documented transforms: random shapes, dtypes, value ranges and memory layouts
(non-contiguous and Fortran-ordered inputs must give the same result as contiguous ones)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from edgesentry.errors import InputError

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _layouts(x: np.ndarray) -> list[np.ndarray]:
    """The same values in other memory layouts: Fortran order and a strided view."""
    fortran = np.asfortranarray(x)
    padded = np.zeros((x.shape[0] * 2,) + x.shape[1:], dtype=x.dtype)
    padded[::2] = x
    view = padded[::2]
    assert not view.flags.c_contiguous or x.shape[0] <= 1
    return [fortran, view]


# =============================================================================== RX
RX_DTYPES = st.sampled_from([np.uint8, np.int16, np.float32, np.float64])


@st.composite
def cubes(draw, min_side=2, max_side=6, max_bands=5):
    dtype = draw(RX_DTYPES)
    side = st.integers(min_side, max_side)
    shape = (draw(side), draw(side), draw(st.integers(1, max_bands)))
    if np.dtype(dtype).kind == "f":
        elements = st.floats(-1e3, 1e3, allow_nan=False, width=np.dtype(dtype).itemsize * 8)
    else:
        info = np.iinfo(dtype)
        elements = st.integers(int(info.min), int(info.max))
    return draw(arrays(dtype, shape, elements=elements))


@SETTINGS
@given(cube=cubes())
def test_rx_preprocess_keeps_the_cube_in_any_layout(session_env, cube):
    """Global RX converts to float64 chunk by chunk in the kernel: preprocess keeps the dtype
    (no float64 copy of the scene) and the values, whatever the layout; only a cube of extreme
    magnitudes (float64 near 1e-300) is rescaled, exactly, by a power of two into float64."""
    det = session_env.det("rx")
    prepared = det.preprocess(cube)
    assert prepared.cube.dtype == (np.float64 if prepared.exponent else cube.dtype)
    assert prepared.cube.shape == cube.shape
    np.testing.assert_array_equal(prepared.cube, np.ldexp(cube, prepared.exponent) if prepared.exponent else cube)
    assert prepared.valid.all()
    for other in _layouts(cube):
        np.testing.assert_array_equal(det.preprocess(other).cube, prepared.cube)


@SETTINGS
@given(cube=cubes(max_bands=3).filter(lambda c: c.dtype.kind == "f"), data=st.data())
def test_rx_nan_pixels_raise_or_are_masked_exactly(session_env, cube, data):
    import edgesentry

    cube = cube.astype(np.float64)
    h, w, _ = cube.shape
    flat = data.draw(st.lists(st.integers(0, h * w - 1), min_size=1, max_size=h * w - 2, unique=True))
    bad = np.zeros(h * w, bool)
    bad[flat] = True
    bad = bad.reshape(h, w)
    cube[bad, 0] = np.nan
    with pytest.raises(InputError, match=f"cube has {int(bad.sum())} pixels with NaN/Inf"):
        session_env.det("rx").predict(cube)
    prepared = edgesentry.load("rx", nan_policy="mask").preprocess(cube)
    np.testing.assert_array_equal(prepared.valid, ~bad)


# ============================================================================= FERS
@SETTINGS
@given(h=st.integers(5, 8), w=st.integers(5, 8), extra=st.integers(0, 3), seed=st.integers(0, 2**32 - 1),
       scale=st.floats(1e-2, 1e3), offset=st.floats(-1e3, 1e3))
def test_fers_preprocess_min_max_layout_and_affine_invariance(session_env, h, w, extra, seed, scale, offset):
    det = session_env.det("fers")
    bands = det.bands
    cube = np.random.default_rng(seed).normal(size=(h, w, bands + extra))
    out = det.preprocess(cube).x
    assert out.shape == (1, bands, h, w) and out.dtype == np.float32
    v = cube[..., :bands]
    oracle = (((v - v.min()) / (v.max() - v.min())) * 0.2 - 0.1).transpose(2, 0, 1)[None]
    np.testing.assert_allclose(out, oracle, atol=2e-8, rtol=0)
    assert out.min() == pytest.approx(-0.1, abs=1e-7) and out.max() == pytest.approx(0.1, abs=1e-7)
    # The seed's global min-max makes the input scale and offset irrelevant (up to float64 rounding).
    np.testing.assert_allclose(det.preprocess(cube * scale + offset).x, out, atol=1e-6, rtol=0)
    for other in _layouts(cube):
        np.testing.assert_array_equal(det.preprocess(other).x, out)


# ============================================================================= MAVD
@SETTINGS
@given(t=st.integers(1, 5), crops=st.integers(1, 3), audio_per_crop=st.booleans(), seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from([np.float32, np.float64, np.int32]))
def test_mavd_preprocess_shapes_and_values(session_env, t, crops, audio_per_crop, seed, dtype):
    det = session_env.det("mavd")
    rng = np.random.default_rng(seed)
    rgb = (rng.normal(size=(crops, t, 1024)) * 10).astype(dtype)
    flow = (rng.normal(size=(crops, t, 1024)) * 10).astype(dtype)
    audio = (rng.normal(size=(crops, t, 128) if audio_per_crop else (t, 128)) * 10).astype(dtype)
    prepared = det.preprocess({"rgb": rgb, "flow": flow, "audio": audio})
    assert prepared.rgb.shape == (crops, t, 1024) and prepared.rgb.dtype == np.float32
    np.testing.assert_array_equal(prepared.rgb, rgb.astype(np.float32))
    np.testing.assert_array_equal(prepared.flow, flow.astype(np.float32))
    np.testing.assert_array_equal(prepared.audio, (audio if audio_per_crop else audio[None]).astype(np.float32))
    other = det.preprocess({"rgb": _layouts(rgb)[1], "flow": np.asfortranarray(flow), "audio": audio})
    np.testing.assert_array_equal(other.rgb, prepared.rgb)
    np.testing.assert_array_equal(other.flow, prepared.flow)


# ============================================================================= MDMF
@SETTINGS
@given(t=st.integers(1, 3), h=st.integers(8, 40), w=st.integers(8, 40), value=st.integers(0, 255))
def test_mdmf_prepare_frames_constant_and_range(session_env, t, h, w, value):
    session_env.bundle("mdmf")  # skips when the family or its weights are absent
    from edgesentry.io.video import prepare_frames

    out = prepare_frames(np.full((t, h, w, 3), value, np.uint8), 32, 24)
    assert out.shape == (t, 3, 24, 24) and out.dtype == np.float32
    np.testing.assert_allclose(out, value / 255.0, atol=1e-6, rtol=0)  # bilinear keeps constants


@SETTINGS
@given(t=st.integers(8, 8), seed=st.integers(0, 2**32 - 1), h=st.integers(8, 30), w=st.integers(8, 30))
def test_mdmf_prepare_frames_range_and_layout(session_env, t, seed, h, w):
    session_env.bundle("mdmf")
    from edgesentry.io.video import prepare_frames

    frames = np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)
    out = prepare_frames(frames, 32, 24)
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(prepare_frames(_layouts(frames)[1], 32, 24), out)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), b=st.integers(1, 3))
def test_mdmf_encode_passes_frame_features_through(session_env, seed, b):
    det = session_env.det("mdmf")
    t, d = det.settings.frames, det.settings.dim
    feats = [np.random.default_rng(seed + i).normal(size=(t, d)) for i in range(b)]
    out = det.encode(feats)
    assert out.shape == (b, t, d) and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.stack(feats).astype(np.float32))


# =========================================================================== ISSTAD
@SETTINGS
@given(h=st.integers(1, 64), w=st.integers(1, 64), value=st.integers(0, 255))
def test_isstad_constant_image_maps_to_normalised_constant(session_env, h, w, value):
    det = session_env.det("isstad")
    prepared = det.preprocess(np.full((h, w, 3), value, np.uint8))
    assert prepared.tensor.shape == (3, 224, 224) and prepared.tensor.dtype == np.float32
    assert prepared.shape == (h, w)
    np.testing.assert_allclose(prepared.tensor, (value / 255.0 - 0.5) / 0.5, atol=1e-6, rtol=0)


@SETTINGS
@given(h=st.integers(2, 300), w=st.integers(2, 300), seed=st.integers(0, 2**32 - 1))
def test_isstad_range_colour_order_and_layout(session_env, h, w, seed):
    det = session_env.det("isstad")
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    t = det.preprocess(rgb).tensor
    assert t.shape == (3, 224, 224) and -1.0 <= t.min() and t.max() <= 1.0
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    np.testing.assert_array_equal(det.preprocess(bgr, color="bgr").tensor, t)
    np.testing.assert_array_equal(det.preprocess(rgb[..., ::-1][..., ::-1]).tensor, t)  # negative-stride view
    for other in _layouts(rgb):
        np.testing.assert_array_equal(det.preprocess(other).tensor, t)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_isstad_model_size_input_is_only_normalised(session_env, seed):
    """At 224 x 224 the bilinear resize is the identity: the tensor is (x / 255 - 0.5) / 0.5."""
    det = session_env.det("isstad")
    rgb = np.random.default_rng(seed).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    oracle = (rgb.transpose(2, 0, 1).astype(np.float64) / 255.0 - 0.5) / 0.5
    np.testing.assert_allclose(det.preprocess(rgb).tensor, oracle, atol=1e-6, rtol=0)


# ===================================================================== stream frames
@SETTINGS
@given(img=arrays(np.uint8, st.tuples(st.integers(1, 9), st.integers(1, 9), st.sampled_from([1, 3, 4]))),
       squeeze=st.booleans())
def test_stream_frames_become_rgb_uint8(img, squeeze):
    from edgesentry.io.image import to_rgb_uint8

    src = img[..., 0] if squeeze else img
    out = to_rgb_uint8(src, convert=True, who="frame")
    assert out.shape == img.shape[:2] + (3,) and out.dtype == np.uint8 and out.flags.c_contiguous
    if squeeze or img.shape[2] == 1:
        for c in range(3):
            np.testing.assert_array_equal(out[..., c], img[..., 0])
    else:
        np.testing.assert_array_equal(out, img[..., :3])
