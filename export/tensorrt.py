"""TensorRT engines for a bundle's graphs: TensorRT 10 (builder flags) and 11 (strongly typed).

Nothing here imports TensorRT at module level; ``edgesentry.backends.tensorrt.import_tensorrt()``
does it on demand and only after a CUDA device has been seen (the lean runtime segfaults on a
machine without a driver). Written against the documented Python API:

TensorRT 10 (JetPack 6 stays on 10.3)
    ``Builder.create_network(0)`` -> ``OnnxParser.parse`` -> ``create_builder_config``;
    FP16 / INT8 by ``config.set_flag(BuilderFlag.FP16 | INT8)``; INT8 calibrated by an
    ``IInt8EntropyCalibrator2`` fed with calibration samples (``config.int8_calibrator``,
    ``config.set_calibration_profile``); the calibration cache is kept in the bundle.
TensorRT 11 (strong typing is the only mode; precision flags and calibrators are gone)
    FP16 = convert the ONNX to FP16 first (``to_fp16``: inputs/outputs and numerically
    sensitive ops kept in FP32), then build with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``
    (accepted and ignored on 11); INT8 = the QDQ graph ``edgesentry quantize --precision int8``
    stored (``<graph>.int8.onnx``: explicit quantisation, typed by its Q/DQ nodes).
INT8 on TensorRT 10
    from the stored QDQ graph when the bundle has one (explicit quantisation: ``FP16 | INT8``
    flags, no calibrator), else from the FP32 graph with the calibrator below.
Both
    one optimisation profile from the graph's dynamic axes (``meta["graphs"][g]["dynamic_axes"]``)
    and per-axis min/opt/max hints; a persisted timing cache; ``BuilderFlag.VERSION_COMPATIBLE``
    on request; an engine cache in ``BUNDLE/engines/`` keyed by GPU compute capability,
    TensorRT version, precision, shape profile, build flags and the ONNX sha256. A plan whose
    sidecar key or sha256 does not match is rebuilt with a message, never loaded blindly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from edgesentry.backends.tensorrt import cuda_device_capability, import_tensorrt
from edgesentry.errors import BackendUnavailableError, ConfigError, EdgesentryError
from edgesentry.io.paths import check_relative_name, read_bytes_bounded

log = logging.getLogger("edgesentry.export.tensorrt")

PRECISIONS = ("fp32", "fp16", "int8")
ENGINE_DIR = "engines"
# Default (min, opt, max) of the dynamic axes the families declare, used when neither the graph's
# profile_hints nor --shape-hint give one. The opt values are the common case (one image, five
# I3D crops, ~1 min of XD-Violence snippets, a 128 px hyperspectral tile); engines reject shapes
# outside [min, max], so widen them with --shape-hint AXIS=MIN,OPT,MAX where needed.
DEFAULT_AXIS_RANGE = {
    "batch": (1, 1, 8),
    "crops": (1, 5, 10),  # MAVD: RGB/flow crops per video
    "audio_crops": (1, 1, 10),  # MAVD: audio streams
    "T": (1, 64, 1024),  # MAVD: snippets (16 frames each)
    "H": (5, 128, 512),  # FERS: cube height (>= 5 for the 4-pixel reflect padding)
    "W": (5, 128, 512),  # FERS: cube width
}
# Ops kept in FP32 by the FP16 conversion (overflow / precision sensitive: NVIDIA/TensorRT#2564, #4355).
FP32_OPS = (
    "LayerNormalization",
    "Softmax",
    "LogSoftmax",
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL2",
    "ReduceLogSumExp",
    "Pow",
    "Sqrt",
    "Exp",
    "Log",
    "Erf",
    "InstanceNormalization",
    "BatchNormalization",
    "CumSum",
    "Range",
    "Resize",
    "TopK",
)


class EngineBuildError(EdgesentryError):
    """The TensorRT builder or parser failed."""


def trt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


# ------------------------------------------------------------------------------ profiles
@dataclass(frozen=True)
class ShapeProfile:
    """min/opt/max shapes per input: name -> ((min...), (opt...), (max...))."""

    shapes: tuple[tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...]], ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[Sequence[int]]]) -> ShapeProfile:
        items = []
        for name in sorted(data):
            lo, opt, hi = (tuple(int(v) for v in s) for s in data[name])
            if not (len(lo) == len(opt) == len(hi)) or any(not (a <= b <= c) for a, b, c in zip(lo, opt, hi)):
                raise ConfigError(
                    f"profile for {name!r} must satisfy min <= opt <= max per axis; got {lo}, {opt}, {hi}"
                )
            if any(v <= 0 for v in lo):
                raise ConfigError(f"profile for {name!r}: dimensions must be positive; got min {lo}")
            items.append((name, lo, opt, hi))
        return cls(tuple(items))

    def to_dict(self) -> dict[str, list[list[int]]]:
        return {n: [list(lo), list(opt), list(hi)] for n, lo, opt, hi in self.shapes}

    def is_static(self) -> bool:
        return all(lo == hi for _, lo, _, hi in self.shapes)

    def contains(self, name: str, shape: Sequence[int]) -> bool:
        for n, lo, _, hi in self.shapes:
            if n == name:
                return len(shape) == len(lo) and all(a <= s <= c for a, s, c in zip(lo, shape, hi))
        return False


def profile_from_graph(
    graph_meta: Mapping[str, Any],
    hints: Mapping[str, Sequence[int]] | None = None,
    overrides: Mapping[str, Sequence[Sequence[int]]] | None = None,
) -> ShapeProfile:
    """One optimisation profile from a graph's input spec and dynamic axes.

    Args:
        graph_meta: ``meta["graphs"][name]`` (``inputs`` name -> {dtype, shape with axis names}).
        hints: axis name -> (min, opt, max), e.g. ``{"batch": (1, 1, 8), "T": (16, 64, 512)}``;
            families put theirs in ``meta["graphs"][name]["profile_hints"]``.
        overrides: input name -> explicit (min, opt, max) shapes.

    Raises:
        ConfigError: a dynamic axis has no range (name it in ``hints``).
    """
    ranges = {**DEFAULT_AXIS_RANGE, **dict(graph_meta.get("profile_hints", {})), **dict(hints or {})}
    shapes: dict[str, list[list[int]]] = {}
    for name, spec in graph_meta.get("inputs", {}).items():
        if overrides and name in overrides:
            shapes[name] = [list(s) for s in overrides[name]]
            continue
        lo, opt, hi = [], [], []
        for axis, dim in enumerate(spec["shape"]):
            if isinstance(dim, int) and dim > 0:
                lo.append(dim)
                opt.append(dim)
                hi.append(dim)
                continue
            key = dim if isinstance(dim, str) else f"{name}:{axis}"
            if key not in ranges:
                raise ConfigError(
                    f"input {name!r} axis {axis} ({key!r}) is dynamic and has no min/opt/max; "
                    f"pass e.g. --shape-hint {key}=1,4,16"
                )
            a, b, c = (int(v) for v in ranges[key])
            lo.append(a)
            opt.append(b)
            hi.append(c)
        shapes[name] = [lo, opt, hi]
    return ShapeProfile.from_dict(shapes)


# ----------------------------------------------------------------------------- cache key
@dataclass(frozen=True)
class EngineKey:
    """Everything a plan depends on; two builds with equal keys are interchangeable."""

    graph: str
    onnx_sha256: str
    precision: str
    compute_capability: str  # "8.7"
    trt_version: str
    profile: ShapeProfile
    version_compatible: bool = False
    extra: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}; got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["profile"] = self.profile.to_dict()
        d["extra"] = dict(self.extra)
        return d

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def filename(self) -> str:
        # Human-readable prefix, unique suffix: users see at a glance which GPU/TRT a plan is for.
        sm = self.compute_capability.replace(".", "")
        vc = "-vc" if self.version_compatible else ""
        return f"{self.graph}.{self.precision}.sm{sm}.trt{self.trt_version}{vc}.{self.digest()[:16]}.plan"


@dataclass
class CacheLookup:
    path: Path | None
    reason: str  # "hit" | "miss" | why a plan was rejected


#: a sidecar is a small JSON record; anything larger is not one of ours
SIDECAR_MAX_BYTES = 1 << 20


class EngineCache:
    """Plans in ``DIR`` (a bundle's ``engines/``), each with a ``.json`` sidecar (key + plan sha256).

    ``lookup`` returns a plan only when the sidecar's key equals the requested key and the plan's
    sha256 equals the sidecar's; anything else (another TensorRT, another GPU, an edited ONNX,
    a truncated copy) is reported and ignored, so the caller rebuilds it. With ``listed`` (a
    bundle's ``files``: name -> sha256, names relative to ``listed_root``), plan and sidecar
    must also be listed there with their current sha256: a file dropped into ``engines/`` by
    hand is never used.
    """

    def __init__(self, directory: str | os.PathLike, *, on_write: Callable[[Path], None] | None = None,
                 listed: Mapping[str, str] | None = None, listed_root: str | os.PathLike | None = None):
        self.dir = Path(directory)
        self.on_write = on_write
        self.listed = listed
        self.listed_root = Path(listed_root) if listed_root is not None else self.dir

    def _paths(self, key: EngineKey) -> tuple[Path, Path]:
        name = key.filename()
        check_relative_name(name, what="TensorRT plan", error=ConfigError)
        if "/" in name:
            raise ConfigError(f"TensorRT plan name {name!r} must be one file name (graph and TensorRT version "
                              "may not hold '/')")
        plan = self.dir / name
        return plan, plan.with_suffix(".json")

    def _unlisted(self, path: Path, data: bytes) -> str | None:
        """Why ``path`` is not a listed, hashed bundle file (``None`` when it is, or nothing is listed)."""
        if self.listed is None:
            return None
        rel = path.relative_to(self.listed_root).as_posix()
        if rel not in self.listed:
            return f"{rel} is not listed in meta.json"
        if hashlib.sha256(data).hexdigest() != self.listed[rel]:
            return f"{rel} does not match its sha256 in meta.json"
        return None

    def lookup(self, key: EngineKey) -> CacheLookup:
        plan, side = self._paths(key)
        if not plan.is_file() or not side.is_file():
            stale = [p.name for p in self.dir.glob(f"{key.graph}.*.plan")] if self.dir.is_dir() else []
            why = f"no plan for this key; other plans for {key.graph}: {stale}" if stale else "miss"
            return CacheLookup(None, why)
        try:
            side_bytes = read_bytes_bounded(side, limit=SIDECAR_MAX_BYTES, what="plan sidecar", error=ConfigError)
            record = json.loads(side_bytes)
            if not isinstance(record, dict) or not isinstance(record.get("key", {}), dict):
                raise ValueError("not a JSON object with an object 'key'")
        except (ConfigError, ValueError, RecursionError) as exc:
            return self._reject(plan, f"sidecar {side.name} unreadable ({str(exc)[:200]})")
        if record.get("key") != key.to_dict():
            diff = sorted(k for k, v in key.to_dict().items() if record.get("key", {}).get(k) != v)
            return self._reject(plan, f"sidecar key differs in {diff}")
        plan_bytes = plan.read_bytes()
        for path, data in ((side, side_bytes), (plan, plan_bytes)):
            why = self._unlisted(path, data)
            if why is not None:
                return self._reject(plan, why)
        actual = hashlib.sha256(plan_bytes).hexdigest()
        if actual != record.get("plan_sha256"):
            return self._reject(
                plan,
                f"plan sha256 {actual[:12]}... != recorded {str(record.get('plan_sha256'))[:12]}... "
                "(truncated or corrupt)",
            )
        return CacheLookup(plan, "hit")

    def _reject(self, plan: Path, why: str) -> CacheLookup:
        log.warning("TensorRT engine cache: ignoring %s: %s; it will be rebuilt", plan.name, why)
        return CacheLookup(None, why)

    def store(self, key: EngineKey, plan_bytes: bytes, *, build_info: Mapping[str, Any] | None = None) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        plan, side = self._paths(key)
        plan.write_bytes(plan_bytes)
        side.write_text(
            json.dumps(
                {
                    "key": key.to_dict(),
                    "plan_sha256": hashlib.sha256(plan_bytes).hexdigest(),
                    "build": dict(build_info or {}),
                },
                indent=2,
                sort_keys=True,
            )
        )
        for p in (plan, side):
            if self.on_write is not None:
                self.on_write(p)
        return plan


def onnx_sha256(path: str | os.PathLike) -> str:
    """The graph's hash for engine keys: the ONNX file without its ``metadata_props`` (new
    thresholds mirrored into the metadata leave engines valid; any graph change rebuilds them)."""
    from edgesentry.bundle import onnx_graph_sha256

    return onnx_graph_sha256(path)


# --------------------------------------------------------------------------- FP16 graphs
def to_fp16(model: Any, *, keep_ops: Iterable[str] = FP32_OPS) -> Any:
    """FP16 copy of an ONNX model for strongly typed builds (TensorRT 11) and ORT FP16 checks.

    Inputs and outputs stay FP32 (casts are inserted), as do ``keep_ops``. Uses
    onnxconverter-common's converter, which inserts the boundary casts.
    """
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise BackendUnavailableError(
            "FP16 conversion needs onnxconverter-common (pip install onnxconverter-common)"
        ) from None
    import onnx

    # The exporter's value_info records fp32 intermediate types that the converter would keep
    # stale (ORT then rejects "Type (tensor(float16)) ... does not match"): drop and re-infer.
    clean = onnx.ModelProto()
    clean.CopyFrom(model)
    del clean.graph.value_info[:]
    _fold_initializer_identities(clean)
    _split_consumed_outputs(clean)
    converted = float16.convert_float_to_float16(
        clean, keep_io_types=True, op_block_list=list(keep_ops), disable_shape_infer=False
    )
    _fix_float_casts(converted)
    return converted


def _fix_float_casts(model: Any) -> None:
    """``Cast(to=FLOAT)`` nodes whose output the converter declared FP16 must cast to FP16.

    (The converter retypes such outputs, e.g. attention's ``sqrt(float(head_dim))``, but leaves
    the ``to`` attribute; ONNX Runtime then rejects the graph and TensorRT would mis-type it.)
    """
    fp16 = {v.name for v in model.graph.value_info if v.type.tensor_type.elem_type == 10}
    for node in model.graph.node:
        if node.op_type == "Cast" and node.output[0] in fp16:
            for attr in node.attribute:
                if attr.name == "to" and attr.i == 1:
                    attr.i = 10


def _fold_initializer_identities(model: Any) -> None:
    """Replace ``Identity(initializer)`` nodes (the TorchScript exporter's shared weights) by
    initializer copies: the converter types such Identity outputs inconsistently."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in inits:
            copy = graph.initializer.add()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            inits[copy.name] = copy
        else:
            keep.append(node)
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)


def _split_consumed_outputs(model: Any) -> None:
    """Route graph outputs that other nodes also read through an Identity.

    The converter casts such an output back to FP32 in place, so its internal readers would
    get FP32 where FP16 is declared; after the split they read the FP16 tensor.
    """
    import onnx

    graph = model.graph
    outputs = {o.name for o in graph.output}
    consumed = {i for n in graph.node for i in n.input} & outputs
    for name in sorted(consumed):
        inner = f"{name}__edgesentry_inner"
        for node in graph.node:
            node.output[:] = [inner if o == name else o for o in node.output]
            node.input[:] = [inner if i == name else i for i in node.input]
        graph.node.append(onnx.helper.make_node("Identity", [inner], [name], name=f"{name}__edgesentry_out"))


# ------------------------------------------------------------------------------ building
@dataclass
class BuildOptions:
    precision: str = "fp32"
    version_compatible: bool = False
    workspace_bytes: int = 1 << 30
    calibration: Sequence[Mapping[str, np.ndarray]] = field(default_factory=list)
    calibration_cache: Path | None = None
    timing_cache: Path | None = None
    #: ``cuda.bindings.runtime`` for the calibrator's buffers (None: imported when needed; tests inject a stub)
    cudart: Any = None
    #: the ONNX carries Q/DQ nodes (``edgesentry quantize``): INT8 without a calibrator, on 10 and 11
    explicit_quantization: bool = False


def build_plan(trt: Any, onnx_bytes: bytes, profile: ShapeProfile, options: BuildOptions) -> bytes:
    """Build a serialized plan with the TensorRT module ``trt`` (10.x or 11.x).

    Raises:
        ConfigError: INT8 on TensorRT 11, or INT8 without calibration samples.
        EngineBuildError: the parser or the builder failed.
    """
    major = trt_major(trt)
    if options.precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}; got {options.precision!r}")
    explicit = options.precision == "int8" and options.explicit_quantization
    if options.precision == "int8" and major >= 11 and not explicit:
        raise ConfigError(
            "INT8 with TensorRT 11 builds from a graph with explicit Q/DQ nodes (its networks are strongly "
            "typed; calibrators are gone): run `edgesentry quantize BUNDLE --precision int8 --calib SAMPLES...` "
            "first, then `edgesentry build BUNDLE --precision int8`"
        )
    if (
        options.precision == "int8"
        and not explicit
        and not options.calibration
        and not (options.calibration_cache and options.calibration_cache.is_file())
    ):
        raise ConfigError("INT8 needs calibration samples (--calib SAMPLES) or an existing calibration cache")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if major >= 11 and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    if major >= 11 and options.precision == "fp16":
        import onnx

        onnx_bytes = to_fp16(onnx.load_from_string(onnx_bytes)).SerializeToString()
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError("TensorRT ONNX parser failed:\n  " + "\n  ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_bytes))
    trt_profile = builder.create_optimization_profile()
    for name, lo, opt, hi in profile.shapes:
        trt_profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(trt_profile)
    if major < 11:
        if options.precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if options.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
        if options.precision == "int8" and not explicit:  # implicit quantisation: ranges from a calibrator
            config.int8_calibrator = make_calibrator(trt, options.calibration, options.calibration_cache,
                                                     cudart=options.cudart)
            config.set_calibration_profile(trt_profile)
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    cache = _load_timing_cache(config, options.timing_cache)
    calibrator = getattr(config, "int8_calibrator", None)
    try:
        plan = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.free()  # the calibration batches' device buffers
    if plan is None:
        raise EngineBuildError("TensorRT builder returned no engine (see the TensorRT log above)")
    _save_timing_cache(config, cache, options.timing_cache)
    return bytes(plan)


def _load_timing_cache(config: Any, path: Path | None) -> Any:
    blob = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(blob)
    # ignore_mismatch=False: a cache from another device/TRT is discarded by TensorRT, not trusted.
    config.set_timing_cache(cache, False)
    return cache


def _save_timing_cache(config: Any, cache: Any, path: Path | None) -> None:
    if path is None:
        return
    current = config.get_timing_cache() or cache
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(current.serialize()))


#: Calibration data for ``build_bundle_engines``: feeds (input name -> array; each graph takes the
#: feeds holding its inputs) or feeds per graph (graph name -> feeds; what ``edgesentry build`` passes).
Calibration = Union[Sequence[Mapping[str, np.ndarray]], Mapping[str, Sequence[Mapping[str, np.ndarray]]]]


def calibration_feeds(calibration: Calibration, graph: str, graph_meta: Mapping[str, Any],
                      profile: ShapeProfile) -> list[dict[str, np.ndarray]]:
    """The calibration feeds of one graph, checked against its inputs and its calibration profile.

    TensorRT 10 calibrates at the profile's ``opt`` shapes (``set_calibration_profile``), so every
    feed must hold each input of *this* graph at exactly that shape; the arrays are cast to the
    graph's input dtypes. ``calibration`` is one of ``Calibration``'s forms.

    Raises:
        ConfigError: no feed fits this graph, or a feed's shape is not the profile's opt shape.
    """
    names = list(graph_meta.get("inputs", {}))
    if isinstance(calibration, Mapping):
        if graph not in calibration:
            raise ConfigError(f"no calibration samples for graph {graph!r} (samples were given for "
                              f"{sorted(calibration)})")
        feeds = [dict(f) for f in calibration[graph]]
    else:
        feeds = [{n: f[n] for n in names} for f in calibration if all(n in f for n in names)]
        if calibration and not feeds:
            have = sorted({k for f in calibration for k in f})
            raise ConfigError(f"calibration samples hold {have}; graph {graph!r} takes {names}")
    opt = {name: o for name, _, o, _ in profile.shapes}
    out = []
    for i, feed in enumerate(feeds):
        missing = [n for n in names if n not in feed]
        if missing:
            raise ConfigError(f"calibration sample {i} for graph {graph!r} lacks inputs {missing}")
        checked = {}
        for n in names:
            arr = np.asarray(feed[n])
            if n in opt and tuple(arr.shape) != tuple(opt[n]):
                raise ConfigError(
                    f"calibration sample {i} for graph {graph!r}: input {n!r} has shape {tuple(arr.shape)}, but "
                    f"TensorRT calibrates at the profile's opt shape {tuple(opt[n])}; give samples of that shape "
                    "or move opt with --shape-hint AXIS=MIN,OPT,MAX")
            dtype = np.dtype(graph_meta["inputs"][n].get("dtype", arr.dtype))
            checked[n] = np.ascontiguousarray(arr, dtype=dtype)
        out.append(checked)
    return out


def make_calibrator(trt: Any, samples: Sequence[Mapping[str, np.ndarray]], cache_path: Path | None, *,
                    cudart: Any = None) -> Any:
    """An ``IInt8EntropyCalibrator2`` over one graph's ``samples`` (one feed per batch), cache at ``cache_path``.

    Device buffers are allocated once per input (the feeds share a shape: the calibration
    profile's opt shape) and released by ``free()``, which ``build_plan`` calls when the build
    ends, also on error. ``cudart`` is ``cuda.bindings.runtime`` (injectable for tests).
    """
    if cudart is None:
        from cuda.bindings import runtime as cudart

    base = trt.IInt8EntropyCalibrator2

    class _Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.samples = list(samples)
            self.index = 0
            self.buffers: dict[str, tuple[int, int]] = {}
            self.cudart = cudart

        def get_batch_size(self) -> int:
            first = next(iter(self.samples[0].values())) if self.samples else None
            return int(first.shape[0]) if first is not None and first.ndim else 1

        def get_batch(self, names: Sequence[str]) -> list[int] | None:
            if self.index >= len(self.samples):
                return None
            feed = self.samples[self.index]
            self.index += 1
            unknown = [n for n in names if n not in feed]
            if unknown:  # TensorRT asks for inputs this graph's samples do not hold: stop, do not crash
                log.error("calibration: TensorRT asked for inputs %s; the samples hold %s", unknown, sorted(feed))
                return None
            ptrs = []
            for name in names:
                arr = np.ascontiguousarray(feed[name])
                ptr, size = self.buffers.get(name, (0, 0))
                if size < arr.nbytes:
                    if ptr:
                        cudart.cudaFree(ptr)
                    err, ptr = cudart.cudaMalloc(arr.nbytes)
                    _check_cuda(err, "cudaMalloc")
                    self.buffers[name] = (int(ptr), arr.nbytes)
                (err,) = cudart.cudaMemcpy(
                    ptr, arr.ctypes.data, arr.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
                )
                _check_cuda(err, "cudaMemcpy")
                ptrs.append(int(ptr))
            return ptrs

        def free(self) -> None:
            for ptr, _ in self.buffers.values():
                cudart.cudaFree(ptr)
            self.buffers.clear()

        def read_calibration_cache(self) -> bytes | None:
            if cache_path is not None and cache_path.is_file():
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            if cache_path is not None:
                cache_path.parent.mkdir(parents=True, exist_ok=True)
                cache_path.write_bytes(bytes(cache))

    return _Calibrator()


def _check_cuda(err: Any, what: str) -> None:
    if int(err) != 0:
        raise EngineBuildError(f"{what} failed: {err!r}")


# ------------------------------------------------------------------------- bundle level
@dataclass
class EngineResult:
    graph: str
    path: Path
    key: EngineKey
    built: bool
    reason: str


def engine_key(
    bundle: Any,
    graph: str,
    *,
    precision: str,
    profile: ShapeProfile,
    compute_capability: str,
    trt_version: str,
    version_compatible: bool = False,
) -> EngineKey:
    meta = bundle.meta.get("graphs", {}).get(graph)
    if meta is None:
        raise ConfigError(
            f"bundle has no exported graph {graph!r}; run `edgesentry export` first "
            f"(graphs: {sorted(bundle.meta.get('graphs', {}))})"
        )
    return EngineKey(
        graph,
        onnx_sha256(engine_source(bundle, graph, precision)),
        precision,
        compute_capability,
        trt_version,
        profile,
        version_compatible,
    )


def qdq_graph(bundle: Any, graph: str) -> str | None:
    """The bundle-relative name of ``graph``'s INT8 QDQ variant (``edgesentry quantize``), or ``None``."""
    record = (bundle.meta.get("precisions") or {}).get("int8") or {}
    entry = (record.get("graphs") or {}).get(graph)
    return entry.get("file") if isinstance(entry, dict) else None


def engine_source(bundle: Any, graph: str, precision: str) -> Path:
    """The ONNX a ``precision`` engine of ``graph`` is built from: the QDQ variant for int8 when the
    bundle has one (explicit quantisation), else the FP32 graph."""
    name = qdq_graph(bundle, graph) if precision == "int8" else None
    return bundle.file(name or bundle.meta["graphs"][graph]["file"])


def build_bundle_engines(
    bundle: Any,
    *,
    precision: str = "fp32",
    calibration: Calibration = (),
    version_compatible: bool = False,
    hints: Mapping[str, Sequence[int]] | None = None,
    force: bool = False,
    trt: Any = None,
    capability: tuple[int, int] | None = None,
    cudart: Any = None,
) -> list[EngineResult]:
    """Build (or reuse) a plan for every exported graph of ``bundle`` into ``BUNDLE/engines/``.

    INT8 calibration is per graph (``calibration_feeds``): each graph gets the samples of its
    own inputs, checked against its calibration profile. ``trt``, ``capability`` and ``cudart``
    are injectable for tests; by default TensorRT is imported after the CUDA device check.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    graphs = bundle.meta.get("graphs", {})
    if not graphs:
        raise ConfigError(f"bundle {bundle.path} has no exported graphs; run `edgesentry export {bundle.path}` first")
    if trt is None:
        trt = import_tensorrt()
    if capability is None:
        capability = cuda_device_capability()
    missing_qdq = [g for g in graphs if qdq_graph(bundle, g) is None]
    if precision == "int8" and trt_major(trt) >= 11 and missing_qdq:
        build_plan(trt, b"", ShapeProfile(()), BuildOptions(precision="int8"))  # raises the explanatory ConfigError
    cc = f"{capability[0]}.{capability[1]}"
    cache = EngineCache(bundle.path / ENGINE_DIR, listed=bundle.meta["files"], listed_root=bundle.path,
                        on_write=lambda p: bundle.add_file(p.relative_to(bundle.path).as_posix()))
    results = []
    for name, gmeta in graphs.items():
        profile = profile_from_graph(gmeta, hints)
        key = engine_key(
            bundle,
            name,
            precision=precision,
            profile=profile,
            compute_capability=cc,
            trt_version=str(trt.__version__),
            version_compatible=version_compatible,
        )
        found = cache.lookup(key) if not force else CacheLookup(None, "forced rebuild")
        if found.path is not None:
            results.append(EngineResult(name, found.path, key, False, "cached"))
            continue
        if found.reason not in ("miss",):
            log.warning("building %s: %s", key.filename(), found.reason)
        explicit = precision == "int8" and qdq_graph(bundle, name) is not None
        feeds = calibration_feeds(calibration, name, gmeta, profile) if precision == "int8" and not explicit else []
        options = BuildOptions(
            precision=precision,
            version_compatible=version_compatible,
            explicit_quantization=explicit,
            calibration=feeds,
            cudart=cudart,
            calibration_cache=bundle.path / ENGINE_DIR / f"{name}.int8-calibration.cache",
            timing_cache=bundle.path / ENGINE_DIR / f"timing.sm{cc.replace('.', '')}.trt{trt.__version__}.cache",
        )
        plan = build_plan(trt, engine_source(bundle, name, precision).read_bytes(), profile, options)
        path = cache.store(key, plan, build_info={"precision": precision,
                                                  "int8": ("explicit Q/DQ" if explicit else "calibrated")
                                                  if precision == "int8" else None})
        for extra in (options.calibration_cache, options.timing_cache):
            if extra is not None and extra.is_file():
                bundle.add_file(str(extra.relative_to(bundle.path)))
        results.append(EngineResult(name, path, key, True, found.reason))
    return results


def find_engine(
    bundle: Any,
    graph: str,
    *,
    precision: str,
    trt: Any,
    capability: tuple[int, int],
    hints: Mapping[str, Sequence[int]] | None = None,
    version_compatible: bool = False,
) -> Path | None:
    """The cached plan for ``graph`` matching this GPU and TensorRT, or ``None`` (with a logged reason)."""
    gmeta = bundle.meta.get("graphs", {}).get(graph, {})
    profile = profile_from_graph(gmeta, hints)
    key = engine_key(
        bundle,
        graph,
        precision=precision,
        profile=profile,
        compute_capability=f"{capability[0]}.{capability[1]}",
        trt_version=str(trt.__version__),
        version_compatible=version_compatible,
    )
    return EngineCache(bundle.path / ENGINE_DIR, listed=bundle.files, listed_root=bundle.path).lookup(key).path


@dataclass
class ListedPlan:
    """A plan listed and hashed in a bundle's ``meta.json``, with its verified sidecar key."""

    name: str  # bundle-relative, ``engines/<graph>.<precision>...plan``
    path: Path
    key: dict[str, Any]


def listed_plans(bundle: Any, graph: str) -> tuple[list[ListedPlan], list[str]]:
    """The plans of ``graph`` that ``bundle`` vouches for, and why the others were set aside.

    A plan qualifies only when it and its ``.json`` sidecar are listed in ``meta.json`` with
    their current sha256, the sidecar names this graph and the hash of the graph's current
    ONNX file (``onnx_sha256``: without its metadata), and the plan's sha256 equals the sidecar's.
    Nothing is globbed from disk.
    """
    gmeta = bundle.meta.get("graphs", {}).get(graph)
    if gmeta is None:
        raise ConfigError(f"bundle has no exported graph {graph!r} (graphs: {sorted(bundle.meta.get('graphs', {}))})")
    # the plan may come from the FP32 graph or from one of its precision variants (int8 QDQ)
    sources = {gmeta["file"]} | {
        entry.get("file") for record in (bundle.meta.get("precisions") or {}).values() if isinstance(record, dict)
        for g, entry in (record.get("graphs") or {}).items() if g == graph and isinstance(entry, dict)}
    onnx_sha = {onnx_sha256(bundle.file(name)) for name in sources if name in bundle.files}
    found: list[ListedPlan] = []
    rejected: list[str] = []
    for name in sorted(bundle.files):
        if not (name.startswith(f"{ENGINE_DIR}/{graph}.") and name.endswith(".plan")):
            continue
        side_name = name[: -len(".plan")] + ".json"
        why = _plan_problem(bundle, name, side_name, graph, onnx_sha)
        if isinstance(why, str):
            rejected.append(f"{name}: {why}")
        else:
            found.append(ListedPlan(name, bundle.file(name), why))
    return found, rejected


def _plan_problem(bundle: Any, name: str, side_name: str, graph: str, onnx_sha: set[str]
                  ) -> str | dict[str, Any]:
    """The sidecar key of a listed plan, or why the plan cannot be trusted."""
    if side_name not in bundle.files:
        return f"its sidecar {side_name} is not listed in meta.json"
    side_bytes = read_bytes_bounded(bundle.file(side_name), limit=SIDECAR_MAX_BYTES, what="plan sidecar",
                                    error=ConfigError)
    plan_sha = hashlib.sha256(bundle.file(name).read_bytes()).hexdigest()
    if hashlib.sha256(side_bytes).hexdigest() != bundle.files[side_name] or plan_sha != bundle.files[name]:
        return "plan or sidecar differs from its sha256 in meta.json"
    try:
        record = json.loads(side_bytes)
        key = record["key"]
        if not isinstance(key, dict):
            raise TypeError("key is not an object")
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        return f"sidecar unreadable ({str(exc)[:120]})"
    if key.get("graph") != graph:
        return f"sidecar key is for graph {str(key.get('graph'))[:40]!r}"
    if key.get("onnx_sha256") not in onnx_sha:
        return "built from another ONNX file (re-run `edgesentry build`)"
    if record.get("plan_sha256") != plan_sha:
        return "plan sha256 differs from its sidecar (truncated or corrupt)"
    return key
