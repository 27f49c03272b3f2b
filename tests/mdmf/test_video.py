"""Clip decoding and frame preparation: the seed's sampling, resize/crop, [0, 1] without mean/std."""

from __future__ import annotations

import numpy as np
import pytest

from edgesentry.errors import ConfigError, InputError
from edgesentry.io.video import Clip, prepare_frames, read_frames, sample_indices

cv2 = pytest.importorskip("cv2")


def test_sample_indices_follow_the_seed():
    np.testing.assert_array_equal(sample_indices(100, 8), np.linspace(1, 98, 8).astype(int))
    assert sample_indices(10, 8).tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    assert sample_indices(2, 8).tolist() == [0, 0, 0, 0, 0, 0, 0, 1]


def test_prepare_frames_resize_crop_and_range():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(8, 240, 320, 3), dtype=np.uint8)
    out = prepare_frames(frames)
    assert out.shape == (8, 3, 224, 224) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0  # no CLIP mean/std
    want = cv2.resize(frames[3].astype(np.float32) / 255, (341, 256), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(out[3], want[16:240, 58:282].transpose(2, 0, 1), atol=1e-6)
    with pytest.raises(InputError, match=r"RGB frames \[T, H, W, 3\]"):
        prepare_frames(frames[..., :2])


@pytest.mark.shared
def test_read_frames_spans(shared):
    path = shared / "data" / "action_clips" / "demo.mp4"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    first, second = read_frames(Clip(str(path), 0.0, 0.5), 8), read_frames(Clip(str(path), 0.5, 1.0), 8)
    assert first.shape == second.shape and first.shape[0] == 8 and first.dtype == np.uint8
    assert not np.array_equal(first, second)
    # the span's frames are those of a full decode at the seed's indices
    cap, decoded = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        decoded.append(frame)
    n = len(decoded)
    lo, hi = round(0.5 * n), n
    want = [cv2.cvtColor(decoded[lo + i], cv2.COLOR_BGR2RGB) for i in sample_indices(hi - lo, 8)]
    np.testing.assert_array_equal(second, np.stack(want))
    assert Clip.parse(f"{path}@0.25:0.75") == Clip(str(path), 0.25, 0.75)
    with pytest.raises(ConfigError, match="START:END"):
        Clip.parse(f"{path}@a:b")
    with pytest.raises(ConfigError, match="0 <= start < end <= 1"):
        read_frames(Clip(str(path), 0.6, 0.2), 8)
    with pytest.raises(InputError, match="not found"):
        read_frames(Clip("/nonexistent.mp4"), 8)
    bad = shared / "reference" / "mdmf" / "heads_seed0_D256_index.json"
    with pytest.raises(InputError, match="decoded no frames"):
        read_frames(Clip(str(bad)), 8)
