"""Reduced precision: OpenVINO backend, INT8 (QDQ) / FP16 graphs in bundles, TensorRT explicit
quantisation (fakes), `edgesentry tune`, and the bad inputs around them.

Tolerances: an INT8 graph is compared with its FP32 graph by correlation, not element-wise, and
only with gates loose enough to hold on any x86 / ARM CPU (the INT8 kernels differ: VNNI, AVX2's
VPMADDUBSW, NEON); the real-weight accuracy targets are in test_precision_families.py.
"""

from __future__ import annotations

import glob
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgesentry.errors import BackendUnavailableError, ChecksumError, ConfigError, InputError
from tests.export.families import CASES

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def hazelnut(shared) -> dict[str, list[str]]:
    root = shared / "data" / "hazelnut_toy"
    good = sorted(glob.glob(str(root / "train" / "good" / "*")))
    test = sorted(glob.glob(str(root / "test" / "*" / "*.jpg")))
    if len(good) < 8 or not test:
        pytest.skip(f"hazelnut_toy images not found under {root}")
    return {"good": good, "test": test}


@pytest.fixture
def isstad_copy(family_bundles, tmp_path):
    """A private copy of the exported tiny ISSTAD bundle (tests add variants to it)."""
    from edgesentry.bundle import Bundle

    if "isstad" not in family_bundles:
        pytest.skip("ISSTAD reference bundle not available")
    return Bundle.open(shutil.copytree(family_bundles["isstad"][0].path, tmp_path / "isstad"))


@pytest.fixture(scope="module")
def isstad_int8(family_bundles, hazelnut, tmp_path_factory):
    """The tiny ISSTAD bundle with INT8 (calibrated on 4 good photos) and FP16 graphs."""
    from edgesentry.bundle import Bundle
    from edgesentry.export.quantize import quantize_bundle

    if "isstad" not in family_bundles:
        pytest.skip("ISSTAD reference bundle not available")
    bundle = Bundle.open(shutil.copytree(family_bundles["isstad"][0].path, tmp_path_factory.mktemp("q") / "isstad"))
    reports = quantize_bundle(bundle, "int8", hazelnut["good"][:4])
    quantize_bundle(bundle, "fp16")
    return Bundle.open(bundle.path), reports


# ------------------------------------------------------------------------------ OpenVINO
def test_openvino_matches_torch_for_every_family(family_bundles, tmp_path, capsys):
    """The parity tables at FP32: OpenVINO vs torch, every output of every graph (validate's fp32
    tolerances, the ones ONNX Runtime meets)."""
    from edgesentry.cli import main

    for name, (bundle, _) in family_bundles.items():
        out = tmp_path / f"{name}.json"
        code = main(["validate", str(bundle.path), "--backends", "torch,openvino", "--n-synthetic", "2",
                     "--json", str(out)])
        text = capsys.readouterr().out
        assert code == 0, text
        report = json.loads(out.read_text())
        assert report["passed"] and len(report["results"]) == 2 * len(bundle.meta["graphs"]), name
        assert all(c["candidate"] == "openvino" for r in report["results"] for c in r["comparisons"])


def test_openvino_detector_matches_onnxruntime(family_bundles):
    import edgesentry

    for name, (bundle, _) in family_bundles.items():
        case = CASES[name]
        x = case.sample(np.random.default_rng(3), bundle)
        got = eval(case.call, {"det": edgesentry.load(bundle, backend="openvino"), "x": x})
        want = eval(case.call, {"det": edgesentry.load(bundle, backend="onnxruntime"), "x": x})
        assert got.raw_score == pytest.approx(want.raw_score, rel=1e-4, abs=1e-5), name
        assert got.info.get("backend", "openvino") in ("openvino", None) or name == "mdmf"


def test_openvino_precision_hints_are_honest(isstad_copy):
    """bf16 / f16 run only where the CPU has them; elsewhere a clear error, never silent f32."""
    import edgesentry
    from edgesentry.backends.openvino import native_precisions

    for precision, hint in (("bf16", "bf16"), ("fp16", "f16")):
        if hint in native_precisions():
            det = edgesentry.load(isstad_copy, backend="openvino", precision=precision)
            assert det.runner.describe()["precision"] == hint
        else:
            with pytest.raises(BackendUnavailableError, match=f"no native {hint}.*silently run f32"):
                det = edgesentry.load(isstad_copy, backend="openvino", precision=precision)
                det.predict(np.zeros((32, 32, 3), np.uint8))


def test_openvino_throughput_hint_and_unknown_options(isstad_copy):
    import edgesentry

    det = edgesentry.load(isstad_copy, backend="openvino", performance="throughput")
    assert det.runner.describe() == {"backend": "openvino", "device": "CPU", "precision": "f32", "hint": "throughput"}
    det.predict(np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(ConfigError, match="performance"):
        edgesentry.load(isstad_copy, backend="openvino", performance="fast")


# ------------------------------------------------------------------------------ quantize
def _model(path: Path):
    import onnx

    return onnx.load(str(path))


def test_int8_graph_is_explicit_symmetric_qdq_with_float_norms_and_heads(isstad_int8):
    from onnx import numpy_helper

    from edgesentry.export.lint import lint_model

    bundle, reports = isstad_int8
    record = bundle.meta["precisions"]["int8"]
    name = record["graphs"]["model"]["file"]
    assert name == "model.int8.onnx" and name in bundle.files
    model = _model(bundle.file(name))
    lint = lint_model(model, name="isstad int8")
    assert lint.passed and not lint.warnings, lint.table()
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert dq and all(inits[n.input[2]].dtype == np.int8 and not inits[n.input[2]].any() for n in dq)
    per_channel = [n for n in dq if inits[n.input[1]].size > 1]
    assert per_channel and all(n.input[0] in inits for n in per_channel)  # weights only
    # weights in the reduced range by default (no VPMADDUBSW saturation on x86 without VNNI)
    assert record["reduce_range"] is True
    assert max(int(np.abs(inits[n.input[0]].astype(np.int32)).max()) for n in per_channel) == 64
    for node in model.graph.node:  # LayerNorm / Softmax read float tensors, not dequantised ones
        if node.op_type in ("LayerNormalization", "Softmax"):
            assert producer.get(node.input[0]) is None or producer[node.input[0]].op_type != "DequantizeLinear"
    report = reports["model"]
    heads = [n for n, why in report.kept_float.items() if why.startswith("head")]
    assert heads and report.quantized["MatMul"] > 10
    for node in model.graph.node:
        if node.name in heads:
            assert not any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear"
                           for i in node.input), node.name


def test_int8_runs_in_onnxruntime_and_openvino_close_to_fp32(isstad_int8, hazelnut):
    """Held-aside photos (not among the 4 calibration ones): per-image map correlation >= 0.95 and
    the same image ranking (rho >= 0.9) on any CPU; the tiny model's real-data numbers are in the
    docs."""
    import edgesentry
    from edgesentry.export.tune import pearson, spearman

    bundle, _ = isstad_int8
    photos = hazelnut["test"][:8]
    ref = edgesentry.load(bundle, backend="onnxruntime").predict_batch(photos)
    for backend in ("onnxruntime", "openvino"):
        det = edgesentry.load(bundle, backend=backend, precision="int8")
        assert det.precision == "int8" and det.info()["precision"] == "int8"
        got = det.predict_batch(photos)
        for a, b in zip(got, ref):
            assert pearson(a.anomaly_map, b.anomaly_map) >= 0.95
        assert spearman([r.raw_score for r in got], [r.raw_score for r in ref]) >= 0.9


def test_fp16_graph_keeps_sensitive_ops_in_fp32(isstad_int8):
    import onnx

    from edgesentry.export.lint import lint_model

    bundle, _ = isstad_int8
    model = _model(bundle.file("model.fp16.onnx"))
    assert onnx.TensorProto.FLOAT16 in {i.data_type for i in model.graph.initializer}
    lint = lint_model(model, name="isstad fp16")
    assert lint.passed and not [i for i in lint.issues if i.code == "fp16-sensitive"], lint.table()


def test_quantize_reads_samples_lazily_in_order(tmp_path, isstad_copy):
    """The calibration reader asks for one prepared sample at a time, in order, each once."""
    from edgesentry.export.quantize import quantize_onnx

    asked = []
    rng = np.random.default_rng(0)

    class Lazy:
        def __len__(self):
            return 5

        def __getitem__(self, i):
            asked.append(i)
            return {"image": rng.uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)}

    report = quantize_onnx(isstad_copy.file("model.onnx"), tmp_path / "q.onnx", Lazy(), method="percentile")
    assert asked == [0, 1, 2, 3, 4] and report.samples == 5 and report.method == "percentile"


def test_quantize_cli_and_precision_records(isstad_copy, hazelnut, capsys):
    from onnx import numpy_helper

    from edgesentry.bundle import Bundle
    from edgesentry.cli import main

    code = main(["quantize", str(isstad_copy.path), "--precision", "int8", "--calib", *hazelnut["good"][:2],
                 "--method", "entropy", "--full-range-weights"])
    out = capsys.readouterr().out
    assert code == 0 and "kept float" in out and "head" in out
    bundle = Bundle.open(isstad_copy.path)
    record = bundle.meta["precisions"]["int8"]
    assert record["method"] == "entropy" and record["reduce_range"] is False
    assert record["calibration_samples"] == 2
    weights = [i for i in _model(bundle.file(record["graphs"]["model"]["file"])).graph.initializer
               if i.data_type == 3 and len(i.dims) > 1]  # the int8 weight tensors
    assert weights and max(int(np.abs(numpy_helper.to_array(w).astype(np.int32)).max()) for w in weights) == 127


# ----------------------------------------------------------------------------- bad input
def test_empty_calibration_set_is_a_typed_error(isstad_copy, capsys):
    from edgesentry.cli import main
    from edgesentry.export.quantize import quantize_bundle

    with pytest.raises(InputError, match="no calibration samples"):
        quantize_bundle(isstad_copy, "int8", [])
    assert main(["quantize", str(isstad_copy.path), "--precision", "int8"]) == 1
    assert "--calib" in capsys.readouterr().err


def test_wrong_shape_sample_names_the_sample(isstad_copy, tmp_path):
    from edgesentry.export.quantize import quantize_bundle

    bad = tmp_path / "tile_17.npz"
    np.savez(bad, image=np.zeros((1, 3, 100, 100), np.float32))  # the graph takes 224 x 224
    with pytest.raises(InputError, match="tile_17.npz.*224"):
        quantize_bundle(isstad_copy, "int8", [bad])
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(InputError, match="notes.txt"):
        quantize_bundle(isstad_copy, "int8", [text])


def test_tampered_quantised_graph_is_refused(isstad_int8, tmp_path):
    import edgesentry
    from edgesentry.bundle import Bundle

    copy = Path(shutil.copytree(isstad_int8[0].path, tmp_path / "tampered"))
    data = bytearray((copy / "model.int8.onnx").read_bytes())
    data[-100] ^= 0x01
    (copy / "model.int8.onnx").write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="model.int8.onnx"):
        Bundle.open(copy)
    with pytest.raises(ChecksumError):
        edgesentry.load(copy, precision="int8")


def test_missing_precision_lists_what_the_bundle_has(isstad_copy):
    import edgesentry

    with pytest.raises(ConfigError, match=r"no int8 graphs; it has precisions \['fp32', 'bf16'\].*quantize"):
        edgesentry.load(isstad_copy, precision="int8")
    with pytest.raises(ConfigError, match="precision must be one of"):
        edgesentry.load(isstad_copy, precision="int4")
    with pytest.raises(ConfigError, match="'torch' runs precision 'fp32'"):
        edgesentry.load(isstad_copy, backend="torch", precision="fp16")


def test_variant_view_is_read_only_and_thresholds_do_not_carry_over(isstad_int8, tmp_path, caplog):
    import edgesentry
    from edgesentry.bundle import Bundle
    from edgesentry.errors import BundleError

    copy = Bundle.open(shutil.copytree(isstad_int8[0].path, tmp_path / "calibrated"))
    copy.update_meta(calibration={"threshold": 0.3, "pixel_threshold": None, "score_min": 0.1, "score_max": 0.5,
                                  "quantile": 0.99, "pixel_quantile": None, "margin": 0.1, "n_samples": 4,
                                  "scoring": "original"})
    with caplog.at_level(logging.WARNING):
        det = edgesentry.load(copy.path, precision="int8")
    assert det.threshold is None and "do not carry over" in caplog.text
    with pytest.raises(BundleError, match="read-only|reduced precision"):
        det.bundle.update_meta(extra={})


def test_meta_with_escaping_variant_file_is_refused(isstad_int8, tmp_path):
    from edgesentry.bundle import Bundle
    from edgesentry.errors import BundleError

    copy = Path(shutil.copytree(isstad_int8[0].path, tmp_path / "escape"))
    meta = json.loads((copy / "meta.json").read_text())
    meta["precisions"]["int8"]["graphs"]["model"]["file"] = "../model.int8.onnx"
    (copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="int8 graph"):
        Bundle.open(copy)


# -------------------------------------------------------------------------------- lint
def _qdq_model(*, zero_point_dtype=np.int8, zero_point=0, axis=1, per_channel_on_activation=False):
    from onnx import TensorProto, helper, numpy_helper

    w = np.arange(12, dtype=np.int8).reshape(3, 4)
    inits = [numpy_helper.from_array(w, "w_q"), numpy_helper.from_array(np.full(4, 0.1, np.float32), "w_s"),
             numpy_helper.from_array(np.zeros(4, np.int8), "w_z"),
             numpy_helper.from_array(np.array(0.05, np.float32), "x_s"),
             numpy_helper.from_array(np.array(zero_point, zero_point_dtype), "x_z")]
    x_scale = "x_s"
    if per_channel_on_activation:
        inits.append(numpy_helper.from_array(np.full(3, 0.05, np.float32), "x_s3"))
        inits.append(numpy_helper.from_array(np.zeros(3, zero_point_dtype), "x_z3"))
        x_scale = "x_s3"
    nodes = [helper.make_node("QuantizeLinear", ["x", x_scale, "x_z3" if per_channel_on_activation else "x_z"],
                              ["xq"], axis=1),
             helper.make_node("DequantizeLinear", ["xq", x_scale, "x_z3" if per_channel_on_activation else "x_z"],
                              ["xd"], axis=1),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["wd"], axis=axis),
             helper.make_node("MatMul", ["xd", "wd"], ["y"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("kwargs,code", [
    ({}, None),
    ({"zero_point_dtype": np.uint8, "zero_point": 128}, "qdq-dtype"),  # asymmetric uint8: not TensorRT's
    ({"zero_point": 3}, "qdq-zero-point"),
    ({"axis": 0}, "qdq-axis"),  # MatMul (K, N) weights are per output channel N = axis 1
    ({"per_channel_on_activation": True}, "qdq-per-channel"),
])
def test_lint_checks_qdq_placement(kwargs, code):
    from edgesentry.export.lint import lint_model

    report = lint_model(_qdq_model(**kwargs))
    codes = {i.code for i in report.errors}
    if code is None:
        assert report.passed, report.table()
    else:
        assert code in codes, report.table()


# ----------------------------------------------------------------------------- TensorRT
@pytest.mark.parametrize("version", ["10.3.0", "11.4.0"])
def test_tensorrt_builds_int8_from_the_qdq_graph(isstad_int8, tmp_path, version):
    from edgesentry.bundle import Bundle
    from edgesentry.export.tensorrt import build_bundle_engines, listed_plans
    from tests.export.test_tensorrt_cache import fake_trt

    bundle = Bundle.open(shutil.copytree(isstad_int8[0].path, tmp_path / "trt"))
    trt = fake_trt(version)
    results = build_bundle_engines(bundle, precision="int8", trt=trt, capability=(8, 7))
    assert [r.built for r in results] == [True]
    assert trt.log["parsed"] == [bundle.file("model.int8.onnx").read_bytes()]  # explicit Q/DQ, not FP32
    assert "int8_calibrator" not in trt.log  # no calibrator: the Q/DQ nodes carry the scales
    if version.startswith("10"):
        assert trt.log["flags"] == ["FP16", "INT8"]
    else:
        assert trt.log["flags"] == [] and trt.log["network_flags"] == [1 << 5]  # STRONGLY_TYPED
    plans, rejected = listed_plans(Bundle.open(bundle.path), "model")
    assert len(plans) == 1 and not rejected
    again = build_bundle_engines(Bundle.open(bundle.path), precision="int8", trt=trt, capability=(8, 7))
    assert [r.built for r in again] == [False]  # cached, keyed by the QDQ graph's sha256


# --------------------------------------------------------------------------------- tune
def test_tune_with_absurd_max_drop_keeps_float_and_names_the_gate(isstad_copy, hazelnut, tmp_path, capsys, caplog):
    import edgesentry
    from edgesentry.bundle import Bundle
    from edgesentry.cli import main

    out = tmp_path / "tune.json"
    code = main(["tune", str(isstad_copy.path), "--calib", *hazelnut["good"][:8], "--max-drop", "1e-12",
                 "--rounds", "1", "--batch", "2", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    report = json.loads(out.read_text())
    assert report["decision"]["precision"] == "fp32"
    assert "int8 failed" in report["reason"] and "drop" in report["reason"]
    assert "| onnxruntime | int8 |" in text and "decision:" in text
    rows = {(r["backend"], r["precision"]): r for r in report["rows"]}
    int8 = rows[("onnxruntime", "int8")]
    assert int8["gates"]["drop"] is False and int8["p50_ms"] > 0 and int8["batch_p50_ms"] > 0
    assert set(int8["parity"]) == {"model.recon", "model.prob"}
    meta = Bundle.open(isstad_copy.path).meta
    assert meta["tune"]["machine"]["fingerprint"] and meta["tune"]["libraries"]["openvino"]
    assert meta["tune"]["decision"] == report["decision"]
    assert meta["precisions"]["int8"]["calibrations"]["onnxruntime"]["n_samples"] == 4
    det = edgesentry.load(isstad_copy.path, precision="auto")
    assert det.precision == "fp32" and det.backend == report["decision"]["backend"]
    # another machine: warn and run fp32
    meta["tune"]["decision"] = {"backend": "onnxruntime", "precision": "int8"}
    meta["tune"]["machine"]["fingerprint"] = "0" * 16
    (isstad_copy.path / "meta.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING):
        det = edgesentry.load(isstad_copy.path, precision="auto")
    assert det.precision == "fp32" and "tuned on another machine" in caplog.text


def test_tune_keeps_a_passing_int8_and_auto_loads_it(isstad_copy, hazelnut):
    """With gates any INT8 graph passes, the decision is the fastest variant and `auto` loads it
    with the variant's own thresholds."""
    import edgesentry
    from edgesentry.bundle import Bundle
    from edgesentry.export.tune import Gates, tune_bundle

    gates = Gates(max_drop=1.0, min_speedup=0.0, min_map_corr=-1.0, min_score_corr=-1.0)
    report = tune_bundle(isstad_copy, hazelnut["good"][:6], gates=gates, rounds=1, batch=1,
                         candidates=(("onnxruntime", "fp32"), ("onnxruntime", "int8")))
    # the reference is never a candidate of its own decision: the only passing variant is int8
    assert report.decision == {"backend": "onnxruntime", "precision": "int8"}, report.reason
    det = edgesentry.load(Bundle.open(isstad_copy.path), precision="auto")
    assert det.precision == "int8"
    want = Bundle.open(isstad_copy.path).meta["precisions"]["int8"]["calibrations"]["onnxruntime"]["threshold"]
    assert det.raw_threshold == pytest.approx(want)  # `threshold` is on the normalised scale (0.5)


def test_tune_mdmf_gates_the_accuracy_of_queries_against_a_gallery(family_bundles, tmp_path, capsys):
    """MDMF: every candidate classifies the labelled queries (frame features in folders named by
    class) against the gallery; the accuracy and the agreement of the predicted classes in the
    report equal the ones measured here with each precision's detector."""
    import edgesentry
    from edgesentry.bundle import Bundle
    from edgesentry.cli import main

    if "mdmf" not in family_bundles:
        pytest.skip("MDMF reference bundle not available")
    bundle = Bundle.open(shutil.copytree(family_bundles["mdmf"][0].path, tmp_path / "mdmf"))
    t, d = int(bundle.config.get("frames", 8)), int(bundle.config["model"]["dim"])
    rng = np.random.default_rng(5)
    det = edgesentry.load(bundle, backend="onnxruntime")
    gallery, centres = det.gallery(), {}
    for label in ("pour", "wave", "jump"):
        centres[label] = rng.standard_normal((t, d))
        gallery.enroll(label, (centres[label] + 0.5 * rng.standard_normal((2, t, d))).astype(np.float32),
                       prompt=rng.standard_normal(d).astype(np.float32))
    gallery_path = gallery.save(tmp_path / "gallery.npz")
    queries = []
    for i in range(3):
        for label, centre in centres.items():
            (tmp_path / "q" / label).mkdir(parents=True, exist_ok=True)
            queries.append(tmp_path / "q" / label / f"{i}.npy")
            np.save(queries[-1], (centre + 1.5 * rng.standard_normal((t, d))).astype(np.float32))
    out = tmp_path / "tune.json"
    code = main(["tune", str(bundle.path), "--calib", *map(str, queries[:4]), "--eval", *map(str, queries),
                 "--gallery", str(gallery_path), "--rounds", "1", "--batch", "2", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    report = json.loads(out.read_text())
    assert report["metric_name"] == "accuracy" and "accuracy drop" in text

    def predictions(backend: str, precision: str) -> list[str]:
        d = edgesentry.load(bundle.path, backend=backend, precision=precision)
        g = d.load_gallery(gallery_path)
        return [d.classify(str(q), g).info["label"] for q in queries]

    truth = [q.parent.name for q in queries]
    ref = predictions("onnxruntime", "fp32")
    rows = {(r["backend"], r["precision"]): r for r in report["rows"]}
    for key in (("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "int8")):
        got = predictions(*key)
        assert rows[key]["metric"] == pytest.approx(np.mean([a == b for a, b in zip(got, truth)])), key
        # held-aside queries (2) then the labelled ones
        agree = [a == b for a, b in zip(got[2:4] + got, ref[2:4] + ref)]
        assert rows[key]["label_agreement"] == pytest.approx(np.mean(agree)), key
    assert Bundle.open(bundle.path).meta["tune"]["decision"] == report["decision"]

    code = main(["tune", str(bundle.path), "--calib", *map(str, queries[:4])])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 1 and "--gallery" in lines[0] and len(lines) == 2 and lines[1].startswith("failed")


def test_tune_needs_two_samples(isstad_copy, hazelnut):
    from edgesentry.export.tune import tune_bundle

    with pytest.raises(InputError, match="at least 2 calibration samples"):
        tune_bundle(isstad_copy, hazelnut["good"][:1])


def test_rank_correlation_matches_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    from edgesentry.export.tune import pearson, spearman

    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 40).astype(float)  # ties
    b = a + rng.normal(size=40)
    assert spearman(a, b) == pytest.approx(scipy_stats.spearmanr(a, b).statistic, abs=1e-12)
    assert pearson(a, b) == pytest.approx(scipy_stats.pearsonr(a, b).statistic, abs=1e-12)
