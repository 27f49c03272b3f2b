"""ISSTAD industrial image anomaly detector (MAE ViT, pixel probability x reconstruction error).

    det = edgesentry.load("bundles/hazelnut")          # made by `edgesentry convert isstad`
    result = det.predict("part.png")                   # path, or (H, W, 3) uint8 RGB array
    result = det.predict(frame_bgr, color="bgr")       # OpenCV frames
    results = det.predict_batch(paths)                 # one batched graph call per chunk
    result.anomaly_map                                 # (H, W) float32 at the input resolution
    result.extras["pixel_map"]                         # (224, 224) the seed's map

Pipeline (the seed's, ``O:step2_pixel_ss_learning``):

- preprocess: RGB uint8 -> [0, 1] -> bilinear resize of the tensor to 224 x 224 *without*
  antialias (torchvision 0.13 on tensors) -> (x - 0.5) / 0.5. No crop, aspect ratio not kept.
- graph (``edgesentry.models.isstad.ISSTADGraph``; torch or ONNX Runtime): reconstruction and
  P = mean over the 12 pixel heads of softmax(.)[1]. Token permutation: identity by default
  (deterministic, exportable); ``permutation="official", seed=S`` replays the official random
  permutation (torch only), or pass a recorded (B, 196) permutation array.
- postprocess (``edgesentry.kernels.isstad``): R = channel-mean squared error, the 33-tap
  Gaussian (sigma 4, scipy borders), min-max and the fusion chosen by ``scoring``
  (``original`` = O's pixel map G(255 P Rn) and image score mean(G(Pb Rb)); ``ham``, ``alpha``,
  ``max``, ``weighted`` = the Extended repo's).

``Result.score`` is the image score (raw, or normalised to [0, 1] once calibrated);
``Result.anomaly_map`` the pixel map bilinearly resized to the input's size; ``extras``:
``probability`` (P), ``recon_error`` (R), ``pixel_map`` (all (224, 224) float32, model
resolution). ``label``/``mask`` follow the thresholds learned by ``calibrate``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgesentry.bundle import WEIGHTS_NAME, Bundle, write_bundle
from edgesentry.detector import Detector
from edgesentry.errors import BundleError, ConfigError, InputError, WeightsError, describe
from edgesentry.kernels import isstad as isstad_kernels
from edgesentry.result import Result

log = logging.getLogger("edgesentry.isstad")

Color = Literal["rgb", "bgr"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: Suffixes ``edgesentry calibrate`` picks from folders for this family.
SAMPLE_SUFFIXES = IMAGE_SUFFIXES
GRAPH_INPUTS = ("image",)
GRAPH_OUTPUTS = ("recon", "prob")
ONNX_NAME = "model.onnx"

#: The seed's preprocessing (O util/mtvecad.py:34-46), recorded in every bundle.
PREPROCESSING: dict[str, Any] = {
    "color": "RGB",
    "to_float": "uint8 / 255",
    "resize": [224, 224],
    "interpolation": "bilinear",
    "align_corners": False,
    "antialias": False,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
}


# --------------------------------------------------------------------------- options
@dataclass
class ISSTADOptions:
    """Run-time options stored in the bundle next to the architecture."""

    scoring: str = "original"
    top_p: float = 0.1
    w_m: float = 1.0
    w_r: float = 1.0
    permutation: str = "identity"  # "identity" | "official" (seeded) | "recorded" (array; run time only)
    seed: int | None = None
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.scoring not in isstad_kernels.SCORINGS:
            raise ConfigError(f"scoring must be one of {list(isstad_kernels.SCORINGS)}; got {self.scoring!r}")
        if not 0 < float(self.top_p) <= 1:
            raise ConfigError(f"top_p must lie in (0, 1]; got {self.top_p}")
        for name in ("w_m", "w_r"):
            if not math.isfinite(float(getattr(self, name))):
                raise ConfigError(f"{name} must be finite; got {getattr(self, name)}")
        if self.permutation not in ("identity", "official", "recorded"):
            raise ConfigError(f"permutation must be 'identity', 'official' (with seed) or a recorded (B, L) array; "
                              f"got {self.permutation!r}")
        if self.permutation == "official" and self.seed is None:
            raise ConfigError("permutation='official' needs an explicit seed=... (the official code draws an "
                              "unseeded random permutation on every call)")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer; got {self.batch_size!r}")


# ---------------------------------------------------------------------- preprocessing
def _resize_axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # torch upsample_bilinear2d, align_corners=False, no antialias: source index
    # scale * (dst + 0.5) - 0.5 as one fused multiply-add (exact product, one float32
    # rounding: that is what torch's CPU kernel computes), clamped at 0; the right neighbour
    # clamped at the edge. A plain float32 multiply then subtract is off by up to 1.5e-5.
    scale = np.float32(n_in) / np.float32(n_out)
    dst = np.arange(n_out, dtype=np.float64) + 0.5
    real = (np.float64(scale) * dst - 0.5).astype(np.float32)
    real = np.maximum(real, np.float32(0.0))
    i0 = real.astype(np.int64)
    lam1 = (real - i0.astype(np.float32)).astype(np.float32)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (np.float32(1.0) - lam1).astype(np.float32), lam1


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of the last two axes, exactly as ``F.interpolate(mode='bilinear',
    align_corners=False, antialias=False)`` (float32; no torch needed)."""
    x = np.asarray(x, dtype=np.float32)
    h_in, w_in = x.shape[-2:]
    h_out, w_out = size
    if (h_in, w_in) == (h_out, w_out):
        return x.copy()
    y0, y1, hy0, hy1 = _resize_axis(h_in, h_out)
    x0, x1, wx0, wx1 = _resize_axis(w_in, w_out)
    top = x[..., y0, :]
    bottom = x[..., y1, :]
    row_top = wx0 * top[..., x0] + wx1 * top[..., x1]
    row_bottom = wx0 * bottom[..., x0] + wx1 * bottom[..., x1]
    return (hy0[:, None] * row_top + hy1[:, None] * row_bottom).astype(np.float32)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB (PIL ``convert('RGB')``, as the seed)."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise InputError(f"image file {str(p)!r} does not exist")
    try:
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{str(p)!r} is not a readable image: {exc}") from None


def to_rgb_uint8(x: Any, color: Color = "rgb") -> tuple[np.ndarray, dict[str, Any]]:
    """Validate one input and return it as (H, W, 3) uint8 RGB plus source facts."""
    if color not in ("rgb", "bgr"):
        raise ConfigError(f"color must be 'rgb' or 'bgr'; got {color!r}")
    source: dict[str, Any] = {}
    if isinstance(x, (str, os.PathLike)):
        source["path"] = os.fspath(x)
        return read_image(x), source  # files are decoded to RGB; ``color`` is for arrays
    if hasattr(x, "convert") and hasattr(x, "size") and not isinstance(x, np.ndarray):  # a PIL image
        return np.asarray(x.convert("RGB")), source
    if not isinstance(x, np.ndarray):
        raise InputError(
            f"ISSTAD expects an (H, W, 3) uint8 RGB array, a PIL image or an image path; got {describe(x)}")
    if x.ndim != 3 or x.shape[2] != 3:
        raise InputError(f"ISSTAD expects an (H, W, 3) uint8 image (channel-last RGB); got shape {x.shape}")
    if x.dtype != np.uint8:
        raise InputError(f"ISSTAD expects uint8 pixels in [0, 255]; got dtype {x.dtype} (convert with "
                         "(img * 255).round().astype(np.uint8) for [0, 1] floats)")
    if min(x.shape[:2]) < 1:
        raise InputError(f"ISSTAD got an empty image of shape {x.shape}")
    return (x[..., ::-1] if color == "bgr" else x), source


def preprocess_rgb(rgb: np.ndarray, size: int = 224) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, size, size) float32 in [-1, 1], the seed's transform."""
    chw = np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
    resized = resize_bilinear(chw, (size, size))
    return ((resized - np.float32(0.5)) / np.float32(0.5)).astype(np.float32)


@dataclass
class _Prepared:
    tensor: np.ndarray  # (3, S, S) float32
    shape: tuple[int, int]  # input (H, W)
    source: dict[str, Any]
    rgb: np.ndarray | None = None


# --------------------------------------------------------------------------- detector
class ISSTADDetector(Detector):
    """ISSTAD on one backend. Inputs: (H, W, 3) uint8 RGB arrays (``color="bgr"`` for OpenCV),
    PIL images or image paths; see the module docstring for outputs."""

    family = "isstad"

    def __init__(self, arch: dict[str, Any], options: ISSTADOptions, runner: Any, *, backend: str,
                 bundle: Bundle | None = None, permutation_array: np.ndarray | None = None, keep_rgb: bool = False,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.arch = dict(arch)
        self.options = options
        self.runner = runner
        self.backend = backend
        self.bundle = bundle
        self.keep_rgb = keep_rgb
        self.img_size = int(self.arch.get("img_size", 224))
        self._permutation_array = permutation_array

    # ------------------------------------------------------------------------- stages
    def preprocess(self, x: Any, color: Color = "rgb") -> _Prepared:
        rgb, source = to_rgb_uint8(x, color)
        return _Prepared(preprocess_rgb(rgb, self.img_size), tuple(rgb.shape[:2]), source,
                         rgb if self.keep_rgb else None)

    def forward(self, prepared: _Prepared | Sequence[_Prepared]) -> dict[str, np.ndarray]:
        items = [prepared] if isinstance(prepared, _Prepared) else list(prepared)
        batch = np.stack([p.tensor for p in items])
        return self.runner.infer({"image": batch})

    def postprocess(self, raw: dict[str, np.ndarray], prepared: _Prepared | Sequence[_Prepared]) -> Result:
        return self._postprocess_batch(raw, [prepared] if isinstance(prepared, _Prepared) else list(prepared))[0]

    def _postprocess_batch(self, raw: dict[str, np.ndarray], items: list[_Prepared]) -> list[Result]:
        images = np.stack([p.tensor for p in items])
        o = self.options
        out, tier = isstad_kernels.isstad_fusion(raw["prob"], raw["recon"], images, scoring=o.scoring, top_p=o.top_p,
                                                 w_m=o.w_m, w_r=o.w_r, tier=self.kernels)
        results = []
        for b, item in enumerate(items):
            pixel = np.asarray(out["pixel_map"][b], dtype=np.float32)
            amap = resize_bilinear(pixel, item.shape) if item.shape != pixel.shape else pixel.copy()
            info = {"backend": self.backend, "kernel_tier": tier, "scoring": o.scoring,
                    "permutation": o.permutation, "input_shape": list(item.shape), **item.source}
            extras = {"probability": np.asarray(out["probability"][b]),
                      "recon_error": np.asarray(out["recon_error"][b]), "pixel_map": pixel}
            results.append(Result(score=float(out["score"][b]), anomaly_map=amap, extras=extras, info=info))
        return results

    # ----------------------------------------------------------------------- public API
    def predict(self, x: Any, *, color: Color = "rgb") -> Result:
        """One image: (H, W, 3) uint8 array (RGB, or BGR with ``color="bgr"``), PIL image or path."""
        return self.predict_batch([x], color=color)[0]

    def predict_batch(self, xs: Iterable[Any], *, color: Color = "rgb") -> list[Result]:
        """Many images; the graph runs on chunks of ``batch_size`` stacked inputs."""
        items = list(xs)
        if not items:
            raise InputError("predict_batch() got an empty sequence; pass at least one image")
        results: list[Result] = []
        step = self.options.batch_size
        for start in range(0, len(items), step):
            chunk = items[start:start + step]
            t0 = time.perf_counter()
            prepared = [self.preprocess(x, color) for x in chunk]
            t1 = time.perf_counter()
            raw = self.forward(prepared)
            t2 = time.perf_counter()
            chunk_results = self._postprocess_batch(raw, prepared)
            t3 = time.perf_counter()
            n = len(chunk)
            for res in chunk_results:  # per-image share of the chunk's stage times
                res.timings.update(preprocess=(t1 - t0) / n, graph=(t2 - t1) / n, postprocess=(t3 - t2) / n,
                                   total=(t3 - t0) / n)
                res.info["batch"] = n
                results.append(self.finalize(res))
        return results

    # ---------------------------------------------------------------------- config
    def config(self) -> dict[str, Any]:
        opts = asdict(self.options)
        if opts["permutation"] == "recorded":  # the array is not stored in bundles
            opts["permutation"] = "identity"
        return {"model": dict(self.arch), **opts}

    def info(self) -> dict[str, Any]:
        out = super().info()
        out.update(backend=self.backend, graph={"inputs": list(GRAPH_INPUTS), "outputs": list(GRAPH_OUTPUTS)},
                   preprocessing=dict(PREPROCESSING), bundle=None if self.bundle is None else str(self.bundle.path))
        return out

    def calibration_context(self) -> dict[str, Any]:
        """What the calibrated scores depend on (stored beside the thresholds; a bundle
        opened with another scoring does not apply them)."""
        o = self.options
        ctx: dict[str, Any] = {"scoring": o.scoring}
        if o.scoring == "weighted":
            ctx.update(top_p=o.top_p, w_m=o.w_m, w_r=o.w_r)
        return ctx

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Bundle:
        bundle = super().save(path, overwrite=overwrite)
        if self.calibration is not None:
            bundle.update_meta(calibration={**self.calibration.to_dict(), **self.calibration_context()})
        return bundle

    def bundle_payload(self) -> dict[str, Any]:
        """Config, preprocessing and weights for ``Detector.save`` (weights from the source bundle)."""
        if self.bundle is None or not self.bundle.has(WEIGHTS_NAME):
            raise BundleError("this detector has no weights.safetensors to save (built from an ONNX-only bundle)")
        extra = dict(self.bundle.meta.get("extra", {}))
        return {"config": self.config(), "preprocessing": dict(PREPROCESSING), "tensors": self.bundle.load_tensors(),
                "io": _io_spec(self.img_size), "extra": extra}


def _io_spec(size: int) -> dict[str, Any]:
    return {"input": "(H, W, 3) uint8 RGB image or path", "graph_input": {"image": ["batch", 3, size, size]},
            "graph_outputs": {"recon": ["batch", 3, size, size], "prob": ["batch", size, size]},
            "output": "image score, (H, W) float32 anomaly map"}


# ------------------------------------------------------------------------ family hooks
def build(**options: Any) -> ISSTADDetector:
    raise ConfigError("ISSTAD needs trained weights: run `edgesentry convert isstad net_ad.pth -o BUNDLE` and "
                      "load the bundle (edgesentry.load('BUNDLE'))")


def from_bundle(bundle: Bundle, *, backend: str = "auto", kernels: str = "auto", threshold: float | None = None,
                pixel_threshold: float | None = None, scoring: str | None = None, top_p: float | None = None,
                w_m: float | None = None, w_r: float | None = None, permutation: str | np.ndarray | None = None,
                seed: int | None = None, batch_size: int | None = None, device: str = "cpu",
                providers: Sequence[Any] = ("CPUExecutionProvider",), keep_rgb: bool = False) -> ISSTADDetector:
    """Open an ISSTAD bundle; keyword options override the bundle's run-time options.

    ``permutation``: ``"identity"`` (default), ``"official"`` (with ``seed``; torch backend) or a
    recorded (B, L) integer array applied to every batch of B images (torch backend).
    """
    from edgesentry.backends import InputSpec, resolve_backend

    cfg = bundle.config
    if "model" not in cfg:
        raise BundleError(f"{bundle.path}/meta.json lacks config.model; re-run `edgesentry convert isstad`")
    perm_array = None
    if permutation is not None and not isinstance(permutation, str):
        perm_array = np.asarray(permutation)
        if perm_array.ndim != 2 or perm_array.dtype.kind not in "iu":
            raise InputError(f"a recorded permutation must be a (B, L) integer array; got {describe(perm_array)}")
        permutation = "recorded"
    saved = {k: cfg[k] for k in ("scoring", "top_p", "w_m", "w_r", "permutation", "seed", "batch_size") if k in cfg}
    overrides = {"scoring": scoring, "top_p": top_p, "w_m": w_m, "w_r": w_r, "seed": seed, "batch_size": batch_size,
                 "permutation": permutation}
    options = ISSTADOptions(**{**saved, **{k: v for k, v in overrides.items() if v is not None}})
    onnx_ok = bundle.has(ONNX_NAME)
    chosen = resolve_backend(backend, has_onnx=onnx_ok, has_weights=bundle.has(WEIGHTS_NAME))
    if options.permutation != "identity" and chosen != "torch":
        if backend == "auto" and bundle.has(WEIGHTS_NAME):
            chosen = "torch"  # the exported graph is identity-only
        else:
            raise ConfigError(f"permutation={options.permutation!r} needs the torch backend (the ONNX graph uses "
                              f"the identity permutation); got backend {chosen!r}")
    size = int(cfg["model"].get("img_size", 224))
    inputs = {"image": InputSpec("float32", (None, 3, size, size))}
    if chosen == "torch":
        from edgesentry.backends import TorchRunner
        from edgesentry.models.isstad import ISSTADGraph, build_from_tensors

        net = build_from_tensors(cfg["model"], bundle.load_tensors())
        graph = ISSTADGraph(net, permutation=options.permutation, seed=options.seed, recorded=perm_array)
        runner = TorchRunner(graph, inputs, list(GRAPH_OUTPUTS), device=device)
    elif chosen == "onnxruntime":
        from edgesentry.backends import OrtRunner

        runner = OrtRunner(bundle.file(ONNX_NAME), inputs, list(GRAPH_OUTPUTS), providers=providers)
    else:
        raise ConfigError("ISSTAD has no TensorRT runner in this build; use backend='onnxruntime' or 'torch'")
    calibration = bundle.calibration
    if calibration is not None:
        # Thresholds are on the raw scale of the scoring they were fitted with.
        fitted = {k: calibration.get(k, cfg.get(k)) for k in ("scoring", "top_p", "w_m", "w_r")}
        wanted = {"scoring": options.scoring, "top_p": options.top_p, "w_m": options.w_m, "w_r": options.w_r}
        keys = ("scoring", "top_p", "w_m", "w_r") if options.scoring == "weighted" else ("scoring",)
        if any(fitted[k] != wanted[k] for k in keys):
            log.warning("bundle %s was calibrated for scoring %s; not applying its thresholds to scoring %s "
                        "(re-run edgesentry calibrate)", bundle.path, fitted["scoring"], options.scoring)
            calibration = None
    det = ISSTADDetector(cfg["model"], options, runner, backend=chosen, bundle=bundle, permutation_array=perm_array,
                         keep_rgb=keep_rgb, kernels=kernels, calibration=calibration)
    if threshold is not None:
        det.threshold = threshold
    if pixel_threshold is not None:
        det.pixel_threshold = pixel_threshold
    return det


# ------------------------------------------------------------------------------ convert
def _read_config(config: str | os.PathLike | dict | None) -> dict[str, Any]:
    from edgesentry.models.isstad import MODEL_CFGS, ISSTADConfig

    if config is None:
        return MODEL_CFGS["isstad_vit_large_patch16"].to_dict()
    if isinstance(config, (str, os.PathLike)):
        try:
            data = json.loads(Path(config).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {os.fspath(config)!r} does not exist") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {os.fspath(config)!r} is not valid JSON: {exc}") from None
    else:
        data = dict(config)
    if isinstance(data.get("constructor_kwargs"), dict):  # the reference's tiny_stage2_config.json layout
        data = data["constructor_kwargs"]
    return ISSTADConfig.from_dict(data).to_dict()


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load(weights_only=True)``; step-1 files carry an argparse Namespace, allowed explicitly."""
    import argparse as _argparse

    import torch

    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"checkpoint {str(p)!r} does not exist")
    try:
        with torch.serialization.safe_globals([_argparse.Namespace]):
            return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, refused globals
        raise WeightsError(f"cannot read {str(p)!r} safely with torch.load(weights_only=True): {exc}") from None


def convert(ckpt: str | os.PathLike, *, output: str | os.PathLike, config: str | os.PathLike | dict | None = None,
            overwrite: bool = False, object_class: str | None = None, scoring: str = "original", top_p: float = 0.1,
            w_m: float = 1.0, w_r: float = 1.0) -> Bundle:
    """Convert an ISSTAD checkpoint (stage-2 ``net_ad.pth``) into a bundle.

    Args:
        ckpt: raw state_dict (``module.`` prefixes stripped) or ``{'model': state_dict}``.
        output: bundle directory to write.
        config: architecture (JSON path or dict, official constructor names); default ViT-L/16.
        overwrite: replace an existing bundle.
        object_class: the object class the model was trained on (recorded in the bundle).
        scoring, top_p, w_m, w_r: default run-time scoring stored in the bundle.

    Raises:
        WeightsError: unreadable file, missing used keys (e.g. a stage-1 MAE checkpoint),
            unexpected keys or shape mismatches.
    """
    from edgesentry.models.isstad import check_state_dict

    arch = _read_config(config)
    options = ISSTADOptions(scoring=scoring, top_p=top_p, w_m=w_m, w_r=w_r)
    used, ignored = check_state_dict(arch, load_checkpoint(ckpt))
    tensors = {k: v.detach().to("cpu").float().contiguous().numpy() for k, v in used.items()}
    extra = {"source_checkpoint": os.path.basename(os.fspath(ckpt)), "object_class": object_class,
             "ignored_keys": ignored, "paper": "ISSTAD (xjspin/ISSTAD, xjpp2016/ISSTAD_Extended)"}
    return write_bundle(output, "isstad", config={"model": arch, **asdict(options)}, preprocessing=PREPROCESSING,
                        tensors=tensors, io=_io_spec(int(arch["img_size"])), extra=extra, overwrite=overwrite)


CONVERT_HELP = "convert an ISSTAD stage-2 checkpoint (net_ad.pth) into a bundle"


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ckpt", help="stage-2 checkpoint net_ad.pth (raw state_dict or {'model': ...})")
    parser.add_argument("--config", default=None,
                        help="architecture JSON (official constructor names; default: ViT-L/16)")
    parser.add_argument("--object-class", default=None, help="object class the model was trained on (recorded)")
    _add_scoring_arguments(parser, default="original")


def _add_scoring_arguments(parser: argparse.ArgumentParser, default: str | None) -> None:
    where = "" if default else "the bundle's; "
    parser.add_argument("--scoring", default=default, choices=list(isstad_kernels.SCORINGS),
                        help=f"score fusion (default: {default or 'the bundle' + chr(39) + 's'})")
    parser.add_argument("--top-p", type=float, default=None,
                        help=f"weighted score: top fraction (default: {where}0.1)")
    parser.add_argument("--w-m", type=float, default=None, help=f"weighted score: P exponent (default: {where}1)")
    parser.add_argument("--w-r", type=float, default=None, help=f"weighted score: R exponent (default: {where}1)")


def convert_from_args(args: argparse.Namespace) -> Bundle:
    return convert(args.ckpt, output=args.output, config=args.config, overwrite=args.force,
                   object_class=args.object_class, scoring=args.scoring or "original",
                   top_p=0.1 if args.top_p is None else args.top_p, w_m=1.0 if args.w_m is None else args.w_m,
                   w_r=1.0 if args.w_r is None else args.w_r)


# ------------------------------------------------------------------------------- detect
def add_detect_arguments(parser: argparse.ArgumentParser) -> None:
    from edgesentry.cli._args import add_backend_args, add_kernel_args

    parser.add_argument("bundle", help="bundle directory (edgesentry convert isstad)")
    parser.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--threshold", type=float, default=None, help="image score threshold (default: bundle's)")
    parser.add_argument("--pixel-threshold", type=float, default=None, help="anomaly-map threshold (default: bundle's)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per graph call (default: 8)")
    _add_scoring_arguments(parser, default=None)
    add_backend_args(parser)
    add_kernel_args(parser)


def collect_images(inputs: Sequence[str], suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[tuple[Path, str]]:
    """Expand files and folders into (path, output name) pairs, names unique and stable."""
    pairs: list[tuple[Path, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in suffixes)
            pairs.extend((f, "__".join(f.relative_to(p).with_suffix("").parts)) for f in files)
        elif p.is_file():
            pairs.append((p, p.stem))
        else:
            raise InputError(f"{item!r} is neither an image file nor a folder")
    if not pairs:
        raise InputError(f"no images ({', '.join(suffixes)}) found in {list(inputs)}")
    seen: dict[str, int] = {}
    unique = []
    for path, name in pairs:
        if name in seen:
            seen[name] += 1
            prefixed = f"{path.parent.name}__{name}"
            name = prefixed if prefixed not in seen else f"{name}_{seen[name]}"
        seen.setdefault(name, 0)
        unique.append((path, name))
    return unique


class Progress:
    """A small progress bar on stderr (a line per 10% when stderr is not a terminal)."""

    def __init__(self, total: int, label: str = "", stream: Any = None):
        self.total, self.label, self.done = total, label, 0
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_decile = -1
        self.start = time.perf_counter()

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        frac = self.done / max(self.total, 1)
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        if self.tty:
            bar = "#" * int(30 * frac)
            self.stream.write(f"\r{self.label} [{bar:<30}] {self.done}/{self.total} {rate:.1f} img/s {note[:30]:<30}")
            if self.done >= self.total:
                self.stream.write("\n")
        elif int(frac * 10) > self._last_decile:
            self._last_decile = int(frac * 10)
            self.stream.write(f"{self.label} {self.done}/{self.total} ({100 * frac:.0f}%, {rate:.1f} img/s)\n")
        self.stream.flush()


def detect_from_args(args: argparse.Namespace) -> int:
    from edgesentry.api import load

    pairs = collect_images(args.images)
    options = {k: v for k, v in {"scoring": args.scoring, "top_p": args.top_p, "w_m": args.w_m, "w_r": args.w_r,
                                 "batch_size": args.batch_size}.items() if v is not None}
    det = load(args.bundle, backend=args.backend, kernels=args.kernels, keep_rgb=True, **options)
    if det.family != "isstad":
        raise ConfigError(f"bundle {args.bundle} is a {det.family!r} bundle, not isstad")
    if args.threshold is not None:
        det.threshold = args.threshold
    if args.pixel_threshold is not None:
        det.pixel_threshold = args.pixel_threshold
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    progress = Progress(len(pairs), "isstad detect")
    step = det.options.batch_size
    for start in range(0, len(pairs), step):
        chunk = pairs[start:start + step]
        results = det.predict_batch([p for p, _ in chunk])
        for (path, name), res in zip(chunk, results):
            rows.append(_write_outputs(det, path, name, res, out))
        progress.update(len(chunk), chunk[-1][1])
    with open(out / "summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    flagged = sum(1 for r in rows if r["label"] is True)
    thr = det.threshold
    print(f"{len(rows)} images -> {out} (scoring {det.options.scoring}, backend {det.backend}"
          + (f", threshold {thr:.6g}: {flagged} anomalous" if thr is not None else ", no threshold: run calibrate")
          + ")")
    return 0


def _write_outputs(det: ISSTADDetector, path: Path, name: str, res: Result, out: Path) -> dict[str, Any]:
    from PIL import Image

    from edgesentry.viz import overlay

    rgb = read_image(path)
    Image.fromarray(overlay(rgb, res.anomaly_map, mask=res.mask)).save(out / f"{name}_overlay.png")
    contour_mask = res.mask if res.mask is not None else np.zeros(res.anomaly_map.shape, bool)
    Image.fromarray(overlay(rgb, res.anomaly_map, mask=contour_mask, alpha=0.0)).save(out / f"{name}_mask.png")
    summary = {"image": str(path), **res.summary(), "threshold": det.threshold,
               "pixel_threshold": det.effective_pixel_threshold}
    (out / f"{name}.json").write_text(json.dumps(summary, indent=2))
    return {"image": str(path), "name": name, "score": res.score, "raw_score": res.raw_score, "label": res.label,
            "mask_pixels": int(res.mask.sum()) if res.mask is not None else None,
            "height": res.anomaly_map.shape[0], "width": res.anomaly_map.shape[1],
            "ms": round(1e3 * res.timings.get("total", float("nan")), 3)}
