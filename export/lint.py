"""Static TensorRT compatibility lint for ONNX graphs (no TensorRT needed).

TensorRT cannot be installed on CPU CI, so the blockers its ONNX parser would hit are checked
here, statically, for every exported graph:

- operators and opsets against the ONNX-TensorRT parser's support matrix, kept as data in
  ``export/data/trt_onnx_ops.json`` together with the release it was read from;
- the machine-checkable restrictions of that matrix ("`axes` must be an initializer",
  Resize modes, 2D/3D pooling, TopK ``sorted``/``K`` ...);
- data types TensorRT cannot take at the network boundary (float64 inputs/outputs; DOUBLE
  inside the graph is cast down with clamping, which is reported as a warning), and custom
  domains that would need a plugin;
- tensors larger than 2^31-1 elements (anomalib's PatchCore "tensor volume exceeds" failure);
- dynamic dimensions, which need an optimisation profile at build time (reported as info,
  with the axis names, so ``edgesentry build`` knows what to profile);
- explicit quantisation (``edgesentry quantize --precision int8``; TensorRT 11's only INT8
  route): every QuantizeLinear / DequantizeLinear has constant, positive scales and a constant
  INT8 zero point of 0 (symmetric); per-channel scales only on constant weights, along the
  output-channel axis of the Conv / MatMul / Gemm that reads them; every QuantizeLinear feeds
  DequantizeLinear only; no QOperator ops (QLinearConv, MatMulInteger ...);
- FP16 graphs: LayerNormalization, Softmax and reductions computed in FP16 (the ViT overflow)
  are warned about.

``lint_model(model) -> LintReport``; the report is truthy when there is no error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).with_name("data") / "trt_onnx_ops.json"
MAX_VOLUME = 2**31 - 1

# ONNX TensorProto element types (onnx.TensorProto.*), named here so this module imports onnx lazily.
_DTYPE_NAMES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    5: "int16",
    6: "int32",
    7: "int64",
    8: "string",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
    16: "bfloat16",
}
# What the TensorRT 10 network boundary accepts (DataType: FLOAT, HALF, BF16, INT8, INT32, INT64, BOOL, UINT8 ...).
_IO_OK = {"float32", "float16", "bfloat16", "int32", "int64", "int8", "uint8", "bool"}
_DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass
class LintIssue:
    severity: str  # "error" | "warning" | "info"
    code: str
    message: str
    node: str = ""


@dataclass
class LintReport:
    graph: str
    source: str
    opset: int | None
    issues: list[LintIssue] = field(default_factory=list)
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)
    op_counts: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return not self.errors

    @property
    def passed(self) -> bool:
        return bool(self)

    @property
    def errors(self) -> list[LintIssue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[LintIssue]:
        return [i for i in self.issues if i.severity == "warning"]

    def add(self, severity: str, code: str, message: str, node: str = "") -> None:
        self.issues.append(LintIssue(severity, code, message, node))

    def to_dict(self) -> dict[str, Any]:
        return {
            "graph": self.graph,
            "source": self.source,
            "opset": self.opset,
            "passed": self.passed,
            "issues": [asdict(i) for i in self.issues],
            "dynamic": {k: {str(a): n for a, n in v.items()} for k, v in self.dynamic.items()},
            "op_counts": self.op_counts,
        }

    def table(self) -> str:
        head = (
            f"TensorRT lint of {self.graph} (opset {self.opset}; checked against {self.source}): "
            f"{'PASS' if self.passed else 'FAIL'} ({len(self.errors)} errors, {len(self.warnings)} warnings)"
        )
        rows = [f"  {i.severity:7s} {i.code:18s} {i.message}" + (f" [{i.node}]" if i.node else "") for i in self.issues]
        return "\n".join([head, *rows])


@lru_cache(maxsize=1)
def support_matrix() -> dict[str, Any]:
    """The parser support matrix (operators, opset range, source version)."""
    return json.loads(DATA.read_text())


def _dtype(elem_type: int) -> str:
    return _DTYPE_NAMES.get(elem_type, f"onnx type {elem_type}")


def _dims(value_info: Any) -> list[int | str | None]:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return []
    out: list[int | str | None] = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def _attr(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


# "`axes` must be an initializer" / "a constant tensor" / "a build-time constant"
_CONST_RULE = re.compile(r"`(\w+)`(?: input)? must be (?:an initializer|a constant tensor|a build-time constant)")


def _constant_inputs_rules(op: str, entry: Mapping[str, Any]) -> list[str]:
    return _CONST_RULE.findall(entry.get("restrictions", ""))


def _schema_input_index(op: str, opset: int, name: str) -> int | None:
    import onnx

    try:
        schema = onnx.defs.get_schema(op, opset, "")
    except Exception:  # op newer than the model's opset, or not an ONNX op
        return None
    for i, formal in enumerate(schema.inputs):
        if formal.name == name:
            return i
    return None


def lint_model(model: Any, *, name: str | None = None, ops: Mapping[str, Any] | None = None) -> LintReport:
    """Lint an ONNX model (``ModelProto`` or path) for the TensorRT ONNX parser.

    Args:
        model: the model or its path.
        name: graph name for the report (default: the graph's own name).
        ops: a support matrix in the layout of ``trt_onnx_ops.json`` (tests pass their own).
    """
    import onnx

    if not isinstance(model, onnx.ModelProto):
        from edgesentry.export._stream import load_skeleton

        model = load_skeleton(model)  # the graph without its weights' data: all the lint reads
    matrix = dict(ops) if ops is not None else support_matrix()
    table: Mapping[str, Any] = matrix["operators"]
    opset = next((o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS), None)
    report = LintReport(name or model.graph.name or "graph", matrix.get("version", "?"), opset)

    _check_opset(report, model, matrix)
    inferred = _infer(model, report)
    graph = inferred.graph
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    value_info = {v.name: v for v in (*graph.input, *graph.output, *graph.value_info)}

    _check_io(report, graph)
    _check_values(report, graph, value_info, constants)
    _check_qdq(report, graph, value_info)
    _check_fp16_sensitive(report, graph, value_info)
    for node in graph.node:
        report.op_counts[node.op_type] = report.op_counts.get(node.op_type, 0) + 1
        _check_node(report, node, table, opset or 0, constants)
        for sub in _subgraphs(node):
            for inner in sub.node:
                _check_node(report, inner, table, opset or 0, constants)
    return report


def _check_opset(report: LintReport, model: Any, matrix: Mapping[str, Any]) -> None:
    lo, hi = int(matrix.get("opset_min", 0)), int(matrix.get("opset_max", 10**6))
    for imp in model.opset_import:
        if imp.domain in _DEFAULT_DOMAINS:
            if imp.version > hi:
                report.add(
                    "error",
                    "opset",
                    f"default-domain opset {imp.version} is newer than the parser's range "
                    f"{lo}..{hi}; export with --opset {hi} or lower",
                )
            elif imp.version < lo:
                report.add("warning", "opset", f"opset {imp.version} is older than the parser's range {lo}..{hi}")
        elif imp.domain not in ("ai.onnx.ml",):
            report.add(
                "warning", "domain", f"custom opset domain {imp.domain!r} (v{imp.version}) needs a TensorRT plugin"
            )


def _infer(model: Any, report: LintReport) -> Any:
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:  # shape inference is best effort; the op checks still run
        report.add(
            "warning", "shape-inference", f"ONNX shape inference failed ({exc}); dtype/volume checks are partial"
        )
        return model


def _check_io(report: LintReport, graph: Any) -> None:
    initializers = {i.name for i in graph.initializer}
    for kind, values in (("input", graph.input), ("output", graph.output)):
        for v in values:
            if v.name in initializers:
                continue  # old exporters list initializers as inputs
            dtype = _dtype(v.type.tensor_type.elem_type)
            if dtype not in _IO_OK:
                report.add(
                    "error",
                    "io-dtype",
                    f"graph {kind} {v.name!r} is {dtype}; TensorRT network {kind}s cannot be "
                    f"{dtype} (cast to float32 inside the graph)",
                )
            elif kind == "output" and dtype == "bool":
                report.add(
                    "warning",
                    "io-dtype",
                    f"graph output {v.name!r} is bool; return a float32/int32 score "
                    "instead so every backend (TensorRT, Triton, ONNX Runtime) agrees on the buffer type",
                )
            dims = _dims(v)
            dynamic = {
                i: (d if isinstance(d, str) else f"{v.name}_dim{i}")
                for i, d in enumerate(dims)
                if not isinstance(d, int) or d <= 0
            }
            if kind == "input" and dynamic:
                report.dynamic[v.name] = dynamic
                report.add(
                    "info",
                    "profile",
                    f"input {v.name!r} has dynamic axes {dynamic}: the engine needs an "
                    "optimisation profile (min/opt/max) for them",
                )


def _check_values(report: LintReport, graph: Any, value_info: Mapping[str, Any], constants: set[str]) -> None:
    doubles = [v.name for v in value_info.values() if v.type.tensor_type.elem_type == 11]
    doubles += [i.name for i in graph.initializer if i.data_type == 11]
    io_names = {v.name for v in (*graph.input, *graph.output)}
    inner = [d for d in doubles if d not in io_names]
    if inner:
        report.add(
            "warning",
            "float64",
            f"{len(inner)} float64 tensor(s) inside the graph (e.g. {inner[:3]}); "
            "TensorRT casts DOUBLE down to FLOAT with clamping",
        )
    for v in value_info.values():
        dims = _dims(v)
        if dims and all(isinstance(d, int) and d > 0 for d in dims):
            volume = 1
            for d in dims:
                volume *= d
            if volume > MAX_VOLUME:
                report.add("error", "volume", f"tensor {v.name!r} has {volume} elements > 2^31-1 {tuple(dims)}")


def _subgraphs(node: Any) -> Iterable[Any]:
    for a in node.attribute:
        if a.g is not None and a.g.node:
            yield a.g
        yield from a.graphs


def _check_node(report: LintReport, node: Any, table: Mapping[str, Any], opset: int, constants: set[str]) -> None:
    label = node.name or node.op_type
    if node.domain not in _DEFAULT_DOMAINS:
        report.add(
            "error",
            "custom-op",
            f"{node.domain}::{node.op_type} is not an ONNX operator; TensorRT needs a plugin for it",
            label,
        )
        return
    entry = table.get(node.op_type)
    if entry is None:
        report.add("error", "unknown-op", f"{node.op_type} is not in the parser's operator list", label)
        return
    if not entry.get("supported", False):
        report.add("error", "unsupported-op", f"{node.op_type} is not supported by the TensorRT ONNX parser", label)
        return
    for formal in _constant_inputs_rules(node.op_type, entry):
        idx = _schema_input_index(node.op_type, opset, formal)
        if idx is not None and idx < len(node.input) and node.input[idx] and node.input[idx] not in constants:
            report.add(
                "error",
                "non-constant",
                f"{node.op_type} input `{formal}` must be an initializer for "
                f"TensorRT; it is computed at run time ({node.input[idx]!r})",
                label,
            )
    _check_attributes(report, node, label)


def _check_attributes(report: LintReport, node: Any, label: str) -> None:
    op = node.op_type
    if op in ("AveragePool", "MaxPool", "LpPool"):
        kernel = _attr(node, "kernel_shape", [])
        if len(kernel) not in (2, 3):
            report.add("error", "pool-rank", f"{op} with {len(kernel)}-D kernel; TensorRT pools 2D or 3D only", label)
        if any(d != 1 for d in _attr(node, "dilations", []) or []):
            report.add("error", "pool-dilation", f"{op} dilations must be all ones for TensorRT", label)
        if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
            report.add("error", "pool-indices", "MaxPool Indices output is unsupported by TensorRT", label)
    elif op == "Resize":
        mode = _attr(node, "mode", "nearest")
        ctm = _attr(node, "coordinate_transformation_mode", "half_pixel")
        if mode not in ("nearest", "linear"):
            report.add("error", "resize-mode", f"Resize mode {mode!r}; TensorRT supports nearest and linear", label)
        if ctm not in ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"):
            report.add("error", "resize-mode", f"Resize coordinate_transformation_mode {ctm!r} is unsupported", label)
        if _attr(node, "antialias", 0):
            report.add("error", "resize-mode", "Resize antialias is unsupported by TensorRT", label)
    elif op == "TopK":
        if _attr(node, "sorted", 1) != 1:
            report.add("error", "topk", "TopK sorted must be 1 for TensorRT", label)
    elif op == "LayerNormalization":
        if len([o for o in node.output if o]) > 1:
            report.add("error", "layernorm", "LayerNormalization: only the first output Y is supported", label)
    elif op == "ScatterND" and _attr(node, "reduction", "none") != "none":
        report.add("error", "scatternd", "ScatterND reduction is unsupported by TensorRT", label)
    elif op == "Dropout" and len(node.input) > 2 and node.input[2]:
        report.add(
            "warning", "dropout", "Dropout training_mode input must be an initializer evaluating to False", label
        )


# ---------------------------------------------------------------------- quantisation
_QOPERATOR_OPS = ("QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear",
                  "QLinearAdd", "QLinearMul")
#: consumer op -> which input the weight is and the output-channel axis of a rank-r weight
_WEIGHT_AXIS = {"Conv": (1, lambda r, n: 0), "ConvTranspose": (1, lambda r, n: 1),
                "MatMul": (1, lambda r, n: r - 1),
                "Gemm": (1, lambda r, n: 0 if _attr(n, "transB", 0) else 1)}
#: ops that lose range or overflow in FP16 (NVIDIA/TensorRT#2564, #4355); kept FP32 by ``to_fp16``
_FP16_SENSITIVE = ("LayerNormalization", "Softmax", "LogSoftmax", "ReduceMean", "ReduceSum", "ReduceSumSquare",
                   "ReduceL2", "ReduceLogSumExp", "InstanceNormalization", "BatchNormalization")


def _const_values(graph: Any) -> dict[str, Any]:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    values = {i.name: i for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    values[n.output[0]] = a.t
    out = {}
    for k, v in values.items():
        if not isinstance(v, onnx.TensorProto):
            continue
        try:
            out[k] = (numpy_helper.to_array(v), v.data_type)
        except ValueError:  # a skeleton's large weight (data left on disk): its shape is what the checks read
            dtype = onnx.helper.tensor_dtype_to_np_dtype(v.data_type)
            out[k] = (np.broadcast_to(np.zeros((), dtype), tuple(v.dims)), v.data_type)
    return out


def _check_qdq(report: LintReport, graph: Any, value_info: Mapping[str, Any]) -> None:
    """Q/DQ placement TensorRT accepts as explicit quantisation (see the module docstring)."""
    nodes = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    for n in graph.node:
        if n.op_type in _QOPERATOR_OPS:
            report.add("error", "qoperator", f"{n.op_type} (QOperator format) is not TensorRT's explicit "
                       "quantisation; quantise in QDQ format", n.name or n.op_type)
    if not nodes:
        return
    consts = _const_values(graph)
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}
    for node in nodes:
        label = node.name or node.op_type
        scale = consts.get(node.input[1]) if len(node.input) > 1 else None
        if scale is None:
            report.add("error", "qdq-scale", f"{node.op_type} scale must be a constant for TensorRT", label)
            continue
        values = scale[0]
        if values.size == 0 or not (values > 0).all() or not (abs(values) < float("inf")).all():
            report.add("error", "qdq-scale", f"{node.op_type} scales must be positive and finite", label)
        zp = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if len(node.input) > 2 and node.input[2] and zp is None:
            report.add("error", "qdq-zero-point", f"{node.op_type} zero point must be a constant", label)
        elif zp is not None:
            if _dtype(zp[1]) != "int8":
                report.add("error", "qdq-dtype", f"{node.op_type} quantises to {_dtype(zp[1])}; TensorRT's explicit "
                           "quantisation is signed INT8 (QuantType.QInt8)", label)
            if zp[0].any():
                report.add("error", "qdq-zero-point", f"{node.op_type} zero point must be 0 (symmetric "
                           "quantisation) for TensorRT", label)
        elif node.op_type == "QuantizeLinear":
            report.add("error", "qdq-dtype", "QuantizeLinear without a zero point quantises to uint8; TensorRT "
                       "needs an int8 zero point of 0", label)
        if node.op_type == "QuantizeLinear":
            readers = consumers.get(node.output[0], [])
            if node.output[0] in outputs or any(r.op_type != "DequantizeLinear" for r in readers):
                report.add("error", "qdq-pair", "QuantizeLinear must feed DequantizeLinear only (a Q/DQ pair)",
                           label)
        if values.size > 1:
            _check_per_channel(report, node, label, consts, consumers, int(values.size))


def _check_per_channel(report: LintReport, node: Any, label: str, consts: Mapping[str, Any],
                       consumers: Mapping[str, list[Any]], channels: int) -> None:
    data = consts.get(node.input[0])
    if data is None or node.op_type != "DequantizeLinear":
        report.add("error", "qdq-per-channel", f"{node.op_type} has {channels} scales on a computed tensor; "
                   "TensorRT takes per-channel scales on constant weights only (activations: one scale)", label)
        return
    rank = data[0].ndim
    axis = _attr(node, "axis", 1)
    axis = axis + rank if axis < 0 else axis
    for reader in consumers.get(node.output[0], []):
        rule = _WEIGHT_AXIS.get(reader.op_type)
        if rule is None:
            continue
        index, want = rule
        if index < len(reader.input) and reader.input[index] == node.output[0] and axis != want(rank, reader):
            report.add("error", "qdq-axis", f"per-channel weight of {reader.op_type} quantised along axis {axis}; "
                       f"TensorRT needs the output-channel axis {want(rank, reader)}", label)


def _check_fp16_sensitive(report: LintReport, graph: Any, value_info: Mapping[str, Any]) -> None:
    sensitive = [n for n in graph.node if n.op_type in _FP16_SENSITIVE and n.input
                 and n.input[0] in value_info and value_info[n.input[0]].type.tensor_type.elem_type == 10]
    if sensitive:
        names = [n.name or n.op_type for n in sensitive]
        report.add("warning", "fp16-sensitive", f"{len(sensitive)} LayerNorm/Softmax/reduction node(s) run in FP16 "
                   f"(e.g. {names[:3]}); they overflow in ViTs: keep them FP32 (edgesentry quantize --precision fp16 "
                   "does)")
