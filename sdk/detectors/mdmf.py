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

import io
import json
import os
import random
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry.backends import InputSpec, OrtOptions, Runner, make_runner
from edgesentry.bundle import Bundle, write_bundle
from edgesentry.detector import Detector
from edgesentry.errors import BackendUnavailableError, CallOrderError, ConfigError, InputError, describe, option
from edgesentry.io.files import read_npy
from edgesentry.io.video import VIDEO_SUFFIXES, Clip, prepare_frames, read_frames
from edgesentry.kernels import otam as otam_kernels
from edgesentry.result import Result

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
                raise ConfigError("prompt 'sample' draws like the seed's random.choices; "
                                  f"pass an explicit {option('seed')}")
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


# ------------------------------------------------------------------------- detector
@dataclass
class _Episode:
    """The classes a query is scored against, in logit order."""

    labels: list[Any]
    text: np.ndarray  # [N, D] class text embeddings
    local: np.ndarray  # [N, T, D] local-view prototypes
    glob: np.ndarray  # [N, T, D] global-view prototypes


@dataclass
class _Query:
    clips: list[np.ndarray]  # per clip: frame features [T, D] or prepared frames [T, 3, S, S]
    episode: _Episode
    prompt: Any = None
    seed: int | None = None


class MDMFDetector(Detector):
    """CLIP-MDMF few-shot classifier. ``predict(clip)`` classifies against ``default_gallery``.

    Graphs run through backend runners (``runners["visual"]``, absent from features-in bundles,
    and ``runners["views"]``); ``model`` is the torch model when torch is installed (it also
    serves the view outputs with token 0, which the exported graph does not return).
    """

    family = "mdmf"
    input_suffixes = (*VIDEO_SUFFIXES, ".npy")
    input_kinds = ("one query: a clip (video path, PATH@START:END, frames) or frame features [T, D] "
                   "(array or .npy file); a list of clips is one multi-clip query")
    list_is_one_input = True

    def __init__(self, settings: MDMFSettings, runners: dict[str, Runner], *, backend: str, model: Any = None,
                 text_tower: Any = None, tokenizer: Any = None, model_id: str = "", **kwargs: Any):
        super().__init__(kernel_ops=(otam_kernels.FUSE,), **kwargs)
        self.settings = settings
        self.runners = runners
        self.backend = backend
        self.model = model
        self.text_tower = text_tower
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.default_gallery: Gallery | None = None
        self._text_cache: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------------ graphs
    def visual(self, frames: np.ndarray) -> np.ndarray:
        """Graph ``visual``: prepared frames [B, T, 3, S, S] -> frame features [B, T, D] float32."""
        return self.runners["visual"].infer({"frames": frames})["features"]

    def views(self, features: np.ndarray, prompt: np.ndarray, *, with_token0: bool = False) -> tuple[np.ndarray, ...]:
        """Graph ``views``: [B, T, D] features + [B, D] prompts -> (z_local, z_global) [B, T, D] float32;
        ``with_token0`` returns the torch model's [B, T + 1, D] transformer outputs (oracle checks)."""
        if not with_token0:
            out = self.runners["views"].infer({"features": features, "prompt": prompt})
            return out["z_local"], out["z_global"]
        if self.model is None:
            raise BackendUnavailableError("view outputs with token 0 need the torch model; install torch")
        import torch

        device = next(self.model.parameters()).device
        with torch.inference_mode():
            f = torch.from_numpy(np.ascontiguousarray(features)).to(device)
            p = torch.from_numpy(np.ascontiguousarray(prompt)).to(device)
            local, glob = self.model.view_outputs(f, p)
        return local.float().cpu().numpy(), glob.float().cpu().numpy()

    # ------------------------------------------------------------------------ inputs
    def encode(self, clips: Sequence[Any]) -> np.ndarray:
        """Frame features [B, T, D] of clips: paths / ``Clip``s, RGB frames [T, H, W, 3],
        prepared frames [T, 3, S, S], or frame features [T, D] (passed through)."""
        return self._encode_prepared(self._prepare_clips(clips))

    def _prepare_clips(self, clips: Any) -> list[np.ndarray]:
        """Decode and prepare each clip: frame features [T, D] pass, everything else -> [T, 3, S, S]."""
        items = _clip_list(clips)
        if not items:
            raise InputError("no clips given; pass at least one clip")
        t, d = self.settings.frames, self.settings.dim
        out = []
        for item in items:
            if isinstance(item, np.ndarray) and item.ndim == 2:
                if item.shape != (t, d):
                    raise InputError(f"frame features must be [T={t}, D={d}]; got {describe(item)}")
                out.append(item.astype(np.float32))
            elif self.settings.features_in:
                raise InputError(f"this bundle is features-in (no visual tower): pass frame features [T={t}, D={d}] "
                                 f"(an array or a .npy file) instead of {describe(item)}, or convert the checkpoint "
                                 f"with a backbone or {option('clip', 'RN50.pt')}")
            else:
                out.append(self._frames(item))
        return out

    def _encode_prepared(self, items: list[np.ndarray]) -> np.ndarray:
        """Prepared clips -> [B, T, D]: the frames of all clips in one ``visual`` call."""
        pending = [i for i, item in enumerate(items) if item.ndim == 4]
        out = list(items)
        if pending:
            for i, f in zip(pending, self.visual(np.stack([items[i] for i in pending]))):
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
                    f"{option('prompt')} with a [D={self.settings.dim}] text embedding, or convert the checkpoint "
                    f"again with {option('clip', 'RN50.pt')} and {option('clip_vocab', 'bpe_simple_vocab_16e6.txt.gz')}"
                )
            import torch

            tokens = torch.from_numpy(self.tokenizer.encode_batch([text], self.text_tower.cfg.context_length))
            with torch.inference_mode():
                self._text_cache[text] = self.text_tower(tokens)[0].float().numpy()
        return self._text_cache[text]

    # ------------------------------------------------------------------- stages
    def preprocess(self, x: Any, gallery: Gallery | None = None, prompt: Any = None, seed: int | None = None
                   ) -> _Query:
        """One query (a clip or several, see ``encode``) against ``gallery`` (default: ``default_gallery``)."""
        gallery = gallery if gallery is not None else self.default_gallery
        if gallery is None or not len(gallery):
            raise CallOrderError("no enrolled classes: enrol some with gallery.enroll(label, clips) first")
        return _Query(self._prepare_clips(x), _Episode(*gallery.arrays()), prompt, seed)

    def forward(self, query: _Query) -> dict[str, np.ndarray]:
        """Visual graph, prompt selector (PPS) over the classes' texts, views graph."""
        x = self._encode_prepared(query.clips)
        text = query.episode.text
        frame_cos, scores, probs = pps_scores(x, text, self.settings.eps)
        choice = choose_prompts(probs, self.settings.prompt if query.prompt is None else query.prompt, query.seed)
        zl, zg = self.views(x, text[choice])
        return {"pps_frame_cos": frame_cos, "pps_scores": scores, "pps_probs": probs, "prompt_choice": choice,
                "z_local": zl, "z_global": zg}

    def postprocess(self, raw: dict[str, np.ndarray], query: _Query) -> Result:
        """Fused soft-OTAM against the prototypes -> logits, prediction, label."""
        ep = query.episode
        dists, logits, tier = otam_kernels.fuse(raw["z_local"], ep.local, raw["z_global"], ep.glob,
                                                lam=self.settings.lam, eps=self.settings.eps, tier=self.kernels)
        dists, logits = np.asarray(dists, np.float32), np.asarray(logits, np.float32)
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        pred = logits.argmax(axis=-1)
        extras = {
            "logits": logits, "pred": pred, "probs": e / e.sum(axis=-1, keepdims=True),
            "distances": {"local_qs": dists[0], "local_sq": dists[1], "global_qs": dists[2], "global_sq": dists[3],
                          "local": dists[0] + dists[1], "global": dists[2] + dists[3]},
            **raw,
            "class_logits": {lab: float(v) for lab, v in zip(ep.labels, logits[0])},
            "class_distances": {lab: float(v) for lab, v in zip(ep.labels, -logits[0])},
        }
        prompt = query.prompt
        mode = prompt if isinstance(prompt, str) else ("explicit" if prompt is not None else self.settings.prompt)
        info = {"kernel_tier": tier, "backend": self.backend, "prompt": mode, "labels": ep.labels,
                "label": ep.labels[int(pred[0])], "prompt_label": ep.labels[int(raw["prompt_choice"][0])]}
        score = float(logits[0].max()) if logits.shape[0] == 1 else float(logits.max(axis=-1).mean())
        return Result(score=score, extras=extras, info=info)

    # ------------------------------------------------------------------- inference
    def classify(self, query: Any, gallery: Gallery | None = None, *, prompt: Any = None,
                 seed: int | None = None) -> Result:
        """Classify one query clip (or several) against the enrolled classes of ``gallery``.

        ``prompt``: ``"argmax"`` (default), ``"sample"`` (needs ``seed``) or [Q] class indices.
        """
        return self.predict(query, gallery=gallery, prompt=prompt, seed=seed)

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
        sl, sg = self.views(s, text[idx])
        pl = np.stack([prototypes(sl[idx == c]) for c in range(len(classes))])
        pg = np.stack([prototypes(sg[idx == c]) for c in range(len(classes))])
        episode = _Episode(classes.tolist(), text, pl, pg)
        support = time.perf_counter() - t0
        result = self.predict(list(x), gallery=_EpisodeGallery(episode), prompt=prompt, seed=seed)
        result.timings["support"] = support
        result.timings["total"] += support
        return result

    def gallery(self) -> Gallery:
        """A new, empty gallery bound to this detector."""
        return Gallery(self)

    def load_gallery(self, path: str | os.PathLike) -> Gallery:
        return Gallery.load(path, self)

    # ---------------------------------------------------------------------- config
    def config(self) -> dict[str, Any]:
        return asdict(self.settings)

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["graph"] = {"backend": self.backend, "features_in": self.settings.features_in,
                        "text_tower": self.text_tower is not None, "tokenizer": self.tokenizer is not None}
        return out


class _EpisodeGallery:
    """A fixed episode in the place of a ``Gallery`` (``classify_features``)."""

    def __init__(self, episode: _Episode):
        self.episode = episode

    def __len__(self) -> int:
        return len(self.episode.labels)

    def arrays(self) -> tuple[list[Any], np.ndarray, np.ndarray, np.ndarray]:
        e = self.episode
        return e.labels, e.text, e.local, e.glob


def _clip_list(clips: Any) -> list[Any]:
    """One clip (path, ``Clip``, features [T, D], frames [T, H, W, 3] / [T, 3, S, S]) or several
    (a sequence, features [B, T, D], frames [B, T, ...]) -> a list of single clips. A ``.npy``
    path holds frame features: [T, D] is one clip, [K, T, D] K clips."""
    if isinstance(clips, (str, os.PathLike)) and Path(clips).suffix.lower() == ".npy":
        clips = read_npy(clips)
    if isinstance(clips, (str, os.PathLike, Clip)):
        return [clips]
    if isinstance(clips, np.ndarray):
        return list(clips) if clips.ndim in (3, 5) else [clips]
    if isinstance(clips, Iterable):
        return [c for clip in clips for c in _clip_list(clip)]
    return [clips]  # refused, with a description, where it is prepared


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
            zl, zg = self.detector.views(feats, text[None])
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


# ------------------------------------------------------------------------ convert
def convert(ckpt: str | os.PathLike, clip: str | os.PathLike | None = None, *, output: str | os.PathLike,
            clip_vocab: str | os.PathLike | None = None, prompt_template: str = DEFAULT_TEMPLATE,
            overwrite: bool = False) -> Bundle:
    """MDMF checkpoint (+ optional CLIP ``RN50.pt``) -> bundle (safetensors + JSON).

    The checkpoint's ``backbone.*`` (fine-tuned visual tower, ``backbone.module.*`` accepted)
    is used when present; otherwise CLIP's ``visual.*`` when ``clip`` is given; otherwise the
    bundle is features-in. The text tower always comes from ``clip``; ``clip_vocab`` (CLIP's
    ``bpe_simple_vocab_16e6.txt.gz``) lets the bundle encode class names.
    """
    from edgesentry.models import mdmf as M

    cfg, tensors, dropped = M.convert_checkpoint(ckpt, clip)
    settings = MDMFSettings(model=M.config_to_dict(cfg), prompt_template=prompt_template)
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


# ------------------------------------------------------------------------------ serving
#: the inputs of a served MDMF: query frame features [Q, T, D], classified against the gallery
#: the repository was written with (``edgesentry export BUNDLE --format triton-repo OUT --gallery G``)
SERVING_INPUTS = {"INPUT": ("float32", [-1, -1, -1])}


def serving_feed(x: Any) -> dict[str, np.ndarray]:
    """What a client sends for one query ``predict`` takes: its frame features as [Q, T, D]
    float32 (arrays or ``.npy`` files; clips are decoded and encoded where a local detector runs)."""
    clips = _clip_list(x)
    if not clips or not all(isinstance(c, np.ndarray) and c.ndim == 2 and c.dtype.kind == "f" for c in clips):
        raise InputError(f"a served MDMF takes frame features [T, D] (arrays or .npy files); got {describe(x)}")
    return {"INPUT": np.stack(clips).astype(np.float32)}


# ----------------------------------------------------------------------- family hooks
def build(**options: Any) -> MDMFDetector:
    raise ConfigError("mdmf needs trained weights: `edgesentry convert mdmf CKPT [--clip RN50.pt] -o BUNDLE`, "
                      "then edgesentry.load(BUNDLE)")


#: the settings ``from_bundle`` forwards to ``MDMFSettings`` (``edgesentry.load(bundle, prompt=...)``)
OPTIONS = tuple(f.name for f in fields(MDMFSettings))


def from_bundle(bundle: Bundle, *, backend: str = "auto", kernels: str = "auto", device: str = "cpu",
                threshold: float | None = None, **overrides: Any) -> MDMFDetector:
    from edgesentry.backends import resolve_backend

    try:
        settings = MDMFSettings(**{**bundle.config, **overrides})
    except TypeError as exc:
        raise ConfigError(f"mdmf bundle/option mismatch: {exc}") from None
    graphs = bundle.meta.get("graphs") or {}
    needed = {"views"} | (set() if settings.features_in else {"visual"})
    used = resolve_backend(backend, has_onnx=needed <= set(graphs), has_weights=bundle.has("weights.safetensors"),
                           measured=True)
    tensors = bundle.load_tensors()
    try:
        model, text_tower, tokenizer = _torch_parts(bundle, settings, tensors, device)
    except ImportError as exc:
        if used not in ("onnxruntime", "openvino"):
            raise BackendUnavailableError(
                f"mdmf backend {used!r} needs torch ({exc}); pip install edgesentry[torch]"
            ) from None
        # Torch-free runtime: ONNX Runtime runs both graphs. What only the torch model offers (view
        # outputs with token 0, encoding class-name prompts with the text tower) then says so.
        model = text_tower = tokenizer = None
    det = MDMFDetector(settings, _runners(used, settings, model, bundle, device), backend=used, model=model,
                       text_tower=text_tower, tokenizer=tokenizer, model_id=bundle.files.get("weights.safetensors", ""),
                       kernels=kernels, calibration=bundle.calibration)
    if threshold is not None:
        det.threshold = threshold
    return det


#: ONNX Runtime session options per graph. ``views`` is a transformer over T + 1 = 9 tokens:
#: hundreds of tiny nodes, where spinning workers only take the cores from the running node
#: (4x slower at batch 5 on a busy 2-core EPYC). ``visual`` (RN50) keeps the defaults.
ORT_OPTIONS = {"views": OrtOptions(spinning=False), "visual": OrtOptions()}


def _runners(backend: str, settings: MDMFSettings, model: Any, bundle: Bundle, device: str) -> dict[str, Runner]:
    """``views`` and (unless features-in) ``visual`` on the chosen backend (``"auto"``: both,
    the faster per batch size, see ``backends.measured``)."""
    t, d, s = settings.frames, settings.dim, settings.crop
    specs = {"views": ({"features": InputSpec("float32", (None, t, d)), "prompt": InputSpec("float32", (None, d))},
                       ["z_local", "z_global"])}
    if not settings.features_in:
        specs["visual"] = ({"frames": InputSpec("float32", (None, t, 3, s, s))}, ["features"])
    graphs = bundle.meta.get("graphs") or {}
    return {name: make_runner(backend, inputs, outputs, module=lambda n=name: _graph_module(n, model),
                              onnx=bundle.file(graphs[name]["file"]) if name in graphs else None, device=device,
                              what=f"the mdmf {name} graph", ort_options=ORT_OPTIONS[name])
            for name, (inputs, outputs) in specs.items()}


def _graph_module(name: str, model: Any) -> Any:
    from edgesentry.models.mdmf import MDMFViews, MDMFVisual

    return {"views": MDMFViews, "visual": MDMFVisual}[name](model)


def _torch_parts(bundle: Bundle, settings: MDMFSettings, tensors: dict[str, np.ndarray],
                 device: str) -> tuple[Any, Any, Any]:
    """The torch model (heads, and the visual tower unless features-in), text tower and tokenizer.

    Built for every backend when torch is installed: the model also serves the view outputs with
    token 0 (oracle checks), which the exported graph does not return.
    """
    from edgesentry.models import mdmf as M

    cfg = M.config_from_dict(settings.model)
    model = M.build_from_tensors(cfg, tensors).to(device)
    text_tower = tokenizer = None
    if cfg.text is not None:
        text_tower = M.build_text_from_tensors(cfg.text, tensors)
        if bundle.has(_BPE_FILE):
            merges = json.loads(bundle.file(_BPE_FILE).read_text())["merges"]
            tokenizer = M.ClipTokenizer(merges)
    return model, text_tower, tokenizer


DETECTOR = MDMFDetector
