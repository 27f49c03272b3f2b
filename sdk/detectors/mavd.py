"""MAVD: multimodal (RGB, optical flow, audio) violence detection per video snippet.

Seed: "Aligning First, Then Fusing" (Jin, Zhu, Sun 2025), github.com/xjpp2016/MAVD.

    det = edgesentry.load("mavd_bundle")                  # from `edgesentry convert mavd WEIGHTS -o ...`
    res = det.predict({"rgb": rgb, "flow": flow, "audio": audio})
    res.score                        # max snippet score
    res.extras["snippet_scores"]     # (T,) mean over crops of the fused sigmoid scores
    res.extras["frame_scores"]       # (16 T,) each snippet score repeated 16 times (official test)

Inputs are the XD-Violence features on one 16-frame snippet grid: ``rgb`` and ``flow`` I3D
(1024-d) as ``(crops, T, 1024)`` or ``(T, 1024)``, ``audio`` VGGish (128-d) as ``(T, 128)``
(once per video, broadcast to the crops) or ``(crops, T, 128)``. A value may also be a
``.npy`` path, or a list of per-crop ``.npy`` paths (the XD-Violence release has one file
per crop for RGB/flow and one per video for audio). Unequal T across modalities is an
``InputError`` unless ``trim=True`` (then every stream is cut to the shortest, as the XD
loaders do for flow that is one snippet short).

Pipeline: the graph (torch or ONNX Runtime) computes the three unimodal features; the
post-processing runs the fused align-and-fuse kernel (``edgesentry.kernels.mavd``: va/vf
alignment MLPs + fusion embedding per snippet), the causal TCN and MIL head, the sigmoid,
and the mean over crops. ``stream()`` gives a causal online scorer (see ``MAVDStream``).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgesentry._threads import single_threaded_blas
from edgesentry.bundle import Bundle, write_bundle
from edgesentry.detector import Detector
from edgesentry.errors import ConfigError, InputError, describe, option
from edgesentry.io.files import read_npy
from edgesentry.kernels import mavd as mavd_kernels
from edgesentry.result import Result

FRAMES_PER_SNIPPET = 16
DIMS = {"rgb": 1024, "flow": 1024, "audio": 128}
GRAPH_INPUTS = ("rgb", "flow", "audio")
GRAPH_OUTPUTS = ("v_feat", "a_feat", "f_feat")


@dataclass
class MAVDOptions:
    """Detector options. ``positional``: how the torch graph computes the positional
    attention (``"matrix"`` = official T x T product, ``"scan"`` = O(T) scans)."""

    trim: bool = False
    return_features: bool = False
    positional: str = "matrix"

    def __post_init__(self) -> None:
        if self.positional not in ("matrix", "scan"):
            raise ConfigError(f"positional must be 'matrix' or 'scan'; got {self.positional!r}")


@dataclass
class _Prepared:
    rgb: np.ndarray  # (B, T, 1024) float32
    flow: np.ndarray  # (B, T, 1024)
    audio: np.ndarray  # (1 or B, T, 128)
    trimmed: dict[str, int]


# ------------------------------------------------------------------------------ weights
def head_params(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Kernel parameter names (``edgesentry.kernels.mavd``) from the bundle's state dict."""
    p: dict[str, np.ndarray] = {}
    for name, prefix in (("va", "va_model.regressor"), ("vf", "vf_model.regressor")):
        for i, idx in enumerate((0, 3, 6)):
            p[f"{name}{i}.w"] = tensors[f"{prefix}.{idx}.weight"]
            p[f"{name}{i}.b"] = tensors[f"{prefix}.{idx}.bias"]
    for i, idx in ((1, 0), (2, 3)):
        p[f"e{i}.w"] = tensors[f"vaf_model.embedding.{idx}.weight"]
        p[f"e{i}.b"] = tensors[f"vaf_model.embedding.{idx}.bias"]
    for i in range(3):
        for c in ("conv1", "conv2"):
            p[f"tcn{i}.{c}.w"] = tensors[f"vaf_model.tcn.tcn.network.{i}.{c}.weight"]
            p[f"tcn{i}.{c}.b"] = tensors[f"vaf_model.tcn.tcn.network.{i}.{c}.bias"]
    for i, idx in enumerate((0, 3, 5)):
        p[f"mil{i}.w"] = tensors[f"vaf_model.mil.regressor.{idx}.weight"]
        p[f"mil{i}.b"] = tensors[f"vaf_model.mil.regressor.{idx}.bias"]
    return {k: np.ascontiguousarray(v, np.float32) for k, v in p.items()}


# ------------------------------------------------------------------------------ detector
class MAVDDetector(Detector):
    """MAVD violence detector; ``predict({"rgb", "flow", "audio"})``, see the module docstring."""

    family = "mavd"
    input_kinds = "one video's features: a dict with 'rgb', 'flow', 'audio' (arrays or .npy paths)"

    def __init__(
        self,
        tensors: Mapping[str, np.ndarray],
        options: MAVDOptions | None = None,
        *,
        backend: str = "torch",
        onnx_path: str | os.PathLike | None = None,
        providers: Sequence[Any] = ("CPUExecutionProvider",),
        **kwargs: Any,
    ):
        super().__init__(kernel_ops=(mavd_kernels.ALIGN_FUSE,), **kwargs)
        self.options = options or MAVDOptions()
        self.tensors = dict(tensors)
        self.params = head_params(self.tensors)
        self.backend = backend
        self.runner = self._make_runner(backend, onnx_path, providers)

    def _make_runner(self, backend: str, onnx_path: Any, providers: Sequence[Any]) -> Any:
        from edgesentry.backends import InputSpec, make_runner

        specs = {
            "rgb": InputSpec("float32", (None, None, 1024)),
            "flow": InputSpec("float32", (None, None, 1024)),
            "audio": InputSpec("float32", (None, None, 128)),
        }

        def features() -> Any:
            from edgesentry.models.mavd import MAVDFeatures, build_from_tensors

            return MAVDFeatures(build_from_tensors(self.tensors, self.options.positional))

        return make_runner(backend, specs, GRAPH_OUTPUTS, module=features, onnx=onnx_path, providers=providers,
                           what="the MAVD features graph")

    # ---------------------------------------------------------------------- stages
    def preprocess(self, x: Any) -> _Prepared:
        if not isinstance(x, Mapping):
            raise InputError(f"MAVD expects a dict with keys 'rgb', 'flow', 'audio'; got {describe(x)}")
        missing = [k for k in GRAPH_INPUTS if k not in x]
        extra = sorted(set(x) - set(GRAPH_INPUTS))
        if missing or extra:
            raise InputError(f"MAVD input needs keys {list(GRAPH_INPUTS)}; missing {missing}, unexpected {extra}")
        arrays = {k: _as_stream(k, x[k]) for k in GRAPH_INPUTS}
        crops = arrays["rgb"].shape[0]
        if arrays["flow"].shape[0] != crops:
            raise InputError(f"rgb has {crops} crops but flow has {arrays['flow'].shape[0]}; they must match")
        if arrays["audio"].shape[0] not in (1, crops):
            raise InputError(
                f"audio must be (T, 128) or ({crops}, T, 128) for {crops} crops; got {arrays['audio'].shape}"
            )
        lengths = {k: a.shape[1] for k, a in arrays.items()}
        trimmed: dict[str, int] = {}
        if len(set(lengths.values())) > 1:
            if not self.options.trim:
                raise InputError(
                    f"rgb, flow and audio must have the same number of snippets T; got {lengths} "
                    f"(pass {option('trim', True)} to cut every stream to the shortest)"
                )
            t = min(lengths.values())
            trimmed = {k: n - t for k, n in lengths.items() if n != t}
            arrays = {k: a[:, :t] for k, a in arrays.items()}
        return _Prepared(arrays["rgb"], arrays["flow"], arrays["audio"], trimmed)

    def forward(self, prepared: _Prepared) -> dict[str, np.ndarray]:
        return self.runner.infer({"rgb": prepared.rgb, "flow": prepared.flow, "audio": prepared.audio})

    def postprocess(self, raw: Mapping[str, np.ndarray], prepared: _Prepared) -> Result:
        scores, tier, extras = self.score_features(raw["v_feat"], raw["a_feat"], raw["f_feat"])
        snippet = scores.mean(axis=0)
        extras.update(snippet_scores=snippet, frame_scores=np.repeat(snippet, FRAMES_PER_SNIPPET), crop_scores=scores)
        if self.options.return_features:
            extras.update({k: raw[k] for k in GRAPH_OUTPUTS})
        info = {
            "kernel_tier": tier,
            "backend": self.backend,
            "crops": int(scores.shape[0]),
            "snippets": int(scores.shape[1]),
        }
        if prepared.trimmed:
            info["trimmed"] = prepared.trimmed
        return Result(score=float(snippet.max()), extras=extras, info=info)

    def score_features(self, v: np.ndarray, a: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, str, dict[str, Any]]:
        """Align-and-fuse kernel + TCN/MIL head: features -> per-crop probabilities (B, T)."""
        with single_threaded_blas():  # small matmuls: threads would only slow the next graph call
            return self._score_features(v, a, f)

    def _score_features(self, v: np.ndarray, a: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, str, dict[str, Any]]:
        b, t, _ = v.shape
        emb, tier = mavd_kernels.align_fuse(
            v.reshape(b * t, -1),
            a.reshape(-1, a.shape[-1]),
            f.reshape(b * t, -1),
            self.params,
            tier=self.kernels,
        )
        emb = np.asarray(emb).reshape(b, t, -1)
        if tier == "reference":  # the float64 specification end to end
            logits = mavd_kernels.fusion_head(emb, self.params)
        else:
            logits, _ = mavd_kernels.fast_fusion_head(emb, self.params)
        extras: dict[str, Any] = {}
        if self.options.return_features:
            extras["va_feat"] = mavd_kernels.reference._mlp3(a, self.params, "va").astype(np.float32)
            extras["vf_feat"] = mavd_kernels.reference._mlp3(f, self.params, "vf").astype(np.float32)
        return mavd_kernels.sigmoid(logits), tier, extras

    # ---------------------------------------------------------------------- streaming
    def stream(self, window: int = 64, delay: int = 0) -> MAVDStream:
        """An online scorer with a look-back of ``window`` snippets and ``delay`` snippets of
        look-ahead (see ``MAVDStream``)."""
        return MAVDStream(self, window, delay)

    # ---------------------------------------------------------------------- config
    def config(self) -> dict[str, Any]:
        return {"architecture": "mavd-ap86.07", **asdict(self.options)}

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["graph"] = self.runner.describe()
        return out

    def bundle_payload(self) -> dict[str, Any]:
        return {"config": self.config(), "tensors": self.tensors, "io": IO_SPEC}


class MAVDStream:
    """Online scoring: ``push`` one snippet's features as they arrive, get a snippet score.

    Each push runs the network on the last ``window`` snippets and returns the crop-mean
    score of the snippet ``delay`` steps back (``None`` until that many snippets arrived;
    ``flush()`` returns the held-back ones at the end). ``delay=0`` is causal: the newest
    snippet is scored at once.

    Online scores differ from offline ones because the transformers' attention (and the
    positional normalisation) see only the window, and, with a small ``delay``, none or few
    future snippets; the k=3 embedding conv sees a zero instead of the next snippet when
    ``delay=0``. The TCN is causal with a 15-snippet receptive field and is unaffected once
    ``window >= 15 + delay``. Cost per push: one forward over ``window`` snippets.
    """

    def __init__(self, detector: MAVDDetector, window: int = 64, delay: int = 0):
        if int(window) < 1:
            raise ConfigError(f"stream window must be >= 1 snippet; got {window}")
        if not 0 <= int(delay) < int(window):
            raise ConfigError(f"stream delay must satisfy 0 <= delay < window ({window}); got {delay}")
        self.detector = detector
        self.window = int(window)
        self.delay = int(delay)
        self._buf: dict[str, deque] = {k: deque(maxlen=self.window) for k in GRAPH_INPUTS}
        self._last: np.ndarray | None = None
        self.count = 0

    def push(self, rgb: Any, flow: Any, audio: Any) -> float | None:
        """Features of one snippet: rgb/flow ``(crops, 1024)`` or ``(1024,)``, audio ``(128,)``
        or ``(crops, 128)`` -> the score of snippet ``count - 1 - delay`` (or ``None``)."""
        item = {}
        for key, val in (("rgb", rgb), ("flow", flow), ("audio", audio)):
            arr = np.asarray(val, dtype=np.float32)
            if arr.ndim == 1:
                arr = arr[None]
            if arr.ndim != 2 or arr.shape[1] != DIMS[key]:
                raise InputError(f"stream push: {key} must be ({DIMS[key]},) or (crops, {DIMS[key]}); got {arr.shape}")
            if self._buf[key] and self._buf[key][-1].shape != arr.shape:
                raise InputError(f"stream push: {key} changed shape from {self._buf[key][-1].shape} to {arr.shape}")
            item[key] = arr
        for key, arr in item.items():
            self._buf[key].append(arr)
        self.count += 1
        window = {k: np.stack(list(v), axis=1) for k, v in self._buf.items()}
        raw = self.detector.forward(self.detector.preprocess(window))
        scores, _, _ = self.detector.score_features(raw["v_feat"], raw["a_feat"], raw["f_feat"])
        self._last = scores.mean(axis=0)
        if self.count <= self.delay:
            return None
        return float(self._last[-1 - self.delay])

    def flush(self) -> list[float]:
        """Scores of the last ``min(delay, count)`` snippets, scored with what arrived."""
        if self._last is None:
            return []
        held = min(self.delay, self.count)
        return [float(v) for v in self._last[len(self._last) - held :]]

    def reset(self) -> None:
        for buf in self._buf.values():
            buf.clear()
        self._last = None
        self.count = 0


def _as_stream(key: str, value: Any) -> np.ndarray:
    """One modality as float32 (crops, T, D); accepts arrays, a .npy path or per-crop paths."""
    dim = DIMS[key]
    if isinstance(value, (str, os.PathLike)):
        value = read_npy(value)
    elif isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, os.PathLike)) for v in value):
        parts = [read_npy(p) for p in value]
        shapes = {p.shape for p in parts}
        if len(shapes) != 1:
            raise InputError(f"{key}: per-crop files have different shapes {sorted(shapes)}")
        value = np.stack(parts)
    if not isinstance(value, np.ndarray):
        try:
            value = np.asarray(value)
        except Exception:
            raise InputError(f"{key} must be an array or .npy path(s); got {describe(value)}") from None
    if value.dtype.kind not in "iuf":
        raise InputError(f"{key} must be numeric; got dtype {value.dtype}")
    if value.ndim == 2:
        value = value[None]
    if value.ndim != 3 or value.shape[-1] != dim:
        raise InputError(f"{key} must be (T, {dim}) or (crops, T, {dim}); got shape {value.shape}")
    if value.shape[0] == 0 or value.shape[1] == 0:
        raise InputError(f"{key} is empty: shape {value.shape}; need at least one crop and one snippet")
    out = np.ascontiguousarray(value, dtype=np.float32)
    if not np.isfinite(out).all():
        raise InputError(f"{key} has {int((~np.isfinite(out)).sum())} NaN/Inf values")
    return out


IO_SPEC = {
    "input": {"rgb": "(crops, T, 1024) I3D", "flow": "(crops, T, 1024) I3D", "audio": "(T, 128) VGGish"},
    "output": "snippet_scores (T,), frame_scores (16 T,)",
}


# ------------------------------------------------------------------------------ serving
#: the inputs of a served MAVD: the three feature streams, (crops, T, D) float32
SERVING_INPUTS = {k: ("float32", [-1, -1, DIMS[k]]) for k in GRAPH_INPUTS}


def serving_feed(x: Any) -> dict[str, np.ndarray]:
    """What a client sends for one input ``predict`` takes: each stream as (crops, T, D) float32
    (``.npy`` paths and per-crop lists read here)."""
    if not isinstance(x, Mapping) or sorted(x) != sorted(GRAPH_INPUTS):
        raise InputError(f"MAVD expects a dict with keys {list(GRAPH_INPUTS)}; got {describe(x)}")
    return {k: _as_stream(k, x[k]) for k in GRAPH_INPUTS}


# ------------------------------------------------------------------------ family hooks
def build(**_: Any) -> MAVDDetector:
    raise ConfigError(
        "MAVD needs trained weights: run `edgesentry convert mavd WEIGHTS_DIR -o BUNDLE`, then edgesentry.load(BUNDLE)"
    )


def from_bundle(
    bundle: Bundle,
    *,
    backend: str = "auto",
    kernels: str = "auto",
    threshold: float | None = None,
    trim: bool | None = None,
    return_features: bool | None = None,
    positional: str | None = None,
    providers: Sequence[Any] = ("CPUExecutionProvider",),
) -> MAVDDetector:
    from edgesentry.backends import resolve_backend

    cfg = bundle.config
    opts = MAVDOptions(
        trim=cfg.get("trim", False) if trim is None else trim,
        return_features=cfg.get("return_features", False) if return_features is None else return_features,
        positional=cfg.get("positional", "matrix") if positional is None else positional,
    )
    graph = bundle.meta.get("graphs", {}).get("features")
    has_onnx = graph is not None and bundle.has(graph["file"])
    chosen = resolve_backend(backend, has_onnx=has_onnx, has_weights=bundle.has("weights.safetensors"),
                             measured=True)
    det = MAVDDetector(
        bundle.load_tensors(),
        opts,
        backend=chosen,
        onnx_path=bundle.file(graph["file"]) if has_onnx else None,
        providers=providers,
        kernels=kernels,
        calibration=bundle.calibration,
    )
    if threshold is not None:
        det.threshold = threshold
    return det


def convert(
    weights_dir: str | os.PathLike,
    *,
    output: str | os.PathLike,
    overwrite: bool = False,
    trim: bool = False,
) -> Bundle:
    """Official ``saved_models/ap86.07/*.pth`` -> bundle (weights.safetensors, folded weight norm).

    ``edgesentry.export.onnx.export_bundle`` (CLI: ``--onnx``) then adds ``features.onnx``.
    """
    from edgesentry.models.mavd import MAVD, load_official, read_official

    model = load_official(MAVD(), read_official(os.fspath(weights_dir)))
    tensors = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    return write_bundle(
        output,
        "mavd",
        config={
            "architecture": "mavd-ap86.07",
            "trim": trim,
            "return_features": False,
            "positional": "matrix",
        },
        preprocessing={
            "features": "XD-Violence I3D RGB/flow 1024-d x crops, VGGish 128-d",
            "frames_per_snippet": FRAMES_PER_SNIPPET,
        },
        tensors=tensors,
        io=IO_SPEC,
        overwrite=overwrite,
        extra={"source": os.fspath(weights_dir), "checkpoint": "MAVD ap86.07"},
    )


DETECTOR = MAVDDetector
