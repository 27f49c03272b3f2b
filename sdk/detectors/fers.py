"""FERS ("Rebellious Student") hyperspectral anomaly detector: feature enhancement, then RX.

    bundle = edgesentry.convert("fers", "saved_models/200bands", output="fers200")   # official weights
    det = edgesentry.load("fers200")                      # backend="auto"|"torch"|"onnxruntime"
    result = det.predict(cube)                            # (H, W, B) array or a cube file path

Pipeline (github.com/xjpp2016/FERS ``test.py``, ``datasets/HADDatasets.py``, ``utils/utils.py``):

- preprocess: first B bands (B = the weights' band count), one global min-max of the whole
  H x W x B slice to [-0.1, 0.1] in float64, then float32, layout (1, B, H, W).
- graph: the spectral branch gives ``spe_f``; the spatial branch (when the bundle has one)
  gives ``spa_f`` (``edgesentry.models.fers``; backends torch or ONNX Runtime).
- postprocess: ``mode="global"`` (official default for 100/200 bands and ABU): RX of
  ``spa_f + spe_f + x`` with the seed's semantics (``edgesentry.kernels.fers``);
  ``mode="ham"`` (official 50-band path): ``S2One(RX_Torch(spa_f + x)) * S2One(RX_Torch(spe_f + x))``;
  ``mode="local", window=(inner, outer)``: dual-window RX of the RX family on the fused cube
  (not in the paper).

The official spatial-branch weights (``spa_fen.pt``) were not obtainable, so a bundle may be
**spectral-only**: then ``spa_f`` is the official zero stand-in, ``meta.json`` says
``"spatial": false`` and ``info()["spectral_only"]`` is True.

``Result.anomaly_map`` is the (H, W) map (float32), ``score`` its maximum,
``extras["scores"]`` the float64 map; ``extras["spe_f"]`` / ``["spa_f"]`` / ``["x"]`` hold the
features when ``return_features=True``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from edgesentry.bundle import Bundle, split_graph_tensors, write_bundle
from edgesentry.detector import Detector
from edgesentry.errors import BundleError, ConfigError, InputError, option
from edgesentry.io.files import CUBE_SUFFIXES
from edgesentry.io.hsi import as_cube
from edgesentry.kernels import fers as fers_kernels, rx as rx_kernels
from edgesentry.result import Result

Mode = Literal["global", "ham", "local"]
MODES = ("global", "ham", "local")
#: ConvH reflect-pads 4 pixels, which needs at least 5 rows and columns.
MIN_SIZE = 5
#: graph -> its output; a bundle stores each graph's tensors as "<graph>.<key>"
GRAPH_OUTPUTS = {"spectral": "spe_f", "spatial": "spa_f"}


@dataclass
class FERSOptions:
    """Detector options. ``window=(inner, outer)`` is required for ``mode="local"``."""

    mode: Mode = "global"
    window: tuple[int, int] | None = None
    rcond: float = fers_kernels.DEFAULT_RCOND
    variable: str | None = None  # .mat variable to read when given a path
    return_features: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"FERS mode must be one of {list(MODES)}; got {self.mode!r}")
        if self.mode == "local":
            if self.window is None or len(self.window) != 2:
                raise ConfigError(f"mode 'local' needs {option('window', (3, 9))} (inner, outer); got {self.window!r}")
            self.window = (int(self.window[0]), int(self.window[1]))
            if not 1 <= self.window[0] < self.window[1]:
                raise ConfigError(f"window must satisfy 1 <= inner < outer; got {self.window}")
        elif self.window is not None:
            raise ConfigError(f"window is only used by mode 'local'; pass {option('mode', 'local')} or drop the window")
        if not 0 < self.rcond < 1:
            raise ConfigError(f"rcond must lie in (0, 1); got {self.rcond}")


@dataclass
class _Prepared:
    x: np.ndarray  # (1, B, H, W) float32 in [-0.1, 0.1]
    source: dict[str, Any] = field(default_factory=dict)


#: float64 bytes of one block of image rows in ``prepare_cube`` (the cube is never converted whole)
_PREPARE_BLOCK_BYTES = 16 << 20


def prepare_cube(cube: np.ndarray, bands: int) -> np.ndarray:
    """Official input preparation: first ``bands`` bands, global min-max to [-0.1, 0.1] in
    float64, transposed to (1, B, H, W) float32.

    Block by block of image rows: each value goes through the same float64 operations as in
    one pass (the extremes of the float64 values are those of the input's), so the output is
    identical, and no float64 copy of the cube is made.
    """
    v = cube[..., :bands]
    h, w, _ = v.shape
    out = np.empty((1, bands, h, w), dtype=np.float32)  # first: an input too large fails here, before a scan
    lo, hi = float(v.min()), float(v.max())
    if not hi > lo:
        raise InputError(f"the first {bands} bands of the cube are constant ({lo}); min-max normalisation is undefined")
    step = max(1, _PREPARE_BLOCK_BYTES // (8 * w * bands))
    for r0 in range(0, h, step):
        block = np.asarray(v[r0 : r0 + step], dtype=np.float64)
        out[0, :, r0 : r0 + step] = (((block - lo) / (hi - lo) * 2 - 1) * 0.1).transpose(2, 0, 1)
    return out


def _all_finite(cube: np.ndarray) -> bool:
    """``np.isfinite(cube).all()`` block by block of image rows (no mask the size of the cube)."""
    step = max(1, _PREPARE_BLOCK_BYTES // (8 * cube.shape[1] * cube.shape[2]))
    return all(np.isfinite(cube[r : r + step]).all() for r in range(0, cube.shape[0], step))


class FERSDetector(Detector):
    """FERS detector. Input: (H, W, B_raw) numeric cube (band-last, B_raw >= B) or a cube path."""

    family = "fers"
    map_shares_score_scale = True
    input_suffixes = CUBE_SUFFIXES
    input_kinds = "one hyperspectral cube: an (H, W, B) array or a .mat / .npy / ENVI .hdr file"

    def __init__(
        self,
        tensors: Mapping[str, np.ndarray],
        arch: Mapping[str, Any],
        options: FERSOptions | None = None,
        *,
        backend: str = "torch",
        onnx_paths: Mapping[str, str | os.PathLike] | None = None,
        providers: Sequence[Any] = ("CPUExecutionProvider",),
        **kwargs: Any,
    ):
        self.options = options or FERSOptions()
        super().__init__(kernel_ops=(self._kernel_op(self.options.mode),), **kwargs)
        self.arch = dict(arch)
        self.bands = int(self.arch["bands"])
        self.tensors = dict(tensors)
        state_dicts = split_graph_tensors(self.tensors, tuple(GRAPH_OUTPUTS), "FERS")
        self.has_spatial = bool(state_dicts["spatial"])
        if not self.has_spatial:
            del state_dicts["spatial"]
        self.backend = backend
        self.runners = self._make_runners(backend, state_dicts, dict(onnx_paths or {}), providers)

    @staticmethod
    def _kernel_op(mode: Mode) -> Any:
        return {"global": fers_kernels.FERS_RX, "ham": fers_kernels.FERS_HAM, "local": rx_kernels.LOCAL_RX}[mode]

    def _make_runners(self, backend: str, state_dicts: dict[str, dict[str, np.ndarray]],
                      onnx_paths: dict[str, Any], providers: Sequence[Any]) -> dict[str, Any]:
        """One runner per graph (``spectral``, and ``spatial`` when the bundle has it)."""
        from edgesentry.backends import InputSpec, make_runner

        spec = {"x": InputSpec("float32", (1, self.bands, None, None))}

        def branch(name: str) -> Any:
            from edgesentry.models.fers import build_from_tensors

            return build_from_tensors(self.arch, state_dicts[name], name)

        return {name: make_runner(backend, spec, [GRAPH_OUTPUTS[name]], module=lambda n=name: branch(n),
                                  onnx=onnx_paths.get(name), providers=providers, what=f"the FERS {name} graph")
                for name in state_dicts}

    # ------------------------------------------------------------------------- stages
    def preprocess(self, x: Any) -> _Prepared:
        x, source = as_cube(x, variable=self.options.variable, who="FERS")
        h, w, b = x.shape
        if b < self.bands:
            raise InputError(
                f"these FERS weights use the first {self.bands} bands; the cube has only {b} (shape {x.shape})")
        if min(h, w) < MIN_SIZE:
            raise InputError(f"FERS needs H and W >= {MIN_SIZE} (4-pixel reflect padding); got {h}x{w}")
        sliced = x[..., : self.bands]
        if sliced.dtype.kind == "f" and not _all_finite(sliced):
            bad = int((~np.isfinite(sliced)).sum())
            raise InputError(f"cube has {bad} NaN/Inf values in its first {self.bands} bands")
        return _Prepared(prepare_cube(sliced, self.bands), source)

    def forward(self, prepared: _Prepared) -> dict[str, np.ndarray | None]:
        feed = {"x": prepared.x}
        spe = self.runners["spectral"].infer(feed)["spe_f"]
        spa = self.runners["spatial"].infer(feed)["spa_f"] if self.has_spatial else None
        return {"spe_f": spe, "spa_f": spa}

    def postprocess(self, raw: Mapping[str, Any], prepared: _Prepared) -> Result:
        x, spe, spa = prepared.x, raw["spe_f"], raw["spa_f"]
        opts = self.options
        if opts.mode == "global":
            scores, tier = fers_kernels.fers_rx(x, spe, spa, rcond=opts.rcond, tier=self.kernels)
        elif opts.mode == "ham":
            scores, tier = fers_kernels.fers_ham(x, spe, spa, tier=self.kernels)
        else:
            from edgesentry.kernels.fers.reference import fuse

            cube = fuse(x, spe, spa).transpose(1, 2, 0)  # float32: the kernel converts block by block
            inner, outer = opts.window
            scores, tier = rx_kernels.local_rx(cube, inner=inner, outer=outer, rcond=opts.rcond, tier=self.kernels)
        scores = np.asarray(scores, dtype=np.float64)
        extras: dict[str, Any] = {"scores": scores}
        if opts.return_features:
            extras.update(x=x, spe_f=spe, **({"spa_f": spa} if spa is not None else {}))
        return Result(
            score=float(np.max(scores)),
            anomaly_map=scores.astype(np.float32),
            extras=extras,
            info={"kernel_tier": tier, "mode": opts.mode, "bands": self.bands, "spectral_only": not self.has_spatial,
                  "backend": self.backend, **prepared.source},
        )

    # ------------------------------------------------------------------------ config
    def config(self) -> dict[str, Any]:
        opts = asdict(self.options)
        opts.pop("return_features")
        return {"arch": dict(self.arch), "spatial": self.has_spatial, **opts}

    def info(self) -> dict[str, Any]:
        out = super().info()
        out.update(bands=self.bands, spectral_only=not self.has_spatial, backend=self.backend,
                   graphs=sorted(self.runners))
        if not self.has_spatial:
            out["note"] = ("spectral-only: the official spa_fen.pt was not available; spa_f is the official "
                           "zero stand-in, so scores are RX(spe_f + x)")
        return out

    def bundle_payload(self) -> dict[str, Any]:
        return {"config": self.config(), "tensors": self.tensors, "preprocessing": _preprocessing(self.bands),
                "io": _IO}


_IO = {"input": "(H, W, B_raw) cube, B_raw >= bands", "output": "(H, W) float32 RX map of the fused features"}


def _preprocessing(bands: int) -> dict[str, Any]:
    return {"bands": f"first {bands}", "normalisation": "global min-max to [-0.1, 0.1] (float64, then float32)",
            "layout": "(1, B, H, W)"}


# ------------------------------------------------------------------------------ serving
#: the inputs of a served FERS: the cube (float64 holds every cube dtype exactly)
SERVING_INPUTS = {"INPUT": ("float64", [-1, -1, -1])}


def serving_feed(x: Any, *, variable: str | None = None) -> dict[str, np.ndarray]:
    """What a client sends for one input ``predict`` takes: the (H, W, B) cube as float64."""
    cube, _ = as_cube(x, variable=variable, who="FERS")
    return {"INPUT": np.asarray(cube, dtype=np.float64)}


# ------------------------------------------------------------------------ family hooks
def build(**options: Any) -> FERSDetector:
    raise ConfigError(
        "FERS needs trained weights: run `edgesentry convert fers --spectral saved_models/200bands -o BUNDLE` "
        "(optionally --spatial spa_fen.pt), then edgesentry.load(BUNDLE)"
    )


def from_bundle(
    bundle: Bundle,
    *,
    backend: str = "auto",
    kernels: str = "auto",
    mode: Mode | None = None,
    window: Sequence[int] | None = None,
    rcond: float | None = None,
    variable: str | None = None,
    return_features: bool = False,
    threshold: float | None = None,
    providers: Sequence[Any] = ("CPUExecutionProvider",),
    **linescan_options: Any,
) -> Detector:
    """Open a FERS bundle; options override the bundle's detector configuration.
    ``mode="linescan"`` scores push-broom lines (``fers_linescan.build`` takes the rest)."""
    from edgesentry.backends import resolve_backend

    cfg = bundle.config
    if "arch" not in cfg or "bands" not in cfg.get("arch", {}):
        raise BundleError(f"{bundle.path}/meta.json lacks config.arch.bands; re-run `edgesentry convert fers`")
    chosen_mode = mode if mode is not None else cfg.get("mode", "global")
    if chosen_mode == "linescan":
        from . import fers_linescan

        networks = from_bundle(bundle, backend=backend, mode="global", providers=providers)
        return fers_linescan.build(networks, window=window, rcond=rcond if rcond is not None else
                                   fers_kernels.DEFAULT_RCOND, kernels=kernels, threshold=threshold,
                                   **linescan_options)
    if linescan_options:
        raise TypeError(f"from_bundle() got an unexpected keyword argument {sorted(linescan_options)[0]!r}")
    chosen_window = window if window is not None else (cfg.get("window") if chosen_mode == "local" else None)
    options = FERSOptions(
        mode=chosen_mode,
        window=tuple(chosen_window) if chosen_window is not None else None,
        rcond=rcond if rcond is not None else cfg.get("rcond", fers_kernels.DEFAULT_RCOND),
        variable=variable,
        return_features=return_features,
    )
    graphs = bundle.meta.get("graphs", {})
    onnx_paths = {name: bundle.file(g["file"]) for name, g in graphs.items() if bundle.has(g["file"])}
    needed = {"spectral", "spatial"} if cfg.get("spatial") else {"spectral"}
    chosen = resolve_backend(backend, has_onnx=needed <= set(onnx_paths), has_weights=bundle.has("weights.safetensors"),
                             measured=True)
    det = FERSDetector(bundle.load_tensors(), cfg["arch"], options, backend=chosen, onnx_paths=onnx_paths,
                       providers=providers, kernels=kernels, calibration=bundle.calibration)
    if threshold is not None:
        det.threshold = threshold
    return det


def convert(
    spectral_dir: str | os.PathLike,
    spatial: str | os.PathLike | None = None,
    *,
    output: str | os.PathLike,
    overwrite: bool = False,
    mode: Mode = "global",
    window: Sequence[int] | None = None,
) -> Bundle:
    """Official FERS weights -> bundle (``weights.safetensors`` + ``meta.json``).

    Args:
        spectral_dir: a ``saved_models/<B>bands`` folder with ``convh.pt``, ``enc.pt``, ``pc.pt``.
        spatial: optional ``spa_fen.pt`` (or an int8-grid ``.npz``) with the same band count.
        output: bundle directory to write.
        mode, window: the detector configuration stored in the bundle.

    ``edgesentry.export.onnx.export_bundle`` (CLI: ``--onnx``) then adds ``spectral.onnx`` and
    ``spatial.onnx``.
    """
    from edgesentry.models.fers import build_spatial, build_spectral, load_spatial, load_spectral_dir

    options = FERSOptions(mode=mode, window=tuple(window) if window is not None else None)
    cfg, spectral_sd = load_spectral_dir(spectral_dir)
    build_spectral(cfg, spectral_sd)  # strict check now, not at load time
    tensors = {f"spectral.{k}": v.numpy() for k, v in spectral_sd.items()}
    extra: dict[str, Any] = {"spectral_source": os.fspath(spectral_dir), "spatial_source": None}
    if spatial is not None:
        spa_cfg, spatial_sd = load_spatial(spatial)
        if spa_cfg.bands != cfg.bands:
            raise ConfigError(f"spatial weights are for {spa_cfg.bands} bands, the spectral ones for {cfg.bands}")
        build_spatial(cfg, spatial_sd)
        tensors.update({f"spatial.{k}": v.numpy() for k, v in spatial_sd.items()})
        extra["spatial_source"] = os.fspath(spatial)
    else:
        extra["note"] = "spectral-only bundle: spa_f is the official zero stand-in (spa_fen.pt not given)"
    config = {"arch": cfg.to_dict(), "spatial": spatial is not None, **asdict(options)}
    config.pop("return_features")
    config.pop("variable")
    return write_bundle(output, "fers", config=config, preprocessing=_preprocessing(cfg.bands), tensors=tensors,
                        io=_IO, extra=extra, overwrite=overwrite)


DETECTOR = FERSDetector
