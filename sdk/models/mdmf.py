"""CLIP-MDMF networks (Guo et al., KBS 2024, arXiv 2401.08345; github.com/cofly2014/CLIP-MDMF).

Few-shot action recognition: a CLIP RN50 visual tower encodes each of T = 8 frames; two
temporal "views" give every frame a context and a one-layer cross-attention transformer
(prompted by a class text embedding) refines it::

    frames [B, T, 3, 224, 224] --backbone (CLIP ModifiedResNet + attention pool)--> f [B, T, D]
    local view ("up"):   ctx = context_conv2(context_conv1(f))                 (k=3, no activation)
    global view ("down"): ctx[t] = tcn(f)[T-1] + f[t]                           (3 dilated causal blocks)
    view v:  out = Transformer_v([prompt; ctx], kv=[prompt; f])[:, 1:]         context2 = local,
                                                                                 context_local = global

Class prototypes (frame-wise mean over shots), the probability prompt selector and the
soft-OTAM distance fusion live in ``edgesentry.detectors.mdmf`` and ``edgesentry.kernels.otam``.
``convert_checkpoint`` turns the official files into a bundle's tensors and
``build_from_tensors`` makes the model from them again; ``MDMFVisual`` and ``MDMFViews`` are
the two graphs (run by the torch backend, exported to ONNX).

Parameter names equal the official ``MDMF_CLIPFSAR`` state_dict keys (``backbone.*`` for the
CLIP visual tower, ``context2.*``, ``context_local.*``, ``context_conv1/2.*``, ``tcn.*``), and
the text tower uses OpenAI CLIP's top-level names (``token_embedding``, ``transformer.resblocks``,
``ln_final``, ``text_projection`` ...), so ``RN50.pt`` and fine-tuned MDMF checkpoints load
strictly (``load_mdmf_state_dict`` / ``load_clip_state_dict``). The feature width ``dim`` is a
parameter (1024 for RN50; the oracle heads use 256); the feed-forward width stays 2048, as in
the seed, where ``mlp_dim`` is never passed.

Deviations from the official code (none change the numbers):

- no ``.cuda()``; no training-only parts (video-text logits, ``scale``, distillation);
  the dead ``context_conv11/22`` are not built (the loader drops them and ``scale`` by name);
- the TCN's legacy weight norm is computed by the same ``torch._weight_norm`` from
  ``weight_g``/``weight_v``; each conv is registered under both official names
  (``conv1`` and ``net.0`` ...), so the state_dict has the seed's duplicated keys;
- the attention pool of the visual tower is written out (no ``F.multi_head_attention_forward``)
  so it exports to ONNX with a dynamic batch;
- ``T`` is taken from the input instead of the hard-coded ``repeat(1, 8, 1)``.
"""

from __future__ import annotations

import os
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgesentry.errors import InputError, WeightsError


# ----------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class CLIPVisualConfig:
    """CLIP ModifiedResNet. RN50: layers (3, 4, 6, 3), width 64, 224 px, 32 heads, 1024 out."""

    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    width: int = 64
    image_size: int = 224
    heads: int = 32
    output_dim: int = 1024


@dataclass(frozen=True)
class CLIPTextConfig:
    """CLIP text transformer. RN50: 77 tokens, 49408 vocab, width 512, 8 heads, 12 layers."""

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    embed_dim: int = 1024


@dataclass(frozen=True)
class MDMFConfig:
    """MDMF heads (and optionally the CLIP towers). ``dim`` is the frame feature width D."""

    dim: int = 1024
    heads: int = 8
    mlp_dim: int = 2048
    depth: int = 1
    tcn_levels: int = 3
    tcn_kernel: int = 3
    visual: CLIPVisualConfig | None = field(default_factory=CLIPVisualConfig)
    text: CLIPTextConfig | None = field(default_factory=CLIPTextConfig)

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be divisible by heads {self.heads}")
        if self.visual is not None and self.visual.output_dim != self.dim:
            raise ValueError(f"visual.output_dim {self.visual.output_dim} must equal dim {self.dim}")
        if self.text is not None and self.text.embed_dim != self.dim:
            raise ValueError(f"text.embed_dim {self.text.embed_dim} must equal dim {self.dim}")


RN50 = MDMFConfig()


# ------------------------------------------------------------------- CLIP visual tower
class Bottleneck(nn.Module):
    """CLIP's anti-aliased bottleneck: stride by average pooling after the 3x3 conv."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu3 = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion)),
            ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        return self.relu3(out + identity)


class AttentionPool2d(nn.Module):
    """Multi-head attention of the mean token (query) over mean + spatial tokens."""

    def __init__(self, spatial: int, embed_dim: int, heads: int, output_dim: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spatial**2 + 1, embed_dim) / embed_dim**0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[0], x.shape[1]
        x = x.flatten(2).transpose(1, 2)  # [B, HW, C]
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + self.positional_embedding.to(x.dtype)
        hd = c // self.heads
        q = self.q_proj(x[:, :1]).reshape(b, 1, self.heads, hd).transpose(1, 2)
        k = self.k_proj(x).reshape(b, -1, self.heads, hd).transpose(1, 2)
        v = self.v_proj(x).reshape(b, -1, self.heads, hd).transpose(1, 2)
        attn = torch.softmax((q * hd**-0.5) @ k.transpose(-1, -2), dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, c)
        return self.c_proj(out)


class ModifiedResNet(nn.Module):
    """CLIP's visual ResNet: 3-conv stem, anti-aliased strides, attention pooling."""

    def __init__(self, cfg: CLIPVisualConfig):
        super().__init__()
        w = cfg.width
        self.conv1 = nn.Conv2d(3, w // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w // 2)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(w // 2, w // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(w // 2)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(w // 2, w, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(w)
        self.relu3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)
        self._inplanes = w
        self.layer1 = self._make_layer(w, cfg.layers[0])
        self.layer2 = self._make_layer(w * 2, cfg.layers[1], stride=2)
        self.layer3 = self._make_layer(w * 4, cfg.layers[2], stride=2)
        self.layer4 = self._make_layer(w * 8, cfg.layers[3], stride=2)
        self.attnpool = AttentionPool2d(cfg.image_size // 32, w * 32, cfg.heads, cfg.output_dim)
        self.image_size = cfg.image_size

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.conv1.weight.dtype)
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.avgpool(self.relu3(self.bn3(self.conv3(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)


# --------------------------------------------------------------------- CLIP text tower
class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, width * 4)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(width * 4, width)),
        ]))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class _Resblocks(nn.Module):
    def __init__(self, width: int, heads: int, layers: int):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(layers)])


class CLIPText(nn.Module):
    """CLIP's text tower with the top-level OpenAI names (no ``visual``)."""

    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.randn(cfg.context_length, cfg.width) * 0.01)
        self.transformer = _Resblocks(cfg.width, cfg.heads, cfg.layers)
        self.ln_final = nn.LayerNorm(cfg.width)
        self.text_projection = nn.Parameter(torch.randn(cfg.width, cfg.embed_dim) * cfg.width**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(4.6052))  # unused here; part of RN50.pt

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """[C, context_length] int64 token ids -> [C, embed_dim] (not L2-normalised)."""
        n = tokens.shape[1]
        mask = torch.full((n, n), float("-inf"), device=tokens.device).triu_(1)
        x = self.token_embedding(tokens) + self.positional_embedding[:n]
        x = x.permute(1, 0, 2)  # [L, C, W]: nn.MultiheadAttention is sequence-first here
        for block in self.transformer.resblocks:
            x = block(x, mask)
        x = self.ln_final(x.permute(1, 0, 2))
        eot = tokens.argmax(dim=-1)  # the end-of-text token has the largest id
        return x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection


# ----------------------------------------------------------------------- MDMF heads
class CrossAttention(nn.Module):
    """``Attention`` of the seed: q/k/v without bias, 8 heads of D/8, output Linear + Dropout."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.2))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, nq, d = q.shape
        h = self.heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(b, x.shape[1], h, d // h).transpose(1, 2)

        qh, kh, vh = split(self.to_q(q)), split(self.to_k(k)), split(self.to_v(v))
        attn = torch.softmax((qh @ kh.transpose(-1, -2)) * self.scale, dim=-1)
        return self.to_out((attn @ vh).transpose(1, 2).reshape(b, nq, d))


class PreNormCross(nn.Module):
    """One LayerNorm shared by query, key and value (``PreNormattention`` of the seed)."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        nkv = self.norm(kv)
        return self.fn(self.norm(q), nkv, nkv) + q


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.05), nn.Linear(hidden, dim),
                                 nn.Dropout(0.05))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CrossTransformer(nn.Module):
    """``Transformer_v1``: residual stream = query sequence; no norm before the feed-forward."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int):
        super().__init__()
        self.layers = nn.ModuleList([
            nn.ModuleList([PreNormCross(dim, CrossAttention(dim, heads)), FeedForward(dim, mlp_dim)])
            for _ in range(depth)
        ])

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            q = attn(q, kv)
            q = ff(q) + q
        return q


class WeightNormConv1d(nn.Module):
    """Conv1d with legacy weight norm: ``weight = g * v / ||v||`` (norm per output channel)."""

    def __init__(self, cin: int, cout: int, kernel: int, dilation: int, padding: int):
        super().__init__()
        conv = nn.Conv1d(cin, cout, kernel, dilation=dilation, padding=padding)  # default init, as the seed
        self.weight_v = nn.Parameter(conv.weight.detach().clone())
        self.weight_g = nn.Parameter(conv.weight.detach().flatten(1).norm(dim=1).reshape(cout, 1, 1))
        self.bias = nn.Parameter(conv.bias.detach().clone())
        self.dilation, self.padding = dilation, padding

    def weight(self) -> torch.Tensor:
        return torch._weight_norm(self.weight_v, self.weight_g, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight(), self.bias, padding=self.padding, dilation=self.dilation)


class Chomp1d(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, : x.shape[-1] - self.size]


class TemporalBlock(nn.Module):
    """Residual block of two dilated causal weight-normed convs (pad both ends, chomp right)."""

    def __init__(self, cin: int, cout: int, kernel: int, dilation: int):
        super().__init__()
        pad = (kernel - 1) * dilation
        self.conv1 = WeightNormConv1d(cin, cout, kernel, dilation, pad)
        self.chomp1 = Chomp1d(pad)
        self.relu1 = nn.ReLU()
        self.dropout1 = nn.Dropout(0.1)
        self.conv2 = WeightNormConv1d(cout, cout, kernel, dilation, pad)
        self.chomp2 = Chomp1d(pad)
        self.relu2 = nn.ReLU()
        self.dropout2 = nn.Dropout(0.1)
        # The seed registers the convs a second time inside ``net``: keep that key layout.
        self.net = nn.Sequential(self.conv1, self.chomp1, self.relu1, self.dropout1,
                                 self.conv2, self.chomp2, self.relu2, self.dropout2)
        self.downsample = nn.Conv1d(cin, cout, 1) if cin != cout else None
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = x if self.downsample is None else self.downsample(x)
        return self.relu(self.net(x) + res)


class TemporalConvNet(nn.Module):
    def __init__(self, cin: int, channels: Iterable[int], kernel: int):
        super().__init__()
        blocks, prev = [], cin
        for i, ch in enumerate(channels):
            blocks.append(TemporalBlock(prev, ch, kernel, 2**i))
            prev = ch
        self.network = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


# ---------------------------------------------------------------------------- model
class MDMF(nn.Module):
    """CLIP-MDMF: optional CLIP visual ``backbone`` + the two prompted temporal views.

    ``forward(features [B, T, D], prompt [B, D]) -> (z_local [B, T, D], z_global [B, T, D])``.
    """

    def __init__(self, cfg: MDMFConfig = RN50, *, with_backbone: bool = True):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.backbone = ModifiedResNet(cfg.visual) if (with_backbone and cfg.visual is not None) else None
        self.context2 = CrossTransformer(d, cfg.depth, cfg.heads, cfg.mlp_dim)  # local (conv) view
        self.context_local = CrossTransformer(d, cfg.depth, cfg.heads, cfg.mlp_dim)  # global (TCN) view
        self.context_conv1 = nn.Conv1d(d, d, 3, padding=1)
        self.context_conv2 = nn.Conv1d(d, d, 3, padding=1)
        self.tcn = TemporalConvNet(d, [d] * cfg.tcn_levels, cfg.tcn_kernel)

    # ------------------------------------------------------------------------ pieces
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """[B, T, 3, H, W] pixels in [0, 1] (no CLIP mean/std) -> [B, T, D] frame features."""
        if self.backbone is None:
            raise WeightsError("this MDMF model has no visual backbone (features-in bundle); pass frame features")
        b, t = frames.shape[:2]
        return self.backbone(frames.reshape(b * t, *frames.shape[2:])).reshape(b, t, -1)

    def local_context(self, f: torch.Tensor) -> torch.Tensor:
        return self.context_conv2(self.context_conv1(f.transpose(1, 2))).transpose(1, 2)

    def tcn_output(self, f: torch.Tensor) -> torch.Tensor:
        return self.tcn(f.transpose(1, 2)).transpose(1, 2)

    def global_context(self, f: torch.Tensor) -> torch.Tensor:
        return self.tcn_output(f)[:, -1:, :] + f

    def view_outputs(self, f: torch.Tensor, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Transformer outputs of both views including token 0: 2 x [B, T + 1, D]."""
        p = prompt[:, None, :].to(f.dtype)
        kv = torch.cat([p, f], dim=1)
        local = self.context2(torch.cat([p, self.local_context(f)], dim=1), kv)
        glob = self.context_local(torch.cat([p, self.global_context(f)], dim=1), kv)
        return local, glob

    def forward(self, f: torch.Tensor, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        local, glob = self.view_outputs(f, prompt)
        return local[:, 1:], glob[:, 1:]


class MDMFVisual(nn.Module):
    """Graph ``visual``: ``frames`` [B, T, 3, S, S] in [0, 1] -> ``features`` [B, T, D]."""

    def __init__(self, model: MDMF):
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model.encode_frames(frames)


class MDMFViews(nn.Module):
    """Graph ``views``: ``features`` [B, T, D] + ``prompt`` [B, D] -> ``z_local``, ``z_global`` [B, T, D]."""

    def __init__(self, model: MDMF):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(features, prompt)


# --------------------------------------------------------------------------- loading
#: keys of the official checkpoint that inference never reads (dropped by name)
UNUSED_KEYS = ("scale",)
UNUSED_PREFIXES = ("context_conv11.", "context_conv22.")
#: non-tensor entries of OpenAI's JIT ``RN50.pt`` state_dict
CLIP_JIT_EXTRAS = ("input_resolution", "context_length", "vocab_size")


def tcn_aliases(levels: int = 3) -> dict[str, str]:
    """Duplicated TCN key -> canonical key (``tcn.network.i.net.0.*`` -> ``...conv1.*``)."""
    out = {}
    for i in range(levels):
        for alias, name in (("net.0", "conv1"), ("net.4", "conv2")):
            for s in ("weight_g", "weight_v", "bias"):
                out[f"tcn.network.{i}.{alias}.{s}"] = f"tcn.network.{i}.{name}.{s}"
    return out


def canonical_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``state_dict`` without the duplicated TCN aliases (what a bundle stores)."""
    aliases = tcn_aliases(getattr(getattr(model, "cfg", None), "tcn_levels", 3))
    return {k: v for k, v in model.state_dict().items() if k not in aliases}


def normalize_mdmf_keys(state: Mapping[str, torch.Tensor],
                        levels: int = 3) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Strip ``backbone.module.`` / leading ``module.``, drop unused keys, fold TCN aliases.

    Returns the canonical state (no aliases) and the dropped key names. Raises
    ``WeightsError`` when an alias and its canonical key hold different tensors.
    """
    aliases = tcn_aliases(levels)
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    alias_values: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        k = key[len("module."):] if key.startswith("module.") else key  # whole model wrapped
        k = k.replace("backbone.module.", "backbone.", 1) if k.startswith("backbone.module.") else k  # backbone only
        if k in UNUSED_KEYS or k.startswith(UNUSED_PREFIXES):
            dropped.append(key)
        elif k in aliases:
            alias_values[k] = value
        else:
            out[k] = value
    for alias, value in alias_values.items():
        canon = aliases[alias]
        if canon not in out:
            out[canon] = value
        elif out[canon].shape != value.shape or not torch.equal(out[canon], value):
            raise WeightsError(f"TCN key {alias} should duplicate {canon} but holds a different tensor")
    return out, dropped


def load_mdmf_state_dict(model: MDMF, state: Mapping[str, torch.Tensor], *, heads_only: bool = False) -> list[str]:
    """Load an MDMF state dict strictly (after ``normalize_mdmf_keys``); returns dropped keys.

    With ``heads_only`` the ``backbone.*`` keys are neither required nor allowed.
    """
    levels = model.cfg.tcn_levels
    canon, dropped = normalize_mdmf_keys(state, levels)
    expected = canonical_state_dict(model)
    if heads_only:
        expected = {k: v for k, v in expected.items() if not k.startswith("backbone.")}
    _check_keys(expected, canon, "MDMF checkpoint")
    aliases = tcn_aliases(levels)
    full = dict(canon)
    for alias, name in aliases.items():
        full[alias] = canon[name]
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if name in full:
                tensor.copy_(full[name].to(tensor.dtype))
    return dropped


def load_clip_state_dict(model: MDMF, text: CLIPText | None, state: Mapping[str, torch.Tensor]) -> None:
    """Load OpenAI CLIP weights (``visual.*`` -> backbone, the rest -> text tower) strictly."""
    visual = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    rest = {k: v for k, v in state.items() if not k.startswith("visual.") and k not in CLIP_JIT_EXTRAS}
    if model.backbone is None:
        raise WeightsError("the model was built without a backbone; cannot load CLIP visual weights")
    _check_keys(model.backbone.state_dict(), visual, "CLIP visual (visual.*)")
    model.backbone.load_state_dict(visual, strict=True)
    if text is not None:
        _check_keys(text.state_dict(), rest, "CLIP text tower")
        text.load_state_dict(rest, strict=True)


def _check_keys(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor], what: str) -> None:
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = [f"{k}: expected {tuple(expected[k].shape)}, got {tuple(got[k].shape)}"
              for k in sorted(set(expected) & set(got)) if tuple(expected[k].shape) != tuple(got[k].shape)]
    if missing or unexpected or shapes:
        def head(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" ... (+{len(keys) - 8})" if len(keys) > 8 else "")

        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {head(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {head(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} mis-shaped: {head(shapes)}")
        raise WeightsError(f"{what} does not fit the architecture: " + "; ".join(parts))


def infer_config(state: Mapping[str, torch.Tensor]) -> MDMFConfig:
    """Architecture from a (normalised) MDMF state dict: width D, TCN depth, visual tower."""
    try:
        dim = int(state["context_conv1.weight"].shape[0])
        mlp = int(state["context2.layers.0.1.net.0.weight"].shape[0])
    except KeyError as exc:
        raise WeightsError(f"not an MDMF checkpoint: key {exc} is missing") from None
    depth = len({k.split(".")[2] for k in state if k.startswith("context2.layers.")})
    levels = len({k.split(".")[2] for k in state if k.startswith("tcn.network.")})
    visual = infer_visual_config({k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")})
    heads = 8
    return MDMFConfig(dim=dim, heads=heads, mlp_dim=mlp, depth=depth, tcn_levels=levels, visual=visual, text=None)


def infer_visual_config(visual: Mapping[str, torch.Tensor]) -> CLIPVisualConfig | None:
    """CLIP ModifiedResNet hyper-parameters from its weights (as OpenAI's ``build_model``)."""
    if not visual:
        return None
    try:
        layers = tuple(len({k.split(".")[1] for k in visual if k.startswith(f"layer{i}.")}) for i in (1, 2, 3, 4))
        width = int(visual["layer1.0.conv1.weight"].shape[0])
        pos = visual["attnpool.positional_embedding"]
        out = int(visual["attnpool.c_proj.weight"].shape[0])
    except KeyError as exc:
        raise WeightsError(f"CLIP visual weights lack {exc}") from None
    spatial = round((pos.shape[0] - 1) ** 0.5)
    return CLIPVisualConfig(layers=layers, width=width, image_size=spatial * 32, heads=width * 32 // 64,
                            output_dim=out)


def infer_text_config(state: Mapping[str, torch.Tensor]) -> CLIPTextConfig | None:
    if "token_embedding.weight" not in state:
        return None
    width = int(state["ln_final.weight"].shape[0])
    layers = len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")})
    return CLIPTextConfig(context_length=int(state["positional_embedding"].shape[0]),
                          vocab_size=int(state["token_embedding.weight"].shape[0]), width=width,
                          heads=width // 64, layers=layers, embed_dim=int(state["text_projection"].shape[1]))


# ------------------------------------------------------------- checkpoints and bundles
def config_from_dict(data: Mapping[str, Any]) -> MDMFConfig:
    """``MDMFConfig`` from its JSON dict (``config_to_dict``)."""
    d = dict(data)
    vis = d.pop("visual", None)
    txt = d.pop("text", None)
    visual = CLIPVisualConfig(**{**vis, "layers": tuple(vis["layers"])}) if vis else None
    text = CLIPTextConfig(**txt) if txt else None
    return MDMFConfig(**d, visual=visual, text=text)


def config_to_dict(cfg: MDMFConfig) -> dict[str, Any]:
    """A JSON-able dict of ``cfg`` (lists, not tuples)."""
    d = asdict(cfg)
    if d.get("visual"):
        d["visual"]["layers"] = list(d["visual"]["layers"])
    return d


def _read_torch(path: str | os.PathLike) -> dict[str, Any]:
    """State dict from a torch file, safely: ``weights_only=True``; TorchScript archives (OpenAI's
    ``RN50.pt``) are opened with ``torch.jit.load`` and only their ``state_dict`` is read."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            scripted = any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())
        if scripted:
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path} could not be read with torch.load(weights_only=True): {exc}") from None
    if isinstance(obj, dict):
        for key in ("model_state_dict", "state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise WeightsError(f"{path} does not hold a state dict; got {type(obj).__name__}")
    return {k: v for k, v in obj.items() if hasattr(v, "shape")}


def read_heads_npz(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The oracle's int8 head file (``q/<key>`` int8 + ``exp2/<key>``) -> float32 state dict."""
    with np.load(path, allow_pickle=False) as z:
        keys = [k[2:] for k in z.files if k.startswith("q/")]
        if not keys:
            raise WeightsError(f"{path} has no q/<key> arrays; expected the int8 heads format")
        return {k: torch.from_numpy(z[f"q/{k}"].astype(np.float32) * np.float32(2.0 ** int(z[f"exp2/{k}"])))
                for k in keys}


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A state dict from a ``.pt``/``.pth`` (or TorchScript ``RN50.pt``) or the int8 heads ``.npz``."""
    return read_heads_npz(path) if str(path).endswith(".npz") else _read_torch(path)


def convert_checkpoint(ckpt: str | os.PathLike, clip: str | os.PathLike | None = None
                       ) -> tuple[MDMFConfig, dict[str, np.ndarray], list[str]]:
    """MDMF checkpoint (+ optional CLIP ``RN50.pt``) -> (architecture, bundle tensors, dropped keys).

    The checkpoint's ``backbone.*`` (fine-tuned visual tower, ``backbone.module.*`` accepted)
    is used when present; otherwise CLIP's ``visual.*`` when ``clip`` is given; otherwise the
    model is features-in. The text tower (stored as ``text.*``) always comes from ``clip``.
    """
    state, dropped = normalize_mdmf_keys(read_checkpoint(ckpt))
    cfg = infer_config(state)
    clip_state = read_checkpoint(clip) if clip is not None else None
    text_cfg = None
    if clip_state is not None:
        text_cfg = infer_text_config(clip_state)
        clip_visual = infer_visual_config({k[7:]: v for k, v in clip_state.items() if k.startswith("visual.")})
        if cfg.visual is None and clip_visual is not None:
            if clip_visual.output_dim != cfg.dim:
                raise WeightsError(f"CLIP visual tower outputs {clip_visual.output_dim} features but the MDMF heads "
                                   f"have D={cfg.dim}")
            cfg = MDMFConfig(**{**asdict(cfg), "visual": clip_visual, "text": None})
            state.update({"backbone." + k[7:]: v for k, v in clip_state.items() if k.startswith("visual.")})
    if text_cfg is not None and text_cfg.embed_dim != cfg.dim:
        raise WeightsError(f"CLIP text tower embeds to {text_cfg.embed_dim} but the MDMF heads have D={cfg.dim}")
    cfg = MDMFConfig(**{**asdict(cfg), "visual": cfg.visual, "text": text_cfg})
    with torch.device("meta"):
        model = MDMF(cfg)
    model = model.to_empty(device="cpu")
    load_mdmf_state_dict(model, state, heads_only=cfg.visual is None)
    tensors = {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy()
               for k, v in canonical_state_dict(model).items()}
    if text_cfg is not None:
        with torch.device("meta"):
            text = CLIPText(text_cfg)
        text = text.to_empty(device="cpu")
        rest = {k: v for k, v in clip_state.items() if not k.startswith("visual.") and k not in CLIP_JIT_EXTRAS}
        _check_keys(text.state_dict(), rest, "CLIP text tower")
        tensors.update({f"text.{k}": v.detach().float().numpy() for k, v in rest.items()})
    return cfg, tensors, dropped


def build_from_tensors(cfg: MDMFConfig, tensors: Mapping[str, np.ndarray]) -> MDMF:
    """The eval-mode model (heads, and the visual tower unless features-in) from a bundle's tensors."""
    with torch.device("meta"):
        model = MDMF(cfg)
    state = {k: torch.from_numpy(v) for k, v in tensors.items() if not k.startswith("text.")}
    full = {**state, **{a: state[c] for a, c in tcn_aliases(cfg.tcn_levels).items() if c in state}}
    try:
        model.load_state_dict(full, strict=True, assign=True)
    except RuntimeError as exc:
        raise WeightsError(f"bundle weights do not fit the MDMF architecture: {exc}") from None
    return model.eval()


def build_text_from_tensors(cfg: CLIPTextConfig, tensors: Mapping[str, np.ndarray]) -> CLIPText:
    """The eval-mode CLIP text tower from a bundle's ``text.*`` tensors."""
    with torch.device("meta"):
        text_tower = CLIPText(cfg)
    text_state = {k[5:]: torch.from_numpy(v) for k, v in tensors.items() if k.startswith("text.")}
    try:
        text_tower.load_state_dict(text_state, strict=True, assign=True)
    except RuntimeError as exc:
        raise WeightsError(f"bundle text tower does not fit: {exc}") from None
    return text_tower.eval()


# ------------------------------------------------------------------------- tokenizer
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP reversible byte -> printable unicode character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def read_bpe_merges(path: str | bytes) -> list[str]:
    """Merges of CLIP's ``bpe_simple_vocab_16e6.txt.gz`` (the 48894 that CLIP uses)."""
    import gzip
    from pathlib import Path

    raw = Path(path).read_bytes()
    text = gzip.decompress(raw).decode("utf-8") if raw[:2] == b"\x1f\x8b" else raw.decode("utf-8")
    lines = text.split("\n")
    return lines[1:49152 - 256 - 2 + 1]


class ClipTokenizer:
    """CLIP's byte-level BPE (lower-cased, whitespace-collapsed; no ftfy), from its merges.

    The vocabulary is built exactly as CLIP builds it: 256 byte symbols, the same with ``</w>``,
    one token per merge, then ``<|startoftext|>`` and ``<|endoftext|>``. The word splitter is
    CLIP's pattern with ``\\p{L}``/``\\p{N}`` approximated by Python ``re`` classes.
    """

    def __init__(self, merges: list[str]):
        import re

        self.byte_encoder = _bytes_to_unicode()
        pairs = [tuple(m.split()) for m in merges if len(m.split()) == 2]
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab] + ["".join(p) for p in pairs] + ["<|startoftext|>", "<|endoftext|>"]
        self.encoder = {v: i for i, v in enumerate(vocab)}
        self.ranks = {p: i for i, p in enumerate(pairs)}
        self.sot, self.eot = self.encoder["<|startoftext|>"], self.encoder["<|endoftext|>"]
        self.pattern = re.compile(
            r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+", re.IGNORECASE)
        self._cache: dict[str, list[str]] = {}

    def _bpe(self, token: str) -> list[str]:
        if token in self._cache:
            return self._cache[token]
        word = [*token[:-1], token[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self._cache[token] = word
        return word

    def encode(self, text: str) -> list[int]:
        import html

        text = " ".join(html.unescape(html.unescape(text)).split()).strip().lower()
        ids: list[int] = []
        for piece in self.pattern.findall(text):
            token = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self._bpe(token))
        return ids

    def encode_batch(self, texts: list[str], context_length: int = 77) -> Any:
        """[C, context_length] int64 ids: <sot> tokens <eot>, zero padded (truncated to fit)."""
        import numpy as np

        out = np.zeros((len(texts), context_length), dtype=np.int64)
        for i, text in enumerate(texts):
            ids = [self.sot, *self.encode(text)][: context_length - 1] + [self.eot]
            out[i, : len(ids)] = ids
        return out
