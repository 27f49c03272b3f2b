"""MAVD networks: "Aligning First, Then Fusing" (Jin, Zhu, Sun 2025), github.com/xjpp2016/MAVD.

Inference path for one video (B crops, T 16-frame snippets)::

    rgb (B,T,1024) --Unimodal v--> v_feat (B,T,128) ----------------------------+
    audio (Ba,T,128) --Unimodal a--> a_feat (Ba,T,32) --Projection va--> (.,32) --+--> mix (B,T,224)
    flow (B,T,1024) --Unimodal f--> f_feat (B,T,64) --Projection vf--> (.,64) ---+
    mix --Multimodal vaf (MLP, causal TCN, MIL head)--> snippet probabilities (B,T)
    final = mean over crops of the probabilities (a mean of sigmoids)

Parameter names equal the keys of the official ``saved_models/ap86.07/*.pth`` files, so
``load_official`` loads them strictly. Deviations from the official code (none change the
numbers):

- no ``.cuda()``; the positional matrix is built from ``arange`` (bit-identical to the
  official ``linspace(1, T, T)``; ``linspace`` makes exporters specialise T);
- ``squeeze(-1)`` instead of a bare ``squeeze()``, so T=1 and one crop keep their rank;
- the TCN's legacy weight norm (``weight_g``/``weight_v``) is folded into a plain conv weight
  at load, and the aliased ``net.0``/``net.4`` keys are checked equal and dropped;
- the causal TCN pads on the left instead of padding both ends and chopping the right;
- the audio stream may be given once per video (``Ba = 1``) and is broadcast to the crops:
  crops never mix, so this equals the official 5 identical copies;
- the training-only MIL top-k ``filter`` is not implemented.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgesentry.errors import WeightsError

#: decay of the positional kernel per snippet: K[i, j] = exp(-|i - j| / e) = R ** |i - j|
POS_DECAY = math.exp(-1.0 / math.e)


@dataclass(frozen=True)
class UnimodalConfig:
    """One modality branch: Conv1d embedding, 2-layer transformer, MIL head."""

    input_size: int
    h_dim: int
    feature_dim: int
    depth: int = 2
    heads: int = 4


@dataclass(frozen=True)
class MAVDConfig:
    """The official ap86.07 architecture (``get_result.py:26-45``)."""

    v: UnimodalConfig = UnimodalConfig(1024, 128, 128)
    a: UnimodalConfig = UnimodalConfig(128, 64, 32)
    f: UnimodalConfig = UnimodalConfig(1024, 128, 64)
    fusion_hidden: int = 128  # MIL hidden size of the fusion head
    fusion_dim: int = 64
    tcn_levels: int = 3
    tcn_kernel: int = 2


# ------------------------------------------------------------------------------ helpers
def positional_matrix(
    n: int, *, dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> torch.Tensor:
    """The fixed positional attention A2 (T, T): ``K[i, j] / sum_k K[j, k]``, K = exp(-|i-j|/e).

    Column ``j`` is divided by row sum ``j`` (the official ``K / K.sum(-1)`` broadcast), so
    columns sum to one and rows do not. K is symmetric, so row sum ``j`` is column sum ``j``,
    summed here with ``keepdim``: OpenVINO (2026.4) fuses ``exp(x) / reduce_sum(exp(x), -1)``
    into a row softmax even when the reduction drops its axis and the division broadcasts it
    over columns, which normalised the wrong axis (MAVD features off by 0.1); the keepdim form
    means the same in every runtime.
    """
    pos = torch.arange(1, n + 1, device=device).to(dtype)
    dist = (pos[:, None] - pos[None, :]).abs()
    k = torch.exp(-dist / math.e)
    return k / k.sum(0, keepdim=True)


# ------------------------------------------------------------------------------ modules
class Temporal(nn.Module):
    """Conv1d(k=3, pad 1) + ReLU over time on (B, T, C) input (``embedding.conv_1``).

    ``fused=True`` computes the same conv in the (B, T, C) layout: one (B*T, C) x (C, 3*out)
    product, then ``y[t] = z0[t-1] + z1[t] + z2[t+1]``. The official layout transposes the
    1024-wide input to (B, C, T) and back; in the exported graph those transposes cost as
    much as the conv itself.
    """

    def __init__(self, input_size: int, out_size: int, fused: bool = False):
        super().__init__()
        self.fused = fused
        self.conv_1 = nn.Sequential(
            nn.Conv1d(input_size, out_size, kernel_size=3, stride=1, padding=1), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fused:
            return self.conv_1(x.transpose(1, 2)).transpose(1, 2)
        conv = self.conv_1[0]
        out = conv.out_channels
        taps = conv.weight.permute(1, 2, 0).reshape(conv.in_channels, 3 * out)  # column k*out + o
        z = torch.matmul(x, taps)
        before = F.pad(z[..., :out], (0, 0, 1, 0))[:, :-1]  # z0[t-1], zero at t = 0
        after = F.pad(z[..., 2 * out :], (0, 0, 0, 1))[:, 1:]  # z2[t+1], zero at t = T-1
        return F.relu(z[..., out : 2 * out] + before + after + conv.bias)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0), nn.Linear(hidden, dim), nn.Dropout(0.0)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Attention(nn.Module):
    """Content softmax attention beside a fixed positional attention, per head.

    ``to_qkv`` yields q, k, v, t (each heads x dim_head, head-major). Head h outputs
    ``[softmax(q k^T / sqrt(dh)) v | A2 t]`` and heads are flattened head-major before
    ``to_out``. ``positional`` selects how ``A2 t`` is computed: ``"matrix"`` (the official
    T x T product) or ``"scan"`` (two exponential scans, O(T); exact in real arithmetic).
    """

    def __init__(self, dim: int, heads: int, dim_head: int, positional: str = "matrix", fused: bool = False):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.scale = dim_head**-0.5
        self.positional = positional
        self.fused = fused
        self.to_qkv = nn.Linear(dim, inner * 4, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner * 2, dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor, a2: torch.Tensor | None = None) -> torch.Tensor:
        """``a2``: the (T, T) positional matrix when the caller shares one across layers
        (fused layout only; otherwise it is built here)."""
        if self.fused:
            return self._forward_fused(x, a2)
        b, n, _ = x.shape
        q, k, v, t = (
            c.reshape(b, n, self.heads, self.dim_head).transpose(1, 2)
            for c in self.to_qkv(x).chunk(4, dim=-1)
        )
        attn = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * self.scale, dim=-1)
        out1 = torch.matmul(attn, v)
        if self.positional == "matrix":
            # as the official code (self_attention.py:61): one copy of A2 per crop and head
            a2 = positional_matrix(n, dtype=t.dtype, device=t.device)
            out2 = torch.matmul(a2.unsqueeze(0).unsqueeze(1).repeat(b, self.heads, 1, 1), t)
        else:
            out2 = self._positional(t)
        out = torch.cat([out1, out2], dim=-1)  # (b, h, n, 2 dh)
        return self.to_out(out.transpose(1, 2).reshape(b, n, self.heads * 2 * self.dim_head))

    def _positional(self, t: torch.Tensor) -> torch.Tensor:
        if self.positional == "scan":
            return positional_scan(t)
        return torch.matmul(positional_matrix(t.shape[-2], dtype=t.dtype, device=t.device), t)

    def _forward_fused(self, x: torch.Tensor, a2: torch.Tensor | None = None) -> torch.Tensor:
        """The same attention with per-head weight views instead of activation reshapes.

        q, k, v come straight out as (b, h, n, dh) from ``x[:, None] @ W_h`` (h, dim, dh), and
        ``to_out`` is applied per head and summed over heads, so no activation is sliced,
        transposed or concatenated (in ONNX Runtime those copies took ~40% of the unimodal
        graph at T = 182): the head-major ``[out1_h | out2_h]`` input of ``to_out`` becomes a
        split of its weight into the out1 and out2 halves of each head.

        The positional branch is linear and shares A2 across heads, so it collapses:
        ``sum_h A2 (x Wt_h) Wo2_h = A2 (x M)`` with ``M = sum_h Wt_h Wo2_h`` (dim x dim). That
        drops the t projection and the per-head A2 products (~30% of the attention's work).
        """
        h, dh = self.heads, self.dim_head
        w = self.to_qkv.weight.reshape(4, h, dh, -1).transpose(-1, -2)  # (4, h, dim, dh): q, k, v, t
        proj = self.to_out[0]
        wo = proj.weight.reshape(-1, h, 2 * dh).permute(1, 2, 0)  # (h, 2 dh, dim)
        xs = x.unsqueeze(1)
        q = torch.matmul(xs, w[0] * self.scale)
        k, v = torch.matmul(xs, w[1]), torch.matmul(xs, w[2])
        attn = torch.softmax(torch.matmul(q, k.transpose(-1, -2)), dim=-1)
        content = torch.matmul(torch.matmul(attn, v), wo[:, :dh]).sum(dim=1)
        t = torch.matmul(x, torch.matmul(w[3], wo[:, dh:]).sum(dim=0))
        positional = torch.matmul(a2, t) if a2 is not None else self._positional(t)
        return content + positional + proj.bias


def positional_scan(t: torch.Tensor) -> torch.Tensor:
    """``A2 @ t`` along dim -2 in O(T) by a forward and a backward exponential scan (eager).

    ``A2 t = K (t / s)`` with ``s_j`` the row sums of K in closed form. Used for long
    sequences in eager torch; the kernels in ``edgesentry.kernels.mavd`` do the same.
    """
    n = t.shape[-2]
    r = POS_DECAY
    j = torch.arange(n, device=t.device, dtype=torch.float64)
    s = ((1 - r ** (j + 1)) + (1 - r ** (n - j))) / (1 - r) - 1
    u = t.double() / s[:, None]
    fwd = torch.empty_like(u)
    bwd = torch.empty_like(u)
    acc = torch.zeros_like(u[..., 0, :])
    for i in range(n):
        acc = acc * r + u[..., i, :]
        fwd[..., i, :] = acc
    acc = torch.zeros_like(acc)
    for i in range(n - 1, -1, -1):
        acc = acc * r + u[..., i, :]
        bwd[..., i, :] = acc
    return (fwd + bwd - u).to(t.dtype)


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor, **kwargs: torch.Tensor | None) -> torch.Tensor:
        return self.fn(self.norm(x), **kwargs)


class Transformer(nn.Module):
    """Pre-norm transformer: ``x = Attn(LN x) + x; x = FF(LN x) + x`` per layer, no final LN."""

    def __init__(
        self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, positional: str = "matrix",
        fused: bool = False,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    PreNorm(dim, Attention(dim, heads, dim_head, positional, fused)),
                    PreNorm(dim, FeedForward(dim, mlp_dim)),
                ]
            )
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor, a2: torch.Tensor | None = None) -> torch.Tensor:
        for attn, ff in self.layers:
            x = attn(x, a2=a2) + x
            x = ff(x) + x
        return x


class MIL(nn.Module):
    """Snippet scoring head: Linear, ReLU, Linear(->32), Linear(32->1) (no activation between
    the last two). ``forward`` returns the logits (B, T, 1); apply a sigmoid for probabilities."""

    def __init__(self, input_dim: int, h_dim: int):
        super().__init__()
        self.regressor = nn.Sequential(
            nn.Linear(input_dim, h_dim),
            nn.ReLU(),
            nn.Dropout(0.0),
            nn.Linear(h_dim, 32),
            nn.Dropout(0.0),
            nn.Linear(32, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.regressor[:6](x)


class Unimodal(nn.Module):
    """One modality: ``embedding`` (Conv1d k3 + ReLU), ``selfatt`` (transformer), ``mil``."""

    def __init__(self, cfg: UnimodalConfig, positional: str = "matrix", fused: bool = False):
        super().__init__()
        d = cfg.feature_dim
        self.embedding = Temporal(cfg.input_size, d, fused)
        self.selfatt = Transformer(d, cfg.depth, cfg.heads, d // 2, d, positional, fused)
        self.mil = MIL(d, cfg.h_dim)

    def forward(self, x: torch.Tensor, a2: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D_in) -> ``satt_f`` (B, T, d): the feature the official ``.pt`` graphs return."""
        return self.selfatt(self.embedding(x), a2)


class Projection(nn.Module):
    """Alignment MLP (va, vf): three Linear+ReLU, the last ReLU included."""

    def __init__(self, input_dim: int, h_dim: int, output_dim: int):
        super().__init__()
        self.regressor = nn.Sequential(
            nn.Linear(input_dim, h_dim),
            nn.ReLU(),
            nn.Dropout(0.0),
            nn.Linear(h_dim, h_dim),
            nn.ReLU(),
            nn.Dropout(0.0),
            nn.Linear(h_dim, output_dim),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.regressor(x)


class TemporalBlock(nn.Module):
    """Causal residual block: ``ReLU(ReLU(conv2(ReLU(conv1 x))) + x)``, kernel 2, dilation d.

    ``conv1``/``conv2`` hold plain (weight-norm folded) weights; padding is applied on the
    left only, which equals the official pad-both-ends-then-chomp.
    """

    def __init__(self, channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.pad = (kernel_size - 1) * dilation
        self.conv1 = nn.Conv1d(channels, channels, kernel_size, dilation=dilation)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(F.pad(x, (self.pad, 0))))
        h = F.relu(self.conv2(F.pad(h, (self.pad, 0))))
        return F.relu(h + x)


class TemporalConvNet(nn.Module):
    def __init__(self, channels: int, levels: int, kernel_size: int):
        super().__init__()
        self.network = nn.Sequential(*(TemporalBlock(channels, kernel_size, 2**i) for i in range(levels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


class TCNModel(nn.Module):
    def __init__(self, channels: int, levels: int, kernel_size: int):
        super().__init__()
        self.tcn = TemporalConvNet(channels, levels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, C)."""
        return self.tcn(x.transpose(1, 2)).transpose(1, 2)


class Multimodal(nn.Module):
    """Fusion (vaf): embedding MLP 224->112->64, causal TCN, MIL head."""

    def __init__(self, input_size: int, h_dim: int, feature_dim: int, levels: int = 3, kernel_size: int = 2):
        super().__init__()
        self.embedding = nn.Sequential(
            nn.Linear(input_size, input_size // 2),
            nn.ReLU(),
            nn.Dropout(0.0),
            nn.Linear(input_size // 2, feature_dim),
            nn.ReLU(),
        )
        self.tcn = TCNModel(feature_dim, levels, kernel_size)
        self.mil = MIL(feature_dim, h_dim)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """(B, T, 224) -> logits (B, T)."""
        return self.mil(self.tcn(self.embedding(mix))).squeeze(-1)


class MAVD(nn.Module):
    """The whole inference network. ``forward(rgb, flow, audio)`` returns per-crop snippet
    probabilities (B, T); ``features`` gives the unimodal stage alone.

    ``fused=True`` selects the layout-free formulations of the conv embedding and the
    attention (``Temporal``, ``Attention._forward_fused``): same parameters, same function
    (float32 reassociation only), fewer activation copies. The detector and the exported graph
    use it; ``fused=False`` is the official computation, kept as the benchmark baseline.
    """

    def __init__(self, cfg: MAVDConfig | None = None, positional: str = "matrix", fused: bool = False):
        super().__init__()
        self.fused, self.positional = fused, positional
        self.cfg = cfg = cfg or MAVDConfig()
        self.v_model = Unimodal(cfg.v, positional, fused)
        self.a_model = Unimodal(cfg.a, positional, fused)
        self.f_model = Unimodal(cfg.f, positional, fused)
        self.va_model = Projection(cfg.a.feature_dim, cfg.a.feature_dim, cfg.a.feature_dim)
        self.vf_model = Projection(cfg.f.feature_dim, cfg.f.feature_dim, cfg.f.feature_dim)
        mix = cfg.v.feature_dim + cfg.a.feature_dim + cfg.f.feature_dim
        self.vaf_model = Multimodal(mix, cfg.fusion_hidden, cfg.fusion_dim, cfg.tcn_levels, cfg.tcn_kernel)

    def features(
        self, rgb: torch.Tensor, flow: torch.Tensor, audio: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """Unimodal features ``(v_feat (B,T,128), a_feat (Ba,T,32), f_feat (B,T,64))``.

        In the fused layout the positional matrix is built once and shared by the six
        attention layers (the three streams have the same T); in an exported graph each
        layer would otherwise rebuild it from ``Range`` (~20 small nodes per layer).
        """
        a2 = None
        if self.fused and self.positional == "matrix":
            a2 = positional_matrix(rgb.shape[-2], dtype=rgb.dtype, device=rgb.device)
        return self.v_model(rgb, a2), self.a_model(audio, a2), self.f_model(flow, a2)

    def fuse(self, v_feat: torch.Tensor, a_feat: torch.Tensor, f_feat: torch.Tensor) -> torch.Tensor:
        """Align and fuse: ``[v | va(a) | vf(f)]`` (B, T, 224); audio broadcast over crops."""
        va = self.va_model(a_feat).expand(v_feat.shape[0], -1, -1)
        return torch.cat([v_feat, va, self.vf_model(f_feat)], dim=-1)

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        v, a, f = self.features(rgb, flow, audio)
        return torch.sigmoid(self.vaf_model(self.fuse(v, a, f)))


# ------------------------------------------------------------------------------ loading
SUBMODELS = ("v", "a", "f", "va", "vf", "vaf")


def convert_vaf_state_dict(sd: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Official vaf keys -> this module's: drop the ``net.0``/``net.4`` aliases after checking
    that they equal ``conv1``/``conv2``, and fold weight norm ``w = g v / ||v||`` (norm over
    dims 1, 2 per output channel) into ``conv{1,2}.weight``.

    Raises:
        WeightsError: an alias differs from its twin, or a weight-norm pair is incomplete.
    """
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    aliases = {"net.0.": "conv1.", "net.4.": "conv2."}
    for key, value in sd.items():
        alias = next((a for a in aliases if f".{a}" in key and key.startswith("tcn.tcn.network.")), None)
        if alias is not None:
            twin = key.replace(f".{alias}", f".{aliases[alias]}")
            if twin not in sd:
                raise WeightsError(f"vaf checkpoint has the alias {key!r} but not its twin {twin!r}")
            if sd[twin].shape != value.shape or not torch.equal(sd[twin], value):
                raise WeightsError(f"vaf checkpoint: alias {key!r} differs from {twin!r}; refusing to guess")
            continue
        if key.endswith(".weight_g"):
            continue
        if key.endswith(".weight_v"):
            stem = key[: -len("weight_v")]
            if stem + "weight_g" not in sd:
                raise WeightsError(f"vaf checkpoint has {key!r} but no {stem}weight_g")
            g, v = sd[stem + "weight_g"].double(), value.double()
            norm = v.pow(2).sum(dim=tuple(range(1, v.dim())), keepdim=True).sqrt()
            out[stem + "weight"] = (g * v / norm).to(value.dtype)
            continue
        out[key] = value
    orphan = [k for k in sd if k.endswith(".weight_g") and k[:-1] + "v" not in sd]
    if orphan:
        raise WeightsError(f"vaf checkpoint has weight_g without weight_v: {orphan}")
    return out


def load_submodel(module: nn.Module, sd: Mapping[str, torch.Tensor], name: str) -> None:
    """Strict load of one official state dict; ``WeightsError`` lists missing/unexpected keys
    and shape mismatches."""
    if name == "vaf":
        sd = convert_vaf_state_dict(sd)
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        raise WeightsError(
            f"{name} weights do not match the MAVD architecture: missing {missing}, "
            f"unexpected {unexpected}, shape mismatches {shapes}"
        )
    module.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)


def load_official(model: MAVD, state_dicts: Mapping[str, Mapping[str, torch.Tensor]]) -> MAVD:
    """Load the six official state dicts (``{"v": ..., "a": ..., "vaf": ...}``) strictly."""
    missing = [n for n in SUBMODELS if n not in state_dicts]
    if missing:
        raise WeightsError(f"MAVD needs the state dicts {list(SUBMODELS)}; missing {missing}")
    for name in SUBMODELS:
        load_submodel(getattr(model, f"{name}_model"), state_dicts[name], name)
    return model.eval()


def read_official(weights_dir: str) -> dict[str, OrderedDict[str, torch.Tensor]]:
    """Read ``{v,a,f,va,vf,vaf}_model.pth`` from a directory (the official ``ap86.07`` layout),
    with ``weights_only=True`` on the CPU (the storages are tagged ``cuda:0``)."""
    from pathlib import Path

    root = Path(weights_dir)
    if (
        root.is_dir()
        and not (root / "vaf_model.pth").exists()
        and (root / "saved_models" / "ap86.07").is_dir()
    ):
        root = root / "saved_models" / "ap86.07"
    out = {}
    for name in SUBMODELS:
        path = root / f"{name}_model.pth"
        if not path.is_file():
            raise WeightsError(
                f"MAVD weights directory {str(weights_dir)!r} lacks {path.name} "
                f"(expected {', '.join(f'{n}_model.pth' for n in SUBMODELS)})"
            )
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsError(f"could not read {path} as a weights-only state dict: {exc}") from None
        if not isinstance(sd, Mapping):
            raise WeightsError(f"{path} holds a {type(sd).__name__}, expected a state dict")
        out[name] = OrderedDict(sd)
    return out


def build_from_tensors(tensors: Mapping[str, Any], positional: str = "matrix", fused: bool = True) -> MAVD:
    """The eval-mode network from a bundle's state dict (strict: ``WeightsError`` on mismatch).

    ``fused`` (default) builds the copy-free layout the detector and the ONNX export use;
    ``fused=False`` the official computation (the benchmark's baseline).
    """
    model = MAVD(positional=positional, fused=fused)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise WeightsError(f"MAVD bundle weights do not match: missing {missing}, unexpected {unexpected}")
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}, strict=True)
    return model.eval()


class MAVDFeatures(nn.Module):
    """The exported / served graph: ``(rgb, flow, audio) -> (v_feat, a_feat, f_feat)``, the
    unimodal stage of ``model`` (the align-and-fuse head runs as a kernel after it)."""

    def __init__(self, model: MAVD):
        super().__init__()
        self.m = model

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.m.features(rgb, flow, audio)
