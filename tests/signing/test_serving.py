"""Triton repositories of signed bundles: the signature travels, the python models verify it.

The generated ``model.py`` files are executed as Triton's python backend would: imported with a
stand-in ``triton_python_backend_utils`` (``initialize`` does not use it) and given ``args`` whose
``model_config`` is the repository's ``config.pbtxt`` converted to JSON by Triton's own
model-config protobuf, as the server does.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import types
from pathlib import Path

import pytest

from edgesentry.errors import SignatureError
from edgesentry.signing import SIGNATURE_NAME, TrustPolicy, sign_bundle
from tests.signing.conftest import flip_byte

pytest.importorskip("onnxruntime")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")


@pytest.fixture(scope="session")
def _isstad_exported(shared, tmp_path_factory):
    from tests.export.families import exported_bundle

    bundle, _ = exported_bundle("isstad", shared, tmp_path_factory.mktemp("serving") / "isstad")
    return bundle.path


@pytest.fixture
def signed_isstad(_isstad_exported: Path, tmp_path: Path, keys) -> Path:
    out = tmp_path / "isstad"
    shutil.copytree(_isstad_exported, out)
    sign_bundle(out, keys["owner"].private)
    return out


def _repository(bundle_path: Path, out: Path, trust=None) -> Path:
    from edgesentry.bundle import Bundle
    from edgesentry.serving import write_model_repository

    bundle = Bundle.open(bundle_path, trust=trust)
    return write_model_repository(bundle, out, variant="onnxruntime", trust=trust)


def _initialize(model_dir: Path):
    """Run ``TritonPythonModel.initialize`` of a generated model as the python backend does."""
    from google.protobuf import json_format, text_format

    cfg = text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    spec = importlib.util.spec_from_file_location(f"triton_model_{model_dir.name}", model_dir / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    model.initialize({"model_config": json_format.MessageToJson(cfg, preserving_proto_field_name=True),
                      "model_repository": str(model_dir), "model_version": "1"})
    return model


def test_the_repository_carries_the_signed_bundle_and_verifies_it_at_start(signed_isstad, keys, tmp_path):
    policy = TrustPolicy.from_keys([keys["owner"].public])
    repo = _repository(signed_isstad, tmp_path / "repo", policy)
    copy = repo / "isstad_post" / "bundle"
    assert (copy / SIGNATURE_NAME).read_bytes() == (signed_isstad / SIGNATURE_NAME).read_bytes()
    assert (repo / "isstad_post" / "trusted_keys" / "key0.pub").read_bytes() == keys["owner"].public.read_bytes()
    pre, post = _initialize(repo / "isstad_pre"), _initialize(repo / "isstad_post")
    for model in (pre, post):
        assert model.stage.detector.bundle.signature.signer == keys["owner"].fingerprint


@pytest.mark.parametrize("target", ["isstad_post/bundle/weights.safetensors", "isstad_post/bundle/meta.json"])
def test_a_changed_bundle_copy_fails_the_python_models_at_start(signed_isstad, keys, tmp_path, target):
    repo = _repository(signed_isstad, tmp_path / "repo", TrustPolicy.from_keys([keys["owner"].public]))
    flip_byte(repo / target)
    name = target.rsplit("/", 1)[-1]
    for model in ("isstad_pre", "isstad_post"):
        with pytest.raises(SignatureError, match=rf"changed: {name}"):
            _initialize(repo / model)


def test_a_changed_graph_model_file_fails_the_post_model(signed_isstad, keys, tmp_path):
    repo = _repository(signed_isstad, tmp_path / "repo", TrustPolicy.from_keys([keys["owner"].public]))
    flip_byte(repo / "isstad_model" / "1" / "model.onnx")
    with pytest.raises(SignatureError, match=r"isstad_model/1/model.onnx differs from the signed bundle file"):
        _initialize(repo / "isstad_post")


def test_the_servers_own_keys_win_and_are_needed_without_exported_keys(signed_isstad, keys, tmp_path, monkeypatch):
    repo = _repository(signed_isstad, tmp_path / "repo")  # no keys at export: the server must have them
    with pytest.raises(SignatureError, match=r"no trusted key is configured.*EDGESENTRY_TRUSTED_KEYS"):
        _initialize(repo / "isstad_post")
    monkeypatch.setenv("EDGESENTRY_TRUSTED_KEYS", str(keys["owner"].public))
    assert _initialize(repo / "isstad_post").stage.detector.bundle.signature is not None
    # keys exported with the repository do not override a server that trusts someone else
    repo2 = _repository(signed_isstad, tmp_path / "repo2", TrustPolicy.from_keys([keys["owner"].public]))
    monkeypatch.setenv("EDGESENTRY_TRUSTED_KEYS", str(keys["other"].public))
    with pytest.raises(SignatureError, match=r"not among the 1 trusted key"):
        _initialize(repo2 / "isstad_post")


def test_the_export_verb_writes_a_verifying_repository(signed_isstad, keys, tmp_path, capsys):
    from edgesentry.cli import main

    out = tmp_path / "repo"
    assert main(["export", str(signed_isstad), "--format", "triton-repo", str(out),
                 "--trusted-keys", str(keys["owner"].public)]) == 0
    assert "its python models verify it at start" in capsys.readouterr().out
    assert _initialize(out / "isstad_post").stage.detector.bundle.signature.key.name == "key0.pub"
    # an untrusted signer is refused before anything is written
    assert main(["export", str(signed_isstad), "--format", "triton-repo", str(tmp_path / "repo2"),
                 "--trusted-keys", str(keys["other"].public)]) == 1
    assert "not among the 1 trusted key" in capsys.readouterr().err
    assert not (tmp_path / "repo2").exists()


def test_an_unsigned_bundle_writes_the_repository_as_before(_isstad_exported, tmp_path):
    repo = _repository(_isstad_exported, tmp_path / "repo")
    params = (repo / "isstad_post" / "config.pbtxt").read_text()
    assert "require_signature" not in params and not (repo / "isstad_post" / "bundle" / SIGNATURE_NAME).exists()
    assert _initialize(repo / "isstad_post").stage.detector.bundle.signature is None


@pytest.mark.triton_server
def test_tritonserver_serves_a_verified_signed_repository_and_refuses_a_changed_one(signed_isstad, keys, tmp_path):
    """pytriton's real tritonserver on loopback: the signed repository loads and serves what
    ``predict`` gives; the same repository with one byte of its weights changed fails to load,
    with the signature error in the server's log."""
    import numpy as np

    import edgesentry
    from edgesentry.bundle import Bundle
    from edgesentry.errors import BackendUnavailableError
    from edgesentry.serving import write_model_repository
    from edgesentry.serving.local import LocalTritonServer
    from tests.export.families import CASES
    from tests.utils import start_triton_server

    policy = TrustPolicy.from_keys([keys["owner"].public])
    bundle = Bundle.open(signed_isstad, trust=policy)
    repo = write_model_repository(bundle, tmp_path / "repo", variant="python", trust=policy)
    bad = tmp_path / "bad"
    shutil.copytree(repo, bad)
    flip_byte(bad / "isstad_post" / "bundle" / "weights.safetensors")

    server = start_triton_server(repo, startup_timeout=60)
    try:
        from edgesentry.serving import Client

        x = CASES["isstad"].sample(np.random.default_rng(5), bundle)["x"]
        got = Client(server.http_url, model="isstad").predict(x)
        want = edgesentry.load(bundle, backend="onnxruntime").predict(x)
        assert got.raw_score == pytest.approx(want.raw_score, rel=1e-5, abs=1e-6)
    finally:
        server.close()
    refused = LocalTritonServer(bad, startup_timeout=60)
    try:
        with pytest.raises(BackendUnavailableError, match=r"failed to load"):
            refused.start()
        log = refused.log_path.read_text(errors="replace")
    finally:
        refused.close()
    assert "SignatureError" in log and "does not match its signature (changed: weights.safetensors)" in log
