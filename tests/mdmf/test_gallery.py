"""Enrolment API on the oracle heads (features in): gallery == episode, incremental == batch,
save/load round trip without pickle, and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from edgesentry.errors import CallOrderError, ConfigError, InputError
from tests.utils import assert_verbose_allclose

pytestmark = pytest.mark.shared


def _episode(oracle, ep="5w5s"):
    def g(k):
        return oracle[f"{ep}/{k}"]

    return g, g("text_features_test")[g("episode_class_real_ids")]


def _enroll_batch(det, g, text, classes=None):
    gallery = det.gallery()
    labels = g("support_labels").astype(int)
    for c in range(len(text)) if classes is None else classes:
        gallery.enroll(f"class{c}", list(g("support_features")[labels == c]), prompt=text[c])
    return gallery


@pytest.mark.parametrize("ep", ["5w1s", "5w5s"])
def test_gallery_classify_matches_oracle(oracle, heads_detector, ep):
    g, text = _episode(oracle, ep)
    gallery = _enroll_batch(heads_detector, g, text)
    assert gallery.labels == [f"class{c}" for c in range(5)] and gallery.shots("class0") == int(g("meta")[1])
    res = heads_detector.classify(list(g("query_features")), gallery)
    assert_verbose_allclose(res.extras["logits"], g("argmax/logits"), atol=1e-5, rtol=1e-5)
    assert res.info["label"] == f"class{int(g('argmax/pred')[0])}"
    assert res.extras["class_logits"]["class0"] == pytest.approx(float(g("argmax/logits")[0, 0]), abs=1e-5)
    assert res.info["prompt_label"] == f"class{int(g('pps_argmax')[0])}"


def test_add_shot_equals_batch_enrolment_and_remove(oracle, heads_detector):
    g, text = _episode(oracle)
    classes = (1, 3)  # two classes of 5 shots keep this quick
    batch = _enroll_batch(heads_detector, g, text, classes)
    inc = heads_detector.gallery()
    labels = g("support_labels").astype(int)
    for c in classes:
        shots = g("support_features")[labels == c]
        inc.enroll(f"class{c}", [shots[0]], prompt=text[c])
        for shot in shots[1:]:
            inc.add_shot(f"class{c}", shot)
    for a, b in zip(batch.arrays()[1:], inc.arrays()[1:]):
        np.testing.assert_array_equal(a, b)  # exact, not approximately equal
    inc.remove("class3")
    assert inc.labels == ["class1"]
    res = heads_detector.classify(g("query_features")[0], inc)
    assert res.extras["logits"].shape == (1, 1)
    with pytest.raises(ConfigError, match="not enrolled"):
        inc.add_shot("class3", g("query_features")[0])
    with pytest.raises(ConfigError, match="already enrolled"):
        inc.enroll("class1", [g("query_features")[0]], prompt=text[0])


def test_gallery_save_load_round_trip(oracle, heads_detector, tmp_path):
    g, text = _episode(oracle, "5w1s")
    gallery = _enroll_batch(heads_detector, g, text)
    path = gallery.save(tmp_path / "gallery.npz")
    with np.load(path, allow_pickle=False) as z:  # plain numeric arrays + a JSON header
        assert all(z[k].dtype != object for k in z.files)
    loaded = heads_detector.load_gallery(path)
    assert loaded.labels == gallery.labels
    for a, b in zip(gallery.arrays()[1:], loaded.arrays()[1:]):
        np.testing.assert_array_equal(a, b)
    q = list(g("query_features"))
    np.testing.assert_array_equal(heads_detector.classify(q, gallery).extras["logits"],
                                  heads_detector.classify(q, loaded).extras["logits"])
    # a [Q, T, D] array is Q queries; a [T, D] array is one
    np.testing.assert_array_equal(heads_detector.classify(g("query_features"), loaded).extras["logits"],
                                  heads_detector.classify(q, loaded).extras["logits"])
    assert heads_detector.classify(q[1], loaded).extras["logits"].shape == (1, 5)
    # a gallery made by another model is refused
    other = heads_detector.gallery()
    other._classes = gallery._classes
    heads_detector.model_id, saved = "0" * 64, heads_detector.model_id
    try:
        other.save(tmp_path / "other.npz")
    finally:
        heads_detector.model_id = saved
    with pytest.raises(ConfigError, match="another model"):
        heads_detector.load_gallery(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable gallery"):
        heads_detector.load_gallery(tmp_path / "junk.npz")


def test_bad_inputs(oracle, heads_detector):
    g, text = _episode(oracle, "5w1s")
    x, s, y = g("query_features"), g("support_features"), g("support_labels")
    det = heads_detector
    with pytest.raises(InputError, match=r"query_feats must be \[B, T=8, D=256\]"):
        det.classify_features(x[:, :4], s, y, text)
    with pytest.raises(InputError, match="support_labels must be"):
        det.classify_features(x, s, y[:3], text)
    with pytest.raises(InputError, match="integers"):
        det.classify_features(x, s, y + 0.5, text)
    with pytest.raises(InputError, match=r"text_embeddings must be \[N=5, D=256\]"):
        det.classify_features(x, s, y, text[:4])
    with pytest.raises(ConfigError, match="explicit seed"):
        det.classify_features(x, s, y, text, prompt="sample")
    with pytest.raises(InputError, match=r"prompt indices must lie in \[0, 4\]"):
        det.classify_features(x, s, y, text, prompt=np.array([0, 1, 2, 3, 5]))
    with pytest.raises(ConfigError, match="prompt must be"):
        det.classify_features(x, s, y, text, prompt="mean")
    nan = x.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        det.classify_features(nan, s, y, text)
    with pytest.raises(CallOrderError, match="no enrolled classes"):
        det.classify(x[0], det.gallery())
    gallery = det.gallery()
    with pytest.raises(InputError, match="features-in"):
        gallery.enroll("a", ["/nonexistent.mp4"], prompt=text[0])
    with pytest.raises(ConfigError, match="no CLIP text tower"):
        gallery.enroll("a", [s[0]])
    with pytest.raises(InputError, match="finite"):
        gallery.enroll("a", [s[0]], prompt=text[0][:10])
    with pytest.raises(InputError, match=r"frame features must be \[T=8, D=256\]"):
        gallery.enroll("a", [s[0][:, :10]], prompt=text[0])
