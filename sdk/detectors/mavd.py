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

import argparse
import json
import os
import re
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry._threads import single_threaded_blas
from edgesentry.bundle import Bundle, write_bundle
from edgesentry.detector import Detector
from edgesentry.errors import BundleError, ConfigError, InputError, WeightsError, describe
from edgesentry.result import Result

FRAMES_PER_SNIPPET = 16
DIMS = {"rgb": 1024, "flow": 1024, "audio": 128}
GRAPH_INPUTS = ("rgb", "flow", "audio")
GRAPH_OUTPUTS = ("v_feat", "a_feat", "f_feat")
CONVERT_HELP = "convert the official MAVD weights (a directory with {v,a,f,va,vf,vaf}_model.pth) into a bundle"


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


def build_model(tensors: Mapping[str, np.ndarray], positional: str = "matrix", fused: bool = True) -> Any:
    """The torch ``MAVD`` network from bundle tensors (strict: ``WeightsError`` on mismatch).

    ``fused`` (default) builds the copy-free layout the detector and the ONNX export use;
    ``fused=False`` the official computation (the benchmark's baseline).
    """
    import torch

    from edgesentry.models.mavd import MAVD

    model = MAVD(positional=positional, fused=fused)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise WeightsError(f"MAVD bundle weights do not match: missing {missing}, unexpected {unexpected}")
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}, strict=True)
    return model.eval()


class FeatureGraph:
    """Factory of the exportable graph: (rgb, flow, audio) -> (v_feat, a_feat, f_feat)."""

    @staticmethod
    def build(model: Any) -> Any:
        from torch import nn

        class _Graph(nn.Module):
            def __init__(self, m: Any):
                super().__init__()
                self.m = m

            def forward(self, rgb: Any, flow: Any, audio: Any) -> Any:
                return self.m.features(rgb, flow, audio)

        return _Graph(model).eval()


# ------------------------------------------------------------------------------ detector
class MAVDDetector(Detector):
    """MAVD violence detector; ``predict({"rgb", "flow", "audio"})``, see the module docstring."""

    family = "mavd"

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
        super().__init__(**kwargs)
        self.options = options or MAVDOptions()
        self.tensors = dict(tensors)
        self.params = head_params(self.tensors)
        self.backend = backend
        self.runner = self._make_runner(backend, onnx_path, providers)

    def _make_runner(self, backend: str, onnx_path: Any, providers: Sequence[Any]) -> Any:
        from edgesentry.backends import InputSpec

        specs = {
            "rgb": InputSpec("float32", (None, None, 1024)),
            "flow": InputSpec("float32", (None, None, 1024)),
            "audio": InputSpec("float32", (None, None, 128)),
        }
        if backend == "torch":
            from edgesentry.backends import TorchRunner

            self.model = build_model(self.tensors, self.options.positional)
            return TorchRunner(FeatureGraph.build(self.model), specs, GRAPH_OUTPUTS)
        if backend == "onnxruntime":
            from edgesentry.backends import OrtRunner

            if onnx_path is None:
                raise ConfigError("backend 'onnxruntime' needs the bundle's features.onnx (run `edgesentry export`)")
            return OrtRunner(onnx_path, specs, GRAPH_OUTPUTS, providers=providers)
        raise ConfigError(f"MAVD runs on backend 'torch' or 'onnxruntime'; got {backend!r}")

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
                    "(pass trim=True to cut every stream to the shortest)"
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
        from edgesentry.kernels import mavd as kernels
        from edgesentry.kernels.mavd import reference

        b, t, _ = v.shape
        emb, tier = kernels.align_fuse(
            v.reshape(b * t, -1),
            a.reshape(-1, a.shape[-1]),
            f.reshape(b * t, -1),
            self.params,
            tier=self.kernels,
        )
        emb = np.asarray(emb).reshape(b, t, -1)
        if tier == "reference":  # the float64 specification end to end
            logits = kernels.fusion_head(emb, self.params)
        else:
            logits, _ = kernels.fast_fusion_head(emb, self.params)
        extras: dict[str, Any] = {}
        if self.options.return_features:
            extras["va_feat"] = reference._mlp3(a, self.params, "va").astype(np.float32)
            extras["vf_feat"] = reference._mlp3(f, self.params, "vf").astype(np.float32)
        return kernels.sigmoid(logits), tier, extras

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
        value = _load_npy(value)
    elif isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, os.PathLike)) for v in value):
        parts = [_load_npy(p) for p in value]
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


def _load_npy(path: str | os.PathLike) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"feature file {str(p)!r} does not exist")
    try:
        return np.load(p, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"{p} is not a readable .npy array: {exc}") from None


IO_SPEC = {
    "input": {"rgb": "(crops, T, 1024) I3D", "flow": "(crops, T, 1024) I3D", "audio": "(T, 128) VGGish"},
    "output": "snippet_scores (T,), frame_scores (16 T,)",
}


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
    chosen = resolve_backend(backend, has_onnx=has_onnx, has_weights=bundle.has("weights.safetensors"))
    if chosen == "tensorrt":
        raise ConfigError("MAVD has no TensorRT path yet; use backend='onnxruntime' or 'torch'")
    try:
        tensors = bundle.load_tensors()
    except BundleError:
        raise
    det = MAVDDetector(
        tensors,
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
    export_onnx: bool = False,
) -> Bundle:
    """Official ``saved_models/ap86.07/*.pth`` -> bundle (weights.safetensors, folded weight norm)."""
    from edgesentry.models.mavd import MAVD, load_official, read_official

    model = load_official(MAVD(), read_official(os.fspath(weights_dir)))
    tensors = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    bundle = write_bundle(
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
    if export_onnx:
        from edgesentry.export.onnx import export_bundle

        export_bundle(bundle)
    return bundle


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("weights", help="directory with {v,a,f,va,vf,vaf}_model.pth (official saved_models/ap86.07)")
    parser.add_argument("--trim", action="store_true", help="default to trimming unequal T across modalities")
    parser.add_argument("--onnx", action="store_true", help="also export features.onnx into the bundle")


def convert_from_args(args: argparse.Namespace) -> Bundle:
    return convert(args.weights, output=args.output, overwrite=args.force, trim=args.trim, export_onnx=args.onnx)


def add_detect_arguments(parser: argparse.ArgumentParser) -> None:
    from edgesentry.cli._args import add_backend_args, add_kernel_args

    parser.add_argument("bundle", help="MAVD bundle directory")
    parser.add_argument("--rgb", nargs="+", required=True, help="RGB feature .npy: one per crop (XD layout)")
    parser.add_argument("--flow", nargs="+", required=True, help="flow feature .npy: one per crop")
    parser.add_argument("--audio", required=True, help="VGGish feature .npy of the video")
    parser.add_argument("--trim", action="store_true", help="cut unequal streams to the shortest T")
    parser.add_argument("--threshold", type=float, default=None, help="score threshold for the label")
    parser.add_argument("--out", default=None, help="directory for <stem>_frame_scores.npy and a JSON summary")
    add_backend_args(parser)
    add_kernel_args(parser)


def detect_from_args(args: argparse.Namespace) -> int:
    import edgesentry

    det = edgesentry.load(
        args.bundle,
        backend=args.backend,
        kernels=args.kernels,
        threshold=args.threshold,
        trim=args.trim or None,
    )
    start = time.perf_counter()
    res = det.predict({"rgb": list(args.rgb), "flow": list(args.flow), "audio": args.audio})
    elapsed = time.perf_counter() - start
    stem = xd_video_id(args.rgb[0])
    summary = {"video": stem, "seconds": elapsed, **res.summary()}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / f"{stem}_frame_scores.npy", res.extras["frame_scores"])
        np.save(out / f"{stem}_snippet_scores.npy", res.extras["snippet_scores"])
        (out / f"{stem}_summary.json").write_text(json.dumps(summary, indent=2))
    label = "" if res.label is None else f", violent={res.label}"
    print(
        f"{stem}: {res.info['snippets']} snippets x {res.info['crops']} crops, max score {res.score:.4f}"
        f"{label} in {elapsed:.3f}s"
    )
    return 0


# ------------------------------------------------------------------------ evaluation
_CROP_SUFFIX = re.compile(r"(__\d+|__vggish)?\.npy$")


def xd_video_id(path: str | os.PathLike) -> str:
    """``.../v=abc__#1_label_B4-0-0__3.npy`` -> ``v=abc__#1_label_B4-0-0`` (XD-Violence names)."""
    return _CROP_SUFFIX.sub("", Path(path).name)


def read_annotations(path: str | os.PathLike) -> dict[str, list[tuple[int, int]]]:
    """XD-Violence ``annotations.txt``: ``<id> s1 e1 [s2 e2 ...]`` (frames) -> id -> intervals.

    A trailing ``.mp4`` on the id is dropped. Normal videos are absent (all-zero labels).
    """
    out: dict[str, list[tuple[int, int]]] = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        vid = parts[0][:-4] if parts[0].endswith(".mp4") else parts[0]
        nums = parts[1:]
        if len(nums) % 2:
            raise InputError(f"{path}:{lineno}: expected start/end frame pairs after the id; got {len(nums)} numbers")
        try:
            vals = [int(n) for n in nums]
        except ValueError:
            raise InputError(f"{path}:{lineno}: frame numbers must be integers; got {nums}") from None
        out[vid] = [(vals[i], vals[i + 1]) for i in range(0, len(vals), 2)]
    return out


def frame_labels(
    video_ids: Sequence[str],
    snippet_counts: Sequence[int],
    annotations: Mapping[str, Sequence[tuple[int, int]]],
) -> np.ndarray:
    """Frame-level 0/1 ground truth as the official ``gt.npy`` (XDVioDet ``make_gt``).

    Each video contributes ``16 T`` frames; frames in an annotated ``[start, end)`` interval
    (clipped to the video) are 1. Videos without annotations (normal, ``label_A``) are all 0;
    a violent-named video without annotations is an ``InputError``.
    """
    if len(video_ids) != len(snippet_counts):
        raise InputError(f"{len(video_ids)} video ids but {len(snippet_counts)} snippet counts")
    parts = []
    for vid, t in zip(video_ids, snippet_counts):
        n = FRAMES_PER_SNIPPET * int(t)
        gt = np.zeros(n, np.uint8)
        if vid in annotations:
            for s, e in annotations[vid]:
                gt[max(0, s) : max(0, min(e, n))] = 1
        elif "_label_A" not in vid:
            raise InputError(f"video {vid!r} is not normal (no '_label_A') but has no annotation")
        parts.append(gt)
    return np.concatenate(parts) if parts else np.zeros(0, np.uint8)


def read_feature_list(path: str | os.PathLike) -> list[str]:
    """A MAVD/XD ``.list`` file: one path per line (relative paths resolve against its folder)."""
    root = Path(path).parent
    lines = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    return [str(p if Path(p).is_absolute() else root / p) for p in lines]


def group_crops(rgb_paths: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Consecutive list lines of one video (crop-major per video) -> [(video id, paths)]."""
    videos: list[tuple[str, list[str]]] = []
    for p in rgb_paths:
        vid = xd_video_id(p)
        if videos and videos[-1][0] == vid:
            videos[-1][1].append(p)
        else:
            videos.append((vid, [p]))
    return videos


def evaluate(
    det: MAVDDetector,
    rgb_list: str | os.PathLike,
    annotations: str | os.PathLike,
    *,
    flow_list: str | os.PathLike | None = None,
    audio_list: str | os.PathLike | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Frame-level AP as the official ``test()``: every video of the lists through ``det``,
    frame scores concatenated in list order, ``pr_auc`` against labels from ``annotations``.

    ``flow_list``/``audio_list`` default to the RGB list's name with ``video`` replaced by
    ``flow``/``audio`` (the MAVD ``list/`` naming).
    """
    from edgesentry.metrics import pr_auc

    rgb_list = Path(rgb_list)
    flow_list = Path(flow_list) if flow_list else rgb_list.with_name(rgb_list.name.replace("video", "flow"))
    audio_list = Path(audio_list) if audio_list else rgb_list.with_name(rgb_list.name.replace("video", "audio"))
    for name, p in (("flow", flow_list), ("audio", audio_list)):
        if not p.is_file():
            raise InputError(f"{name} list {str(p)!r} not found; pass it explicitly")
    rgb_videos = group_crops(read_feature_list(rgb_list))
    flow_videos = group_crops(read_feature_list(flow_list))
    audio_paths = read_feature_list(audio_list)
    if not (len(rgb_videos) == len(flow_videos) == len(audio_paths)):
        raise InputError(
            f"lists disagree: {len(rgb_videos)} RGB videos, {len(flow_videos)} flow videos, "
            f"{len(audio_paths)} audio files"
        )
    annos = read_annotations(annotations)
    scores, ids, counts = [], [], []
    for i, ((vid, rgb), (fvid, flow), audio) in enumerate(zip(rgb_videos, flow_videos, audio_paths)):
        if fvid != vid or xd_video_id(audio) != vid:
            raise InputError(f"video {i}: RGB {vid!r}, flow {fvid!r} and audio {xd_video_id(audio)!r} differ")
        res = det.predict({"rgb": rgb, "flow": flow, "audio": audio})
        scores.append(res.extras["frame_scores"])
        ids.append(vid)
        counts.append(res.info["snippets"])
        if progress:
            print(f"\r{i + 1}/{len(rgb_videos)} videos", end="", flush=True)
    if progress:
        print()
    gt = frame_labels(ids, counts, annos)
    frame_scores = np.concatenate(scores)
    return {
        "ap": pr_auc(gt, frame_scores),
        "videos": len(ids),
        "frames": int(gt.size),
        "positive_frames": int(gt.sum()),
        "gt": gt,
        "frame_scores": frame_scores,
    }
