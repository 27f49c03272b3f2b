"""A bundle is a closed world (issue 21, findings 1, 5, 6, 7, 8).

Every hostile ``meta.json`` here is written by hand, the way an attacker would: names that
climb out of the bundle, absolute names, symbolic links, wrong types, deep nesting, oversized
files, ``schema_version: true``, NaN weights, and TensorRT plans nobody listed. Each must be
refused with a typed error before any file outside the bundle is opened, and no writer may
put a byte outside its output folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

import edgesentry
from edgesentry.bundle import Bundle, write_bundle
from edgesentry.cli import main
from edgesentry.errors import BundleError, ConfigError, InputError, WeightsError
from tests.utils import one_error_line


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _meta(path: Path) -> dict:
    return json.loads((path / "meta.json").read_text())


def _write_meta(path: Path, meta: dict) -> None:
    (path / "meta.json").write_text(json.dumps(meta))


def _snapshot(root: Path, skip: Path) -> dict[str, bytes]:
    """Every file under ``root`` outside ``skip``, with its bytes."""
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file() and skip not in p.parents}


@pytest.fixture
def graph_bundle(tmp_path: Path) -> Bundle:
    """An rx-family bundle with one fake graph ``model`` (model.onnx), as ``export`` records it.

    The bytes of model.onnx are never parsed here: the repository writer only copies them.
    """
    root = tmp_path / "src" / "deep" / "bundle"
    bundle = write_bundle(root, "rx", config={"mode": "global"},
                          tensors={"w": np.ones(3, np.float32)})
    bundle.add_file("model.onnx", b"ONNX-BYTES")
    spec = {"dtype": "float32", "shape": ["batch", 3]}
    bundle.update_meta(graphs={"model": {
        "file": "model.onnx", "inputs": {"x": spec}, "outputs": ["y"], "output_spec": {"y": spec},
        "dynamic_axes": {"x": {"0": "batch"}, "y": {"0": "batch"}}}})
    return bundle


EXAMPLE = np.zeros((1, 3), np.float32)


# ----------------------------------------------------------------------- finding 1: traversal
def test_dotdot_name_is_refused_even_when_its_hash_matches(graph_bundle: Bundle, tmp_path: Path) -> None:
    """Finding 1: ``files`` naming ``../x`` made the bundle read a file outside itself."""
    secret = graph_bundle.path.parent / "secret.txt"
    secret.write_bytes(b"outside the bundle")
    meta = _meta(graph_bundle.path)
    meta["files"]["../secret.txt"] = _sha(secret.read_bytes())
    _write_meta(graph_bundle.path, meta)
    with pytest.raises(BundleError, match=r"'\.\./secret\.txt' has an empty, '\.' or '\.\.' component"):
        Bundle.open(graph_bundle.path)


def test_triton_repo_never_writes_outside_its_output(graph_bundle: Bundle, tmp_path: Path, capsys) -> None:
    """Finding 1: ``export --format triton-repo`` copied ``bundle/../../../x`` to ``OUT/../../../x``."""
    name = "../../../x.txt"
    source = (graph_bundle.path / name).resolve()
    source.write_bytes(b"planted")
    meta = _meta(graph_bundle.path)
    meta["files"][name] = _sha(b"planted")
    _write_meta(graph_bundle.path, meta)
    out = tmp_path / "dst" / "a" / "repo"
    before = _snapshot(tmp_path, skip=out)
    code = main(["export", str(graph_bundle.path), "--format", "triton-repo", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and "'..' component" in err
    assert _snapshot(tmp_path, skip=out) == before, "a file outside OUT was created or changed"


@pytest.mark.parametrize("present", [True, False], ids=["present", "absent"])
def test_absolute_name_refused_without_an_existence_oracle(graph_bundle: Bundle, tmp_path: Path,
                                                           present: bool) -> None:
    """Finding 1: an absolute name answered "missing" or "checksum", telling whether a file exists;
    ``triton-repo`` then died with a 22-line ``SameFileError``. Now both answers are the same."""
    target = tmp_path / "elsewhere.txt"
    if present:
        target.write_bytes(b"exists")
    meta = _meta(graph_bundle.path)
    meta["files"][str(target)] = "0" * 64
    _write_meta(graph_bundle.path, meta)
    with pytest.raises(BundleError) as info:
        Bundle.open(graph_bundle.path)
    assert str(info.value) == f"bundle file name {str(target)!r} is absolute; expected a path relative to its folder"


def test_symlink_leaving_the_bundle_is_refused(graph_bundle: Bundle, tmp_path: Path) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"outside")
    os.symlink(outside, graph_bundle.path / "link.bin")
    meta = _meta(graph_bundle.path)
    meta["files"]["link.bin"] = _sha(b"outside")
    _write_meta(graph_bundle.path, meta)
    with pytest.raises(BundleError, match="resolves outside .*symbolic link"):
        Bundle.open(graph_bundle.path)


@pytest.mark.parametrize("name", ["../escape.bin", "/tmp/escape.bin", "a/../../escape.bin", "c:\\x", ""])
def test_writers_refuse_names_leaving_the_bundle(graph_bundle: Bundle, name: str) -> None:
    with pytest.raises(BundleError, match="bundle file name"):
        graph_bundle.add_file(name, b"x")
    with pytest.raises(BundleError, match="bundle file name"):
        graph_bundle.remove_file(name)
    assert not (graph_bundle.path.parent / "escape.bin").exists()


def test_repository_refuses_an_output_symlink_leaving_it(graph_bundle: Bundle, tmp_path: Path) -> None:
    from edgesentry.serving import write_model_repository

    out = tmp_path / "repo"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, out / "rx_model")  # a planted link where a model folder goes
    with pytest.raises(ConfigError, match="resolves outside"):
        write_model_repository(graph_bundle, out, example=EXAMPLE)
    assert list(elsewhere.iterdir()) == []


def test_repository_copies_only_listed_files_and_verifies_them(graph_bundle: Bundle, tmp_path: Path) -> None:
    from edgesentry.serving import write_model_repository

    (graph_bundle.path / "unlisted.bin").write_bytes(b"not in meta.json")
    repo = write_model_repository(Bundle.open(graph_bundle.path), tmp_path / "repo", example=EXAMPLE)
    copy = repo / "rx_post" / "bundle"
    assert sorted(p.name for p in copy.iterdir()) == ["meta.json", "model.onnx", "weights.safetensors"]
    assert (repo / "rx_model" / "1" / "model.onnx").read_bytes() == b"ONNX-BYTES"
    Bundle.open(copy)  # the copy verifies on its own
    # a listed file changed after the bundle was opened is not exported
    opened = Bundle.open(graph_bundle.path)
    (graph_bundle.path / "model.onnx").write_bytes(b"SWAPPED")
    with pytest.raises(edgesentry.ChecksumError, match="changed since the bundle was opened"):
        write_model_repository(opened, tmp_path / "repo2", example=EXAMPLE)


# ------------------------------------------------------------------- finding 7: TensorRT plans
def _plan(bundle: Bundle, body: bytes, *, onnx_sha: str | None = None, graph: str = "model",
          listed: bool = True, tag: str = "a") -> str:
    name = f"engines/{graph}.fp16.sm87.trt10.3.0.{tag * 16}.plan"
    key = {"graph": graph, "onnx_sha256": onnx_sha or bundle.files["model.onnx"], "precision": "fp16",
           "compute_capability": "8.7", "trt_version": "10.3.0", "profile": {}, "version_compatible": False,
           "extra": {}}
    side = json.dumps({"key": key, "plan_sha256": _sha(body), "build": {}}).encode()
    (bundle.path / "engines").mkdir(exist_ok=True)
    if listed:
        bundle.add_file(name, body)
        bundle.add_file(name[:-5] + ".json", side)
    else:
        (bundle.path / name).write_bytes(body)
        (bundle.path / (name[:-5] + ".json")).write_bytes(side)
    return name


def test_tensorrt_variant_takes_only_a_plan_the_bundle_vouches_for(graph_bundle: Bundle, tmp_path: Path) -> None:
    """Finding 7: the tensorrt variant globbed ``engines/<graph>.*.plan`` without meta.json, key or hash."""
    from edgesentry.serving import write_model_repository

    _plan(graph_bundle, b"DROPPED-IN-BY-HAND", listed=False)
    with pytest.raises(ConfigError, match="no verified TensorRT plan for graph 'model'"):
        write_model_repository(Bundle.open(graph_bundle.path), tmp_path / "r1", variant="tensorrt", example=EXAMPLE)
    _plan(graph_bundle, b"FOR-ANOTHER-ONNX", onnx_sha="f" * 64, tag="b")
    with pytest.raises(ConfigError, match="built from another ONNX file"):
        write_model_repository(Bundle.open(graph_bundle.path), tmp_path / "r2", variant="tensorrt", example=EXAMPLE)
    _plan(graph_bundle, b"GOOD-PLAN", tag="c")
    repo = write_model_repository(Bundle.open(graph_bundle.path), tmp_path / "r3", variant="tensorrt",
                                  example=EXAMPLE)
    assert (repo / "rx_model" / "1" / "model.plan").read_bytes() == b"GOOD-PLAN"
    assert not list((repo / "rx_post" / "bundle").glob("engines/*")), "plans do not go into the serving copy"


def test_engine_cache_ignores_a_plan_not_listed_in_meta(graph_bundle: Bundle) -> None:
    from edgesentry.export.tensorrt import EngineCache, EngineKey, ShapeProfile

    key = EngineKey("model", graph_bundle.files["model.onnx"], "fp16", "8.7", "10.3.0", ShapeProfile(()))
    stray = EngineCache(graph_bundle.path / "engines")  # writes without recording in meta.json
    stray.store(key, b"STRAY-PLAN")
    vouched = EngineCache(graph_bundle.path / "engines", listed=graph_bundle.files, listed_root=graph_bundle.path)
    found = vouched.lookup(key)
    assert found.path is None and "not listed in meta.json" in found.reason
    recorded = EngineCache(graph_bundle.path / "engines", listed=graph_bundle.meta["files"],
                           listed_root=graph_bundle.path,
                           on_write=lambda p: graph_bundle.add_file(p.relative_to(graph_bundle.path).as_posix()))
    recorded.store(key, b"GOOD-PLAN")
    assert recorded.lookup(key).reason == "hit"


# ----------------------------------------------------- findings 5, 6, 8: meta.json types and size
@pytest.mark.parametrize("change, match", [
    ({"files": ["weights.safetensors"]}, r"'files' must be a JSON object; got list"),
    ({"config": [1, 2]}, r"'config' must be a JSON object; got list"),
    ({"graphs": {"model": "model.onnx"}}, r"graphs must map simple names to objects"),
    ({"graphs": {"../m": {"file": "m.onnx"}}}, r"graphs must map simple names to objects"),
    ({"family": "../isstad"}, r"family must be a simple name"),
    ({"files": {"weights.safetensors": 5}}, r"must be a sha256 hex digest; got '5'"),
    ({"schema_version": True}, r"schema_version True is not supported"),
    ({"schema_version": 1.0}, r"schema_version 1\.0 is not supported"),
], ids=["files-list", "config-list", "graph-not-object", "graph-name", "family-path", "digest-int",
        "schema-true", "schema-float"])
def test_meta_types_are_checked(graph_bundle: Bundle, change: dict, match: str) -> None:
    """Findings 5 and 6: wrong types gave tracebacks deep inside; ``schema_version: true`` passed as 1."""
    meta = _meta(graph_bundle.path)
    meta.update(change)
    _write_meta(graph_bundle.path, meta)
    with pytest.raises(BundleError, match=match):
        Bundle.open(graph_bundle.path)


def test_deeply_nested_meta_is_a_bundle_error(graph_bundle: Bundle, capsys) -> None:
    """Finding 5: meta.json nested 200 000 deep raised ``RecursionError`` (a 40-line traceback)."""
    depth = 200_000
    (graph_bundle.path / "meta.json").write_text('{"schema_version": 1, "x": ' + "[" * depth + "]" * depth + "}")
    with pytest.raises(BundleError, match="nested too deeply|nested more than"):
        Bundle.open(graph_bundle.path)
    code = main(["watch", str(graph_bundle.path), str(graph_bundle.path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and one_error_line(err)


def test_meta_json_has_a_size_cap(graph_bundle: Bundle) -> None:
    """Finding 8: meta.json had no size cap (it was read whole, whatever its size)."""
    from edgesentry.bundle import META_MAX_BYTES

    meta = _meta(graph_bundle.path)
    meta["extra"] = {"padding": "x" * META_MAX_BYTES}
    _write_meta(graph_bundle.path, meta)
    size = (graph_bundle.path / "meta.json").stat().st_size
    with pytest.raises(BundleError, match=f"has {size} bytes; the limit is {META_MAX_BYTES}"):
        Bundle.open(graph_bundle.path)


def test_meta_json_that_is_a_fifo_is_refused_without_blocking(graph_bundle: Bundle) -> None:
    meta = graph_bundle.path / "meta.json"
    meta.unlink()
    os.mkfifo(meta)
    with pytest.raises(BundleError, match="FIFO, socket or device"):
        Bundle.open(graph_bundle.path)


# ----------------------------------------------------------------- finding 6: non-finite weights
def test_nan_weights_are_refused_at_load_naming_the_tensor(graph_bundle: Bundle) -> None:
    """Finding 6: NaN weights loaded silently and gave a NaN score with ``label=False``."""
    from safetensors.numpy import save_file

    poisoned = {"ok": np.ones(4, np.float32), "blocks.3.attn.qkv.weight": np.array([1.0, np.nan, np.inf], np.float32)}
    save_file(poisoned, str(graph_bundle.path / "weights.safetensors"))
    graph_bundle.add_file("weights.safetensors")
    with pytest.raises(WeightsError, match=r"tensor 'blocks\.3\.attn\.qkv\.weight' of shape \(3,\) holds 2 non-finite"):
        Bundle.open(graph_bundle.path).load_tensors()
    with pytest.raises(WeightsError, match="tensor 'bad'"):
        write_bundle(graph_bundle.path.parent / "new", "rx", config={}, tensors={"bad": np.array([np.nan])})


def test_non_finite_score_is_never_label_false() -> None:
    """Finding 6: a NaN score became ``label=False`` without a word. Policy: ``InputError``."""
    from edgesentry.detector import Detector
    from edgesentry.result import Result

    class Constant(Detector):
        family = "test-constant"

        def preprocess(self, x):
            return x

        def postprocess(self, raw, prepared):
            return Result(score=prepared)

    det = Constant(threshold=0.5)
    assert det.predict(0.7).label is True and det.predict(0.2).label is False
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(InputError, match="non-finite score"):
            det.predict(bad)


def test_corrupt_meta_in_the_cli_is_one_line(graph_bundle: Bundle, capsys) -> None:
    meta = _meta(graph_bundle.path)
    meta["files"] = "weights.safetensors"
    _write_meta(graph_bundle.path, meta)
    code = main(["export", str(graph_bundle.path), "--format", "triton-repo", str(graph_bundle.path.parent / "o")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and "'files' must be a JSON object" in err
