"""FERS networks: the spectral (FERD) and spatial ("rebellious student") feature branches.

Paper: Jin, Tang, Zhu, Guo, "Rebellious Student: ... feature enhancement for hyperspectral
anomaly detection", arXiv 2510.18781 (2025). Official code: github.com/xjpp2016/FERS
(HEAD 7911a85): ``models/test/resnet.py`` (``ConvH``, ``wide_resnet101_2`` layer1,
``Pixel_Classifier``) and ``models/spa_branch.py`` (``HyperSpatialResNet``).

Both branches map a normalised cube ``x`` (1, B, H, W) to a same-shaped, non-negative
feature; FERS then runs RX on ``spa_f + spe_f + x`` (see ``edgesentry.kernels.fers``).

- Spectral branch (``SpectralBranch``): reflect-pad 4 px, 1x1 conv B->64 (``convh``), the
  three wide-ResNet-101-2 ``layer1`` bottlenecks 64->256 (``enc``), crop the 4 px back off,
  then the pixel classifier 1x1 256->h, ReLU, 1x1 h->B, ReLU (``pc``; h = 256 if B > 128 else
  128). The official ``Pixel_Classifier`` also returns ``f2 + data`` (and holds ``conv3``);
  both are unused at inference and left out here.
- Spatial branch (``HyperSpatialResNet``): false-RGB 1x1 convs B->256->3 (ReLU, sigmoid),
  ResNet-34 stem + ``layer1..layer3`` (stride 16), ``LightSPP``: adaptive average pools
  1/2/4, bilinear upsampling (``align_corners=False``) to H x W, concat (768 ch), 1x1
  768->128 ReLU 128->B ReLU, then an SE gate (B -> B//8 -> B).

Parameter names equal the official checkpoint keys: ``convh.pt`` / ``enc.pt`` / ``pc.pt`` keys
appear under the prefixes ``convh.`` / ``enc.`` / ``pc.`` of ``SpectralBranch``, and
``spa_fen.pt`` keys are ``HyperSpatialResNet``'s own. Deliberate differences: no ImageNet
download at construction (the official constructor fetches resnet34 weights that the
checkpoint then overwrites); ``pad_add`` (always 0 in the official code) is dropped; H != W
is supported. ``LightSPP(export_friendly=True)`` computes the same pooling and upsampling as
matrix products built from the runtime H and W, so an ONNX graph keeps H and W dynamic
(adaptive pooling with non-dividing sizes does not export otherwise); it agrees with the
native ops to float32 rounding.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgesentry.errors import ConfigError, WeightsError

__all__ = [
    "FERSConfig",
    "ConvH",
    "Bottleneck",
    "SpectralEncoder",
    "PixelClassifier",
    "SpectralBranch",
    "Conv2RGB",
    "BasicBlock",
    "SEBlock",
    "LightSPP",
    "HyperSpatialResNet",
    "read_checkpoint",
    "convert_spectral",
    "load_spectral_dir",
    "load_spatial",
    "load_spa_fen_int8_npz",
    "load_strict",
    "build_spectral",
    "build_spatial",
    "GRAPHS",
    "torch_state_dict",
    "build_from_tensors",
]


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class FERSConfig:
    """Architecture of both branches; everything band-dependent is derived from ``bands``."""

    bands: int
    spectral_width: int = 64  # ConvH output channels (layer1 input)
    pad: int = 4  # reflect padding before layer1, cropped after
    enc_width: int = 128  # wide-ResNet-101-2 bottleneck width (width_per_group 128)
    enc_blocks: int = 3
    spp_pools: tuple[int, ...] = (1, 2, 4)
    spp_in: int = 256  # ResNet-34 layer3 channels
    se_reduction: int = 8

    def __post_init__(self) -> None:
        if int(self.bands) < 8:
            raise ConfigError(f"FERS needs at least 8 bands (SE width B//8 >= 1); got bands={self.bands}")

    @property
    def pc_hidden(self) -> int:
        """Pixel-classifier width: 256 above 128 bands, else 128 (official rule)."""
        return 256 if self.bands > 128 else 128

    @property
    def se_hidden(self) -> int:
        return self.bands // self.se_reduction

    @property
    def spp_mid(self) -> int:
        return max(self.spp_in // 2, 16)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["spp_pools"] = list(self.spp_pools)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FERSConfig:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        if "spp_pools" in known:
            known["spp_pools"] = tuple(known["spp_pools"])
        return cls(**known)


# ------------------------------------------------------------------- spectral branch
class ConvH(nn.Module):
    """Reflect-pad ``pad`` px on every side, then a 1x1 conv B -> 64 without bias."""

    def __init__(self, bands: int, planes: int = 64, pad: int = 4):
        super().__init__()
        self.pad = pad
        self.convh = nn.Conv2d(bands, planes, kernel_size=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        p = self.pad
        return self.convh(F.pad(x, [p, p, p, p], mode="reflect"))


class Bottleneck(nn.Module):
    """torchvision-style bottleneck (1x1 -> 3x3 -> 1x1, expansion 4), stride 1."""

    def __init__(self, inplanes: int, width: int, planes: int, downsample: bool,
                 norm_layer: type[nn.Module] = nn.BatchNorm2d):
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = norm_layer(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = norm_layer(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = norm_layer(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(inplanes, out, 1, bias=False), norm_layer(out))
                           if downsample else None)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class SpectralEncoder(nn.Module):
    """wide_resnet101_2 ``layer1`` only (64 -> 256 channels), then the ``pad`` crop."""

    def __init__(self, cfg: FERSConfig):
        super().__init__()
        self.pad = cfg.pad
        planes = cfg.spectral_width
        blocks = [Bottleneck(planes, cfg.enc_width, planes, downsample=True)]
        blocks += [Bottleneck(planes * 4, cfg.enc_width, planes, downsample=False)
                   for _ in range(cfg.enc_blocks - 1)]
        self.layer1 = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        p = self.pad
        return self.layer1(x)[:, :, p:-p, p:-p]


class PixelClassifier(nn.Module):
    """1x1 256 -> h, ReLU, 1x1 h -> B, ReLU: the spectral feature ``spe_f`` (>= 0)."""

    def __init__(self, cfg: FERSConfig, inplanes: int = 256):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, cfg.pc_hidden, 1, bias=True)
        self.conv2 = nn.Conv2d(cfg.pc_hidden, cfg.bands, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)

    def forward_hidden(self, x: Tensor) -> Tensor:
        return self.relu(self.conv1(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv2(self.forward_hidden(x)))


class SpectralBranch(nn.Module):
    """FERD spectral branch: ``spe_f = pc(enc(convh(x)))``; (1, B, H, W) -> (1, B, H, W)."""

    def __init__(self, cfg: FERSConfig):
        super().__init__()
        self.cfg = cfg
        self.convh = ConvH(cfg.bands, cfg.spectral_width, cfg.pad)
        self.enc = SpectralEncoder(cfg)
        self.pc = PixelClassifier(cfg)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """Every intermediate the oracle stores: padded ConvH map, cropped encoder map, pc hidden, spe_f."""
        convh = self.convh(x)
        enc = self.enc(convh)
        hidden = self.pc.forward_hidden(enc)
        return {"convh": convh, "enc": enc, "pc_hidden": hidden, "spe_f": self.pc.relu(self.pc.conv2(hidden))}

    def forward(self, x: Tensor) -> Tensor:
        return self.pc(self.enc(self.convh(x)))


# -------------------------------------------------------------------- spatial branch
class Conv2RGB(nn.Module):
    """False-RGB projection: 1x1 B -> 256 (bias), ReLU, 1x1 256 -> 3 (bias), sigmoid."""

    def __init__(self, bands: int, hidden: int = 256):
        super().__init__()
        self.conv = nn.Conv2d(bands, hidden, 1)
        self.hidden = nn.Conv2d(hidden, 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.hidden(F.relu(self.conv(x))))


class BasicBlock(nn.Module):
    """ResNet-34 basic block (3x3 -> 3x3), optional 1x1 strided projection."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 norm_layer: type[nn.Module] = nn.BatchNorm2d):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = norm_layer(planes)
        project = stride != 1 or inplanes != planes
        self.downsample = (nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                         norm_layer(planes)) if project else None)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def _resnet34_to_layer3() -> nn.Sequential:
    """conv1, bn1, relu, maxpool, layer1 (3), layer2 (4), layer3 (6): indices match ``get_features``."""

    def layer(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        rest = [BasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(BasicBlock(inplanes, planes, stride), *rest)

    return nn.Sequential(
        nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
        layer(64, 64, 3, 1),
        layer(64, 128, 4, 2),
        layer(128, 256, 6, 2),
    )


class SEBlock(nn.Module):
    """Squeeze-excitation gate: global mean, 1x1 C -> C//r, ReLU, 1x1 -> C, sigmoid, multiply."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1, bias=False),
            nn.Sigmoid(),
        )

    def gate(self, x: Tensor) -> Tensor:
        return self.fc(x.mean(dim=(2, 3), keepdim=True))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


def _pool_matrix(length: Tensor, size: int, like: Tensor) -> Tensor:
    """(size, length) matrix of PyTorch's adaptive-average-pool bins.

    Bin i covers [floor(i*L/size), ceil((i+1)*L/size)): overlapping when size does not divide L.
    ``length`` is a 0-d integer tensor so that an exported graph keeps L dynamic.
    """
    idx = torch.arange(size, device=like.device).unsqueeze(1)
    start = torch.div(idx * length, size, rounding_mode="floor")
    stop = torch.div((idx + 1) * length + size - 1, size, rounding_mode="floor")
    pos = _arange_like(length, like).unsqueeze(0)
    inside = ((pos >= start) & (pos < stop)).to(like.dtype)
    return inside / (stop - start).to(like.dtype)


def _upsample_matrix(out_len: Tensor, in_len: int, like: Tensor) -> Tensor:
    """(out_len, in_len) bilinear (align_corners=False) interpolation weights along one axis."""
    dst = _arange_like(out_len, like).to(like.dtype)
    scale = torch.tensor(float(in_len), dtype=like.dtype, device=like.device) / out_len.to(like.dtype)
    src = ((dst + 0.5) * scale - 0.5).clamp(min=0.0)
    i0 = src.floor().long().clamp(max=in_len - 1)
    i1 = (i0 + 1).clamp(max=in_len - 1)
    lam = (src - i0.to(like.dtype)).unsqueeze(1)
    cols = torch.arange(in_len, device=like.device).unsqueeze(0)
    w0 = (cols == i0.unsqueeze(1)).to(like.dtype)
    w1 = (cols == i1.unsqueeze(1)).to(like.dtype)
    return w0 * (1 - lam) + w1 * lam


def _arange_like(length: Tensor, like: Tensor) -> Tensor:
    # ones().cumsum() rather than arange(length): it traces to ONNX with a dynamic length.
    return torch.ones(length, dtype=torch.long, device=like.device).cumsum(0) - 1


class LightSPP(nn.Module):
    """Pyramid pooling (1, 2, 4), bilinear upsampling to the input size, fuse convs, SE gate."""

    def __init__(self, in_channels: int, out_channels: int, pool_sizes: tuple[int, ...] = (1, 2, 4),
                 reduction: int = 8, export_friendly: bool = False):
        super().__init__()
        self.pool_sizes = tuple(pool_sizes)
        self.export_friendly = export_friendly
        mid = max(in_channels // 2, 16)
        self.fuse = nn.Sequential(
            nn.Conv2d(in_channels * len(self.pool_sizes), mid, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 1, bias=False),
            nn.ReLU(inplace=True),
        )
        self.se = SEBlock(out_channels, reduction)

    def pyramid(self, x: Tensor, size: tuple[Any, Any]) -> list[Tensor]:
        """The pooled maps at their own (k x k) resolution."""
        if not self.export_friendly:
            return [F.adaptive_avg_pool2d(x, k) for k in self.pool_sizes]
        h, w = _shape_hw(x)
        return [torch.einsum("ih,nchw,jw->ncij", _pool_matrix(h, k, x), x, _pool_matrix(w, k, x))
                for k in self.pool_sizes]

    def upsample(self, pooled: Tensor, size: tuple[Any, Any], k: int) -> Tensor:
        """Bilinear (align_corners=False) from the k x k pooled map to ``size``."""
        if not self.export_friendly:
            return F.interpolate(pooled, size=size, mode="bilinear", align_corners=False)
        return torch.einsum("hi,ncij,wj->nchw", _upsample_matrix(size[0], k, pooled), pooled,
                            _upsample_matrix(size[1], k, pooled))

    def forward_features(self, x: Tensor, size: tuple[Any, Any]) -> dict[str, Tensor]:
        pooled = self.pyramid(x, size)
        fused = self.fuse(torch.cat([self.upsample(p, size, k) for p, k in zip(pooled, self.pool_sizes)], dim=1))
        gate = self.se.gate(fused)
        pools = {f"pool{k}": p for k, p in zip(self.pool_sizes, pooled)}
        return {**pools, "se_weight": gate, "spa_f": fused * gate}

    def forward(self, x: Tensor, size: tuple[Any, Any]) -> Tensor:
        return self.forward_features(x, size)["spa_f"]


def _shape_hw(x: Tensor) -> tuple[Any, Any]:
    """Spatial size: ints in eager mode, 0-d tensors while exporting (so H, W stay dynamic)."""
    if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
        shape = torch._shape_as_tensor(x)
        return shape[-2], shape[-1]
    return torch.tensor(x.shape[-2]), torch.tensor(x.shape[-1])


class HyperSpatialResNet(nn.Module):
    """FERS spatial branch: (1, B, H, W) -> spa_f (1, B, H, W) >= 0."""

    def __init__(self, cfg: FERSConfig, export_friendly: bool = False):
        super().__init__()
        self.cfg = cfg
        self.initial_conv = Conv2RGB(cfg.bands)
        self.get_features = _resnet34_to_layer3()
        self.spp = LightSPP(cfg.spp_in, cfg.bands, cfg.spp_pools, cfg.se_reduction,
                            export_friendly=export_friendly)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        size = _shape_hw(x) if self.spp.export_friendly else (int(x.shape[-2]), int(x.shape[-1]))
        rgb = self.initial_conv(x)
        backbone = self.get_features(rgb)
        return {"false_rgb": rgb, "backbone": backbone, **self.spp.forward_features(backbone, size)}

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)["spa_f"]


# ------------------------------------------------------------------ checkpoint loading
def read_checkpoint(path: str | os.PathLike) -> dict[str, Tensor]:
    """Tensors of an official ``.pt`` (``{'state_dict': ...}`` or a bare state dict).

    Loaded with ``weights_only=True`` onto the CPU (the official files carry ``cuda:0`` /
    ``cuda:1`` storage tags).
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"checkpoint {str(p)!r} does not exist")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError/RuntimeError for unsafe or corrupt files
        raise WeightsError(
            f"{p} could not be read with torch.load(weights_only=True) "
            f"({type(exc).__name__}: {str(exc)[:200]}); "
            "only plain tensor state dicts are accepted"
        ) from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(
            f"{p} holds {type(obj).__name__}, not a state dict of tensors (or {{'state_dict': ...}})")
    return dict(obj)


def convert_spectral(convh: Mapping[str, Tensor], enc: Mapping[str, Tensor],
                     pc: Mapping[str, Tensor]) -> tuple[FERSConfig, dict[str, Tensor]]:
    """Merge the three official spectral files into ``SpectralBranch`` keys.

    pc.pt's ``conv3.*`` (a 1-channel head never used at inference) is dropped; every other
    key must match (checked by ``load_strict``). The band count comes from ``convh.weight``.
    """
    if "convh.weight" not in convh:
        raise WeightsError(f"convh checkpoint lacks 'convh.weight'; it has {sorted(convh)[:8]}")
    bands = int(convh["convh.weight"].shape[1])
    out: dict[str, Tensor] = {}
    for prefix, sd in (("convh.", convh), ("enc.", enc), ("pc.", pc)):
        for key, value in sd.items():
            if prefix == "pc." and key.startswith("conv3."):
                continue
            out[prefix + key] = value
    return FERSConfig(bands=bands), out


def load_spectral_dir(directory: str | os.PathLike) -> tuple[FERSConfig, dict[str, Tensor]]:
    """Read ``{convh,enc,pc}.pt`` from an official ``saved_models/<B>bands`` folder."""
    d = Path(directory)
    missing = [n for n in ("convh.pt", "enc.pt", "pc.pt") if not (d / n).is_file()]
    if missing:
        raise WeightsError(
            f"{d} must hold convh.pt, enc.pt and pc.pt (official saved_models/<B>bands); missing {missing}")
    return convert_spectral(*(read_checkpoint(d / n) for n in ("convh.pt", "enc.pt", "pc.pt")))


def load_spa_fen_int8_npz(path: str | os.PathLike, keys: list[str] | None = None) -> dict[str, Tensor]:
    """Read an int8-grid spatial state dict (``q/<key>``, ``exp2/<key>``, ``buffer/<key>``).

    For each key of ``keys`` (``load_spatial`` passes ``HyperSpatialResNet(B).state_dict()``'s,
    as the oracle README prescribes): ``float32(q) * 2**exp2`` when ``q/<key>`` exists (exact),
    else ``buffer/<key>`` unchanged. A key in neither is left out (``load_strict`` reports it as
    missing); entries of the file outside ``keys`` raise ``WeightsError``. ``keys`` defaults to
    every key in the file.
    """
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path} is not a readable .npz archive: {exc}") from None
    with archive:
        names = set(archive.files)
        if keys is None:
            keys = sorted({n.split("/", 1)[1] for n in names if n.startswith(("q/", "buffer/"))})
        stored = {n.split("/", 1)[1] for n in names if n.startswith(("q/", "exp2/", "buffer/"))}
        unexpected = sorted(stored - set(keys))
        if unexpected:
            raise WeightsError(f"{path} holds {len(unexpected)} unexpected keys {unexpected[:10]}")
        out: dict[str, Tensor] = {}
        for key in keys:
            if f"q/{key}" in names:
                if f"exp2/{key}" not in names:
                    raise WeightsError(f"{path}: q/{key} has no matching exp2/{key}")
                q = archive[f"q/{key}"]
                if q.dtype != np.int8:
                    raise WeightsError(f"{path}: q/{key} must be int8; got {q.dtype}")
                scale = np.float32(2.0) ** np.float32(int(archive[f"exp2/{key}"]))
                out[key] = torch.from_numpy(q.astype(np.float32) * scale)
            elif f"buffer/{key}" in names:
                out[key] = torch.from_numpy(np.array(archive[f"buffer/{key}"]))
    return out


def load_spatial(path: str | os.PathLike) -> tuple[FERSConfig, dict[str, Tensor]]:
    """Spatial-branch weights from an official ``spa_fen.pt`` or an int8-grid ``.npz``."""
    p = Path(path)
    sentinel = "initial_conv.conv.weight"
    if p.suffix.lower() == ".npz":
        q = load_spa_fen_int8_npz(p)  # every stored key, to read the band count
        if sentinel not in q:
            raise WeightsError(f"{p} is not a FERS spatial archive: it lacks q/{sentinel}")
        bands = int(q[sentinel].shape[1])
        sd = load_spa_fen_int8_npz(p, keys=list(HyperSpatialResNet(FERSConfig(bands=bands)).state_dict()))
        return FERSConfig(bands=bands), sd
    sd = read_checkpoint(p)
    if sentinel not in sd:
        raise WeightsError(
            f"{p} is not a FERS spatial checkpoint: it lacks {sentinel!r} (keys: {sorted(sd)[:6]} ...)")
    return FERSConfig(bands=int(sd[sentinel].shape[1])), sd


def load_strict(module: nn.Module, state_dict: Mapping[str, Tensor], what: str) -> nn.Module:
    """``load_state_dict(strict=True)`` that raises ``WeightsError`` listing every mismatch."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise WeightsError(
            f"{what} does not fit the architecture: {len(missing)} missing keys {missing[:10]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:10]}, "
            f"{len(shapes)} shape mismatches {shapes[:5]}"
        )
    module.load_state_dict({k: v for k, v in state_dict.items()}, strict=True)
    return module


def build_spectral(cfg: FERSConfig, state_dict: Mapping[str, Tensor] | None = None) -> SpectralBranch:
    model = SpectralBranch(cfg)
    if state_dict is not None:
        load_strict(model, state_dict, f"spectral weights ({cfg.bands} bands)")
    return model.eval()


def build_spatial(cfg: FERSConfig, state_dict: Mapping[str, Tensor] | None = None,
                  export_friendly: bool = False) -> HyperSpatialResNet:
    model = HyperSpatialResNet(cfg, export_friendly=export_friendly)
    if state_dict is not None:
        load_strict(model, state_dict, f"spatial weights ({cfg.bands} bands)")
    return model.eval()


#: the bundle's graphs; their tensors are stored as ``"<graph>.<key>"``
GRAPHS = ("spectral", "spatial")


def torch_state_dict(arrays: Mapping[str, np.ndarray]) -> dict[str, Tensor]:
    """numpy state dict from a bundle -> torch tensors. ``write_bundle`` stores 0-d arrays
    (BN ``num_batches_tracked``) as shape (1,); they are made 0-d again here."""
    out = {}
    for key, value in arrays.items():
        arr = np.array(value)
        if key.endswith("num_batches_tracked") and arr.size == 1:
            arr = arr.reshape(())
        out[key] = torch.from_numpy(arr)
    return out


def build_from_tensors(arch: Mapping[str, Any], state_dict: Mapping[str, np.ndarray], graph: str, *,
                       export_friendly: bool = False) -> nn.Module:
    """The ``graph`` branch (``"spectral"`` or ``"spatial"``) of a bundle from its numpy state dict
    (strict: ``WeightsError`` on any mismatch); ``export_friendly`` as in ``build_spatial``."""
    cfg = FERSConfig.from_dict(arch)
    if graph == "spectral":
        return build_spectral(cfg, torch_state_dict(state_dict))
    if graph == "spatial":
        return build_spatial(cfg, torch_state_dict(state_dict), export_friendly=export_friendly)
    raise ConfigError(f"FERS graphs are {list(GRAPHS)}; got {graph!r}")
