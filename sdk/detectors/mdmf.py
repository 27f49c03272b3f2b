"""CLIP-MDMF few-shot action recognition: enrol classes from a few clips, classify a query clip.

    det = edgesentry.load("mdmf_bundle")                     # edgesentry convert mdmf CKPT --clip RN50.pt
    gallery = det.gallery()
    gallery.enroll("pour water", ["a.mp4", "b.mp4"])          # text prompt "a photo of pour water"
    gallery.add_shot("pour water", "c.mp4")                   # exact incremental prototype update
    result = det.classify("query.mp4", gallery)              # Result: extras["logits"], info["label"]
    gallery.save("gallery.npz"); gallery = det.load_gallery("gallery.npz")

    # features in (your own backbone, or a heads-only bundle): frame features [Q|S, T, D]
    result = det.classify_features(query_feats, support_feats, support_labels, text_embeddings)

Pipeline (seed: github.com/cofly2014/CLIP-MDMF ``MDMF_CLIPFSAR``; see ``edgesentry.models.mdmf``):

- preprocess: OpenCV decode, 8 frames at ``int(linspace(1, n - 2, 8))``, short side 256
  (bilinear), centre crop 224, RGB in [0, 1] with **no** CLIP mean/std (what the seed trained on);
- graph: CLIP RN50 visual tower per frame -> [T, D]; per class the support shots go through both
  views with the class's own text prompt and are averaged frame-wise into prototypes (cached in
  the gallery); the query's prompt is picked by the probability prompt selector (PPS) over the
  classes' text embeddings: ``s = mean of the top-4 frame cosines``, ``p = softmax(200 s)``,
  ``argmax`` by default (deterministic) or the seed's categorical draw (``prompt="sample"``
  with an explicit ``seed``: Python ``random.Random(seed)``, one ``random()`` per query, the
  bisection of ``random.choices``);
- postprocess: the fused soft-OTAM kernel (``edgesentry.kernels.otam``): cosine distances,
  bidirectional OTAM per view, ``logits = -(d_local + d_global)``; prediction = argmax.

``Result.score`` is the top logit (uncalibrated; higher = closer), ``extras["logits"]`` [Q, N],
``extras["pred"]`` [Q], ``extras["probs"]`` softmax of the logits, ``extras["distances"]``
(per view and direction), ``extras["pps_probs"]`` and ``extras["prompt_choice"]``;
``info["labels"]`` lists the classes in logit order (sorted labels).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import time
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry.bundle import Bundle, write_bundle
from edgesentry.detector import Detector
from edgesentry.errors import (
    BackendUnavailableError,
    BundleError,
    CallOrderError,
    ConfigError,
    InputError,
    WeightsError,
    describe,
)
from edgesentry.kernels import otam as otam_kernels
from edgesentry.result import Result

CONVERT_HELP = (
    "Convert a CLIP-MDMF checkpoint (fully_trained.pt, checkpoint.pt with model_state_dict, or a heads-only "
    "state dict / the oracle's int8 heads .npz) into a bundle. --clip RN50.pt adds the CLIP text tower "
    "(and the visual tower when the checkpoint has no backbone.* keys). Without any backbone the bundle is "
    "features-in: classify_features() and galleries of frame features only."
)
DEFAULT_TEMPLATE = "a photo of {}"
PPS_TEMPERATURE = 200.0
PPS_TOPK = 4
GALLERY_FORMAT = "edgesentry-mdmf-gallery/1"
_BPE_FILE = "clip_bpe.json"


# --------------------------------------------------------------------------- settings
@dataclass
class MDMFSettings:
    """Bundle configuration: architecture (``model``) and inference settings."""

    model: dict[str, Any] = field(default_factory=dict)  # MDMFConfig as a dict (visual/text nested)
    frames: int = 8
    short_side: int = 256
    crop: int = 224
    prompt_template: str = DEFAULT_TEMPLATE
    prompt: str = "argmax"  # default PPS mode: "argmax" | "sample"
    lam: float = otam_kernels.LAMBDA
    eps: float = otam_kernels.COS_EPS

    @property
    def dim(self) -> int:
        return int(self.model.get("dim", 1024))

    @property
    def features_in(self) -> bool:
        return self.model.get("visual") is None

    @property
    def has_text(self) -> bool:
        return self.model.get("text") is not None


def model_config(data: dict[str, Any]) -> Any:
    """``MDMFConfig`` from its JSON dict."""
    from edgesentry.models.mdmf import CLIPTextConfig, CLIPVisualConfig, MDMFConfig

    d = dict(data)
    vis = d.pop("visual", None)
    txt = d.pop("text", None)
    visual = CLIPVisualConfig(**{**vis, "layers": tuple(vis["layers"])}) if vis else None
    text = CLIPTextConfig(**txt) if txt else None
    return MDMFConfig(**d, visual=visual, text=text)


# ------------------------------------------------------------------------ video input
@dataclass(frozen=True)
class Clip:
    """A video file, optionally a time span of it given as fractions of its length."""

    path: str
    start: float = 0.0
    end: float = 1.0

    @classmethod
    def parse(cls, text: str) -> Clip:
        """``"clip.mp4"`` or ``"clip.mp4@0:0.5"`` (first half)."""
        if "@" in text and not Path(text).exists():
            path, span = text.rsplit("@", 1)
            try:
                a, b = (float(v) for v in span.split(":"))
            except ValueError:
                raise ConfigError(f"clip span must look like PATH@START:END with fractions; got {text!r}") from None
            return cls(path, a, b)
        return cls(text)


def sample_indices(n: int, frames: int) -> np.ndarray:
    """The seed's test-time sampling ``int(linspace(1, n - 2, frames))`` (all frames if too short)."""
    if n >= 3:
        return np.linspace(1, n - 2, frames).astype(int)
    return np.linspace(0, n - 1, frames).astype(int)


def read_frames(clip: Clip, frames: int) -> np.ndarray:
    """Decode ``clip`` with OpenCV and return ``frames`` sampled RGB uint8 frames [T, H, W, 3]."""
    try:
        import cv2
    except ImportError:
        raise ConfigError("decoding video needs OpenCV: pip install edgesentry[video]") from None
    if not (0.0 <= clip.start < clip.end <= 1.0):
        raise ConfigError(f"clip span must satisfy 0 <= start < end <= 1; got {clip.start}:{clip.end}")
    if not Path(clip.path).is_file():
        raise InputError(f"video file not found: {clip.path}")
    cap = cv2.VideoCapture(str(clip.path))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if n > 0:
            # Known length: grab (decode) every frame up to the last one needed, convert only those.
            lo = int(round(clip.start * n))
            hi = max(lo + 1, int(round(clip.end * n)))
            wanted = (lo + sample_indices(hi - lo, frames)).tolist()
            got: dict[int, np.ndarray] = {}
            for i in range(max(wanted) + 1):
                if not cap.grab():
                    break
                if i in wanted:
                    ok, frame = cap.retrieve()
                    if ok:
                        got[i] = frame
            if all(i in got for i in wanted):
                return np.stack([cv2.cvtColor(got[i], cv2.COLOR_BGR2RGB) for i in wanted])
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)  # the container's frame count was wrong: decode all
        decoded = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            decoded.append(frame)
    finally:
        cap.release()
    if not decoded:
        raise InputError(f"OpenCV decoded no frames from {clip.path}; is it a video file?")
    n = len(decoded)
    lo = int(round(clip.start * n))
    span = decoded[lo:max(lo + 1, int(round(clip.end * n)))]
    idx = sample_indices(len(span), frames)
    return np.stack([cv2.cvtColor(span[i], cv2.COLOR_BGR2RGB) for i in idx])


def prepare_frames(frames: np.ndarray, short_side: int = 256, crop: int = 224) -> np.ndarray:
    """RGB frames [T, H, W, 3] (uint8, or float in [0, 1]) -> [T, 3, crop, crop] float32 in [0, 1].

    Bilinear resize of the short side to ``short_side`` (OpenCV ``INTER_LINEAR``; the seed uses
    PIL bilinear, which differs by at most a few grey levels), centre crop, no mean/std.
    """
    import cv2

    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"expected RGB frames [T, H, W, 3]; got {describe(frames)}")
    out = []
    for f in frames:
        img = f.astype(np.float32) / 255.0 if f.dtype == np.uint8 else f.astype(np.float32)
        h, w = img.shape[:2]
        scale = short_side / min(h, w)
        nh, nw = max(crop, int(round(h * scale))), max(crop, int(round(w * scale)))
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        top, left = (nh - crop) // 2, (nw - crop) // 2
        out.append(img[top:top + crop, left:left + crop].transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(out), dtype=np.float32)


# ------------------------------------------------------------------ prompt selector
def pps_scores(query: np.ndarray, class_text: np.ndarray, eps: float = otam_kernels.COS_EPS
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PPS of [Q, T, D] queries over [N, D] class texts -> (frame_cos [Q,N,T], scores [Q,N], probs [Q,N])."""
    x = np.asarray(query, np.float32)
    w = np.asarray(class_text, np.float32)
    dots = np.einsum("qtd,nd->qnt", x, w)
    nx = np.sqrt(np.einsum("qtd,qtd->qt", x, x))
    nw = np.sqrt(np.einsum("nd,nd->n", w, w))
    cos = dots / (nx[:, None, :] * nw[None, :, None] + np.float32(eps))
    k = min(PPS_TOPK, cos.shape[-1])
    scores = np.sort(cos, axis=-1)[..., -k:].mean(axis=-1, dtype=np.float32)
    logits = np.float32(PPS_TEMPERATURE) * scores
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return cos, scores, (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def choose_prompts(probs: np.ndarray, prompt: str | Sequence[int] | np.ndarray = "argmax",
                   seed: int | None = None) -> np.ndarray:
    """Per-query class whose text is the query's prompt: argmax, the seed's draw, or given indices."""
    q, n = probs.shape
    if isinstance(prompt, str):
        if prompt == "argmax":
            return probs.argmax(axis=-1).astype(np.int64)
        if prompt == "sample":
            if seed is None:
                raise ConfigError("prompt='sample' draws like the seed's random.choices; pass an explicit seed=")
            rng = random.Random(seed)
            out = np.empty(q, np.int64)
            for i in range(q):
                # random.choices(range(n), weights=p): float32 cumulative weights, bisect_right in [0, n-1]
                cum = np.cumsum(probs[i].astype(np.float32), dtype=np.float32)
                x = np.float32(rng.random()) * cum[-1]
                out[i] = int(np.searchsorted(cum[: n - 1], x, side="right"))
            return out
        raise ConfigError(f"prompt must be 'argmax', 'sample' or per-query class indices; got {prompt!r}")
    idx = np.asarray(prompt)
    if idx.shape != (q,) or idx.dtype.kind not in "iu":
        raise InputError(f"explicit prompt indices must be {q} integers (one per query); got {describe(idx)}")
    if idx.min() < 0 or idx.max() >= n:
        raise InputError(f"prompt indices must lie in [0, {n - 1}]; got {idx.tolist()}")
    return idx.astype(np.int64)


def prototypes(shots: Sequence[np.ndarray]) -> np.ndarray:
    """Frame-wise mean over shots [K, T, D] -> [T, D] (the same function for batch and incremental)."""
    return np.mean(np.stack([np.asarray(s, np.float32) for s in shots]), axis=0, dtype=np.float32)


# --------------------------------------------------------------------------- graphs
class _Graphs:
    """The two graphs behind one interface: ``visual`` (frames -> features) and ``views``."""

    def __init__(self, backend: str, model: Any = None, bundle: Bundle | None = None, device: str = "cpu"):
        self.backend = backend
        self.model = model
        self.device = device
        self._sessions: dict[str, Any] = {}
        self._bundle = bundle

    def _session(self, name: str) -> Any:
        from edgesentry.backends.onnxruntime import session_from_onnx

        if name not in self._sessions:
            graphs = (self._bundle.meta.get("graphs") or {}) if self._bundle is not None else {}
            if name not in graphs:
                raise BundleError(f"bundle has no ONNX graph {name!r}; run `edgesentry export BUNDLE`")
            self._sessions[name] = session_from_onnx(self._bundle.file(graphs[name]["file"]))
        return self._sessions[name]

    def visual(self, frames: np.ndarray) -> np.ndarray:
        """[B, T, 3, S, S] -> [B, T, D] float32."""
        if self.backend == "onnxruntime":
            return self._session("visual").run(["features"], {"frames": frames})[0]
        import torch

        with torch.inference_mode():
            out = self.model.encode_frames(torch.from_numpy(frames).to(self.device))
        return out.float().cpu().numpy()

    def views(self, features: np.ndarray, prompt: np.ndarray, *, with_token0: bool = False) -> tuple[np.ndarray, ...]:
        """[B, T, D] features + [B, D] prompts -> (z_local, z_global) [B, T, D] float32."""
        if self.backend == "onnxruntime" and not with_token0:
            return tuple(self._session("views").run(["z_local", "z_global"],
                                                    {"features": features, "prompt": prompt}))
        if self.model is None:
            raise BackendUnavailableError("view outputs with token 0 need the torch model; install torch")
        import torch

        with torch.inference_mode():
            f = torch.from_numpy(np.ascontiguousarray(features)).to(self.device)
            p = torch.from_numpy(np.ascontiguousarray(prompt)).to(self.device)
            local, glob = self.model.view_outputs(f, p)
        if not with_token0:
            local, glob = local[:, 1:], glob[:, 1:]
        return local.float().cpu().numpy(), glob.float().cpu().numpy()


# ------------------------------------------------------------------------- detector
class MDMFDetector(Detector):
    """CLIP-MDMF few-shot classifier. ``predict(clip)`` classifies against ``default_gallery``."""

    family = "mdmf"

    def __init__(self, settings: MDMFSettings, graphs: _Graphs, *, text_tower: Any = None, tokenizer: Any = None,
                 model_id: str = "", **kwargs: Any):
        super().__init__(**kwargs)
        self.settings = settings
        self.graphs = graphs
        self.text_tower = text_tower
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.default_gallery: Gallery | None = None
        self._text_cache: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------------ inputs
    def encode(self, clips: Sequence[Any]) -> np.ndarray:
        """Frame features [B, T, D] of clips: paths / ``Clip``s, RGB frames [T, H, W, 3],
        prepared frames [T, 3, S, S], or frame features [T, D] (passed through)."""
        items = _clip_list(clips)
        if not items:
            raise InputError("no clips given; pass at least one clip")
        t, d = self.settings.frames, self.settings.dim
        out: list[np.ndarray | None] = [None] * len(items)
        pending: list[tuple[int, np.ndarray]] = []
        for i, item in enumerate(items):
            if isinstance(item, np.ndarray) and item.ndim == 2:
                if item.shape != (t, d):
                    raise InputError(f"frame features must be [T={t}, D={d}]; got {describe(item)}")
                out[i] = item.astype(np.float32)
            elif self.settings.features_in:
                raise InputError(f"this bundle is features-in (no visual tower): pass frame features [T={t}, D={d}] "
                                 f"instead of {describe(item)}, or convert with a backbone / --clip RN50.pt")
            else:
                pending.append((i, self._frames(item)))
        if pending:
            feats = self.graphs.visual(np.stack([f for _, f in pending]))
            for (i, _), f in zip(pending, feats):
                out[i] = f
        return np.stack(out).astype(np.float32)

    def _frames(self, item: Any) -> np.ndarray:
        s = self.settings
        if isinstance(item, (str, os.PathLike)):
            item = Clip.parse(os.fspath(item))
        if isinstance(item, Clip):
            return prepare_frames(read_frames(item, s.frames), s.short_side, s.crop)
        if isinstance(item, np.ndarray) and item.ndim == 4:
            if item.shape[1:] == (3, s.crop, s.crop) and item.dtype == np.float32:
                if item.shape[0] != s.frames:
                    raise InputError(f"prepared frames must be [{s.frames}, 3, {s.crop}, {s.crop}]; got {item.shape}")
                return item
            if item.shape[-1] == 3:
                if item.shape[0] != s.frames:
                    raise InputError(f"RGB frames must be [{s.frames}, H, W, 3]; got {item.shape}")
                return prepare_frames(item, s.short_side, s.crop)
        raise InputError(
            f"a clip must be a video path, Clip, RGB frames [{s.frames}, H, W, 3], prepared frames "
            f"[{s.frames}, 3, {s.crop}, {s.crop}] float32 or features [{s.frames}, {s.dim}]; got {describe(item)}"
        )

    def text_embedding(self, label: str, prompt: str | np.ndarray | None = None) -> np.ndarray:
        """The class text embedding [D]: given, or CLIP text of ``prompt`` / the template (cached)."""
        if prompt is not None and not isinstance(prompt, str):
            emb = np.asarray(prompt, np.float32)
            if emb.shape != (self.settings.dim,) or not np.isfinite(emb).all():
                raise InputError(f"a text embedding must be a finite [D={self.settings.dim}] vector; "
                                 f"got {describe(emb)}")
            return emb
        text = prompt if prompt is not None else self.settings.prompt_template.format(label)
        if text not in self._text_cache:
            if self.text_tower is None or self.tokenizer is None:
                raise ConfigError(
                    "this bundle has no CLIP text tower + BPE vocabulary, so class prompts cannot be encoded; pass "
                    "prompt=<text embedding [D]> or convert with --clip RN50.pt "
                    "--clip-vocab bpe_simple_vocab_16e6.txt.gz"
                )
            import torch

            tokens = torch.from_numpy(self.tokenizer.encode_batch([text], self.text_tower.cfg.context_length))
            with torch.inference_mode():
                self._text_cache[text] = self.text_tower(tokens)[0].float().numpy()
        return self._text_cache[text]

    # ------------------------------------------------------------------- inference
    def classify_features(self, query_feats: Any, support_feats: Any, support_labels: Any, text_embeddings: Any,
                          prompt: str | Sequence[int] | np.ndarray | None = None, seed: int | None = None) -> Result:
        """Classify an episode given frame features (the heads alone).

        Args:
            query_feats: [Q, T, D] query frame features.
            support_feats: [S, T, D] support frame features.
            support_labels: [S] integer labels; classes are the sorted distinct labels.
            text_embeddings: [N, D], one row per class in sorted label order.
            prompt: ``"argmax"`` (default), ``"sample"`` (needs ``seed``) or [Q] class indices.
        """
        t0 = time.perf_counter()
        d, t = self.settings.dim, self.settings.frames
        x = _features(query_feats, "query_feats", t, d)
        s = _features(support_feats, "support_feats", t, d)
        labels = np.asarray(support_labels)
        if labels.shape != (s.shape[0],):
            raise InputError(f"support_labels must be [S={s.shape[0]}]; got {describe(labels)}")
        if labels.dtype.kind == "f" and np.all(labels == np.round(labels)):
            labels = labels.astype(np.int64)
        if labels.dtype.kind not in "iu":
            raise InputError(f"support_labels must be integers; got dtype {labels.dtype}")
        classes, idx = np.unique(labels, return_inverse=True)
        text = np.asarray(text_embeddings, np.float32)
        if text.shape != (len(classes), d):
            raise InputError(f"text_embeddings must be [N={len(classes)}, D={d}] (one row per class in sorted "
                             f"label order {classes.tolist()}); got {describe(text)}")
        sl, sg = self.graphs.views(s, text[idx])
        pl = np.stack([prototypes(sl[idx == c]) for c in range(len(classes))])
        pg = np.stack([prototypes(sg[idx == c]) for c in range(len(classes))])
        t1 = time.perf_counter()
        result = self._score(x, text, pl, pg, prompt, seed)
        result.info["labels"] = classes.tolist()
        result.timings["support"] = t1 - t0
        result.timings["total"] = time.perf_counter() - t0
        return self.finalize(result)

    def _score(self, x: np.ndarray, text: np.ndarray, pl: np.ndarray, pg: np.ndarray, prompt: Any,
               seed: int | None) -> Result:
        t0 = time.perf_counter()
        frame_cos, scores, probs = pps_scores(x, text, self.settings.eps)
        choice = choose_prompts(probs, self.settings.prompt if prompt is None else prompt, seed)
        zl, zg = self.graphs.views(x, text[choice])
        t1 = time.perf_counter()
        dists, logits, tier = otam_kernels.fuse(zl, pl, zg, pg, lam=self.settings.lam, eps=self.settings.eps,
                                                tier=self.kernels)
        dists, logits = np.asarray(dists, np.float32), np.asarray(logits, np.float32)
        t2 = time.perf_counter()
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        extras = {
            "logits": logits, "pred": logits.argmax(axis=-1), "probs": e / e.sum(axis=-1, keepdims=True),
            "distances": {"local_qs": dists[0], "local_sq": dists[1], "global_qs": dists[2], "global_sq": dists[3],
                          "local": dists[0] + dists[1], "global": dists[2] + dists[3]},
            "pps_scores": scores, "pps_probs": probs, "pps_frame_cos": frame_cos, "prompt_choice": choice,
            "z_local": zl, "z_global": zg,
        }
        mode = prompt if isinstance(prompt, str) else ("explicit" if prompt is not None else self.settings.prompt)
        return Result(score=float(logits[0].max()) if logits.shape[0] == 1 else float(logits.max(axis=-1).mean()),
                      extras=extras, timings={"query_graph": t1 - t0, "postprocess": t2 - t1},
                      info={"kernel_tier": tier, "backend": self.graphs.backend, "prompt": mode})

    def gallery(self) -> Gallery:
        """A new, empty gallery bound to this detector."""
        return Gallery(self)

    def load_gallery(self, path: str | os.PathLike) -> Gallery:
        return Gallery.load(path, self)

    def classify(self, query: Any, gallery: Gallery | None = None, *, prompt: Any = None,
                 seed: int | None = None) -> Result:
        """Classify one query clip (or several) against the enrolled classes of ``gallery``."""
        gallery = gallery if gallery is not None else self.default_gallery
        if gallery is None or not len(gallery):
            raise CallOrderError("no enrolled classes: enrol some with gallery.enroll(label, clips) first")
        t0 = time.perf_counter()
        x = self.encode(query)
        t1 = time.perf_counter()
        labels, text, pl, pg = gallery.arrays()
        result = self._score(x, text, pl, pg, prompt, seed)
        pred = result.extras["pred"]
        result.info["labels"] = labels
        result.info["label"] = labels[int(pred[0])]
        result.extras["class_logits"] = {lab: float(v) for lab, v in zip(labels, result.extras["logits"][0])}
        result.extras["class_distances"] = {lab: float(v) for lab, v in
                                            zip(labels, -result.extras["logits"][0])}
        result.info["prompt_label"] = labels[int(result.extras["prompt_choice"][0])]
        result.timings["preprocess+visual"] = t1 - t0
        result.timings["total"] = time.perf_counter() - t0
        return self.finalize(result)

    def predict(self, x: Any) -> Result:
        return self.classify(x)

    # ---------------------------------------------------------------------- config
    def config(self) -> dict[str, Any]:
        return asdict(self.settings)

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["graph"] = {"backend": self.graphs.backend, "features_in": self.settings.features_in,
                        "text_tower": self.text_tower is not None, "tokenizer": self.tokenizer is not None}
        return out


def _clip_list(clips: Any) -> list[Any]:
    """One clip (path, ``Clip``, features [T, D], frames [T, H, W, 3] / [T, 3, S, S]) or several
    (a sequence, features [B, T, D], frames [B, T, ...]) -> a list of single clips."""
    if isinstance(clips, (str, os.PathLike, Clip)):
        return [clips]
    if isinstance(clips, np.ndarray):
        return [clips] if clips.ndim in (2, 4) else list(clips)
    return list(clips)


def _features(x: Any, name: str, t: int, d: int) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 3 or arr.shape[1:] != (t, d) or arr.shape[0] == 0:
        raise InputError(f"{name} must be [B, T={t}, D={d}] frame features; got {describe(arr)}")
    if arr.dtype.kind != "f":
        raise InputError(f"{name} must be floating point; got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or Inf")
    return np.ascontiguousarray(arr, dtype=np.float32)


# -------------------------------------------------------------------------- gallery
@dataclass
class _ClassEntry:
    text: np.ndarray  # [D]
    local: list[np.ndarray]  # per shot [T, D]
    glob: list[np.ndarray]
    prompt: str | None


class Gallery:
    """Enrolled classes: text embedding and per-shot view outputs; prototypes = frame-wise means.

    Per-shot outputs are kept (T x D x 2 floats per shot), so ``add_shot`` gives exactly the
    prototype that enrolling all shots at once gives, and shots never need re-encoding.
    """

    def __init__(self, detector: MDMFDetector):
        self.detector = detector
        self._classes: dict[str, _ClassEntry] = {}

    def __len__(self) -> int:
        return len(self._classes)

    def __contains__(self, label: object) -> bool:
        return label in self._classes

    @property
    def labels(self) -> list[str]:
        """Enrolled labels in logit order (sorted)."""
        return sorted(self._classes)

    def shots(self, label: str) -> int:
        return len(self._entry(label).local)

    def _entry(self, label: str) -> _ClassEntry:
        if label not in self._classes:
            raise ConfigError(f"label {label!r} is not enrolled; enrolled: {self.labels}")
        return self._classes[label]

    def enroll(self, label: str, clips: Any, prompt: str | np.ndarray | None = None) -> None:
        """Enrol ``label`` from one or more clips (its K shots). ``prompt``: text (default
        ``"a photo of {label}"``) or a precomputed text embedding [D]."""
        if not isinstance(label, str) or not label:
            raise ConfigError(f"label must be a non-empty string; got {label!r}")
        if label in self._classes:
            raise ConfigError(f"{label!r} is already enrolled; use add_shot() or remove() it first")
        text = self.detector.text_embedding(label, prompt)
        local, glob = self._outputs(clips, text)
        self._classes[label] = _ClassEntry(text, list(local), list(glob), prompt if isinstance(prompt, str) else None)

    def add_shot(self, label: str, clip: Any) -> None:
        """Add one more example clip of an enrolled class (exact incremental prototype)."""
        entry = self._entry(label)
        local, glob = self._outputs([clip] if not isinstance(clip, (list, tuple)) else clip, entry.text)
        entry.local.extend(local)
        entry.glob.extend(glob)

    def remove(self, label: str) -> None:
        self._entry(label)
        del self._classes[label]

    def _outputs(self, clips: Any, text: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        # One clip per graph call: batched BLAS may round differently with the batch size, and a
        # shot's outputs must not depend on which other shots it was enrolled with (exact add_shot).
        local, glob = [], []
        for clip in _clip_list(clips):
            feats = self.detector.encode([clip])
            zl, zg = self.detector.graphs.views(feats, text[None])
            local.append(zl[0])
            glob.append(zg[0])
        if not local:
            raise InputError("no clips given; pass at least one clip")
        return local, glob

    def arrays(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """(labels, text [N, D], P_local [N, T, D], P_global [N, T, D]) in sorted label order."""
        labels = self.labels
        text = np.stack([self._classes[k].text for k in labels])
        pl = np.stack([prototypes(self._classes[k].local) for k in labels])
        pg = np.stack([prototypes(self._classes[k].glob) for k in labels])
        return labels, text, pl, pg

    # ------------------------------------------------------------------- save / load
    def save(self, path: str | os.PathLike) -> Path:
        """Write the gallery as one ``.npz`` (numeric arrays + a JSON header; no pickle)."""
        path = Path(path)
        labels = self.labels
        header = {"format": GALLERY_FORMAT, "model_id": self.detector.model_id, "dim": self.detector.settings.dim,
                  "frames": self.detector.settings.frames, "labels": labels,
                  "prompts": [self._classes[k].prompt for k in labels]}
        arrays = {"header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
        for i, k in enumerate(labels):
            e = self._classes[k]
            arrays[f"text/{i}"] = e.text
            arrays[f"local/{i}"] = np.stack(e.local)
            arrays[f"global/{i}"] = np.stack(e.glob)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, detector: MDMFDetector) -> Gallery:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"gallery file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise InputError(f"{path} is not a readable gallery (.npz without pickle): {exc}") from None
        try:
            header = json.loads(bytes(data["header"]).decode())
        except (KeyError, ValueError):
            raise InputError(f"{path} has no valid gallery header") from None
        if header.get("format") != GALLERY_FORMAT:
            raise InputError(f"{path} is not an edgesentry MDMF gallery (format {header.get('format')!r})")
        s = detector.settings
        if (header["dim"], header["frames"]) != (s.dim, s.frames):
            raise ConfigError(f"gallery {path} was built for D={header['dim']}, T={header['frames']}; "
                              f"this detector has D={s.dim}, T={s.frames}")
        if header.get("model_id") and detector.model_id and header["model_id"] != detector.model_id:
            raise ConfigError(f"gallery {path} was enrolled with another model ({header['model_id'][:12]}...); "
                              f"this bundle is {detector.model_id[:12]}...: re-enrol the classes")
        g = cls(detector)
        for i, (label, prompt) in enumerate(zip(header["labels"], header["prompts"])):
            g._classes[label] = _ClassEntry(data[f"text/{i}"].astype(np.float32), list(data[f"local/{i}"]),
                                            list(data[f"global/{i}"]), prompt)
        return g


# ----------------------------------------------------------------------- checkpoints
def _read_torch(path: str | os.PathLike) -> dict[str, Any]:
    """State dict from a torch file, safely: ``weights_only=True``; TorchScript archives (OpenAI's
    ``RN50.pt``) are opened with ``torch.jit.load`` and only their ``state_dict`` is read."""
    import torch

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


def read_heads_npz(path: str | os.PathLike) -> dict[str, Any]:
    """The oracle's int8 head file (``q/<key>`` int8 + ``exp2/<key>``) -> float32 state dict."""
    import torch

    with np.load(path, allow_pickle=False) as z:
        keys = [k[2:] for k in z.files if k.startswith("q/")]
        if not keys:
            raise WeightsError(f"{path} has no q/<key> arrays; expected the int8 heads format")
        return {k: torch.from_numpy(z[f"q/{k}"].astype(np.float32) * np.float32(2.0 ** int(z[f"exp2/{k}"])))
                for k in keys}


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    return read_heads_npz(path) if str(path).endswith(".npz") else _read_torch(path)


def convert(ckpt: str | os.PathLike, clip: str | os.PathLike | None = None, *, output: str | os.PathLike,
            clip_vocab: str | os.PathLike | None = None, prompt_template: str = DEFAULT_TEMPLATE,
            overwrite: bool = False) -> Bundle:
    """MDMF checkpoint (+ optional CLIP ``RN50.pt``) -> bundle (safetensors + JSON).

    The checkpoint's ``backbone.*`` (fine-tuned visual tower, ``backbone.module.*`` accepted)
    is used when present; otherwise CLIP's ``visual.*`` when ``clip`` is given; otherwise the
    bundle is features-in. The text tower always comes from ``clip``; ``clip_vocab`` (CLIP's
    ``bpe_simple_vocab_16e6.txt.gz``) lets the bundle encode class names.
    """
    import torch

    from edgesentry.models import mdmf as M

    state, dropped = M.normalize_mdmf_keys(read_checkpoint(ckpt))
    cfg = M.infer_config(state)
    clip_state = read_checkpoint(clip) if clip is not None else None
    text_cfg = None
    if clip_state is not None:
        text_cfg = M.infer_text_config(clip_state)
        clip_visual = M.infer_visual_config({k[7:]: v for k, v in clip_state.items() if k.startswith("visual.")})
        if cfg.visual is None and clip_visual is not None:
            if clip_visual.output_dim != cfg.dim:
                raise WeightsError(f"CLIP visual tower outputs {clip_visual.output_dim} features but the MDMF heads "
                                   f"have D={cfg.dim}")
            cfg = M.MDMFConfig(**{**asdict(cfg), "visual": clip_visual, "text": None})
            state.update({"backbone." + k[7:]: v for k, v in clip_state.items() if k.startswith("visual.")})
    if text_cfg is not None and text_cfg.embed_dim != cfg.dim:
        raise WeightsError(f"CLIP text tower embeds to {text_cfg.embed_dim} but the MDMF heads have D={cfg.dim}")
    cfg = M.MDMFConfig(**{**asdict(cfg), "visual": cfg.visual, "text": text_cfg})
    with torch.device("meta"):
        model = M.MDMF(cfg)
    model = model.to_empty(device="cpu")
    M.load_mdmf_state_dict(model, state, heads_only=cfg.visual is None)
    tensors = {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy()
               for k, v in M.canonical_state_dict(model).items()}
    if text_cfg is not None:
        with torch.device("meta"):
            text = M.CLIPText(text_cfg)
        text = text.to_empty(device="cpu")
        rest = {k: v for k, v in clip_state.items() if not k.startswith("visual.") and k not in M.CLIP_JIT_EXTRAS}
        M._check_keys(text.state_dict(), rest, "CLIP text tower")
        tensors.update({f"text.{k}": v.detach().float().numpy() for k, v in rest.items()})
    settings = MDMFSettings(model=_config_dict(cfg), prompt_template=prompt_template)
    bundle = write_bundle(
        output, "mdmf", config=asdict(settings),
        preprocessing={"frames": settings.frames, "sampling": "int(linspace(1, n-2, T))", "short_side": 256,
                       "resize": "bilinear", "crop": 224, "range": "[0, 1] RGB", "mean": None, "std": None},
        tensors=tensors, overwrite=overwrite,
        io={"input": "video clip (T=8 frames) or frame features [T, D]", "output": "class logits [Q, N]"},
        extra={"source": os.fspath(ckpt), "clip": os.fspath(clip) if clip else None, "dropped_keys": dropped},
    )
    if clip_vocab is not None:
        merges = M.read_bpe_merges(clip_vocab)
        bundle.add_file(_BPE_FILE, json.dumps({"merges": merges}).encode())
    return bundle


def _config_dict(cfg: Any) -> dict[str, Any]:
    d = asdict(cfg)
    if d.get("visual"):
        d["visual"]["layers"] = list(d["visual"]["layers"])
    return d


# ----------------------------------------------------------------------- family hooks
def build(**options: Any) -> MDMFDetector:
    raise ConfigError("mdmf needs trained weights: `edgesentry convert mdmf CKPT [--clip RN50.pt] -o BUNDLE`, "
                      "then edgesentry.load(BUNDLE)")


def from_bundle(bundle: Bundle, *, backend: str = "auto", kernels: str = "auto", device: str = "cpu",
                threshold: float | None = None, **overrides: Any) -> MDMFDetector:
    from edgesentry.backends.base import resolve_backend

    try:
        settings = MDMFSettings(**{**bundle.config, **overrides})
    except TypeError as exc:
        raise ConfigError(f"mdmf bundle/option mismatch: {exc}") from None
    graphs = bundle.meta.get("graphs") or {}
    needed = {"views"} | (set() if settings.features_in else {"visual"})
    used = resolve_backend(backend, has_onnx=needed <= set(graphs), has_weights=bundle.has("weights.safetensors"))
    tensors = bundle.load_tensors()
    try:
        model, text_tower, tokenizer = _torch_parts(bundle, settings, tensors, device)
    except ImportError as exc:
        if used != "onnxruntime":
            raise BackendUnavailableError(
                f"mdmf backend {used!r} needs torch ({exc}); pip install edgesentry[torch]"
            ) from None
        # Torch-free runtime: ONNX Runtime runs both graphs. What only the torch model offers (view
        # outputs with token 0, encoding class-name prompts with the text tower) then says so.
        model = text_tower = tokenizer = None
    model_id = bundle.files.get("weights.safetensors", "")
    det = MDMFDetector(settings, _Graphs(used, model, bundle, device), text_tower=text_tower, tokenizer=tokenizer,
                       model_id=model_id, kernels=kernels, calibration=bundle.calibration)
    if threshold is not None:
        det.threshold = threshold
    return det


def _torch_parts(bundle: Bundle, settings: MDMFSettings, tensors: dict[str, np.ndarray],
                 device: str) -> tuple[Any, Any, Any]:
    """The torch model (heads, and the visual tower unless features-in), text tower and tokenizer.

    Built for every backend when torch is installed: the model also serves the view outputs with
    token 0 (oracle checks), which the exported graph does not return.
    """
    import torch

    from edgesentry.models import mdmf as M

    cfg = model_config(settings.model)
    with torch.device("meta"):
        model = M.MDMF(cfg)
    state = {k: torch.from_numpy(v) for k, v in tensors.items() if not k.startswith("text.")}
    aliases = M.tcn_aliases(cfg.tcn_levels)
    full = {**state, **{a: state[c] for a, c in aliases.items() if c in state}}
    try:
        model.load_state_dict(full, strict=True, assign=True)
    except RuntimeError as exc:
        raise WeightsError(f"bundle weights do not fit the MDMF architecture: {exc}") from None
    model.eval().to(device)
    text_tower = tokenizer = None
    if cfg.text is not None:
        with torch.device("meta"):
            text_tower = M.CLIPText(cfg.text)
        text_state = {k[5:]: torch.from_numpy(v) for k, v in tensors.items() if k.startswith("text.")}
        try:
            text_tower.load_state_dict(text_state, strict=True, assign=True)
        except RuntimeError as exc:
            raise WeightsError(f"bundle text tower does not fit: {exc}") from None
        text_tower.eval()
        if bundle.has(_BPE_FILE):
            merges = json.loads(bundle.file(_BPE_FILE).read_text())["merges"]
            tokenizer = M.ClipTokenizer(merges)
    return model, text_tower, tokenizer


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="MDMF checkpoint (.pt/.pth state dict or checkpoint; int8 heads .npz)")
    parser.add_argument("--clip", default=None, help="OpenAI CLIP RN50.pt (text tower; visual tower if the "
                                                     "checkpoint has no backbone)")
    parser.add_argument("--clip-vocab", default=None, help="CLIP BPE vocabulary bpe_simple_vocab_16e6.txt.gz "
                                                           "(needed to encode class names)")
    parser.add_argument("--prompt-template", default=DEFAULT_TEMPLATE, help="class prompt (default: %(default)r)")


def convert_from_args(args: argparse.Namespace) -> Bundle:
    return convert(args.checkpoint, args.clip, output=args.output, clip_vocab=args.clip_vocab,
                   prompt_template=args.prompt_template, overwrite=args.force)


def add_detect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="mdmf bundle directory")
    parser.add_argument("gallery", help="gallery .npz made by `edgesentry enroll`")
    parser.add_argument("clip", help="query video (PATH or PATH@START:END)")


def detect_from_args(args: argparse.Namespace) -> int:
    from edgesentry.cli.classify import run

    return run(args)

