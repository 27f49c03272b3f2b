"""The pre- and post-processing stages that Triton's python-backend models run.

Both stages reuse the family's own ``Detector`` code instead of duplicating it:

- ``PreStage`` runs ``preprocess`` + ``forward`` with *recording* runners in place of the
  graph runners, which yields exactly the feeds the family would give its graphs;
- ``PostStage`` runs ``predict`` with *replaying* runners that return the graph outputs the
  ensemble computed, so post-processing, calibration, threshold and mask are the family's.

Results travel as tensors (``encode_result`` / ``decode_result``): SCORE, RAW_SCORE (fp64),
LABEL (int8, -1 = none), ANOMALY_MAP (fp32, 0x0 = none), MASK (bool, 0x0 = none), EXTRAS and
INFO (JSON bytes; arrays as base64 with dtype and shape, so they round-trip bit-exactly).

A repository written from a signed bundle carries the signed bundle verbatim; both stages verify
it when they start (``served_trust``: the server's ``EDGESENTRY_TRUSTED_KEYS`` /
``EDGESENTRY_SIGNING_CONFIG``, else the public keys the repository was exported with) before
``meta.json`` is read, and the post stage checks the graph models' files (``model.onnx`` /
``model.plan`` beside the ensemble) against the signed digests (``check_served_files``), so a
Triton model whose bundle was changed fails to load.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry.errors import ConfigError, SignatureError
from edgesentry.io.paths import resolve_inside, sha256_file
from edgesentry.result import Result

ARRAY_INPUT = "INPUT"  # ensemble input name for families whose detector takes one array
RESULT_OUTPUTS = ("SCORE", "RAW_SCORE", "LABEL", "ANOMALY_MAP", "MASK", "EXTRAS", "INFO")


def feed_name(graph: str, tensor: str) -> str:
    """Ensemble-wide tensor name of a graph's input/output (graphs may share tensor names)."""
    return f"{graph}__{tensor}"


class _Recorder:
    """Stands in for a graph runner: records the feed and returns empty outputs."""

    name = "serving-capture"

    def __init__(self, outputs: Sequence[str]):
        self.outputs = list(outputs)
        self.feed: dict[str, np.ndarray] | None = None

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Copies: the arrays may alias the request's shared-memory input buffers.
        self.feed = {k: np.array(v, order="C", copy=True) for k, v in feed.items()}
        return {k: np.zeros((0,), np.float32) for k in self.outputs}

    def describe(self) -> dict[str, Any]:
        return {"backend": "triton"}


class _Replayer:
    """Stands in for a graph runner: returns the outputs the server computed."""

    name = "triton"

    def __init__(self) -> None:
        self.outputs: dict[str, np.ndarray] = {}

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(self.outputs)

    def describe(self) -> dict[str, Any]:
        return {"backend": "triton"}


def graph_slots(detector: Any, graphs: Sequence[str]) -> dict[str, tuple[Any, str | None]]:
    """Where each graph's runner lives on ``detector``: ``runners[graph]`` or ``runner``."""
    runners = getattr(detector, "runners", None)
    if isinstance(runners, dict):
        missing = [g for g in graphs if g not in runners]
        if missing:
            raise ConfigError(f"detector runners {sorted(runners)} lack graphs {missing}")
        return {g: (runners, g) for g in graphs}
    if hasattr(detector, "runner") and len(graphs) == 1:
        return {graphs[0]: (detector, None)}
    raise ConfigError(f"cannot serve {type(detector).__name__}: expected a `runner` (one graph) or a `runners` dict")


def _set(slot: tuple[Any, str | None], runner: Any) -> None:
    owner, key = slot
    if key is None:
        owner.runner = runner
    else:
        owner[key] = runner


#: a gallery beside the serving bundle (mdmf): the classes a served detector scores against
GALLERY_NAME = "gallery.npz"


def served_trust(model_dir: str | os.PathLike, params: Mapping[str, str]) -> Any:
    """The trust policy a python-backend model verifies its bundle copy with.

    ``require_signature`` (set when the repository was written from a signed bundle) makes a
    signature mandatory: the server's own policy (environment) if it has one, else the public
    keys listed in ``trusted_keys`` (paths relative to the repository, copied there at export).
    Without it, the server's policy (if any) still applies, as for ``edgesentry.load``.

    Raises:
        SignatureError: a signature is required and no trusted key is configured anywhere.
    """
    from edgesentry.signing import TrustPolicy, default_policy

    policy = default_policy()
    if params.get("require_signature") != "true" or policy is not None:
        return policy
    keys = [resolve_inside(Path(model_dir).parent, k, what="trusted key", error=ConfigError)
            for k in json.loads(params.get("trusted_keys") or "[]")]
    if not keys:
        raise SignatureError(f"the bundle of {model_dir} is signed and must be verified, but no trusted key is "
                             "configured: set EDGESENTRY_TRUSTED_KEYS for tritonserver, or export with --trusted-keys")
    return TrustPolicy.from_keys(keys, source=f"the repository ({model_dir})")


def check_served_files(model_dir: str | os.PathLike, served: Mapping[str, str], signed: Mapping[str, str]) -> None:
    """Graph model files of the repository (path relative to ``model_dir`` -> bundle file name)
    must hold the signed bytes of the bundle file they were copied from.

    Raises:
        SignatureError: naming the served file that differs (or a bundle file never signed).
    """
    for rel, name in served.items():
        path = Path(model_dir, rel)
        if name not in signed:
            raise SignatureError(f"served file {rel} comes from {name!r}, which the bundle's signature does not cover")
        if not path.is_file() or path.is_symlink() or sha256_file(path) != signed[name]:
            raise SignatureError(f"served file {path} differs from the signed bundle file {name!r}: the repository "
                                 "was modified after export; refused")


def load_detector(bundle: str | Path, trust: Any = None) -> tuple[Any, dict[str, Any]]:
    """The served detector of a repository's bundle copy (ONNX Runtime), with the gallery that
    sits beside the copy (``GALLERY_NAME``) as its default gallery; ``trust`` (a
    ``TrustPolicy``) requires the copy's signature, verified before its ``meta.json`` is read."""
    from edgesentry.api import load
    from edgesentry.bundle import Bundle

    b = Bundle.open(bundle, trust=trust)
    det = load(b, backend="onnxruntime" if b.meta.get("graphs") else "auto", require_signature=False)
    gallery = Path(bundle).parent / GALLERY_NAME
    if gallery.is_file():
        det.default_gallery = det.load_gallery(gallery)
    return det, b.meta.get("graphs", {})


def as_detector_input(inputs: Mapping[str, np.ndarray]) -> Any:
    return inputs[ARRAY_INPUT] if list(inputs) == [ARRAY_INPUT] else dict(inputs)


class PreStage:
    """Detector input tensors -> graph feeds (``<graph>__<input>``)."""

    def __init__(self, bundle: str | Path, trust: Any = None):
        self.detector, self.graphs = load_detector(bundle, trust)
        self.recorders = {}
        for g, slot in graph_slots(self.detector, list(self.graphs)).items():
            self.recorders[g] = _Recorder(self.graphs[g]["outputs"])
            _set(slot, self.recorders[g])

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        for r in self.recorders.values():
            r.feed = None
        prepared = self.detector.preprocess(as_detector_input(inputs))
        try:
            self.detector.forward(prepared)
        except Exception:  # forward may compute on the empty placeholder outputs; the feeds are recorded
            pass
        out = {}
        for g, r in self.recorders.items():
            if r.feed is None:
                raise ConfigError(f"the detector did not run graph {g!r} for this input")
            for name in self.graphs[g]["inputs"]:
                out[feed_name(g, name)] = r.feed[name]
        return out


class PostStage:
    """Detector input tensors + graph outputs -> ``Result`` (the family's post-processing)."""

    def __init__(self, bundle: str | Path, trust: Any = None, served: Mapping[str, str] | None = None,
                 model_dir: str | os.PathLike | None = None):
        self.detector, self.graphs = load_detector(bundle, trust)
        signature = self.detector.bundle.signature
        if served and signature is not None:
            check_served_files(model_dir or Path(bundle).parent, served, signature.digests)
        self.replayers = {}
        for g, slot in graph_slots(self.detector, list(self.graphs)).items():
            self.replayers[g] = _Replayer()
            _set(slot, self.replayers[g])

    def __call__(self, inputs: Mapping[str, np.ndarray], graph_outputs: Mapping[str, np.ndarray]) -> Result:
        for g, rep in self.replayers.items():
            rep.outputs = {o: graph_outputs[feed_name(g, o)] for o in self.graphs[g]["outputs"]}
        return self.detector.predict(as_detector_input(inputs))


# --------------------------------------------------------------------------- encoding
def _encode_value(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        arr = np.ascontiguousarray(v)
        return {
            "__ndarray__": base64.b64encode(arr.tobytes()).decode(),
            "dtype": arr.dtype.str,
            "shape": list(arr.shape),
        }
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, Mapping):
        return {str(k): _encode_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_encode_value(x) for x in v]
    return v


def _decode_value(v: Any) -> Any:
    if isinstance(v, dict) and "__ndarray__" in v:
        return np.frombuffer(base64.b64decode(v["__ndarray__"]), dtype=np.dtype(v["dtype"])).reshape(v["shape"]).copy()
    if isinstance(v, dict):
        return {k: _decode_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_decode_value(x) for x in v]
    return v


def encode_result(result: Result) -> dict[str, np.ndarray]:
    empty = np.zeros((0, 0), np.float32)
    return {
        "SCORE": np.array([result.score], np.float64),
        "RAW_SCORE": np.array([result.raw_score], np.float64),
        "LABEL": np.array([-1 if result.label is None else int(result.label)], np.int8),
        "ANOMALY_MAP": empty if result.anomaly_map is None else np.ascontiguousarray(result.anomaly_map, np.float32),
        "MASK": np.zeros((0, 0), bool) if result.mask is None else np.ascontiguousarray(result.mask, bool),
        "EXTRAS": np.array([json.dumps(_encode_value(result.extras)).encode()], dtype=object),
        "INFO": np.array([json.dumps(_encode_value(result.info)).encode()], dtype=object),
    }


def _bytes(x: np.ndarray) -> bytes:
    v = np.asarray(x).reshape(-1)[0]
    return v if isinstance(v, bytes) else str(v).encode()


def decode_result(outputs: Mapping[str, np.ndarray], timings: Mapping[str, float] | None = None) -> Result:
    label = int(np.asarray(outputs["LABEL"]).reshape(-1)[0])
    amap = np.asarray(outputs["ANOMALY_MAP"])
    mask = np.asarray(outputs["MASK"])
    info = _decode_value(json.loads(_bytes(outputs["INFO"])))
    return Result(
        score=float(np.asarray(outputs["SCORE"]).reshape(-1)[0]),
        raw_score=float(np.asarray(outputs["RAW_SCORE"]).reshape(-1)[0]),
        label=None if label < 0 else bool(label),
        anomaly_map=amap if amap.size else None,
        mask=mask.astype(bool) if mask.size else None,
        extras=_decode_value(json.loads(_bytes(outputs["EXTRAS"]))),
        timings=dict(timings or {}),
        info={**info, "served_by": "triton"},
    )
