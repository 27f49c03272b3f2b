"""``edgesentry info --memory``: the activation sizes against a real ONNX Runtime run, the liveness
sweep on graphs worked by hand, and the CLI.

The estimate's check against measured peak resident sets (within 25%) is a benchmark
(``benchmarks/bundle_memory.py``): resident sizes depend on the machine and its libraries. Here
the part that must be exact is checked exactly: every intermediate tensor's size as shape
inference gives it equals the size ONNX Runtime produces when it runs the graph.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgesentry
from edgesentry.bundle import Bundle
from edgesentry.errors import ConfigError
from edgesentry.export.memory import estimate, graph_activations, value_sizes


def _save(tmp_path, nodes, inputs, outputs, initializers=(), name="g.onnx"):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / name
    onnx.save(model, path)
    return path


def _dynamic(name, rank):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"d{i}" for i in range(rank)])


def test_liveness_of_a_chain_worked_by_hand(tmp_path):
    """x -> a = Relu(x) -> b = Relu(a) -> y = Add(a, b): at the Add, x is freed (last read by the
    first Relu), a, b and y are alive: 3 tensors of 1 x 4 x 8 x 8 float32 = 3 KiB."""
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["y"])]
    path = _save(tmp_path, nodes, [_dynamic("x", 4)], [_dynamic("y", 4)])
    one = 4 * 8 * 8 * 4
    peak, feeds, outs, unresolved = graph_activations(path, {"x": (1, 4, 8, 8)})
    assert (peak, feeds, outs, unresolved) == (3 * one, one, one, 0)


def test_shape_computed_at_run_time_is_folded(tmp_path):
    """Reshape to a target computed from Shape -> Gather -> Mul -> Concat (as exporters write
    flatten): ONNX shape inference alone leaves it unknown; folded, it is (1, 4 * 8 * 8)."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i1"], ["c"], axis=0),
        helper.make_node("Gather", ["s", "i2"], ["h"], axis=0),
        helper.make_node("Mul", ["c", "h"], ["ch"]),
        helper.make_node("Mul", ["ch", "h"], ["chw"]),
        helper.make_node("Cast", ["chw"], ["chw64"], to=TensorProto.INT64),
        helper.make_node("Concat", ["one", "chw64"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array([1], np.int64), "i1"),
             numpy_helper.from_array(np.array([2], np.int64), "i2"),
             numpy_helper.from_array(np.array([1], np.int64), "one")]
    path = _save(tmp_path, nodes, [_dynamic("x", 4)], [_dynamic("y", 2)], inits)
    _, sizes = value_sizes(path, {"x": (1, 4, 8, 8)})
    assert sizes["y"] == 4 * 8 * 8 * 4
    assert graph_activations(path, {"x": (1, 4, 8, 8)})[3] == 0


@pytest.fixture(scope="module")
def fers_bundle(tmp_path_factory, shared):
    from edgesentry.export.onnx import export_bundle

    weights = shared / "reference" / "fers" / "weights" / "saved_models" / "50bands"
    bundle = edgesentry.convert("fers", weights, output=tmp_path_factory.mktemp("mem") / "fers50")
    export_bundle(bundle, check_parity=False)
    return Bundle.open(bundle.path)


def test_every_intermediate_size_equals_onnx_runtime(fers_bundle, tmp_path):
    """The FERS spectral graph (reflect padding computed at run time, the wide-ResNet block):
    every value exposed as a graph output, run by ONNX Runtime on a 1 x 50 x 12 x 9 input;
    the bytes the estimate assigns each value are the bytes ONNX Runtime returns."""
    import onnxruntime as ort

    source = fers_bundle.path / fers_bundle.meta["graphs"]["spectral"]["file"]
    shapes = {"x": (1, 50, 12, 9)}
    graph, sizes = value_sizes(source, shapes)
    model = onnx.load(str(source))
    names = [n for node in model.graph.node for n in node.output if n and node.op_type != "Constant"]
    known = {v.name for v in model.graph.output}
    model.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names if n not in known)
    exposed = tmp_path / "all.onnx"
    onnx.save(model, exposed)
    session = ort.InferenceSession(str(exposed), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random(shapes["x"], dtype=np.float32)
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": x})))
    compared = [n for n in names if n in got]
    assert len(compared) > 20
    for name in compared:
        assert sizes.get(name) == got[name].nbytes, name


def test_estimate_of_a_fers_bundle_grows_with_the_scene(fers_bundle):
    small = estimate(fers_bundle, sizes={"H": 32, "W": 32})
    large = estimate(fers_bundle, sizes={"H": 64, "W": 64})
    assert small.input == {"x": [1, 50, 32, 32]} and small.backend == "onnxruntime" and not small.notes
    # the peak is in the encoder, on the image padded by 4 pixels a side: (64 + 8)^2 / (32 + 8)^2
    assert large.activations / small.activations == pytest.approx((72 / 40) ** 2, rel=0.05)
    assert large.weights == small.weights > 0 and large.runtime == small.runtime
    torch = estimate(fers_bundle, backend="torch", sizes={"H": 32, "W": 32})
    assert torch.runtime > small.runtime and torch.activations == small.activations
    trt = estimate(fers_bundle, backend="tensorrt")
    assert trt.workspace > 0 and trt.input == {"x": [1, 50, 128, 128]}  # the profile's opt size
    with pytest.raises(ConfigError, match="axes the bundle's inputs do not have"):
        estimate(fers_bundle, sizes={"T": 3})


def test_cli_info_memory(fers_bundle, tmp_path, capsys):
    from edgesentry.cli import main

    assert main(["info", "--memory", str(fers_bundle.path), "--size", "H=40", "--size", "W=30", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.split("\ndone")[0])
    assert out["input"] == {"x": [1, 50, 40, 30]}
    assert out["total"] == sum(out[k] for k in ("runtime", "weights", "activations", "io", "workspace"))
    assert main(["info", "--memory", str(fers_bundle.path)]) == 0
    text = capsys.readouterr().out
    assert "activations" in text and "total" in text and "1x50x128x128" in text
    assert main(["info", "--memory", str(fers_bundle.path), "--size", "H=x"]) == 1
    assert "--size takes AXIS=N" in capsys.readouterr().err
    rx = edgesentry.convert("rx", output=tmp_path / "rx", mode="local", window=(3, 9))
    assert main(["info", "--memory", str(rx.path), "--size", "B=100", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.split("\ndone")[0])
    assert out["input"] == {"cube": [1024, 1024, 100]} and out["backend"] == "none"
