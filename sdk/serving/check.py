"""Check a written model repository without a server: its pipeline must reproduce ``predict``.

``check_repository(repo, bundle, example)`` runs what the ensemble runs, in this process: the
repository's ``FAM_pre`` stage on the raw input, each graph model's own ``model.onnx`` in ONNX
Runtime (the bundle's ONNX for a ``tensorrt_plan`` repository, whose plan needs a GPU), the
``FAM_post`` stage, and the tensor encoding a server answers with. The decoded ``Result`` is
compared with ``Detector.predict`` of the bundle (ONNX Runtime) on the same input.
``edgesentry export --format triton-repo`` says ``done`` only after this check passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry.bundle import Bundle
from edgesentry.errors import ConfigError
from edgesentry.result import Result
from edgesentry.serving.runtime import GALLERY_NAME, PostStage, PreStage, decode_result, encode_result, feed_name


@dataclass
class RepositoryCheck:
    """What the check compared: the largest differences between served and in-process results."""

    score: float
    anomaly_map: float | None
    extras: float
    label_equal: bool
    mask_equal: bool | None

    def line(self) -> str:
        amap = "" if self.anomaly_map is None else f", map max |diff| {self.anomaly_map:.3g}"
        return f"score |diff| {self.score:.3g}{amap}, extras max |diff| {self.extras:.3g}, labels equal"


def _graph_file(root: Path, fam: str, graph: str, bundle: Bundle) -> Path:
    served = root / f"{fam}_{graph}" / "1" / "model.onnx"
    return served if served.is_file() else bundle.path / bundle.meta["graphs"][graph]["file"]


def _max_diff(a: Any, b: Any) -> float:
    if isinstance(a, dict):
        return max([_max_diff(a[k], b[k]) for k in a] or [0.0])
    x, y = np.asarray(a), np.asarray(b)
    if x.dtype.kind not in "biuf":
        return 0.0 if np.array_equal(x, y) else float("inf")
    if x.shape != y.shape:
        return float("inf")
    return float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)), initial=0.0))


def served_result(root: str | Path, bundle: Bundle, feed: dict[str, np.ndarray], *,
                  prefix: str | None = None) -> Result:
    """The ``Result`` the repository's ensemble computes for ``feed`` (its raw input tensors)."""
    import onnxruntime as ort

    root = Path(root)
    fam = prefix or bundle.family
    copy = root / f"{fam}_post" / "bundle"
    pre, post = PreStage(copy), PostStage(copy)
    feeds = pre(feed)
    outputs: dict[str, np.ndarray] = {}
    for graph, gmeta in pre.graphs.items():
        session = ort.InferenceSession(str(_graph_file(root, fam, graph, bundle)), providers=["CPUExecutionProvider"])
        outs = session.run(list(gmeta["outputs"]), {n: feeds[feed_name(graph, n)] for n in gmeta["inputs"]})
        outputs.update({feed_name(graph, o): v for o, v in zip(gmeta["outputs"], outs)})
    return decode_result(encode_result(post(feed, outputs)))


def check_repository(root: str | Path, bundle: Bundle, example: Any, *, prefix: str | None = None,
                     rtol: float = 1e-5, atol: float = 1e-6) -> RepositoryCheck:
    """Serve ``example`` (a raw input ``predict`` takes) through the repository in-process and
    compare with ``Detector.predict``; ``ConfigError`` when they differ beyond ``rtol``/``atol``
    (float32 pipelines on both sides; the same ONNX Runtime, so the difference is 0 in practice)."""
    from edgesentry.api import load
    from edgesentry.detectors import family_module

    root = Path(root)
    fam = prefix or bundle.family
    det = load(bundle, backend="onnxruntime")
    gallery = root / f"{fam}_post" / GALLERY_NAME
    if gallery.is_file():
        det.default_gallery = det.load_gallery(gallery)
    feed = family_module(bundle.family).serving_feed(example)
    got, want = served_result(root, bundle, feed, prefix=prefix), det.predict(example)
    amap = None if want.anomaly_map is None else _max_diff(got.anomaly_map, want.anomaly_map)
    keys = sorted(set(want.extras) & set(got.extras))
    check = RepositoryCheck(score=abs(got.raw_score - want.raw_score), anomaly_map=amap,
                            extras=_max_diff({k: got.extras[k] for k in keys}, {k: want.extras[k] for k in keys}),
                            label_equal=got.label == want.label,
                            mask_equal=None if want.mask is None else bool(np.array_equal(got.mask, want.mask)))
    tol = atol + rtol * abs(want.raw_score)
    problems = []
    if set(got.extras) != set(want.extras):
        problems.append(f"extras {sorted(got.extras)} vs {sorted(want.extras)}")
    if not check.score <= tol:
        problems.append(f"raw score {got.raw_score} vs {want.raw_score}")
    if amap is not None and not amap <= atol + rtol * float(np.max(np.abs(want.anomaly_map))):
        problems.append(f"anomaly map differs by up to {amap}")
    if not check.label_equal or check.mask_equal is False:
        problems.append(f"label {got.label} vs {want.label} or the mask differs")
    if problems:
        raise ConfigError(f"the repository {root} does not reproduce Detector.predict: {'; '.join(problems)}")
    return check
