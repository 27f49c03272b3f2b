"""TensorRT lint: the support-matrix data, clean graphs, and each blocker on a crafted graph."""

from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgesentry.export.lint import DATA, lint_model, support_matrix  # noqa: E402


def _model(nodes, inputs, outputs, initializers=(), opset=17, domains=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    imports = [helper.make_opsetid("", opset), *[helper.make_opsetid(d, 1) for d in domains]]
    return helper.make_model(graph, opset_imports=imports)


def _vi(name, dtype=TensorProto.FLOAT, shape=(1, 3, 8, 8)):
    return helper.make_tensor_value_info(name, dtype, list(shape))


def _codes(report):
    return {i.code for i in report.issues if i.severity == "error"}


def test_support_matrix_is_versioned_data():
    data = json.loads(DATA.read_text())
    assert "TensorRT 10.1" in data["version"] and data["source"].startswith("onnx/onnx-tensorrt")
    ops = support_matrix()["operators"]
    assert len(ops) > 150
    # spot checks against the published matrix
    assert ops["Conv"]["supported"] and ops["LayerNormalization"]["supported"]
    assert not ops["Unique"]["supported"] and not ops["SequenceAt"]["supported"]
    assert "initializer" in ops["Slice"]["restrictions"]


def test_tiny_graph_passes_and_reports_profile_axes(tiny_bundle):
    path = tiny_bundle.path / tiny_bundle.meta["graphs"]["model"]["file"]
    report = lint_model(path, name="model")
    assert report.passed, report.table()
    assert report.dynamic == {"image": {0: "batch", 2: "H", 3: "W"}}
    assert report.op_counts["Conv"] == 2
    assert "PASS" in report.table()


def test_unsupported_and_custom_ops():
    nodes = [helper.make_node("Unique", ["x"], ["y"]), helper.make_node("Foo", ["y"], ["z"], domain="com.acme")]
    m = _model(nodes, [_vi("x", shape=(5,))], [_vi("z", shape=(5,))], domains=["com.acme"])
    report = lint_model(m)
    assert {"unsupported-op", "custom-op"} <= _codes(report)
    assert not report


def test_opset_newer_than_parser_range():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("y")], opset=21)
    assert "opset" in _codes(lint_model(m))
    ok = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("y")], opset=17)
    assert lint_model(ok).passed


def test_float64_io_is_an_error_and_inner_double_a_warning():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", TensorProto.DOUBLE)], [_vi("y", TensorProto.DOUBLE)])
    assert "io-dtype" in _codes(lint_model(m))
    inner = _model(
        [helper.make_node("Cast", ["x"], ["d"], to=TensorProto.DOUBLE), helper.make_node("Cast", ["d"], ["y"], to=1)],
        [_vi("x")],
        [_vi("y")],
    )
    report = lint_model(inner)
    assert report.passed and any(i.code == "float64" for i in report.warnings)


def test_bool_output_warns():
    m = _model([helper.make_node("Greater", ["x", "x"], ["y"])], [_vi("x")], [_vi("y", TensorProto.BOOL)])
    report = lint_model(m)
    assert any(i.code == "io-dtype" and i.severity == "warning" for i in report.issues)


def test_runtime_axes_must_be_initializers():
    axes_from_input = _model(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"])],
        [_vi("x"), _vi("axes", TensorProto.INT64, (1,))],
        [_vi("y", shape=(1, 3, 8))],
    )
    assert "non-constant" in _codes(lint_model(axes_from_input))
    const_axes = _model(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"])],
        [_vi("x")],
        [_vi("y", shape=(1, 3, 8))],
        initializers=[numpy_helper.from_array(np.array([3], np.int64), "axes")],
    )
    assert lint_model(const_axes).passed


def test_resize_and_pooling_restrictions():
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    cubic = _model(
        [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic")],
        [_vi("x")],
        [_vi("y", shape=(1, 3, 16, 16))],
        initializers=[scales],
    )
    assert "resize-mode" in _codes(lint_model(cubic))
    pool1d = _model(
        [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2])],
        [_vi("x", shape=(1, 3, 8))],
        [_vi("y", shape=(1, 3, 7))],
    )
    assert "pool-rank" in _codes(lint_model(pool1d))


def test_volume_over_int32_is_an_error():
    m = _model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [_vi("x", shape=(4, 1024, 1024, 1024))],
        [_vi("y", shape=(4, 1024, 1024, 1024))],
    )
    assert "volume" in _codes(lint_model(m))


def test_custom_matrix_is_used():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("y")])
    matrix = {"version": "test", "opset_min": 9, "opset_max": 20, "operators": {"Relu": {"supported": False}}}
    assert "unsupported-op" in _codes(lint_model(m, ops=matrix))
