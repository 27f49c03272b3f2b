"""The bad-input corpus: each case is an input (or bundle) that must be refused with the
documented typed error, whose message names what was expected and what was received.

A case is ``Case(family, name, error, match, run)``; ``run(env)`` performs the bad call
(``env`` is ``conftest.Env``). ``match`` is a regular expression over the message that covers
both the expectation and the received value. Families that are not in the checkout (or
whose weights are missing) skip their cases.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import edgesentry
from edgesentry.bundle import Bundle
from edgesentry.errors import (
    BackendUnavailableError,
    BundleError,
    ChecksumError,
    ConfigError,
    InputError,
    WeightsError,
)

HUGE = (100_000, 100_000)  # 10^10 pixels: any working copy exceeds this machine's memory


@dataclass(frozen=True)
class Case:
    family: str
    name: str
    error: type[Exception]
    match: str
    run: Callable[[Any], Any]
    kind: str = "input"  # input | bundle | option

    @property
    def id(self) -> str:
        return f"{self.family}-{self.name}"


CASES: list[Case] = []


def case(family: str, name: str, error: type[Exception], match: str, kind: str = "input"):
    def register(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        CASES.append(Case(family, name, error, match, fn, kind))
        return fn
    return register


def _cube(h: int = 8, w: int = 9, b: int = 5, dtype: Any = np.float32) -> np.ndarray:
    return np.random.default_rng(0).random((h, w, b)).astype(dtype)


# ------------------------------------------------------------------------ bundle damage
def _rehash(path: Path, name: str) -> None:
    """Record the current sha256 of ``name`` (so the damage is past the checksum gate)."""
    Bundle.open(path, verify=False).add_file(name)


def _edit_meta(path: Path, **changes: Any) -> None:
    meta_path = path / "meta.json"
    meta = json.loads(meta_path.read_text())
    for key, value in changes.items():
        if value is _DELETE:
            meta.pop(key, None)
        else:
            meta[key] = value
    meta_path.write_text(json.dumps(meta))


_DELETE = object()


def _flip_byte(file: Path, offset: int = -20) -> None:
    data = bytearray(file.read_bytes())
    data[offset] ^= 0xFF
    file.write_bytes(bytes(data))


# =============================================================================== RX
@case("rx", "rank2", InputError, r"expects an \(H, W, B\) cube \(band-last\); got shape \(8, 9\)")
def _(env):
    env.det("rx").predict(_cube()[..., 0])


@case("rx", "rank4", InputError, r"expects an \(H, W, B\) cube \(band-last\); got shape \(2, 8, 9, 5\)")
def _(env):
    env.det("rx").predict(np.stack([_cube(), _cube()]))


@case("rx", "rank1", InputError, r"expects an \(H, W, B\) cube \(band-last\); got shape \(5,\)")
def _(env):
    env.det("rx").predict(np.ones(5))


@case("rx", "python-list", InputError, r"expects an \(H, W, B\) numpy array or a cube file path; got list of length 8")
def _(env):
    env.det("rx").predict(_cube().tolist())


@case("rx", "dtype-complex", InputError, r"expects a real numeric cube \(int, uint or float\); got dtype complex128")
def _(env):
    env.det("rx").predict(_cube().astype(np.complex128))


@case("rx", "dtype-bool", InputError, r"expects a real numeric cube \(int, uint or float\); got dtype bool")
def _(env):
    env.det("rx").predict(_cube() > 0.5)


@case("rx", "dtype-str", InputError, r"expects a real numeric cube \(int, uint or float\); got dtype <U")
def _(env):
    env.det("rx").predict(np.full((4, 4, 3), "a"))


@case("rx", "empty-rows", InputError, r"got an empty cube of shape \(0, 9, 5\)")
def _(env):
    env.det("rx").predict(np.zeros((0, 9, 5)))


@case("rx", "empty-bands", InputError, r"got an empty cube of shape \(8, 9, 0\)")
def _(env):
    env.det("rx").predict(np.zeros((8, 9, 0)))


@case("rx", "nan", InputError, r"cube has 1 pixels with NaN/Inf values; clean them or pass nan_policy='mask'")
def _(env):
    cube = _cube()
    cube[2, 3, 1] = np.nan
    env.det("rx").predict(cube)


@case("rx", "inf", InputError, r"cube has 2 pixels with NaN/Inf values")
def _(env):
    cube = _cube()
    cube[0, 0, 0] = np.inf
    cube[1, 1, 4] = -np.inf
    env.det("rx").predict(cube)


@case("rx", "one-valid-pixel", InputError, r"RX needs at least 2 valid pixels; got 1")
def _(env):
    cube = np.full((3, 3, 4), np.nan)
    cube[1, 1] = 1.0
    edgesentry.load("rx", nan_policy="mask").predict(cube)


@case("rx", "huge", InputError, r"too large to prepare.*got ndarray of shape \(100000, 100000, 3\)")
def _(env):
    env.det("rx").predict(np.broadcast_to(np.float32(1), (*HUGE, 3)))


@case("rx", "too-many-bands", InputError, r"cannot take the first 10 bands of a cube with 5 bands")
def _(env):
    edgesentry.load("rx", bands=10).predict(_cube())


@case("rx", "band-index-out-of-range", InputError, r"band indices must lie in \[0, 5\); got min 0 max 7")
def _(env):
    edgesentry.load("rx", bands=[0, 7]).predict(_cube())


@case("rx", "missing-file", InputError, r"cube file '.*nope\.npy' does not exist")
def _(env):
    env.det("rx").predict(str(env.tmp / "nope.npy"))


@case("rx", "unsupported-format", InputError, r"unsupported cube format '\.txt'.*expected \.mat, \.npy or ENVI \.hdr")
def _(env):
    path = env.tmp / "cube.txt"
    path.write_text("1 2 3")
    env.det("rx").predict(str(path))


@case("rx", "npy-pickle", InputError, r"is not a plain \.npy array")
def _(env):
    path = env.tmp / "objects.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    env.det("rx").predict(str(path))


@case("rx", "npy-truncated", InputError, r"is not a plain \.npy array|cannot read|truncated")
def _(env):
    path = env.tmp / "cut.npy"
    np.save(path, _cube())
    path.write_bytes(path.read_bytes()[:200])
    env.det("rx").predict(str(path))


@case("rx", "local-window-missing", ConfigError, r"local RX needs window=\(3, 9\) \(inner, outer\)", kind="option")
def _(env):
    edgesentry.load("rx", mode="local")


@case("rx", "local-window-order", ConfigError, r"window must satisfy 1 <= inner < outer; got \(9, 3\)", kind="option")
def _(env):
    edgesentry.load("rx", mode="local", window=(9, 3))


@case("rx", "unknown-mode", ConfigError, r"RX mode must be 'global' or 'local'; got 'regional'", kind="option")
def _(env):
    edgesentry.load("rx", mode="regional")


@case("rx", "unknown-kernel-tier", ConfigError, r"unknown kernel tier 'gpu'; expected 'auto' or one of", kind="option")
def _(env):
    edgesentry.load("rx", kernels="gpu")


@case("rx", "threshold-nan", ConfigError, r"threshold must be finite; got nan", kind="option")
def _(env):
    edgesentry.load("rx", threshold=float("nan"))


@case("rx", "empty-batch", InputError, r"predict_batch\(\) got an empty sequence; pass at least one input")
def _(env):
    env.det("rx").predict_batch([])


# ============================================================= bundles (generic, via rx)
@case("bundle", "not-a-directory", BundleError, r"expected a bundle directory containing meta\.json; got '.*file\.txt'",
      kind="bundle")
def _(env):
    path = env.tmp / "file.txt"
    path.write_text("x")
    Bundle.open(path)


@case("bundle", "meta-missing", BundleError, r"is not a bundle: meta\.json is missing", kind="bundle")
def _(env):
    path = env.copy("rx")
    (path / "meta.json").unlink()
    edgesentry.load(path)


@case("bundle", "meta-truncated", BundleError, r"meta\.json is not valid JSON .*the bundle is corrupt", kind="bundle")
def _(env):
    path = env.copy("rx")
    text = (path / "meta.json").read_text()
    (path / "meta.json").write_text(text[: len(text) // 2])
    edgesentry.load(path)


@case("bundle", "meta-not-object", BundleError, r"must hold a JSON object; got list", kind="bundle")
def _(env):
    path = env.copy("rx")
    (path / "meta.json").write_text("[1, 2]")
    edgesentry.load(path)


@case("bundle", "schema-version-future", BundleError,
      r"bundle schema_version 99 is not supported by edgesentry .* \(expected 1\)", kind="bundle")
def _(env):
    path = env.copy("rx")
    _edit_meta(path, schema_version=99)
    edgesentry.load(path)


@case("bundle", "schema-version-missing", BundleError, r"bundle schema_version None is not supported .*\(expected 1\)",
      kind="bundle")
def _(env):
    path = env.copy("rx")
    _edit_meta(path, schema_version=_DELETE)
    edgesentry.load(path)


@case("bundle", "family-key-missing", BundleError, r"lacks the required key 'family'", kind="bundle")
def _(env):
    path = env.copy("rx")
    _edit_meta(path, family=_DELETE)
    edgesentry.load(path)


@case("bundle", "unknown-family", BundleError, r"is of unknown family 'sonar'; expected one of \[", kind="bundle")
def _(env):
    path = env.copy("rx")
    _edit_meta(path, family="sonar")
    edgesentry.load(path)


@case("bundle", "neither-family-nor-path", ConfigError,
      r"'no_such_bundle' is neither a family name \(.*\) nor an existing bundle directory", kind="bundle")
def _(env):
    edgesentry.load("no_such_bundle")


@case("bundle", "listed-file-missing", BundleError, r"bundle file 'extra\.json' listed in meta\.json is missing from",
      kind="bundle")
def _(env):
    path = env.copy("rx")
    Bundle.open(path).add_file("extra.json", b"{}")
    (path / "extra.json").unlink()
    edgesentry.load(path)


@case("bundle", "rx-option-mismatch", ConfigError,
      r"family 'rx' has no option 'backend'; valid options: bands, .*kernels, .*mode, .*warmup", kind="option")
def _(env):
    edgesentry.load(env.bundle("rx"), backend="torch")


# ================================================ bundles with weights: every such family
def _weights_cases(family: str) -> None:
    w = "weights.safetensors"

    @case(family, "weights-missing", BundleError, rf"bundle file '{w}' listed in meta\.json is missing from",
          kind="bundle")
    def _(env):
        path = env.copy(family)
        (path / w).unlink()
        edgesentry.load(path)

    @case(family, "weights-tampered", ChecksumError,
          rf"bundle file '{w}' has sha256 [0-9a-f]{{16}}\.\.\., expected [0-9a-f]{{16}}\.\.\. from meta\.json",
          kind="bundle")
    def _(env):
        path = env.copy(family)
        _flip_byte(path / w)
        edgesentry.load(path)

    @case(family, "weights-truncated", ChecksumError, rf"bundle file '{w}' has sha256 .*modified or truncated",
          kind="bundle")
    def _(env):
        path = env.copy(family)
        data = (path / w).read_bytes()
        (path / w).write_bytes(data[: len(data) // 3])
        edgesentry.load(path)

    @case(family, "weights-pickle", BundleError,
          rf"{w} is a pickle/torch archive, but a bundle holds safetensors only", kind="bundle")
    def _(env):
        path = env.copy(family)
        (path / w).write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
        _rehash(path, w)
        edgesentry.load(path, backend="torch")

    @case(family, "weights-torch-zip", BundleError,
          rf"{w} is a pickle/torch archive, but a bundle holds safetensors only", kind="bundle")
    def _(env):
        path = env.copy(family)
        with zipfile.ZipFile(path / w, "w") as zf:  # the layout of torch.save
            zf.writestr("archive/data.pkl", pickle.dumps({"w": 1}))
        _rehash(path, w)
        edgesentry.load(path, backend="torch")

    @case(family, "weights-garbage", BundleError, rf"{w} is not a readable safetensors file", kind="bundle")
    def _(env):
        path = env.copy(family)
        (path / w).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json header}")
        _rehash(path, w)
        edgesentry.load(path, backend="torch")

    @case(family, "weights-key-missing", WeightsError, r"(?is)missing.*[a-z_]+\.[a-z0-9_.]+", kind="bundle")
    def _(env):
        from safetensors.numpy import load_file, save_file

        path = env.copy(family)
        tensors = load_file(str(path / w))
        victim = sorted(tensors)[len(tensors) // 2]
        del tensors[victim]
        save_file(tensors, str(path / w))
        _rehash(path, w)
        edgesentry.load(path, backend="torch")

    @case(family, "unknown-backend", ConfigError, r"unknown backend 'tensorflow'; expected 'auto' or one of "
          r"\['torch', 'onnxruntime', 'openvino', 'tensorrt'\]", kind="option")
    def _(env):
        edgesentry.load(env.bundle(family), backend="tensorflow")

    @case(family, "onnx-backend-without-onnx", BackendUnavailableError,
          r"backend 'onnxruntime' needs model\.onnx|needs .*onnx", kind="option")
    def _(env):
        edgesentry.load(env.bundle(family), backend="onnxruntime")


for _family in ("fers", "mavd", "mdmf", "isstad"):
    _weights_cases(_family)


# ============================================================================== FERS
@case("fers", "too-few-bands", InputError, r"these FERS weights use the first 50 bands; the cube has only 20 "
      r"\(shape \(12, 12, 20\)\)")
def _(env):
    env.det("fers").predict(_cube(12, 12, 20))


@case("fers", "too-small", InputError, r"FERS needs H and W >= \d+ .*; got 2x12")
def _(env):
    env.det("fers").predict(_cube(2, 12, 50))


@case("fers", "rank2", InputError, r"FERS expects an \(H, W, B\) cube \(band-last\); got shape \(12, 50\)")
def _(env):
    env.det("fers").predict(_cube(12, 12, 50)[0])


@case("fers", "nan", InputError, r"cube has 1 NaN/Inf values in its first 50 bands")
def _(env):
    cube = _cube(12, 12, 50)
    cube[3, 3, 3] = np.nan
    env.det("fers").predict(cube)


@case("fers", "constant", InputError, r"the first 50 bands of the cube are constant")
def _(env):
    env.det("fers").predict(np.ones((12, 12, 50), np.float32))


@case("fers", "dtype-complex", InputError, r"FERS expects a real numeric cube .*got dtype complex64")
def _(env):
    env.det("fers").predict(_cube(12, 12, 50).astype(np.complex64))


@case("fers", "huge", InputError, r"too large to prepare.*got ndarray of shape \(100000, 100000, 50\)")
def _(env):
    env.det("fers").predict(np.broadcast_to(np.float32(1), (*HUGE, 50)))


# ============================================================================== MAVD
def _mavd_x(t: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"rgb": rng.random((t, 1024), np.float32), "flow": rng.random((t, 1024), np.float32),
            "audio": rng.random((t, 128), np.float32)}


@case("mavd", "not-a-dict", InputError, r"MAVD expects a dict with keys 'rgb', 'flow', 'audio'; got ndarray of shape")
def _(env):
    env.det("mavd").predict(np.zeros((3, 1024), np.float32))


@case("mavd", "missing-key", InputError, r"needs keys \['rgb', 'flow', 'audio'\]; missing \['audio'\], unexpected \[\]")
def _(env):
    x = _mavd_x()
    del x["audio"]
    env.det("mavd").predict(x)


@case("mavd", "wrong-feature-dim", InputError,
      r"rgb must be \(T, 1024\) or \(crops, T, 1024\); got shape \((1, )?3, 512\)")
def _(env):
    env.det("mavd").predict({**_mavd_x(), "rgb": np.zeros((3, 512), np.float32)})


@case("mavd", "snippet-count-mismatch", InputError, r"must have the same number of snippets T; got \{.*'flow': 4")
def _(env):
    env.det("mavd").predict({**_mavd_x(), "flow": np.zeros((4, 1024), np.float32)})


@case("mavd", "nan", InputError, r"audio has 1 NaN/Inf values")
def _(env):
    x = _mavd_x()
    x["audio"][1, 5] = np.nan
    env.det("mavd").predict(x)


@case("mavd", "empty", InputError, r"rgb is empty: shape \(1, 0, 1024\)")
def _(env):
    env.det("mavd").predict({k: v[:0] for k, v in _mavd_x().items()})


@case("mavd", "dtype-str", InputError, r"rgb must be numeric; got dtype <U")
def _(env):
    env.det("mavd").predict({**_mavd_x(), "rgb": np.full((3, 1024), "x")})


# ============================================================================== MDMF
def _mdmf_episode(env, **override: Any) -> Any:
    det = env.det("mdmf")
    d, t = det.settings.dim, det.settings.frames
    rng = np.random.default_rng(0)
    args = {"query_feats": rng.random((1, t, d), np.float32), "support_feats": rng.random((2, t, d), np.float32),
            "support_labels": np.array([0, 1]), "text_embeddings": rng.random((2, d), np.float32)}
    args.update(override)
    return det.classify_features(**args)


@case("mdmf", "query-wrong-dim", InputError, r"query_feats must be \[B, T=8, D=256\] frame features; got ndarray of "
      r"shape \(1, 8, 128\)")
def _(env):
    _mdmf_episode(env, query_feats=np.zeros((1, 8, 128), np.float32))


@case("mdmf", "support-rank2", InputError, r"support_feats must be \[B, T=8, D=256\] frame features; got ndarray of "
      r"shape \(8, 256\)")
def _(env):
    _mdmf_episode(env, support_feats=np.zeros((8, 256), np.float32))


@case("mdmf", "query-int", InputError, r"query_feats must be floating point; got dtype int64")
def _(env):
    _mdmf_episode(env, query_feats=np.zeros((1, 8, 256), np.int64))


@case("mdmf", "query-nan", InputError, r"query_feats contains NaN or Inf")
def _(env):
    q = np.zeros((1, 8, 256), np.float32)
    q[0, 0, 0] = np.inf
    _mdmf_episode(env, query_feats=q)


@case("mdmf", "labels-wrong-length", InputError, r"support_labels must be \[S=2\]; got ndarray of shape \(3,\)")
def _(env):
    _mdmf_episode(env, support_labels=np.array([0, 1, 1]))


@case("mdmf", "text-wrong-rows", InputError,
      r"text_embeddings must be \[N=2, D=256\] .*got ndarray of shape \(3, 256\)")
def _(env):
    _mdmf_episode(env, text_embeddings=np.zeros((3, 256), np.float32))


@case("mdmf", "empty-query", InputError, r"query_feats must be \[B, T=8, D=256\] frame features; got ndarray of "
      r"shape \(0, 8, 256\)")
def _(env):
    _mdmf_episode(env, query_feats=np.zeros((0, 8, 256), np.float32))


# ============================================================================ ISSTAD
def _rgb(h: int = 40, w: int = 48) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


@case("isstad", "grey-rank2", InputError, r"ISSTAD expects an \(H, W, 3\) uint8 image \(channel-last RGB\); "
      r"got shape \(40, 48\)")
def _(env):
    env.det("isstad").predict(_rgb()[..., 0])


@case("isstad", "channel-first", InputError, r"\(channel-last RGB\); got shape \(3, 40, 48\)")
def _(env):
    env.det("isstad").predict(np.ascontiguousarray(_rgb().transpose(2, 0, 1)))


@case("isstad", "rgba", InputError, r"\(channel-last RGB\); got shape \(40, 48, 4\)")
def _(env):
    env.det("isstad").predict(np.concatenate([_rgb(), _rgb()[..., :1]], axis=2))


@case("isstad", "unknown-colour-order", ConfigError, r"color must be 'rgb' or 'bgr'; got 'gbr'")
def _(env):
    env.det("isstad").predict(_rgb(), color="gbr")


@case("isstad", "dtype-float", InputError, r"ISSTAD expects uint8 pixels in \[0, 255\]; got dtype float32")
def _(env):
    env.det("isstad").predict(_rgb().astype(np.float32) / 255)


@case("isstad", "dtype-uint16", InputError, r"ISSTAD expects uint8 pixels in \[0, 255\]; got dtype uint16")
def _(env):
    env.det("isstad").predict(_rgb().astype(np.uint16) * 257)


@case("isstad", "empty", InputError, r"ISSTAD got an empty image of shape \(0, 48, 3\)")
def _(env):
    env.det("isstad").predict(_rgb()[:0])


@case("isstad", "nested-list", InputError, r"ISSTAD expects an \(H, W, 3\) uint8 RGB array, a PIL image or an image "
      r"path; got list of length 40")
def _(env):
    env.det("isstad").predict(_rgb().tolist())


@case("isstad", "huge", InputError, r"too large to prepare.*got ndarray of shape \(100000, 100000, 3\) and dtype uint8")
def _(env):
    env.det("isstad").predict(np.broadcast_to(np.uint8(7), (*HUGE, 3)))


@case("isstad", "missing-image-file", InputError, r"image file '.*absent\.png' does not exist")
def _(env):
    env.det("isstad").predict(str(env.tmp / "absent.png"))


@case("isstad", "truncated-png", InputError, r"'.*cut\.png' is not a readable image")
def _(env):
    from PIL import Image

    path = env.tmp / "cut.png"
    Image.fromarray(_rgb()).save(path)
    path.write_bytes(path.read_bytes()[:100])
    env.det("isstad").predict(str(path))


@case("isstad", "png-bomb", InputError, r"'.*bomb\.png' declares 900000000 pixels, above the decoder's limit of "
      r"\d+ pixels")
def _(env):
    from tests.hostile import png_bytes

    path = env.tmp / "bomb.png"
    path.write_bytes(png_bytes(30_000, 30_000))
    env.det("isstad").predict(str(path))


@case("isstad", "float-image", InputError, r"'.*float\.tif' is a 32-bit float image \(mode F\)")
def _(env):
    from PIL import Image

    path = env.tmp / "float.tif"
    Image.fromarray(np.ones((40, 48), np.float32)).save(path)
    env.det("isstad").predict(str(path))


@case("isstad", "batch-with-one-bad", InputError, r"\(channel-last RGB\); got shape \(40, 48\)")
def _(env):
    env.det("isstad").predict_batch([_rgb(), _rgb()[..., 0], _rgb()])
