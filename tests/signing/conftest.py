"""Fixtures of the signing tests: fresh key pairs (never committed) and bundles of every file kind.

Keys are EC P-256 pairs made with ``cryptography`` for the session; ``other`` is a second owner
(key rotation, untrusted signer), ``rsa`` a key of a kind the format does not take.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("model_signing", reason="bundle signatures need model-signing (requirements-dev.txt)")


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path
    fingerprint: str


def _write_pair(key, folder: Path, name: str) -> KeyPair:
    import hashlib

    from cryptography.hazmat.primitives import serialization

    folder.mkdir(parents=True, exist_ok=True)
    private = folder / f"{name}.pem"
    public = folder / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    public.write_bytes(pem)
    return KeyPair(private, public, hashlib.sha256(pem).hexdigest())


@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> dict[str, KeyPair]:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    folder = tmp_path_factory.mktemp("keys")
    return {
        "owner": _write_pair(ec.generate_private_key(ec.SECP256R1()), folder, "owner"),
        "other": _write_pair(ec.generate_private_key(ec.SECP384R1()), folder, "other"),
        "rsa": _write_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048), folder, "rsa"),
    }


@pytest.fixture(autouse=True)
def _no_policy_from_the_environment(monkeypatch):
    """Tests set the trust policy themselves; one in the caller's environment must not leak in."""
    for name in ("EDGESENTRY_SIGNING_CONFIG", "EDGESENTRY_TRUSTED_KEYS", "EDGESENTRY_REVOKED_KEYS"):
        monkeypatch.delenv(name, raising=False)


def _tiny_onnx() -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


#: every kind of file a bundle holds: metadata, weights, graph, precision variant, engine plan + sidecar
FILE_KINDS = ("meta.json", "weights.safetensors", "model.onnx", "model.fp16.onnx",
              "engines/model.sm89.fp16.plan", "engines/model.sm89.fp16.json")


def make_bundle(path: Path) -> Path:
    """An RX bundle (loads and predicts without ../shared) holding one file of every kind.

    RX reads none of the extra files; what matters here is that each kind is listed, hashed and
    covered by the signature like the real ones (plan bytes are opaque to everything but TensorRT).
    """
    from safetensors.numpy import save

    import edgesentry

    bundle = edgesentry.convert("rx", output=path, overwrite=True)
    rng = np.random.default_rng(0)
    bundle.add_file("weights.safetensors", save({"w": rng.standard_normal((4, 4)).astype(np.float32)}))
    bundle.add_file("model.onnx", _tiny_onnx())
    bundle.add_file("model.fp16.onnx", _tiny_onnx())
    bundle.add_file("engines/model.sm89.fp16.plan", rng.bytes(4096))
    bundle.add_file("engines/model.sm89.fp16.json", json.dumps({"graph": "model", "sm": "8.9"}).encode())
    return path


@pytest.fixture(scope="session")
def _template(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("template") / "bundle")


@pytest.fixture
def bundle(_template: Path, tmp_path: Path) -> Path:
    """A fresh, unsigned copy of the every-kind bundle."""
    out = tmp_path / "bundle"
    shutil.copytree(_template, out)
    return out


@pytest.fixture
def signed(bundle: Path, keys) -> Path:
    """The every-kind bundle signed by ``owner`` (``bundle.sig`` inside it)."""
    from edgesentry.signing import sign_bundle

    sign_bundle(bundle, keys["owner"].private)
    return bundle


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Change one byte of a file (the middle one by default), keeping its size."""
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def bundle_copy_unsigned(_template: Path, tmp_path: Path) -> Path:
    """A second unsigned copy, beside a signed one."""
    out = tmp_path / "unsigned"
    shutil.copytree(_template, out)
    return out
