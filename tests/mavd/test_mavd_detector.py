"""MAVD detector: oracle scores end to end, input handling, streaming, evaluation and CLI."""

from __future__ import annotations

import numpy as np
import pytest

from edgesentry.errors import ConfigError, InputError
from tests.utils import assert_verbose_allclose

from .conftest import CASES, case_inputs

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def det(bundle):
    import edgesentry

    return edgesentry.load(bundle.path, backend="torch")


@pytest.mark.parametrize("case", CASES)
def test_final_scores_match_oracle(det, oracle, case):
    x = case_inputs(oracle, case)
    x["audio"] = x["audio"][0]  # one VGGish stream per video, as released
    res = det.predict(x)
    assert_verbose_allclose(res.extras["frame_scores"], oracle[f"{case}/final_frame"], atol=2e-6, rtol=0)
    assert_verbose_allclose(res.extras["snippet_scores"], oracle[f"{case}/final_snippet"], atol=2e-6, rtol=0)
    assert res.score == pytest.approx(float(oracle[f"{case}/final_snippet"].max()), abs=2e-6)
    assert res.anomaly_map is None
    assert res.extras["frame_scores"].shape == (16 * x["rgb"].shape[1],)


def test_audio_per_crop_and_2d_inputs(det, oracle):
    x = case_inputs(oracle, "case_B5_T7")
    per_crop = det.predict(x)  # audio (5, T, 128): identical rows, as the official loader
    once = det.predict({**x, "audio": x["audio"][0]})
    assert_verbose_allclose(per_crop.extras["snippet_scores"], once.extras["snippet_scores"], atol=1e-6, rtol=0)
    single = det.predict({"rgb": x["rgb"][0], "flow": x["flow"][0], "audio": x["audio"][0]})
    assert single.extras["snippet_scores"].shape == (7,)


def test_aligned_features_on_request(bundle, oracle):
    import edgesentry

    det = edgesentry.load(bundle.path, backend="torch", return_features=True)
    case = "case_B5_T64"
    res = det.predict(case_inputs(oracle, case))
    for name in ("v_feat", "a_feat", "f_feat", "va_feat", "vf_feat"):
        assert_verbose_allclose(res.extras[name], oracle[f"{case}/{name}"], atol=1e-5, rtol=1e-5)


def test_reference_and_cpu_kernel_tiers_agree(bundle, oracle):
    import edgesentry

    x = case_inputs(oracle, "case_B5_T64")
    ref = edgesentry.load(bundle.path, backend="torch", kernels="reference").predict(x)
    cpu = edgesentry.load(bundle.path, backend="torch", kernels="cpu").predict(x)
    assert ref.info["kernel_tier"] == "reference" and cpu.info["kernel_tier"] == "cpu"
    assert_verbose_allclose(cpu.extras["snippet_scores"], ref.extras["snippet_scores"], atol=2e-6, rtol=0)


def test_npy_files_in_xd_layout(det, oracle, tmp_path):
    x = case_inputs(oracle, "case_B5_T7")
    vid = "v=abc__#1_label_B1-0-0"
    rgb = [tmp_path / f"{vid}__{i}.npy" for i in range(5)]
    flow = [tmp_path / f"flow_{vid}__{i}.npy" for i in range(5)]
    for i in range(5):
        np.save(rgb[i], x["rgb"][i])
        np.save(flow[i], x["flow"][i])
    np.save(tmp_path / f"{vid}__vggish.npy", x["audio"][0])
    res = det.predict({"rgb": [str(p) for p in rgb], "flow": flow, "audio": tmp_path / f"{vid}__vggish.npy"})
    assert_verbose_allclose(res.extras["frame_scores"], oracle["case_B5_T7/final_frame"], atol=2e-6, rtol=0)


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda x: {k: v for k, v in x.items() if k != "flow"}, "missing"),
        (lambda x: {**x, "rgb": x["rgb"][..., :512]}, "1024"),
        (lambda x: {**x, "flow": x["flow"][:3]}, "crops"),
        (lambda x: {**x, "audio": x["audio"][:3]}, "audio"),
        (lambda x: {**x, "audio": x["audio"][:, :5]}, "same number of snippets"),
        (lambda x: {**x, "rgb": np.where(x["rgb"] > 2, np.nan, x["rgb"])}, "NaN"),
        (lambda x: {**x, "rgb": x["rgb"][:, :0]}, "empty"),
        (lambda x: {**x, "rgb": x["rgb"].astype(str)}, "numeric"),
        (lambda x: {**x, "audio": "/nonexistent/a.npy"}, "does not exist"),
        (lambda x: x["rgb"], "dict"),
    ],
)
def test_bad_inputs_raise_input_error(det, oracle, change, match):
    with pytest.raises(InputError, match=match):
        det.predict(change(case_inputs(oracle, "case_B5_T7")))


def test_trim_cuts_to_shortest(bundle, oracle):
    import edgesentry

    x = case_inputs(oracle, "case_B5_T64")
    det = edgesentry.load(bundle.path, backend="torch", trim=True)
    res = det.predict({**x, "flow": x["flow"][:, :63]})
    want = det.predict({"rgb": x["rgb"][:, :63], "flow": x["flow"][:, :63], "audio": x["audio"][:, :63]})
    assert res.info["trimmed"] == {"rgb": 1, "audio": 1}
    assert_verbose_allclose(res.extras["snippet_scores"], want.extras["snippet_scores"], atol=0, rtol=0)


def test_stream_full_window_ends_at_offline_score(det, oracle):
    x = case_inputs(oracle, "case_B5_T7")
    stream = det.stream(window=16)
    online = [stream.push(x["rgb"][:, t], x["flow"][:, t], x["audio"][0, t]) for t in range(7)]
    # with the whole video in the window, the newest snippet sees what the offline pass sees
    assert online[-1] == pytest.approx(float(oracle["case_B5_T7/final_snippet"][-1]), abs=2e-6)
    assert all(0.0 <= s <= 1.0 for s in online)
    with pytest.raises(InputError):
        stream.push(x["rgb"][:2, 0], x["flow"][:, 0], x["audio"][0, 0])
    with pytest.raises(ConfigError):
        det.stream(window=0)
    with pytest.raises(ConfigError):
        det.stream(window=4, delay=4)


def test_stream_with_delay_scores_every_snippet_once(det, oracle):
    x = case_inputs(oracle, "case_B5_T7")
    stream = det.stream(window=16, delay=3)
    online = [stream.push(x["rgb"][:, t], x["flow"][:, t], x["audio"][0, t]) for t in range(7)]
    assert online[:3] == [None, None, None]
    scores = [s for s in online if s is not None] + stream.flush()
    # the whole video is in the window at the end: the flushed tail equals the offline scores
    np.testing.assert_allclose(scores[-3:], oracle["case_B5_T7/final_snippet"][-3:], atol=2e-6)
    assert len(scores) == 7


def test_bundle_needed_for_build():
    import edgesentry

    with pytest.raises(ConfigError, match="convert"):
        edgesentry.load("mavd")


# ------------------------------------------------------------------------- evaluation
def test_frame_labels_from_annotations(tmp_path, shared):
    from edgesentry.evaluation.mavd import frame_labels, read_annotations

    annos = read_annotations(shared / "data" / "xd_violence" / "annotations.txt")
    assert len(annos) == 500
    vid = "v=S-7rRLrxnVQ__#1_label_B4-0-0"
    assert annos[vid] == [(0, 1517), (1970, 3038)]
    assert not any(k.endswith(".mp4") for k in annos)
    gt = frame_labels([vid, "v=x__#1_label_A"], [200, 3], annos)
    assert gt.shape == (16 * 203,)
    assert gt[:1517].all() and not gt[1517:1970].any() and gt[1970:3038].all() and not gt[3038:3200].any()
    assert not gt[3200:].any()
    with pytest.raises(InputError, match="no annotation"):
        frame_labels(["v=y__#1_label_B1-0-0"], [4], annos)


def _write_xd_lists(oracle, root):
    """The three test_run videos in the MAVD list layout, with annotations from test_run/gt."""
    names, annos = [], []
    rgb_lines, flow_lines, audio_lines = [], [], []
    gt = oracle["test_run/gt"]
    start = 0
    for case in oracle["test_run/videos"]:
        x = case_inputs(oracle, str(case))
        b, t = x["rgb"].shape[:2]
        vid = f"v={case}__#1_label_B1-0-0"
        names.append(vid)
        for sub in ("RGBTest", "FlowTest", "vggish"):
            (root / sub).mkdir(exist_ok=True)
        for i in range(b):
            np.save(root / "RGBTest" / f"{vid}__{i}.npy", x["rgb"][i])
            np.save(root / "FlowTest" / f"{vid}__{i}.npy", x["flow"][i])
            rgb_lines.append(f"RGBTest/{vid}__{i}.npy")
            flow_lines.append(f"FlowTest/{vid}__{i}.npy")
        np.save(root / "vggish" / f"{vid}__vggish.npy", x["audio"][0])
        audio_lines.append(f"vggish/{vid}__vggish.npy")
        g = gt[start : start + 16 * t]
        on = np.flatnonzero(np.diff(np.r_[0, g, 0]))
        annos.append(" ".join([vid + ".mp4", *map(str, on)]))
        start += 16 * t
    (root / "video_test.list").write_text("\n".join(rgb_lines))  # no final newline, as the repo
    (root / "flow_test.list").write_text("\n".join(flow_lines))
    (root / "audio_test.list").write_text("\n".join(audio_lines))
    (root / "annotations.txt").write_text("\n".join(annos) + "\n")
    return root


def test_evaluate_reproduces_official_test_run(det, oracle, tmp_path):
    from edgesentry.evaluation.mavd import evaluate

    root = _write_xd_lists(oracle, tmp_path)
    out = evaluate(det, root / "video_test.list", root / "annotations.txt")
    np.testing.assert_array_equal(out["gt"], oracle["test_run/gt"])
    assert_verbose_allclose(out["frame_scores"], oracle["test_run/frame_scores"], atol=2e-6, rtol=0)
    assert out["ap"] == pytest.approx(0.16898988438014306, abs=1e-6)


def test_cli_convert_detect_eval(weights_dir, oracle, tmp_path, capsys):
    from edgesentry.cli import main

    out_bundle = tmp_path / "b"
    assert main(["convert", "mavd", str(weights_dir), "-o", str(out_bundle)]) == 0
    root = _write_xd_lists(oracle, tmp_path)
    vid = "v=case_B5_T7__#1_label_B1-0-0"
    rgb = [str(root / "RGBTest" / f"{vid}__{i}.npy") for i in range(5)]
    flow = [str(root / "FlowTest" / f"{vid}__{i}.npy") for i in range(5)]
    code = main(
        [
            "detect",
            "mavd",
            str(out_bundle),
            "--rgb",
            *rgb,
            "--flow",
            *flow,
            "--audio",
            str(root / "vggish" / f"{vid}__vggish.npy"),
            "--out",
            str(tmp_path / "det"),
            "--backend",
            "torch",
        ]
    )
    assert code == 0
    saved = np.load(tmp_path / "det" / f"{vid}_frame_scores.npy")
    assert_verbose_allclose(saved, oracle["case_B5_T7/final_frame"], atol=2e-6, rtol=0)
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                "mavd",
                str(out_bundle),
                str(root / "video_test.list"),
                str(root / "annotations.txt"),
                "--backend",
                "torch",
            ]
        )
        == 0
    )
    assert "AP: 16.90" in capsys.readouterr().out


def test_save_and_reload_round_trip(det, oracle, tmp_path):
    import edgesentry

    det.save(tmp_path / "copy")
    again = edgesentry.load(tmp_path / "copy", backend="torch")
    x = case_inputs(oracle, "case_B5_T7")
    np.testing.assert_array_equal(again.predict(x).extras["snippet_scores"], det.predict(x).extras["snippet_scores"])
