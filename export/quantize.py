"""Reduced-precision graphs beside a bundle's FP32 ones: static INT8 (QDQ) and FP16.

    edgesentry quantize BUNDLE --precision int8 --calib good/*.png [--method minmax|entropy|percentile]
    edgesentry quantize BUNDLE --precision fp16

INT8 (``quantize_onnx``) is ONNX Runtime's static quantisation in QDQ form, laid out so that the
same file is TensorRT's explicit quantisation (the only INT8 route on TensorRT 11) and runs in
ONNX Runtime and OpenVINO:

- weights: signed INT8, per output channel, symmetric (zero point 0): Conv axis 0, MatMul's
  ``(K, N)`` weights axis 1 — what TensorRT requires of per-channel scales;
- weights in the reduced range [-64, 64] by default (``reduce_range``; the int8 type and the
  Q/DQ layout are unchanged): x86 CPUs without VNNI (AVX2 only, most factory PCs) multiply
  u8 x s8 pairs with ``VPMADDUBSW``, whose 16-bit sums saturate with full-range weights. Measured
  on MAVD (official weights, AMD EPYC with AVX2 only): snippet-score r against FP32 0.99952
  (ONNX Runtime) / 0.99869 (OpenVINO) with 8-bit weights, 0.99990 / 0.99990 with 7-bit ones.
  A graph is made once and deployed anywhere, so the safe range is the default; ``reduce_range=
  False`` (``--full-range-weights``) is for targets with VNNI / AMX, ARM dot products or GPUs;
- activations: signed INT8, per tensor, symmetric (zero point 0), ranges from the calibration
  samples (``minmax``, ``entropy`` or ``percentile``);
- only Conv, MatMul and Gemm are quantised. LayerNormalization, Softmax, GELU/Erf, reductions,
  residual adds stay float (no Q/DQ around them), and so do, by default, (a) the *heads*, the
  last quantisable node on every path to a graph output (ISSTAD's reconstruction and pixel
  heads, which feed the fused score kernels; MAVD's feature projections; FERS's last convs),
  and (b) attention's activation-by-activation MatMuls (``Q K^T``, ``softmax V``). The
  measurements that decided (a) and (b) are in docs/precision.md; ``keep_heads`` and
  ``quantize_attention`` switch them.

Calibration samples pass through the family's own preprocessing (``SampleFeeds``: the FP32
detector runs each sample and the feed each graph receives is recorded) and are streamed: one
sample is prepared, fed to the calibrator and dropped before the next (ONNX Runtime's
``CalibStridedMinMax`` with a stride of one; histogram calibrators merge per sample).

FP16 (``to_fp16`` of ``edgesentry.export.tensorrt``) keeps inputs/outputs, LayerNormalization,
Softmax, reductions, Pow/Sqrt/Exp/Log/Erf and normalisations in FP32 (the ViT FP16 overflow).

Every variant is checked (``onnx.checker``), linted for TensorRT (Q/DQ placement included),
loaded by ONNX Runtime and OpenVINO, written as ``<graph>.<precision>.onnx``, listed and hashed
in ``meta.json`` and recorded under ``meta["precisions"]`` (``edgesentry.precision``).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgesentry.bundle import Bundle
from edgesentry.errors import ConfigError, EdgesentryError, InputError
from edgesentry.export.graph import ExportError
from edgesentry.precision import FILE_PRECISIONS, variant_file

log = logging.getLogger("edgesentry.export.quantize")

Method = Literal["minmax", "entropy", "percentile"]
METHODS = ("minmax", "entropy", "percentile")
#: the compute-heavy ops that get INT8 kernels; everything else stays float
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
#: percentile of |activation| kept by ``method="percentile"``
PERCENTILE = 99.999
#: graphs larger than this are written with external data (protobuf's 2 GB limit, with margin)
EXTERNAL_DATA_BYTES = 1536 << 20


# ------------------------------------------------------------------------ sample feeds
class SampleFeeds:
    """The feeds one graph receives for each calibration sample, prepared one at a time.

    A sample is a file the family reads (image, cube, clip) or a ``.npz``: arrays named like the
    graph's inputs (already prepared: used as they are, checked against the graph's input spec)
    or like the family's input dict (MAVD's ``rgb`` / ``flow`` / ``audio``). Files and dicts go
    through the FP32 detector (``edgesentry.load(bundle, backend="onnxruntime")``): its own
    preprocessing, and the feed its runner for ``graph`` receives is recorded.

    Raises (when a feed is prepared):
        InputError: naming the sample that could not be read or prepared, or whose arrays do not
            fit the graph (shape, dtype).
    """

    def __init__(self, bundle: Bundle, graph: str, samples: Sequence[str | os.PathLike], detector: Any = None):
        if not samples:
            raise InputError("no calibration samples: pass at least one with --calib SAMPLES...")
        self.bundle = bundle
        self.graph = graph
        self.samples = [Path(s) for s in samples]
        self._detector = detector
        gmeta = bundle.meta["graphs"][graph]
        from edgesentry.export.validate import _input_specs, input_names

        self.specs = _input_specs(gmeta, input_names(gmeta, bundle.file(gmeta["file"])))
        self.outputs = list(gmeta["outputs"])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        path = self.samples[index]
        try:
            return self._feed(path)
        except EdgesentryError as exc:
            raise InputError(f"calibration sample {str(path)!r}: {exc}") from None

    def _feed(self, path: Path) -> dict[str, np.ndarray]:
        if not path.is_file():
            raise InputError("no such file")
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: np.asarray(data[k]) for k in data.files}
            if set(self.specs) <= set(arrays):
                feed = {k: np.ascontiguousarray(arrays[k], dtype=np.dtype(s.dtype)) for k, s in self.specs.items()}
                if all(feed[k].ndim == len(s.shape) for k, s in self.specs.items()):
                    for k, s in self.specs.items():
                        s.check(k, feed[k])
                    return feed
            return self._through_detector(arrays)
        return self._through_detector(path)

    def _through_detector(self, sample: Any) -> dict[str, np.ndarray]:
        det = self.detector()
        recorders = record_runners(det, self.bundle)
        if self.graph not in recorders:
            raise InputError(f"the {self.bundle.family} detector does not run graph {self.graph!r} on this kind of "
                             f"sample; pass .npz files holding its inputs {sorted(self.specs)}")
        for rec in recorders.values():
            rec.feeds.clear()
        det.predict(sample)
        feeds = recorders[self.graph].feeds
        if not feeds:
            raise InputError(f"the sample did not reach graph {self.graph!r}")
        return feeds[0]

    def detector(self) -> Any:
        if self._detector is None:
            from edgesentry.api import load

            self._detector = load(self.bundle, backend="onnxruntime")
        return self._detector


class _Recorder:
    """Wraps a runner; keeps the feeds (and outputs) of the calls it sees."""

    def __init__(self, runner: Any):
        self.runner = runner
        self.feeds: list[dict[str, np.ndarray]] = []
        self.outputs: list[dict[str, np.ndarray]] = []
        self.keep_outputs = False

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.feeds.append({k: np.array(v) for k, v in feed.items()})
        out = self.runner.infer(feed)
        if self.keep_outputs:
            self.outputs.append({k: np.array(v) for k, v in out.items()})
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runner, name)


def record_runners(det: Any, bundle: Bundle) -> dict[str, _Recorder]:
    """Wrap every graph runner of ``det`` (``det.runner`` or ``det.runners``) in a ``_Recorder``,
    once; returns graph name -> recorder (graphs matched by their output names)."""
    from edgesentry.backends import Runner

    if getattr(det, "_edgesentry_recorders", None) is not None:
        return det._edgesentry_recorders
    by_outputs = {tuple(g["outputs"]): name for name, g in bundle.meta.get("graphs", {}).items()}
    found: dict[str, _Recorder] = {}
    for attr, value in list(vars(det).items()):
        if isinstance(value, Runner):
            graph = by_outputs.get(tuple(value.outputs))
            if graph is not None:
                found[graph] = _Recorder(value)
                setattr(det, attr, found[graph])
        elif isinstance(value, dict) and value and all(isinstance(v, Runner) for v in value.values()):
            for key, runner in list(value.items()):
                graph = by_outputs.get(tuple(runner.outputs))
                if graph is not None:
                    found[graph] = value[key] = _Recorder(runner)
    det._edgesentry_recorders = found
    return found


class _StreamingReader:
    """ONNX Runtime ``CalibrationDataReader`` over ``SampleFeeds``: ``set_range`` selects the
    samples of the next ``collect_data`` call; feeds are prepared as they are read."""

    def __init__(self, feeds: Sequence[Mapping[str, np.ndarray]]):
        self.feeds = feeds
        self.start, self.end = 0, len(feeds)

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end = start_index, end_index

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.start >= self.end:
            return None
        feed = self.feeds[self.start]
        self.start += 1
        return dict(feed)

    def rewind(self) -> None:
        self.start, self.end = 0, len(self.feeds)


# ---------------------------------------------------------------------- what stays float
@dataclass
class QuantizeReport:
    """What ``quantize_onnx`` did to one graph."""

    graph: str
    file: str
    method: str
    samples: int
    quantized: dict[str, int] = field(default_factory=dict)  # op type -> nodes quantised
    kept_float: dict[str, str] = field(default_factory=dict)  # node -> why it stayed float
    float_ops: dict[str, int] = field(default_factory=dict)  # op type -> nodes left in float

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "method": self.method, "samples": self.samples, "quantized": self.quantized,
                "kept_float": self.kept_float, "float_ops": self.float_ops}


def float_heads(model: Any, ops: Iterable[str] = QUANTIZED_OPS) -> list[str]:
    """Names of the quantisable nodes nearest to each graph output (walking back from the output,
    the first Conv/MatMul/Gemm met on each path): the heads whose outputs the score kernels read."""
    ops = set(ops)
    producer = {o: n for n in model.graph.node for o in n.output}
    heads, seen = [], set()
    stack = [o.name for o in model.graph.output]
    while stack:
        tensor = stack.pop()
        node = producer.get(tensor)
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type in ops:
            heads.append(node.name)
            continue
        stack.extend(i for i in node.input if i)
    return sorted(set(heads))


def float_stems(model: Any, ops: Iterable[str] = QUANTIZED_OPS) -> list[str]:
    """Names of the quantisable nodes nearest to each graph input (walking forward from the input,
    the first Conv/MatMul/Gemm met on each path): the layers that read the raw input."""
    ops = set(ops)
    readers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    inits = {i.name for i in model.graph.initializer}
    stems, seen = [], set()
    stack = [i.name for i in model.graph.input if i.name not in inits]
    while stack:
        for node in readers.get(stack.pop(), []):
            if id(node) in seen:
                continue
            seen.add(id(node))
            if node.op_type in ops:
                stems.append(node.name)
            else:
                stack.extend(node.output)
    return sorted(set(stems))


def activation_matmuls(model: Any) -> list[str]:
    """MatMul nodes whose two inputs are both computed (attention's ``Q K^T`` and ``P V``)."""
    constant = {i.name for i in model.graph.initializer}
    constant |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    producer = {o: n for n in model.graph.node for o in n.output}

    def is_constant(name: str) -> bool:
        # weights may reach a MatMul through Transpose/Identity/DequantizeLinear of an initializer
        node = producer.get(name)
        while node is not None and node.op_type in ("Transpose", "Identity", "Cast", "DequantizeLinear"):
            if node.input[0] in constant:
                return True
            node = producer.get(node.input[0])
        return name in constant

    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and not any(is_constant(i) for i in n.input[:2])]


def _name_nodes(model: Any) -> None:
    """Give unnamed nodes unique names (ONNX Runtime's exclusion list works by name)."""
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


# ------------------------------------------------------------------------------- INT8
def quantize_onnx(src: str | os.PathLike, dst: str | os.PathLike, feeds: Sequence[Mapping[str, np.ndarray]], *,
                  method: Method = "minmax", keep_heads: bool = True, keep_stems: bool = True,
                  quantize_attention: bool = False, graph: str = "model", exclude: Iterable[str] = (),
                  reduce_range: bool = True) -> QuantizeReport:
    """Static INT8 QDQ quantisation of the ONNX file ``src`` into ``dst`` (see the module docstring).

    Args:
        src, dst: FP32 ONNX file in, INT8 QDQ file out (external data for graphs over 1.5 GB).
        feeds: calibration feeds (input name -> array), read once each, in order, lazily
            (``SampleFeeds``, or any sequence).
        method: activation range calibration.
        keep_heads: keep the heads (``float_heads``) in float.
        keep_stems: keep the stems (``float_stems``: the layers reading the raw input) in float.
        quantize_attention: quantise attention's activation-by-activation MatMuls too.
        graph: name for the report.
        exclude: further node names to keep float.
        reduce_range: weights in the 7-bit range (no ``VPMADDUBSW`` saturation on x86 without VNNI).

    Raises:
        InputError: no feeds, or a feed that does not fit (naming the sample).
        ConfigError: unknown method.
        ExportError: ONNX Runtime's quantiser failed.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in METHODS:
        raise ConfigError(f"calibration method must be one of {list(METHODS)}; got {method!r}")
    if len(feeds) == 0:
        raise InputError("no calibration samples: pass at least one with --calib SAMPLES...")
    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    _name_nodes(model)
    kept: dict[str, str] = {}
    if keep_heads:
        kept.update({n: "head: feeds a graph output (the score kernels read it)" for n in float_heads(model)})
    if keep_stems:
        kept.update({n: "stem: reads a graph input (INT8 would round the raw input)" for n in float_stems(model)})
    if not quantize_attention:
        kept.update({n: "attention: activation x activation MatMul" for n in activation_matmuls(model)})
    kept.update({n: "excluded by the caller" for n in exclude})
    big = src.stat().st_size > EXTERNAL_DATA_BYTES
    extra = {
        "ActivationSymmetric": True,  # zero point 0: TensorRT's explicit quantisation
        "WeightSymmetric": True,
        "QuantizeBias": False,  # biases stay float: TensorRT dequantises INT8 only, not INT32 biases
        # one sample per collect_data call: ranges (MinMax) or histograms (entropy, percentile) are
        # merged sample by sample, so the intermediate tensors of only one sample are ever held
        "CalibStridedMinMax": 1,
        "CalibPercentile": PERCENTILE,
        # per output channel = the weight's last axis for every MatMul (ORT's default, 1, is that only
        # for 2-D weights; MAVD's per-head weights are 3-D), which is what TensorRT requires
        "QDQOpTypePerChannelSupportToAxis": {"MatMul": -1},
    }
    calib = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory(prefix="edgesentry-quant-", dir=dst.parent) as tmp:
        named = Path(tmp) / "named.onnx"
        onnx.save_model(model, str(named), save_as_external_data=big)
        del model
        reader = _StreamingReader(feeds)
        try:
            quantize_static(str(named), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=calib,
                            op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=sorted(kept),
                            use_external_data_format=big, reduce_range=reduce_range, extra_options=extra)
        except EdgesentryError:
            raise
        except Exception as exc:  # the quantiser raises plain ValueError/RuntimeError
            raise ExportError(f"ONNX Runtime could not quantise graph {graph!r}: {str(exc)[:400]}") from exc
    out = onnx.load(str(dst), load_external_data=False)
    report = QuantizeReport(graph, dst.name, method, len(feeds))
    dq_inputs = {n.output[0] for n in out.graph.node if n.op_type == "DequantizeLinear"}
    for node in out.graph.node:
        if node.op_type in QUANTIZED_OPS:
            if any(i in dq_inputs for i in node.input[:2]):
                report.quantized[node.op_type] = report.quantized.get(node.op_type, 0) + 1
            else:
                report.float_ops[node.op_type] = report.float_ops.get(node.op_type, 0) + 1
        elif node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            report.float_ops[node.op_type] = report.float_ops.get(node.op_type, 0) + 1
    report.kept_float = kept
    return report


# ------------------------------------------------------------------------- the bundle
def check_variant(path: str | os.PathLike, *, name: str, runtimes: Sequence[str] = ("onnxruntime", "openvino")
                  ) -> None:
    """A variant must check, pass the TensorRT lint (Q/DQ placement included) and load in ONNX
    Runtime and OpenVINO (each when installed).

    Raises:
        ExportError: naming what refused it.
    """
    import importlib.util

    import onnx

    from edgesentry.export.lint import lint_model

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected {name}: {exc}") from None
    lint = lint_model(path, name=name)
    if not lint.passed:
        raise ExportError(f"{name} would not build in TensorRT:\n{lint.table()}")
    if "onnxruntime" in runtimes and importlib.util.find_spec("onnxruntime") is not None:
        from edgesentry.backends.onnxruntime import session_from_onnx

        try:
            session_from_onnx(Path(path))
        except EdgesentryError as exc:
            raise ExportError(f"ONNX Runtime cannot run {name}: {exc}") from None
    if "openvino" in runtimes and importlib.util.find_spec("openvino") is not None:
        import openvino as ov

        try:
            core = ov.Core()
            core.compile_model(core.read_model(str(path)), "CPU")
        except RuntimeError as exc:
            raise ExportError(f"OpenVINO cannot run {name}: {str(exc).strip().splitlines()[0][:300]}") from None


def quantize_bundle(bundle: Bundle, precision: Literal["int8", "fp16"], samples: Sequence[str | os.PathLike] = (),
                    *, method: Method = "minmax", keep_heads: bool = True, keep_stems: bool = True,
                    quantize_attention: bool = False, reduce_range: bool = True,
                    feeds: Callable[[str], Sequence[Mapping[str, np.ndarray]]] | None = None,
                    detector: Any = None, progress: Callable[[str], None] | None = None
                    ) -> dict[str, QuantizeReport | None]:
    """Add ``<graph>.<precision>.onnx`` for every exported graph of ``bundle`` (see the module docstring).

    Args:
        bundle: an exported bundle (opened at fp32).
        precision: ``"int8"`` (needs ``samples``) or ``"fp16"``.
        samples: calibration sample files (``SampleFeeds``).
        method, keep_heads, keep_stems, quantize_attention, reduce_range: as ``quantize_onnx``.
        feeds: graph name -> feeds, instead of ``samples`` (tests, benchmarks).
        detector: the FP32 ONNX Runtime detector that prepares ``samples`` (default: loaded from the
            bundle); an MDMF one needs its ``default_gallery`` set.
        progress: called with a line per graph.

    Returns:
        graph -> ``QuantizeReport`` (``None`` for fp16).

    Raises:
        ConfigError: unknown precision, or a bundle without exported graphs.
        InputError: no samples, or a sample that cannot be prepared (naming it).
    """
    if precision not in FILE_PRECISIONS:
        raise ConfigError(f"quantize makes precisions {list(FILE_PRECISIONS)}; got {precision!r} "
                          "(bf16 needs no graph: OpenVINO runs the FP32 graph in BF16 where the CPU has it)")
    graphs = bundle.meta.get("graphs", {})
    if not graphs:
        raise ConfigError(f"bundle {bundle.path} has no exported graphs; run `edgesentry export {bundle.path}` first")
    if precision == "int8" and feeds is None and not samples:
        raise InputError("no calibration samples: --precision int8 needs --calib SAMPLES... (normal inputs the "
                         "family reads: images, cubes, feature .npz)")
    reports: dict[str, QuantizeReport | None] = {}
    record: dict[str, Any] = {"graphs": {}, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    for graph, gmeta in graphs.items():
        name = variant_file(graph, precision)
        dst = bundle.path / name
        src = bundle.file(gmeta["file"])
        if precision == "int8":
            if feeds is not None:
                graph_feeds = feeds(graph)
            else:
                graph_feeds = SampleFeeds(bundle, graph, samples, detector)
            report = quantize_onnx(src, dst, graph_feeds, method=method, keep_heads=keep_heads,
                                   keep_stems=keep_stems, quantize_attention=quantize_attention, graph=graph,
                                   reduce_range=reduce_range)
            if isinstance(graph_feeds, SampleFeeds):
                detector = graph_feeds._detector
            reports[graph] = report
            record["graphs"][graph] = report.to_dict()
        else:
            import onnx

            from edgesentry.export.tensorrt import FP32_OPS, to_fp16

            onnx.save_model(to_fp16(onnx.load(str(src))), str(dst))
            reports[graph] = None
            record["graphs"][graph] = {"file": name, "kept_fp32": list(FP32_OPS) + ["graph inputs and outputs"]}
        check_variant(dst, name=name)
        bundle.add_file(name)
        if progress:
            progress(f"{graph}: {name} ({dst.stat().st_size / 2**20:.1f} MiB)")
    if precision == "int8":
        import onnxruntime

        record.update(method=method, calibration_samples=len(samples) if feeds is None else None,
                      keep_heads=keep_heads, keep_stems=keep_stems, quantize_attention=quantize_attention,
                      reduce_range=reduce_range,
                      scheme="QDQ; weights int8 per-channel symmetric" + (" (7-bit range)" if reduce_range else "")
                      + "; activations int8 per-tensor symmetric",
                      onnxruntime=onnxruntime.__version__)
    precisions = dict(bundle.meta.get("precisions") or {})
    precisions[precision] = record  # thresholds of an older variant no longer apply
    if bundle.meta.pop("tune", None):
        log.warning("bundle %s: dropped its tune decision, stale now that its %s graphs changed; re-run "
                    "`edgesentry tune`", bundle.path, precision)
    bundle.update_meta(precisions=precisions)
    return reports
