"""ISSTAD stage-2 network: an MAE ViT whose decoder reconstructs the image and classifies pixels.

Paper: "ISSTAD: Incremental Self-Supervised Learning Based on Transformer for Anomaly
Detection and Localization" (Jin et al.). Official code: github.com/xjspin/ISSTAD
(``step2_pixel_ss_learning/model/models.py::MaskedAutoencoderViT``; the same file is in
github.com/xjpp2016/ISSTAD_Extended). Parameter names equal the official state_dict keys,
so ``net_ad.pth`` loads by name (see ``load_isstad_state_dict``).

Architecture (default = the official ``mae_vit_large_patch16`` of stage 2): a ViT-L/16
encoder at 224 px (24 timm blocks, 1024-d, LayerNorm eps 1e-6, exact GELU, qkv bias), a
12-block 512-d decoder, an RGB reconstruction head ``decoder_pred`` after ``decoder_norm``
and one 2-class pixel head ``mask_pred`` shared by all decoder blocks and applied to every
block's output *before* ``decoder_norm`` (deep supervision; 12 logit maps).

Deliberate differences from the official class:

- **Token permutation.** The official forward calls ``random_masking(x, 0)``, which keeps all
  196 patch tokens but shuffles them with ``argsort(torch.rand)`` on every call and never
  un-shuffles; the decoder adds ``decoder_pos_embed`` in raster order to the shuffled tokens
  and output slot ``j`` is drawn at location ``j``. Here the permutation is an explicit
  argument: ``None`` = identity (deterministic, exportable; one member of the training
  distribution), or a (B, L) index tensor (``x_perm[:, j] = x[:, perm[:, j]]``).
  ``official_permutation`` draws exactly what ``random_masking`` draws from a seeded CPU
  generator, for parity studies.
- **Dead modules are not built.** ``cross_decoder``, ``multihead_attn``, ``self_attn``,
  ``linear_matt_*``, ``linear_att_*``, ``mtt_norm``, ``att_norm`` (hard-coded 512-d, never
  called) and the unused ``mask_token`` / ``img_pos_embed``: their checkpoint keys are
  accepted and ignored by the loader.
- ``forward_prob`` computes the probability map P = mean_k softmax(head_k)[1] inside the graph
  as mean_k sigmoid(l1 - l0) with one GEMM over the stacked block outputs and the
  difference weights ``W1 - W0`` (half the work of the 12 separate 2-class heads).
- (Un)patchify by reshape + permute instead of ``einsum`` (same layout: token vectors are
  ordered (p, q, c) with c fastest).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgesentry.errors import ConfigError, WeightsError

__all__ = [
    "ISSTADConfig",
    "ISSTADNet",
    "MODEL_CFGS",
    "DEAD_KEY_PATTERN",
    "official_permutation",
    "clean_state_dict",
    "read_checkpoint",
    "read_config",
    "load_isstad_state_dict",
    "check_state_dict",
    "build_from_tensors",
    "ISSTADGraph",
    "isstad_vit_large_patch16",
]


# ----------------------------------------------------------------------------- config
@dataclass
class ISSTADConfig:
    """Architecture; argument names are those of the official constructor."""

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    decoder_embed_dim: int = 512
    decoder_depth: int = 12
    decoder_num_heads: int = 16
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    qkv_bias: bool = True

    def __post_init__(self) -> None:
        ints = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads",
                "decoder_embed_dim", "decoder_depth", "decoder_num_heads")
        for name in ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"ISSTADConfig.{name} must be a positive integer; got {value!r}")
            setattr(self, name, int(value))
        if self.img_size % self.patch_size:
            raise ConfigError(f"img_size {self.img_size} must be a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads or self.decoder_embed_dim % self.decoder_num_heads:
            raise ConfigError(
                f"embed dims must divide by their head counts; got embed_dim={self.embed_dim}/num_heads="
                f"{self.num_heads}, decoder_embed_dim={self.decoder_embed_dim}/decoder_num_heads="
                f"{self.decoder_num_heads}"
            )
        if not (self.mlp_ratio > 0 and math.isfinite(self.mlp_ratio)):
            raise ConfigError(f"mlp_ratio must be > 0; got {self.mlp_ratio}")

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ISSTADConfig:
        """Build from a dict; official-only keys (``norm_layer``, ``norm_pix_loss``) are ignored."""
        known = {f.name for f in fields(cls)}
        ignored = {"norm_layer", "norm_pix_loss"}
        unknown = set(data) - known - ignored
        if unknown:
            raise ConfigError(f"unknown ISSTAD config keys {sorted(unknown)}; expected some of {sorted(known)}")
        return cls(**{k: v for k, v in data.items() if k in known})


#: Named variants (the official factory builds only the ViT-L/16 one).
MODEL_CFGS: dict[str, ISSTADConfig] = {
    "isstad_vit_large_patch16": ISSTADConfig(),
}


# ---------------------------------------------------------------------- building blocks
class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact erf, as timm 0.3.2
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """timm 0.3.2 pre-norm transformer block (key names ``norm1, attn.qkv, attn.proj, norm2, mlp.fc1/fc2``)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.img_size = img_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def sincos_pos_embed(dim: int, grid: int, cls_token: bool = True) -> np.ndarray:
    """Fixed 2-D sin-cos position embedding of MAE, (1 + grid**2, dim) with a zero cls row."""
    gy, gx = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")

    def one_axis(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    # MAE uses w (the second meshgrid output of np.meshgrid(w, h)) for the first half.
    emb = np.concatenate([one_axis(dim // 2, gx), one_axis(dim // 2, gy)], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
    return emb


# --------------------------------------------------------------------------- the network
class ISSTADNet(nn.Module):
    """Stage-2 ISSTAD: encoder, 12-block decoder, RGB head and 12 pixel heads.

    Inputs are (B, 3, img_size, img_size) float32 images normalised to [-1, 1]
    (mean = std = 0.5). ``forward`` returns ``recon`` (B, 3, H, W) in the same space and the
    head logits (B, K, 2, H, W) (K = decoder_depth, channel 1 = anomalous);
    ``forward_prob`` returns ``recon`` and P (B, H, W).
    """

    def __init__(self, cfg: ISSTADConfig | None = None, **kwargs: Any):
        super().__init__()
        if cfg is None:
            cfg = ISSTADConfig(**kwargs)
        elif kwargs:
            raise ConfigError("pass either an ISSTADConfig or keyword arguments, not both")
        self.cfg = cfg
        d, dd, p = cfg.embed_dim, cfg.decoder_embed_dim, cfg.patch_size
        n = cfg.num_patches
        self.patch_embed = PatchEmbed(cfg.img_size, p, cfg.in_chans, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, d), requires_grad=False)
        self.blocks = nn.ModuleList(
            [Block(d, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, cfg.norm_eps) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.decoder_embed = nn.Linear(d, dd)
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, n + 1, dd), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [Block(dd, cfg.decoder_num_heads, cfg.mlp_ratio, cfg.qkv_bias, cfg.norm_eps)
             for _ in range(cfg.decoder_depth)])
        self.decoder_norm = nn.LayerNorm(dd, eps=cfg.norm_eps)
        self.decoder_pred = nn.Linear(dd, p * p * cfg.in_chans)
        self.mask_pred = nn.Linear(dd, p * p * 2)
        if not self.cls_token.is_meta:
            self.init_weights()

    # ------------------------------------------------------------------------ init
    @torch.no_grad()
    def init_weights(self) -> None:
        """Random init in the spirit of the official one (sin-cos positions, xavier linears).

        Only used for tests and pipeline checks: real use loads trained weights.
        """
        g = self.cfg.grid
        self.pos_embed.copy_(torch.from_numpy(sincos_pos_embed(self.cfg.embed_dim, g)).float()[None])
        self.decoder_pos_embed.copy_(torch.from_numpy(sincos_pos_embed(self.cfg.decoder_embed_dim, g)).float()[None])
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------------ layout
    def unpatchify(self, x: torch.Tensor, channels: int) -> torch.Tensor:
        """(B, L, p*p*C) tokens, vector order (p, q, c) -> (B, C, H, W); slot j -> cell j (raster)."""
        b = x.shape[0]
        g, p = self.cfg.grid, self.cfg.patch_size
        x = x.reshape(b, g, g, p, p, channels).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, channels, g * p, g * p)

    # ----------------------------------------------------------------------- forward
    def forward_encoder(self, x: torch.Tensor, perm: torch.Tensor | None = None) -> torch.Tensor:
        """Latent (B, 1 + L, D) after ``norm``, tokens in the (possibly permuted) sequence order."""
        x = self.patch_embed(x) + self.pos_embed[:, 1:, :]
        if perm is not None:
            x = torch.gather(x, 1, perm[:, :, None].expand(-1, -1, x.shape[-1]))
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_decoder(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Recon tokens (B, L, p*p*C) and the stacked block outputs (K, B, L, Dd) (cls dropped)."""
        x = self.decoder_embed(latent) + self.decoder_pos_embed
        feats = []
        for blk in self.decoder_blocks:
            x = blk(x)
            feats.append(x[:, 1:, :])
        recon = self.decoder_pred(self.decoder_norm(x))[:, 1:, :]
        return recon, torch.stack(feats, dim=0)

    def forward(self, x: torch.Tensor, perm: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(recon (B, C, H, W), head logits (B, K, 2, H, W))."""
        recon_tokens, feats = self.forward_decoder(self.forward_encoder(x, perm))
        k, b = feats.shape[:2]
        logits = self.mask_pred(feats)  # (K, B, L, p*p*2)
        logits = self.unpatchify(logits.reshape(k * b, *logits.shape[2:]), 2)
        logits = logits.reshape(k, b, 2, *logits.shape[-2:]).transpose(0, 1)
        return self.unpatchify(recon_tokens, self.cfg.in_chans), logits

    def forward_prob(self, x: torch.Tensor, perm: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(recon (B, C, H, W), P (B, H, W)): P = mean over heads of softmax(logits)[1]."""
        recon_tokens, feats = self.forward_decoder(self.forward_encoder(x, perm))
        # softmax over 2 classes = sigmoid(l1 - l0): only the weight difference is needed.
        w = self.mask_pred.weight.reshape(-1, 2, feats.shape[-1])
        bias = self.mask_pred.bias.reshape(-1, 2)
        diff = F.linear(feats, w[:, 1] - w[:, 0], bias[:, 1] - bias[:, 0])  # (K, B, L, p*p)
        prob = torch.sigmoid(diff).mean(dim=0)
        prob = self.unpatchify(prob, 1)[:, 0]
        return self.unpatchify(recon_tokens, self.cfg.in_chans), prob


def isstad_vit_large_patch16(**overrides: Any) -> ISSTADNet:
    """The official stage-2 ``mae_vit_large_patch16`` (ViT-L/16 224, decoder 512-d x 12)."""
    return ISSTADNet(ISSTADConfig(**{**asdict(MODEL_CFGS["isstad_vit_large_patch16"]), **overrides}))


# ------------------------------------------------------------------------- permutation
def official_permutation(batch: int, num_patches: int, generator: torch.Generator) -> torch.Tensor:
    """What the official ``random_masking(x, 0)`` draws: ``argsort(rand(B, L))`` (CPU stream).

    With ``generator = torch.Generator().manual_seed(s)`` this equals the official forward
    after ``torch.manual_seed(s)`` on the CPU (the CUDA RNG gives other numbers).
    """
    noise = torch.rand(batch, num_patches, generator=generator)
    return torch.argsort(noise, dim=1)


# ------------------------------------------------------------------------------ loading
#: Keys of modules the official class builds but never calls (and unused parameters).
DEAD_KEY_PATTERN = re.compile(
    r"^(cross_decoder\.|multihead_attn\.|self_attn\.|linear_matt_\d+\.|linear_att_\d+\.|mtt_norm\.|att_norm\.|"
    r"mask_token$|img_pos_embed$)"
)


def read_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)``; step-1 files carry an argparse Namespace, allowed explicitly."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"checkpoint {str(p)!r} does not exist")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, refused globals
        raise WeightsError(f"cannot read {str(p)!r} safely with torch.load(weights_only=True): {exc}") from None


def read_config(config: str | os.PathLike | Mapping[str, Any] | None) -> dict[str, Any]:
    """The architecture as a dict: a JSON file or dict (official constructor names, or the
    reference's ``{"constructor_kwargs": ...}`` layout); ``None`` = ViT-L/16."""
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


def clean_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Unwrap ``{'model': sd}`` (stage 1 / misc.save_model) and strip DataParallel ``module.``."""
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(
            f"expected a state_dict (name -> tensor) or {{'model': state_dict}}; got {type(obj).__name__}")
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise WeightsError(f"state_dict entry {key!r} is {type(value).__name__}, not a tensor")
        out[key[len("module."):] if key.startswith("module.") else key] = value
    return out


def check_state_dict(cfg: ISSTADConfig | Mapping[str, Any],
                     state_dict: Any) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Check a checkpoint against the architecture without allocating it (meta device).

    Returns:
        (the used tensors by name, the ignored dead keys).

    Raises:
        WeightsError: missing used keys (a stage-1 checkpoint is named as such), unexpected
            keys or shape mismatches, all listed.
    """
    cfg = cfg if isinstance(cfg, ISSTADConfig) else ISSTADConfig.from_dict(cfg)
    sd = clean_state_dict(state_dict)
    ignored = sorted(k for k in sd if DEAD_KEY_PATTERN.match(k))
    used = {k: v for k, v in sd.items() if not DEAD_KEY_PATTERN.match(k)}
    with torch.device("meta"):
        own = {k: tuple(v.shape) for k, v in ISSTADNet(cfg).state_dict().items()}
    missing = sorted(set(own) - set(used))
    unexpected = sorted(set(used) - set(own))
    shapes = sorted(f"{k}: checkpoint {tuple(used[k].shape)} vs model {own[k]}"
                    for k in set(own) & set(used) if tuple(used[k].shape) != own[k])
    bad_dtype = sorted(k for k in set(own) & set(used) if not used[k].is_floating_point())
    if missing or unexpected or shapes or bad_dtype:
        hint = ""
        if "mask_pred.weight" in missing and not any(k.startswith("mask_pred") for k in unexpected):
            hint = (" This looks like a stage-1 MAE checkpoint (checkpoint-0.75.pth): it has no pixel head "
                    "(mask_pred) and fewer decoder blocks, so it cannot score anomalies; convert the stage-2 "
                    "net_ad.pth instead.")
        elif shapes or unexpected:
            hint = " If the model was trained with another architecture, pass its config (--config JSON)."
        raise WeightsError(
            f"checkpoint does not fit ISSTAD {cfg.to_dict()}: {len(missing)} missing {_short(missing)}, "
            f"{len(unexpected)} unexpected {_short(unexpected)}, {len(shapes)} mis-shaped {_short(shapes)}"
            + (f", non-float {_short(bad_dtype)}" if bad_dtype else "") + f".{hint}"
        )
    return used, ignored


def load_isstad_state_dict(model: ISSTADNet, state_dict: Any) -> list[str]:
    """Load strictly by name; dead-module keys are accepted and ignored (returned).

    Raises:
        WeightsError: see ``check_state_dict``.
    """
    used, ignored = check_state_dict(model.cfg, state_dict)
    with torch.no_grad():
        for key, param in model.state_dict().items():
            param.copy_(used[key].to(param.dtype))
    return ignored


def build_from_tensors(cfg: ISSTADConfig | Mapping[str, Any], tensors: Mapping[str, Any]) -> ISSTADNet:
    """An eval-mode network from a bundle's tensors (numpy arrays or tensors by name)."""
    cfg = cfg if isinstance(cfg, ISSTADConfig) else ISSTADConfig.from_dict(cfg)
    with torch.device("meta"):
        net = ISSTADNet(cfg)
    sd = {k: torch.as_tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v for k, v in tensors.items()}
    used, _ = check_state_dict(cfg, sd)
    net.load_state_dict(used, strict=True, assign=True)
    # The fixed sin-cos embeddings stay frozen as in the official class.
    net.pos_embed.requires_grad_(False)
    net.decoder_pos_embed.requires_grad_(False)
    return net.eval()


class ISSTADGraph(nn.Module):
    """The exported/served graph: image (B, 3, S, S) -> (recon (B, 3, S, S), prob (B, S, S)).

    ``permutation``: ``"identity"`` (no shuffle; the only exportable mode), ``"official"``
    (a fresh ``official_permutation`` per call from a generator seeded with ``seed``) or
    ``"recorded"`` (the (B, L) array ``recorded``, row b for image b).
    """

    def __init__(self, net: ISSTADNet, permutation: str = "identity", seed: int | None = None,
                 recorded: Any = None):
        super().__init__()
        self.net = net
        self.permutation = permutation
        self.generator = None
        self.recorded = None
        if permutation == "official":
            if seed is None:
                raise ConfigError("permutation='official' needs an explicit seed")
            self.generator = torch.Generator().manual_seed(int(seed))
        elif permutation == "recorded":
            rec = torch.as_tensor(np.asarray(recorded), dtype=torch.long)
            n = net.cfg.num_patches
            if rec.ndim != 2 or rec.shape[1] != n or not torch.equal(rec.sort(dim=1).values,
                                                                      torch.arange(n).expand_as(rec)):
                raise ConfigError(f"a recorded permutation must be (B, {n}) rows each a permutation of 0..{n - 1}; "
                                  f"got shape {tuple(rec.shape)}")
            self.recorded = rec
        elif permutation != "identity":
            raise ConfigError(f"unknown permutation {permutation!r}")

    def _perm(self, batch: int, device: torch.device) -> torch.Tensor | None:
        if self.generator is not None:
            return official_permutation(batch, self.net.cfg.num_patches, self.generator).to(device)
        if self.recorded is not None:
            if self.recorded.shape[0] != batch:
                raise ConfigError(f"the recorded permutation has {self.recorded.shape[0]} rows; this batch has "
                                  f"{batch} images (use batch_size={self.recorded.shape[0]})")
            return self.recorded.to(device)
        return None

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.forward_prob(image, self._perm(image.shape[0], image.device))


def _short(items: list[str], n: int = 8) -> str:
    return str(items[:n] + ([f"... {len(items) - n} more"] if len(items) > n else []))
