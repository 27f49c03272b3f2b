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

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgesentry.bundle import WEIGHTS_NAME, Bundle, write_bundle
from edgesentry.detector import Detector
from edgesentry.errors import BundleError, ConfigError, InputError, describe
from edgesentry.io.image import IMAGE_SUFFIXES, Color, as_image, resize_bilinear
from edgesentry.kernels import isstad as isstad_kernels
from edgesentry.result import Result

log = logging.getLogger("edgesentry.isstad")

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
    batches_graph = True
    input_suffixes = IMAGE_SUFFIXES
    input_kinds = "one image: an image path, a PIL image or an (H, W, 3) uint8 RGB array"

    def __init__(self, arch: dict[str, Any], options: ISSTADOptions, runner: Any, *, backend: str,
                 bundle: Bundle | None = None, permutation_array: np.ndarray | None = None, keep_rgb: bool = False,
                 **kwargs: Any):
        super().__init__(kernel_ops=(isstad_kernels.ISSTAD_FUSION,), **kwargs)
        self.arch = dict(arch)
        self.options = options
        self.batch_size = options.batch_size
        self.runner = runner
        self.backend = backend
        self.bundle = bundle
        self.keep_rgb = keep_rgb
        self.img_size = int(self.arch.get("img_size", 224))
        self._permutation_array = permutation_array

    # ------------------------------------------------------------------------- stages
    def preprocess(self, x: Any, color: Color = "rgb") -> _Prepared:
        """One image: (H, W, 3) uint8 array (RGB, or BGR with ``color="bgr"``), PIL image or path."""
        rgb, source = as_image(x, color=color, who="ISSTAD")
        return _Prepared(preprocess_rgb(rgb, self.img_size), tuple(rgb.shape[:2]), source,
                         rgb if self.keep_rgb else None)

    def forward(self, prepared: _Prepared) -> dict[str, np.ndarray]:
        return self.forward_batch([prepared])

    def forward_batch(self, prepared: Sequence[_Prepared]) -> dict[str, np.ndarray]:
        """One graph call on the stacked chunk."""
        return self.runner.infer({"image": np.stack([p.tensor for p in prepared])})

    def postprocess(self, raw: dict[str, np.ndarray], prepared: _Prepared) -> Result:
        return self.postprocess_batch(raw, [prepared])[0]

    def postprocess_batch(self, raw: dict[str, np.ndarray], prepared: Sequence[_Prepared]) -> list[Result]:
        images = np.stack([p.tensor for p in prepared])
        o = self.options
        out, tier = isstad_kernels.isstad_fusion(raw["prob"], raw["recon"], images, scoring=o.scoring, top_p=o.top_p,
                                                 w_m=o.w_m, w_r=o.w_r, tier=self.kernels)
        results = []
        for b, item in enumerate(prepared):
            pixel = np.asarray(out["pixel_map"][b], dtype=np.float32)
            amap = resize_bilinear(pixel, item.shape) if item.shape != pixel.shape else pixel.copy()
            info = {"backend": self.backend, "kernel_tier": tier, "scoring": o.scoring,
                    "permutation": o.permutation, "input_shape": list(item.shape), **item.source}
            extras = {"probability": np.asarray(out["probability"][b]),
                      "recon_error": np.asarray(out["recon_error"][b]), "pixel_map": pixel}
            results.append(Result(score=float(out["score"][b]), anomaly_map=amap, extras=extras, info=info,
                                  image=item.rgb))
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


# ------------------------------------------------------------------------------ serving
#: the inputs of a served ISSTAD (``edgesentry.serving``): an image's RGB pixels, any size
SERVING_INPUTS = {"INPUT": ("uint8", [-1, -1, 3])}


def serving_feed(x: Any, *, color: Color = "rgb") -> dict[str, np.ndarray]:
    """What a client sends for one input ``predict`` takes: the (H, W, 3) uint8 RGB pixels."""
    rgb, _ = as_image(x, color=color, who="ISSTAD")
    return {"INPUT": rgb}


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
    from edgesentry.backends import InputSpec, make_runner, resolve_backend

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
    onnx_file = bundle.meta.get("graphs", {}).get("model", {}).get("file", ONNX_NAME)  # a precision variant's
    onnx_ok = bundle.has(onnx_file)
    # a precision variant arrives with a concrete backend (select_precision), so only FP32 is raced
    chosen = resolve_backend(backend, has_onnx=onnx_ok, has_weights=bundle.has(WEIGHTS_NAME), measured=True)
    if options.permutation != "identity" and chosen != "torch":
        if backend == "auto" and bundle.has(WEIGHTS_NAME):
            chosen = "torch"  # the exported graph is identity-only
        else:
            raise ConfigError(f"permutation={options.permutation!r} needs the torch backend (the ONNX graph uses "
                              f"the identity permutation); got backend {chosen!r}")
    size = int(cfg["model"].get("img_size", 224))
    inputs = {"image": InputSpec("float32", (None, 3, size, size))}

    def graph() -> Any:
        from edgesentry.models.isstad import ISSTADGraph, build_from_tensors

        net = build_from_tensors(cfg["model"], bundle.load_tensors())
        return ISSTADGraph(net, permutation=options.permutation, seed=options.seed, recorded=perm_array)

    runner = make_runner(chosen, inputs, list(GRAPH_OUTPUTS), module=graph,
                         onnx=bundle.file(onnx_file) if onnx_ok else None, providers=providers, device=device,
                         what="the ISSTAD graph")
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
    from edgesentry.models.isstad import check_state_dict, read_checkpoint, read_config

    arch = read_config(config)
    options = ISSTADOptions(scoring=scoring, top_p=top_p, w_m=w_m, w_r=w_r)
    used, ignored = check_state_dict(arch, read_checkpoint(ckpt))
    tensors = {k: v.detach().to("cpu").float().contiguous().numpy() for k, v in used.items()}
    extra = {"source_checkpoint": os.path.basename(os.fspath(ckpt)), "object_class": object_class,
             "ignored_keys": ignored, "paper": "ISSTAD (xjspin/ISSTAD, xjpp2016/ISSTAD_Extended)"}
    return write_bundle(output, "isstad", config={"model": arch, **asdict(options)}, preprocessing=PREPROCESSING,
                        tensors=tensors, io=_io_spec(int(arch["img_size"])), extra=extra, overwrite=overwrite)


DETECTOR = ISSTADDetector
