"""What loading and running a bundle will need in memory (``edgesentry info --memory BUNDLE``).

The estimate is the sum of five parts, each stated on its own so a user can tell what grows
with what before copying a bundle to a device:

- ``runtime``: the interpreter with numpy and edgesentry, plus the graph backend's libraries
  (``RUNTIME_BYTES``: resident sizes after import, measured on x86-64 Linux with the CPU wheels
  of requirements-dev.txt; a CUDA context on a Jetson adds its own, several hundred MB);
- ``weights``: the bundle's tensors as the detector holds them (``weights.safetensors``, read
  into host memory) plus the backend's copy (ONNX Runtime: the graph files' initializers; torch:
  the module's parameters);
- ``activations``: the largest set of intermediate tensors alive at once in the bundle's graphs
  at the input size (a liveness sweep over each graph's nodes in their order, after ONNX shape
  inference with the input's dims fixed), or, for RX (no graph), the kernel's working set;
- ``io``: the inputs fed and the outputs returned (for a hyperspectral family, the cube and the
  maps);
- ``workspace``: TensorRT's builder workspace limit when the backend is ``tensorrt`` (the
  engine's own activation memory is about ``activations``; the exact figure is the built
  engine's ``device_memory_size``, unknown before the build).

The input size is the one the bundle's engines are optimised for: each dynamic axis takes the
``opt`` value of its profile (``meta["graphs"][g]["profile_hints"]``, else the defaults of
``edgesentry.export.tensorrt``), unless ``sizes`` names it (CLI: ``--size AXIS=N``).
``benchmarks/bundle_memory.py`` checks the estimate against the measured peak resident set of
``load`` + ``predict`` for every family.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgesentry.bundle import Bundle
from edgesentry.errors import ConfigError

Backend = Literal["onnxruntime", "torch", "tensorrt"]

#: resident bytes after importing what a backend needs (x86-64 Linux, CPU wheels):
#: python + numpy + edgesentry 40 MB; onnxruntime +45 MB (its import and a session's fixed arenas);
#: torch +195 MB
RUNTIME_BYTES = {"base": 40 << 20, "onnxruntime": 45 << 20, "torch": 195 << 20, "tensorrt": 45 << 20}
#: ONNX Runtime's peak over the graph files' bytes while it creates a session (the file's
#: initializers read, then copied into its own tensors): 1.3, measured on the ISSTAD ViT-B/16
#: and ViT-L/16 rows of ``benchmarks/bundle_memory.py`` (0.5 and 1.3 GB of weights)
ORT_WEIGHTS_FACTOR = 1.3
#: TensorRT's builder workspace pool (``edgesentry build --workspace``; ``export.tensorrt``)
TENSORRT_WORKSPACE = 1 << 30
#: families whose detector reads the bundle's tensors on every backend (their kernels use some)
HOLD_TENSORS = ("fers", "mavd", "mdmf")
#: RX without a bundle size: the 1024 x 1024 x 224 scene of the benchmarks
RX_DEFAULT_SIZE = {"H": 1024, "W": 1024, "B": 224}


@dataclass
class MemoryEstimate:
    """Bytes each part is expected to take at peak (see the module docstring)."""

    family: str
    backend: str
    input: dict[str, list[int]]
    runtime: int
    weights: int
    activations: int
    io: int
    workspace: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.runtime + self.weights + self.activations + self.io + self.workspace

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


def estimate(bundle: Bundle | str | Path, *, backend: Backend | None = None,
             sizes: Mapping[str, int] | None = None) -> MemoryEstimate:
    """The memory ``edgesentry.load(bundle, backend=...)`` + one ``predict`` will need.

    Args:
        bundle: a bundle or its folder.
        backend: the graph backend (default: onnxruntime when the bundle has its graphs, else torch).
        sizes: axis name -> size for the input's dynamic axes (e.g. ``{"H": 512, "W": 512}``).

    Raises:
        ConfigError: an unknown backend, or a size for an axis the bundle's inputs do not have.
    """
    b = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    sizes = dict(sizes or {})
    if b.family == "rx":
        return _rx_estimate(b, sizes)
    graphs = b.meta.get("graphs", {})
    chosen = backend or ("onnxruntime" if graphs else "torch")
    if chosen not in ("onnxruntime", "torch", "tensorrt"):
        raise ConfigError(f"--backend must be onnxruntime, torch or tensorrt; got {chosen!r}")
    if not graphs:
        raise ConfigError(f"{b.path}: the bundle has no exported graphs to size the activations with; "
                          f"run `edgesentry export {b.path}` first")
    shapes = {name: input_shapes(g, sizes) for name, g in graphs.items()}
    unknown = set(sizes) - {axis for g in graphs.values() for spec in g.get("inputs", {}).values()
                            for axis in spec["shape"] if isinstance(axis, str)}
    if unknown:
        raise ConfigError(f"--size names axes the bundle's inputs do not have: {sorted(unknown)}")
    weights = _tensor_bytes(b)
    graph_bytes = sum(_graph_file_bytes(b.path / g["file"]) for g in graphs.values())
    activations, io, notes = 0, 0, []
    for name, g in graphs.items():
        peak, feeds, outputs, unresolved = graph_activations(b.path / g["file"], shapes[name])
        activations = max(activations, peak)  # graphs run one after the other
        io += feeds + outputs
        if unresolved:
            notes.append(f"{name}: {unresolved} intermediate tensors of unknown shape not counted")
    if chosen == "torch":
        weights *= 2  # the tensors read from the bundle, and the module's parameters built from them
    else:  # ONNX Runtime's initializers (while it creates the session), or the engine's own copy
        weights = int(ORT_WEIGHTS_FACTOR * graph_bytes) + (weights if b.family in HOLD_TENSORS else 0)
    workspace = TENSORRT_WORKSPACE if chosen == "tensorrt" else 0
    if chosen == "tensorrt":
        notes.append("TensorRT: workspace is the builder's pool limit; a CUDA context adds several hundred MB")
    io += _scene_bytes(b, shapes)
    runtime = RUNTIME_BYTES["base"] + RUNTIME_BYTES[chosen]
    return MemoryEstimate(b.family, chosen, {n: list(s) for g in shapes.values() for n, s in g.items()},
                          runtime, weights, activations, io, workspace, notes)


def input_shapes(graph_meta: Mapping[str, Any], sizes: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """Input name -> concrete shape: fixed dims as they are, dynamic ones from ``sizes`` or the
    ``opt`` value of the graph's profile."""
    from edgesentry.export.tensorrt import DEFAULT_AXIS_RANGE

    ranges = {**DEFAULT_AXIS_RANGE, **dict(graph_meta.get("profile_hints", {}))}
    examples = graph_meta.get("example_shapes", {})
    out = {}
    for name, spec in graph_meta.get("inputs", {}).items():
        dims = []
        for axis, dim in enumerate(spec["shape"]):
            if isinstance(dim, int) and dim > 0:
                dims.append(dim)
            elif isinstance(dim, str) and dim in sizes:
                dims.append(int(sizes[dim]))
            elif isinstance(dim, str) and dim in ranges:
                dims.append(int(ranges[dim][1]))
            else:
                dims.append(int(examples[name][axis]))
        out[name] = tuple(dims)
    return out


def graph_activations(path: Path, shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, int, int, int]:
    """(peak bytes of live intermediates, input bytes, output bytes, tensors of unknown shape)
    of the ONNX graph at ``path`` fed ``shapes``.

    The nodes are walked in their order: a node's outputs are allocated while its inputs are
    alive, and a value is freed after its last reader (``value_sizes`` gives the bytes).
    Initializers are weights, not activations.
    """
    graph, sizes = value_sizes(path, shapes)
    weights = {t.name for t in graph.initializer}
    last_use: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            last_use[name] = i
    outputs = {v.name for v in graph.output}
    live = {v.name: sizes.get(v.name) or 0 for v in graph.input if v.name not in weights}
    feeds = sum(live.values())
    peak, unresolved = sum(live.values()), 0
    for i, node in enumerate(graph.node):
        for name in node.output:
            if name and name not in live:
                size = sizes.get(name)
                unresolved += size is None
                live[name] = size or 0
        peak = max(peak, sum(live.values()))
        for name in [n for n in live if last_use.get(n, -1) <= i and n not in outputs]:
            del live[name]
    return peak, feeds, sum(sizes.get(n) or 0 for n in outputs), unresolved


def value_sizes(path: Path, shapes: Mapping[str, tuple[int, ...]]) -> tuple[Any, dict[str, int | None]]:
    """(the graph, value name -> bytes, None where the shape stays unknown) of the ONNX graph at
    ``path`` fed ``shapes``: read without its weights' data, its inputs' dims fixed, its
    shapes inferred (small integer computations folded, so Pad and Reshape targets resolve)."""
    from edgesentry.export._stream import load_skeleton

    model = load_skeleton(path)  # nodes and shapes; the weights' data stays on disk
    for value in model.graph.input:
        if value.name in shapes:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, shapes[value.name]):
                dim.Clear()
                dim.dim_value = int(size)
    model = _infer_shapes(model)
    graph = model.graph
    return graph, {v.name: _value_bytes(v) for v in (*graph.value_info, *graph.input, *graph.output)}


#: folded values larger than this are not kept (shape arithmetic is a few integers)
_FOLD_LIMIT = 4096


def _infer_shapes(model: Any, rounds: int = 4) -> Any:
    """ONNX shape inference, alternated with folding the small integer computations it cannot
    see through (``Shape`` of a value of known shape, then Cast / Slice / Concat ... of
    constants): the padding and reshape targets an exporter computes at run time."""
    import onnx

    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    for _ in range(rounds):
        if not _fold_constants(model):
            break
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    return model


def _fold_constants(model: Any) -> int:
    """Replace the nodes whose inputs are all known small constants by Constant nodes; -> count."""
    import numpy as np
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    graph = model.graph
    known: dict[str, Any] = {t.name: numpy_helper.to_array(t) for t in graph.initializer
                             if t.data_location != 1 and int(np.prod(t.dims)) <= _FOLD_LIMIT and _has_data(t)}
    static = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*graph.value_info, *graph.input)
              if v.type.tensor_type.HasField("shape")
              and all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim)}
    folded = 0
    for index, node in enumerate(graph.node):
        if node.op_type == "Constant" or len(node.output) != 1:
            if node.op_type == "Constant":
                known[node.output[0]] = ReferenceEvaluator(_single(node, [], opset)).run(None, {})[0]
            continue
        if node.op_type == "Shape" and node.input[0] in static:
            attrs = {a.name: a.i for a in node.attribute}
            shape = static[node.input[0]]
            value = np.array(shape[attrs.get("start", 0): attrs.get("end", len(shape))], dtype=np.int64)
        elif node.input and all(not n or n in known for n in node.input):
            try:
                value = ReferenceEvaluator(_single(node, [n for n in node.input if n], opset)).run(
                    None, {n: known[n] for n in node.input if n})[0]
            except Exception:  # an op the reference evaluator lacks: leave it to the runtime
                continue
        else:
            continue
        value = np.asarray(value)
        if value.size > _FOLD_LIMIT:
            continue
        known[node.output[0]] = value
        graph.node[index].CopyFrom(helper.make_node("Constant", [], [node.output[0]],
                                                    value=numpy_helper.from_array(value, node.output[0])))
        folded += 1
    return folded


def _has_data(tensor: Any) -> bool:
    """Whether a skeleton's initializer kept its data (large ones keep only name, type and dims)."""
    return any(tensor.HasField(f) if f == "raw_data" else len(getattr(tensor, f)) > 0
               for f in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"))


def _single(node: Any, inputs: list[str], opset: int) -> Any:
    """A one-node model of ``node`` (its inputs untyped: the evaluator takes the fed arrays)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([node], "fold", [helper.make_tensor_value_info(n, TensorProto.UNDEFINED, None)
                                               for n in inputs],
                              [helper.make_tensor_value_info(node.output[0], TensorProto.UNDEFINED, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _value_bytes(value: Any) -> int | None:
    import numpy as np
    from onnx import helper

    tensor = value.type.tensor_type
    if not tensor.HasField("shape") or not tensor.elem_type:
        return None
    count = 1
    for dim in tensor.shape.dim:
        if not dim.HasField("dim_value"):
            return None
        count *= dim.dim_value
    return count * np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).itemsize


def _tensor_bytes(bundle: Bundle) -> int:
    return sum(p.stat().st_size for p in bundle.path.glob("*.safetensors"))


def _graph_file_bytes(path: Path) -> int:
    """The ONNX file and its external data files (``<file>.data`` beside it)."""
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def _scene_bytes(bundle: Bundle, shapes: Mapping[str, Mapping[str, tuple[int, ...]]]) -> int:
    """FERS: the float32 cube a user passes (its first B bands), beyond the network's float32 input, and the
    float64 and float32 maps (the RX kernel's chunks are a few tens of MB)."""
    if bundle.family != "fers":
        return 0
    _, bands, h, w = next(iter(shapes.values()))["x"]
    return h * w * bands * 4 + h * w * 12 + 2 * _RX_CHUNK


#: float64 chunks the RX kernels hold at once (``edgesentry.kernels.rx.cpu.CHUNK_BYTES``, two live)
_RX_CHUNK = 16 << 20


def _rx_estimate(bundle: Bundle, sizes: Mapping[str, int]) -> MemoryEstimate:
    """RX has no graph: the cube (float32), the maps and the kernel's working set."""
    from edgesentry.kernels.rx.cpu import LOCAL_BLOCK_BYTES

    unknown = set(sizes) - set(RX_DEFAULT_SIZE)
    if unknown:
        raise ConfigError(f"RX takes --size H=, W= and B=; got {sorted(unknown)}")
    dims = {**RX_DEFAULT_SIZE, **sizes}
    h, w, b = dims["H"], dims["W"], dims["B"]
    io = h * w * b * 4 + h * w * (8 + 4 + 8 + 1)  # the float32 cube; scores, map, band sums, validity
    cube64 = h * w * b * 8  # a float64 block is at most the whole cube
    if bundle.config.get("mode") == "local":
        # two column-moment tables (packed B x B per column) and one float64 block of rows
        activations = 2 * w * (b * (b + 1) // 2 + b) * 8 + min(LOCAL_BLOCK_BYTES, cube64)
    else:
        activations = 2 * min(_RX_CHUNK, cube64) + 2 * b * b * 8
    return MemoryEstimate("rx", "none", {"cube": [h, w, b]}, RUNTIME_BYTES["base"], 0, activations, io)
