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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry._version import __version__
from edgesentry.errors import EdgesentryError
from edgesentry.export.parity import ParityReport, compare_outputs

log = logging.getLogger("edgesentry.export")

DEFAULT_OPSET = 17


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
) -> ParityReport | None:
    """Export ``spec`` to ``path``; return the torch-vs-ONNX Runtime parity report.

    ``simplify`` runs onnxslim (constant folding, dead-node and shape-op elimination) and
    keeps its result only when it still checks and matches torch; otherwise the plain export
    is kept and a message logged.

    Raises:
        ExportError: tracing/export fails, the checker rejects the graph, or parity fails.
    """
    import onnx
    import torch

    module = spec.build().eval()
    example = tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in spec.inputs.values())
    buffer = io.BytesIO()
    try:
        with torch.inference_mode():
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
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected graph {spec.name!r}: {exc}") from None
    path = Path(path)
    path.write_bytes(model.SerializeToString())
    if simplify:
        _try_simplify(spec, path, model, meta, module)
    if not check_parity:
        return None
    report = parity_torch_vs_ort(spec, path, module=module)
    if not report:
        raise ExportError(f"ONNX Runtime differs from torch on graph {spec.name!r}:\n{report.table()}")
    return report


def _try_simplify(spec: GraphSpec, path: Path, model: Any, meta: Mapping[str, Any], module: Any) -> bool:
    """Replace ``path`` by onnxslim's simplification when it checks and matches torch."""
    import onnx

    try:
        import onnxslim
    except ImportError:
        log.info("onnxslim not installed; %s kept unsimplified", spec.name)
        return False
    before = len(model.graph.node)
    try:
        slim = onnxslim.slim(onnx.load_from_string(model.SerializeToString()))
        set_metadata(slim, {**meta, "simplified": "onnxslim " + getattr(onnxslim, "__version__", "?")})
        onnx.checker.check_model(slim, full_check=True)
    except Exception as exc:  # a simplifier failure must never fail the export
        log.warning("onnxslim failed on %s (%s); keeping the plain export", spec.name, exc)
        return False
    candidate = path.with_suffix(".slim.onnx")
    candidate.write_bytes(slim.SerializeToString())
    try:
        ok = bool(parity_torch_vs_ort(spec, candidate, module=module))
    except Exception as exc:
        log.warning("simplified %s does not run (%s); keeping the plain export", spec.name, exc)
        ok = False
    if ok:
        candidate.replace(path)
        log.info("onnxslim: %s %d -> %d nodes", spec.name, before, len(slim.graph.node))
    else:
        candidate.unlink(missing_ok=True)
    return ok


def set_metadata(model: Any, metadata: Mapping[str, Any]) -> None:
    """Mirror metadata into ONNX ``metadata_props`` (strings; non-strings as JSON)."""
    existing = {p.key: p for p in model.metadata_props}
    for key, value in {"edgesentry_version": __version__, **metadata}.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        prop = existing.get(key) or model.metadata_props.add()
        prop.key, prop.value = key, text


def read_metadata(path: str | Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def output_spec(path: str | Path) -> dict[str, dict[str, Any]]:
    """Graph outputs of an ONNX file: dtype and shape (dynamic dims by name, unknown as None)."""
    import onnx

    from edgesentry.export.lint import _dims, _dtype

    model = onnx.load(str(path), load_external_data=False)
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


def parity_torch_vs_ort(
    spec: GraphSpec, path: str | Path, *, module: Any = None, inputs: Mapping[str, np.ndarray] | None = None
) -> ParityReport:
    feed = dict(inputs or spec.inputs)
    module = module if module is not None else spec.build().eval()
    expected = dict(zip(spec.outputs, run_torch(module, feed)))
    actual = dict(zip(spec.outputs, run_ort(path, feed, spec.outputs)))
    return compare_outputs(expected, actual, atol=spec.atol, rtol=spec.rtol, names=("torch", "onnxruntime"))
