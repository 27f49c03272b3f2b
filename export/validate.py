"""``edgesentry validate``: every backend of a bundle against a reference, per output.

The reference is the first backend named (``torch`` by default: the eager graph the weights
were trained in). Inputs are seeded synthetic arrays at each graph's example shapes, or user
samples (``.npz`` with one array per input name, or ``.npy`` for single-input graphs). Each
candidate is compared output by output with ``compare_outputs`` (max / mean / median / p99
absolute and relative error, pass when ``|a - e| <= atol + rtol * |e|`` everywhere), with
tolerances that depend on the precision (``TOLERANCES``; a graph's own fp32 tolerance from
export wins for fp32). FP16 on ONNX Runtime runs the FP16-converted graph (``to_fp16``) so
the FP16 path can be checked on a CPU, as Polygraphy advises: against an FP32 reference.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry.bundle import Bundle
from edgesentry.errors import BackendUnavailableError, ConfigError, InputError
from edgesentry.export.parity import ParityReport, compare_outputs

# Default (atol, rtol) per precision. fp32: ONNX Runtime and TensorRT reorder reductions
# (~1e-6 relative); fp16: 10-bit mantissa, errors grow with reduction length; int8: coarse.
TOLERANCES = {"fp32": (1e-4, 1e-4), "bf16": (5e-2, 5e-2), "fp16": (1e-2, 1e-2), "int8": (1e-1, 1e-1)}
BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")


@dataclass
class GraphValidation:
    graph: str
    sample: str
    reports: list[ParityReport] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(self.reports)


@dataclass
class ValidationReport:
    bundle: str
    family: str
    precision: str
    reference: str
    backends: list[str]
    atol: float
    rtol: float
    results: list[GraphValidation] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "family": self.family,
            "precision": self.precision,
            "reference": self.reference,
            "backends": self.backends,
            "atol": self.atol,
            "rtol": self.rtol,
            "passed": self.passed,
            "results": [
                {
                    "graph": r.graph,
                    "sample": r.sample,
                    "passed": r.passed,
                    "comparisons": [p.to_dict() for p in r.reports],
                }
                for r in self.results
            ],
        }

    def table(self) -> str:
        parts = [
            f"validate {self.bundle} ({self.family}, precision {self.precision}, reference {self.reference}, "
            f"atol {self.atol:g}, rtol {self.rtol:g})"
        ]
        for r in self.results:
            for p in r.reports:
                parts.append(f"\n[{r.graph} / {r.sample}] " + p.table())
        parts.append(
            f"\n{'PASSED' if self.passed else 'FAILED'}: "
            f"{sum(o.passed for r in self.results for p in r.reports for o in p.outputs)} of "
            f"{sum(len(p.outputs) for r in self.results for p in r.reports)} outputs within tolerance"
        )
        return "\n".join(parts)


def synthetic_inputs(graph_meta: Mapping[str, Any], seed: int) -> dict[str, np.ndarray]:
    """Seeded inputs at the graph's example shapes (dynamic dims without an example: 1)."""
    rng = np.random.default_rng(seed)
    shapes = graph_meta.get("example_shapes", {})
    feed = {}
    for name, spec in graph_meta["inputs"].items():
        shape = shapes.get(name) or [d if isinstance(d, int) and d > 0 else 1 for d in spec["shape"]]
        dtype = np.dtype(spec["dtype"])
        if dtype.kind == "f":
            feed[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            feed[name] = rng.integers(0, 8, size=shape).astype(dtype)
        elif dtype.kind == "b":
            feed[name] = rng.random(shape) > 0.5
        else:
            raise ConfigError(f"cannot synthesise input {name!r} of dtype {dtype}; pass --samples")
    return feed


def load_samples(paths: Sequence[str | Path], graph_meta: Mapping[str, Any]) -> list[tuple[str, dict[str, np.ndarray]]]:
    """User samples: ``.npz`` (arrays named like the graph inputs) or ``.npy`` (single-input graphs)."""
    names = list(graph_meta["inputs"])
    out = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise InputError(f"sample file {str(path)!r} does not exist")
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                missing = [n for n in names if n not in data.files]
                if missing:
                    raise InputError(f"{path} must hold arrays named {names}; missing {missing} (has {data.files})")
                feed = {n: np.asarray(data[n]) for n in names}
        elif path.suffix == ".npy":
            if len(names) != 1:
                raise InputError(
                    f"{path}: a .npy sample fits a single-input graph; this graph takes {names} (use .npz)"
                )
            feed = {names[0]: np.load(path, allow_pickle=False)}
        else:
            raise InputError(f"sample {path} must be .npz or .npy; got {path.suffix!r}")
        for n in names:
            want = np.dtype(graph_meta["inputs"][n]["dtype"])
            if feed[n].dtype != want:
                feed[n] = feed[n].astype(want)
        out.append((path.name, feed))
    return out


def input_names(graph_meta: Mapping[str, Any], onnx_path: str | Path | None = None) -> list[str]:
    """Graph inputs in positional order (``meta.json`` stores ``inputs`` with sorted keys)."""
    if graph_meta.get("input_names"):
        return list(graph_meta["input_names"])
    if onnx_path is not None:
        from edgesentry.export._stream import load_skeleton

        model = load_skeleton(onnx_path)
        inits = {i.name for i in model.graph.initializer}
        return [i.name for i in model.graph.input if i.name not in inits]
    return list(graph_meta["inputs"])


def _input_specs(graph_meta: Mapping[str, Any], order: list[str]) -> dict[str, Any]:
    from edgesentry.backends import InputSpec

    specs = graph_meta["inputs"]
    return {
        k: InputSpec(specs[k]["dtype"], tuple(d if isinstance(d, int) else None for d in specs[k]["shape"]))
        for k in order
    }


def make_runner(
    backend: str,
    bundle: Bundle,
    graph: str,
    *,
    precision: str = "fp32",
    providers: Sequence[Any] = ("CPUExecutionProvider",),
) -> Any:
    """A runner of ``graph`` on ``backend`` (torch needs the family exporter and weights)."""
    gmeta = bundle.meta["graphs"][graph]
    inputs = _input_specs(gmeta, input_names(gmeta, bundle.file(gmeta["file"])))
    outputs = list(gmeta["outputs"])
    if backend == "torch":
        from edgesentry.backends import TorchRunner
        from edgesentry.export.onnx import family_exporter

        try:
            import torch  # noqa: F401
        except ImportError:
            raise BackendUnavailableError("backend 'torch' needs torch (pip install edgesentry[torch])") from None
        specs = {s.name: s for s in family_exporter(bundle.family).graph_specs(bundle)}
        if graph not in specs:
            raise ConfigError(f"family {bundle.family} has no graph {graph!r} to rebuild in torch; has {sorted(specs)}")
        return TorchRunner(specs[graph].build(), inputs, outputs)
    if backend == "onnxruntime":
        from edgesentry.backends import OrtRunner

        model: Any = _variant_graph(bundle, graph, precision)
        if precision == "fp16" and model == bundle.file(gmeta["file"]):
            import onnx

            from edgesentry.export.tensorrt import to_fp16

            model = to_fp16(onnx.load(str(model))).SerializeToString()
        elif precision == "bf16":
            raise ConfigError("precision bf16 runs on backend openvino (ONNX Runtime's CPU provider has no BF16)")
        return OrtRunner(model, inputs, outputs, providers=providers)
    if backend == "openvino":
        from edgesentry.backends import OpenVINORunner
        from edgesentry.precision import OPENVINO_HINT

        model = _variant_graph(bundle, graph, precision)
        hint = OPENVINO_HINT[precision] if model == bundle.file(gmeta["file"]) else "f32"
        return OpenVINORunner(model, inputs, outputs, precision=hint)
    if backend == "tensorrt":
        from edgesentry.backends.tensorrt import TensorRTRunner
        from edgesentry.export.tensorrt import cuda_device_capability, find_engine, import_tensorrt

        trt = import_tensorrt(lean_ok=True)
        plan = find_engine(bundle, graph, precision=precision, trt=trt, capability=cuda_device_capability())
        if plan is None:
            raise BackendUnavailableError(
                f"no {precision} TensorRT engine for graph {graph!r} matches this GPU and "
                f"TensorRT; run `edgesentry build {bundle.path} --precision {precision}`"
            )
        return TensorRTRunner(plan, inputs, outputs)
    raise ConfigError(f"unknown backend {backend!r}; expected one of {BACKENDS}")


def _variant_graph(bundle: Bundle, graph: str, precision: str) -> Path:
    """The ONNX file of ``graph`` in ``precision``: the variant ``edgesentry quantize`` stored
    (int8 must exist; fp16 may), else the FP32 graph (bf16, fp16 run it with a precision hint)."""
    from edgesentry.precision import precisions_of

    record = (bundle.meta.get("precisions") or {}).get(precision)
    if record is not None and graph in record.get("graphs", {}):
        return bundle.file(record["graphs"][graph]["file"])
    if precision == "int8":
        raise ConfigError(f"bundle {bundle.path} has no int8 graphs; it has precisions {precisions_of(bundle)} "
                          f"(make them with `edgesentry quantize {bundle.path} --precision int8 --calib ...`)")
    return bundle.file(bundle.meta["graphs"][graph]["file"])


def _outputs_of(backend: str, bundle: Bundle, graph: str, precision: str,
                feeds: Sequence[tuple[str, Mapping[str, np.ndarray]]]) -> list[dict[str, np.ndarray]]:
    """Every feed through one backend; its runner (a torch module, a session, an engine) is
    released before the next backend is built, so one model is in memory at a time."""
    runner = make_runner(backend, bundle, graph, precision=precision)
    try:
        return [runner.infer(feed) for _, feed in feeds]
    finally:
        runner.deactivate()


def validate_bundle(
    bundle: Bundle,
    *,
    backends: Sequence[str] = ("torch", "onnxruntime"),
    precision: str = "fp32",
    samples: Sequence[str | Path] = (),
    n_synthetic: int = 2,
    seed: int = 0,
    atol: float | None = None,
    rtol: float | None = None,
    graphs: Sequence[str] | None = None,
) -> ValidationReport:
    """Compare ``backends[1:]`` with ``backends[0]`` on every exported graph of ``bundle``.

    The reference always runs in fp32; ``precision`` applies to the candidates. The backends
    run one after the other on every input (the reference's outputs kept, its model released),
    so the peak memory is that of the largest model, not of all of them together.
    """
    backends = list(backends)
    if len(backends) < 2:
        raise ConfigError(f"validate needs a reference and at least one candidate backend; got {backends}")
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ConfigError(f"unknown backends {unknown}; expected names from {list(BACKENDS)}")
    if precision not in TOLERANCES:
        raise ConfigError(f"precision must be one of {sorted(TOLERANCES)}; got {precision!r}")
    all_graphs = bundle.meta.get("graphs", {})
    if not all_graphs:
        raise ConfigError(f"bundle {bundle.path} has no exported graphs; run `edgesentry export {bundle.path}` first")
    chosen = list(graphs or all_graphs)
    d_atol, d_rtol = TOLERANCES[precision]
    report = ValidationReport(
        str(bundle.path),
        bundle.family,
        precision,
        backends[0],
        backends,
        d_atol if atol is None else atol,
        d_rtol if rtol is None else rtol,
    )
    for graph in chosen:
        gmeta = all_graphs[graph]
        g_atol = atol if atol is not None else (float(gmeta.get("atol", d_atol)) if precision == "fp32" else d_atol)
        g_rtol = rtol if rtol is not None else (float(gmeta.get("rtol", d_rtol)) if precision == "fp32" else d_rtol)
        feeds = (
            load_samples(samples, gmeta)
            if samples
            else [(f"synthetic seed {seed + i}", synthetic_inputs(gmeta, seed + i)) for i in range(n_synthetic)]
        )
        expected = _outputs_of(backends[0], bundle, graph, "fp32", feeds)
        results = [GraphValidation(graph, label) for label, _ in feeds]
        for name in backends[1:]:
            actual = _outputs_of(name, bundle, graph, precision, feeds)
            label = name + (f" ({precision})" if precision != "fp32" else "")
            for result, want, got in zip(results, expected, actual):
                result.reports.append(compare_outputs(want, got, atol=g_atol, rtol=g_rtol, names=(backends[0], label)))
            del actual
        report.results.extend(results)
    return report


def write_json(report: ValidationReport, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=2, default=float, allow_nan=True) + "\n")
    return path
