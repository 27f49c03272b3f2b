"""``edgesentry validate``/``export`` on the tiny family: tables, JSON, exit codes, FP16 path."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from edgesentry.bundle import Bundle  # noqa: E402
from edgesentry.cli import main  # noqa: E402
from edgesentry.export.validate import TOLERANCES, validate_bundle  # noqa: E402


def test_export_verb_prints_parity_and_lint(tiny_family, tmp_path, capsys):
    from edgesentry.bundle import write_bundle
    from tests.export.conftest import tiny_tensors

    write_bundle(tmp_path / "b", "tinynet", config={}, tensors=tiny_tensors())
    assert main(["export", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime vs torch" in out and "| anomaly_map |" in out and "PASS" in out
    assert "TensorRT lint of model" in out
    bundle = Bundle.open(tmp_path / "b")
    g = bundle.meta["graphs"]["model"]
    assert g["output_spec"]["anomaly_map"]["shape"] == ["batch", "H", "W"]
    assert g["example_shapes"]["image"] == [2, 3, 16, 16]
    from edgesentry.export.graph import read_metadata

    md = read_metadata(bundle.path / "model.onnx")
    assert md["family"] == "tinynet" and json.loads(md["input_spec"])["image"]["shape"] == ["batch", 3, "H", "W"]


def test_validate_passes_and_writes_json(tiny_bundle, tmp_path, capsys):
    out_json = tmp_path / "report.json"
    code = main(["validate", str(tiny_bundle.path), "--backends", "torch,onnxruntime", "--json", str(out_json)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "onnxruntime vs torch" in out and "PASSED: 4 of 4 outputs" in out
    report = json.loads(out_json.read_text())
    assert report["passed"] and report["atol"] == TOLERANCES["fp32"][0]
    outputs = report["results"][0]["comparisons"][0]["outputs"]
    assert {o["name"] for o in outputs} == {"anomaly_map", "score"}
    for o in outputs:
        assert o["passed"] and o["max_abs"] < 1e-4 and {"p99_abs", "median_rel", "mean_abs"} <= set(o)


def _perturbed_copy(bundle, dest):
    import onnx
    from onnx import numpy_helper

    shutil.copytree(bundle.path, dest)
    b = Bundle.open(dest)
    model = onnx.load(str(dest / "model.onnx"))
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.ndim == 1 and arr.size == 1 and arr.dtype == np.float32:  # conv2's bias
            init.CopyFrom(numpy_helper.from_array(arr + np.float32(0.05), init.name))
            break
    else:
        raise AssertionError("no scalar bias found to perturb")
    (dest / "model.onnx").write_bytes(model.SerializeToString())
    b.add_file("model.onnx")
    return b


def test_validate_fails_on_a_perturbed_graph(tiny_bundle, tmp_path, capsys):
    bad = _perturbed_copy(tiny_bundle, tmp_path / "bad")
    out_json = tmp_path / "bad.json"
    code = main(["validate", str(bad.path), "--json", str(out_json)])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL" in out and "FAILED" in out
    report = json.loads(out_json.read_text())
    assert not report["passed"]
    amap = next(o for o in report["results"][0]["comparisons"][0]["outputs"] if o["name"] == "anomaly_map")
    assert not amap["passed"] and amap["max_abs"] == pytest.approx(0.05 * 0.25, rel=0.5)
    # a loose enough tolerance accepts it: the exit code follows the tolerance, not the graph
    assert main(["validate", str(bad.path), "--atol", "0.1"]) == 0


def test_validate_fp16_onnxruntime_against_fp32_torch(tiny_bundle):
    report = validate_bundle(tiny_bundle, backends=["torch", "onnxruntime"], precision="fp16", n_synthetic=1)
    assert report.atol == TOLERANCES["fp16"][0]
    amap = report.results[0].reports[0].outputs[0]
    # FP16 really ran: nonzero error, but inside the fp16 tolerance
    assert amap.max_abs > 1e-6 and report.passed, report.table()


def test_validate_with_user_samples(tiny_bundle, tmp_path):
    rng = np.random.default_rng(5)
    sample = tmp_path / "s.npz"
    np.savez(sample, image=rng.standard_normal((1, 3, 24, 20)).astype(np.float32))
    report = validate_bundle(tiny_bundle, samples=[sample])
    assert report.passed and report.results[0].sample == "s.npz"
    assert report.results[0].reports[0].outputs[0].shape == (1, 24, 20)
    from edgesentry.errors import InputError

    wrong = tmp_path / "w.npz"
    np.savez(wrong, x=np.zeros(3, np.float32))
    with pytest.raises(InputError, match="image"):
        validate_bundle(tiny_bundle, samples=[wrong])


def test_validate_rejects_bad_requests(tiny_bundle):
    from edgesentry.errors import ConfigError

    with pytest.raises(ConfigError, match="reference and at least one"):
        validate_bundle(tiny_bundle, backends=["torch"])
    with pytest.raises(ConfigError, match="unknown backends"):
        validate_bundle(tiny_bundle, backends=["torch", "tvm"])


def test_ort_iobinding_and_providers(tiny_bundle):
    import onnxruntime as ort

    from edgesentry.backends import InputSpec, OrtRunner
    from edgesentry.backends.onnxruntime import providers_for

    spec = {"image": InputSpec("float32", (None, 3, None, None))}
    runner = OrtRunner(tiny_bundle.path / "model.onnx", spec, ["anomaly_map", "score"])
    x = np.random.default_rng(0).standard_normal((2, 3, 12, 12)).astype(np.float32)
    plain = runner.infer({"image": x})
    bound = runner.infer_bound({"image": x})
    value = ort.OrtValue.ortvalue_from_numpy(x, "cpu", 0)
    bound_ov = runner.infer_bound({"image": value})
    for k in plain:
        np.testing.assert_array_equal(plain[k], bound[k])
        np.testing.assert_array_equal(plain[k], bound_ov[k])
    avail = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    prov = providers_for("auto", cache_dir=tiny_bundle.path / "ort-trt-cache-test", fp16=True, available=avail)
    assert [p if isinstance(p, str) else p[0] for p in prov] == avail
    trt_opts = prov[0][1]
    assert trt_opts["trt_engine_cache_enable"] and trt_opts["trt_fp16_enable"]
    assert trt_opts["trt_engine_cache_path"].endswith("ort-trt-cache-test")
    shutil.rmtree(tiny_bundle.path / "ort-trt-cache-test")
    assert providers_for("auto", available=["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_shadowed_gpu_wheel_message(monkeypatch):
    from importlib import metadata

    from edgesentry.backends import onnxruntime as ort_backend

    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda d: "1.0" if d in ("onnxruntime", "onnxruntime-gpu") else real(d))
    msg = ort_backend.gpu_wheel_shadowed()
    assert msg is not None and "pip uninstall" in msg  # CPU-only providers here, both wheels "installed"
