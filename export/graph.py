"""One graph to ONNX: named inputs/outputs, dynamic axes, checked, compared with torch.

Each family describes its graphs with ``GraphSpec`` (an export-only wrapper module that
folds into the graph what must be there, example inputs, dynamic axes). ``export_graph``
exports one with the TorchScript-based exporter (opset 17: it keeps dynamic axes even with a
batch-1 example, which the dynamo exporter silently specialises), checks it with
``onnx.checker`` (full check), mirrors metadata into ``metadata_props`` and compares ONNX
Runtime with torch on the example inputs. ``edgesentry.export.onnx.export_bundle`` does this
for every graph of a bundle.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry._version import __version__
from edgesentry.errors import EdgesentryError, option
from edgesentry.export._stream import (
    exported_without_weights,
    graph_inputs_to_initializers,
    load_skeleton,
    write_model,
)
from edgesentry.export.parity import ParityReport, compare_outputs

log = logging.getLogger("edgesentry.export")

DEFAULT_OPSET = 17
#: bytes an export may use for optional work (onnxslim); the ViT-L ISSTAD graph (1.37 GB of
#: weights) is exported in about 3 GB without it
DEFAULT_MEMORY_BUDGET = 4e9
#: onnxslim's peak is about this many copies of the weights (load, its IR, export, serialise)
#: over the interpreter's own; measured: ISSTAD ViT-B (0.50 GB of weights) exports with onnxslim
#: in 4.91 GB (`benchmarks/export_memory.py --export-args="--memory-budget 0"`), estimated 4.99
SLIM_MEMORY_FACTOR = 9.0
SLIM_MEMORY_BASE = 0.5e9


class ExportError(EdgesentryError):
    """Export failed: the graph does not trace, check or match torch."""


@dataclass
class GraphSpec:
    """One exportable graph of a bundle.

    Attributes:
        name: graph name (``"model"``, ``"spectral"`` ...); the file is ``<name>.onnx``.
        build: returns the export-only ``nn.Module`` whose ``forward`` takes the inputs
            positionally in ``inputs`` order and returns the outputs in ``outputs`` order.
        inputs: name -> example array (its dtype becomes the graph input dtype).
        outputs: output names.
        dynamic_axes: input/output name -> {axis: symbolic name}.
        atol, rtol: parity tolerances of ONNX Runtime vs torch on the example (float32).
        profile_hints: dynamic axis name -> (min, opt, max) for TensorRT optimisation
            profiles (``edgesentry build``); axes without a hint use the defaults in
            ``edgesentry.export.tensorrt.DEFAULT_AXIS_RANGE``.
    """

    name: str
    build: Callable[[], Any]
    inputs: dict[str, np.ndarray]
    outputs: list[str]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    atol: float = 1e-4
    rtol: float = 1e-4
    profile_hints: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"

    def input_spec(self) -> dict[str, dict[str, Any]]:
        """Graph input metadata: dtype and shape with dynamic dims given by name."""
        spec = {}
        for key, arr in self.inputs.items():
            dyn = self.dynamic_axes.get(key, {})
            spec[key] = {"dtype": str(arr.dtype), "shape": [dyn.get(i, int(s)) for i, s in enumerate(arr.shape)]}
        return spec


def export_graph(
    spec: GraphSpec,
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    metadata: Mapping[str, Any] | None = None,
    check_parity: bool = True,
    simplify: bool = False,
    memory_budget: float | None = DEFAULT_MEMORY_BUDGET,
) -> ParityReport | None:
    """Export ``spec`` to ``path``; return the torch-vs-ONNX Runtime parity report.

    Memory stays a small multiple of the weights: torch's outputs on the example are computed
    first and the module released before the file is checked and ONNX Runtime runs it; the
    weights are streamed into the file (``edgesentry.export._stream``), never held as a
    protobuf and its serialised copies.

    ``simplify`` runs onnxslim (constant folding, dead-node and shape-op elimination) and
    keeps its result only when it still checks and matches torch; otherwise the plain export
    is kept and a message logged. onnxslim holds about ``SLIM_MEMORY_FACTOR`` copies of the
    weights, so it is skipped (with a warning) when that estimate exceeds ``memory_budget``
    bytes (``None``: no limit).

    Raises:
        ExportError: tracing/export fails, the checker rejects the graph, or parity fails.
    """
    path = Path(path)
    module = spec.build().eval()
    expected = run_torch(module, spec.inputs) if check_parity else None
    model, weights = _trace(spec, module, opset)
    del module  # the captured weights keep what the file needs; the rest goes now
    model.graph.name = spec.name
    meta = {
        **(metadata or {}),
        "graph": spec.name,
        "input_spec": spec.input_spec(),
        "outputs": spec.outputs,
        "opset": opset,
    }
    set_metadata(model, meta)
    try:
        size = write_model(path, model, weights)
    except ValueError as exc:
        raise ExportError(f"cannot write graph {spec.name!r}: {exc}") from None
    del model, weights
    check_onnx(path, spec.name)
    report = None
    if simplify:
        report = _try_simplify(spec, path, meta, expected, size, memory_budget)
    if not check_parity:
        return None
    if report is None:
        report = _compare(spec, path, spec.inputs, expected)
    if not report:
        raise ExportError(f"ONNX Runtime differs from torch on graph {spec.name!r}:\n{report.table()}")
    return report


def _trace(spec: GraphSpec, module: Any, opset: int) -> tuple[Any, dict[str, Any]]:
    """(ModelProto, initializers by name): the TorchScript export of ``module``, its weights
    kept out of the proto when this torch allows (see ``exported_without_weights``)."""
    import onnx
    import torch

    example = tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in spec.inputs.values())
    buffer = io.BytesIO()
    try:
        with torch.inference_mode(), exported_without_weights() as weights:
            torch.onnx.export(
                module,
                example,
                buffer,
                input_names=list(spec.inputs),
                output_names=spec.outputs,
                dynamic_axes={k: dict(v) for k, v in spec.dynamic_axes.items()},
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as exc:
        raise ExportError(f"torch.onnx.export of graph {spec.name!r} failed: {exc}") from exc
    model = onnx.load_from_string(buffer.getvalue())
    if not weights:
        log.info("graph %s: the exporter embedded its weights (this torch skips the streaming hook)", spec.name)
    try:
        weights = graph_inputs_to_initializers(model, weights)
    except ValueError as exc:
        raise ExportError(f"torch.onnx.export of graph {spec.name!r}: {exc}") from None
    return model, weights


def check_onnx(path: str | Path, name: str) -> None:
    """``onnx.checker`` (full check, shape inference included) on the file; the checker reads
    it from disk itself, so no Python copy of the weights is made."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected graph {name!r}: {exc}") from None


def slim_memory_estimate(weight_bytes: int) -> float:
    """Bytes an export with onnxslim needs for a graph of ``weight_bytes`` (see ``SLIM_MEMORY_FACTOR``)."""
    return SLIM_MEMORY_FACTOR * weight_bytes + SLIM_MEMORY_BASE


def _try_simplify(spec: GraphSpec, path: Path, meta: Mapping[str, Any], expected: list[np.ndarray] | None,
                  size: int, memory_budget: float | None) -> ParityReport | None:
    """Replace ``path`` by onnxslim's simplification when it fits the budget, checks and
    matches torch; return the simplified graph's parity report when it was kept."""
    import onnx

    try:
        import onnxslim
    except ImportError:
        log.info("onnxslim not installed; %s kept unsimplified", spec.name)
        return None
    need = slim_memory_estimate(size)
    if memory_budget is not None and need > memory_budget:
        log.warning("onnxslim skipped for graph %s: it needs about %.1f GB for %.2f GB of weights, over the "
                    "memory budget of %.1f GB (raise %s); the graph is kept as exported", spec.name, need / 1e9,
                    size / 1e9, memory_budget / 1e9, option("memory_budget", float(math.ceil(need / 1e9) * 1e9)))
        return None
    candidate = path.with_suffix(".slim.onnx")
    try:
        model = onnx.load(str(path))
        before = len(model.graph.node)
        slim = onnxslim.slim(model)
        del model
        set_metadata(slim, {**meta, "simplified": "onnxslim " + getattr(onnxslim, "__version__", "?")})
        after = len(slim.graph.node)
        candidate.write_bytes(slim.SerializeToString())
        del slim
        check_onnx(candidate, spec.name)
    except Exception as exc:  # a simplifier failure must never fail the export
        log.warning("onnxslim failed on %s (%s); keeping the plain export", spec.name, exc)
        candidate.unlink(missing_ok=True)
        return None
    report = None
    try:
        report = _compare(spec, candidate, spec.inputs, expected) if expected is not None else None
        ok = report is None or bool(report)
    except Exception as exc:
        log.warning("simplified %s does not run (%s); keeping the plain export", spec.name, exc)
        ok = False
    if ok:
        candidate.replace(path)
        log.info("onnxslim: %s %d -> %d nodes", spec.name, before, after)
        return report
    candidate.unlink(missing_ok=True)
    return None


def set_metadata(model: Any, metadata: Mapping[str, Any]) -> None:
    """Mirror metadata into ONNX ``metadata_props`` (strings; non-strings as JSON)."""
    existing = {p.key: p for p in model.metadata_props}
    for key, value in {"edgesentry_version": __version__, **metadata}.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        prop = existing.get(key) or model.metadata_props.add()
        prop.key, prop.value = key, text


def read_metadata(path: str | Path) -> dict[str, str]:
    return {p.key: p.value for p in load_skeleton(path).metadata_props}


def output_spec(path: str | Path) -> dict[str, dict[str, Any]]:
    """Graph outputs of an ONNX file: dtype and shape (dynamic dims by name, unknown as None)."""
    from edgesentry.export.lint import _dims, _dtype

    model = load_skeleton(path)
    return {o.name: {"dtype": _dtype(o.type.tensor_type.elem_type), "shape": _dims(o)} for o in model.graph.output}


def run_torch(module: Any, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    import torch

    with torch.inference_mode():
        out = module(*(torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values()))
    out = out if isinstance(out, (tuple, list)) else (out,)
    return [o.detach().cpu().numpy() for o in out]


def run_ort(path: str | Path, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
    from edgesentry.backends.onnxruntime import session_from_onnx

    session = session_from_onnx(path)
    return session.run(list(outputs), {k: np.ascontiguousarray(v) for k, v in inputs.items()})


def _compare(spec: GraphSpec, path: str | Path, inputs: Mapping[str, np.ndarray],
             expected: Sequence[np.ndarray]) -> ParityReport:
    actual = dict(zip(spec.outputs, run_ort(path, inputs, spec.outputs)))
    return compare_outputs(dict(zip(spec.outputs, expected)), actual, atol=spec.atol, rtol=spec.rtol,
                           names=("torch", "onnxruntime"))


def parity_torch_vs_ort(
    spec: GraphSpec, path: str | Path, *, module: Any = None, inputs: Mapping[str, np.ndarray] | None = None
) -> ParityReport:
    """torch vs ONNX Runtime on ``inputs`` (default: the spec's example). torch runs first; a
    module built here is released before ONNX Runtime loads the graph (one model at a time)."""
    feed = dict(inputs or spec.inputs)
    expected = run_torch(module if module is not None else spec.build().eval(), feed)
    return _compare(spec, path, feed, expected)
