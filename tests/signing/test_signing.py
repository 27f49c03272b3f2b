"""Signed bundles: sign -> verify -> load; every tampering refused naming the file; key trust.

The signature format is the OpenSSF model signing one (``model-signing``); every test signs with
keys generated for the session (``conftest.keys``), never a committed one.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

import edgesentry
from edgesentry.bundle import Bundle
from edgesentry.errors import BundleError, ChecksumError, ConfigError, SignatureError
from edgesentry.signing import (
    SIGNATURE_NAME,
    TrustPolicy,
    default_policy,
    sign_bundle,
    signature_state,
    verify_bundle,
)
from tests.signing.conftest import FILE_KINDS, flip_byte


def _policy(*pairs, revoked=()) -> TrustPolicy:
    return TrustPolicy.from_keys([p.public for p in pairs], revoked)


# ----------------------------------------------------------------------- the good path
def test_sign_verify_load_predicts_like_the_unsigned_bundle(signed: Path, keys, rng):
    verification = verify_bundle(signed, _policy(keys["owner"]))
    assert verification.signer == keys["owner"].fingerprint
    assert verification.key == keys["owner"].public
    # every file of the bundle is covered, the signature itself is not
    assert set(verification.digests) == {*FILE_KINDS}
    assert SIGNATURE_NAME not in verification.digests

    det = edgesentry.load(signed, trusted_keys=[keys["owner"].public])
    assert det.bundle.signature.signer == keys["owner"].fingerprint
    plain = edgesentry.load(signed)  # no policy: not checked, same detector
    assert plain.bundle.signature is None
    cube = rng.standard_normal((9, 7, 5)).astype(np.float32)
    np.testing.assert_array_equal(det.predict(cube).anomaly_map, plain.predict(cube).anomaly_map)


def test_signed_digests_are_the_files_sha256(signed: Path, keys):
    """The signed statement holds each file's sha256, which Bundle.verify then uses unread."""
    from edgesentry.bundle import sha256_file

    verification = verify_bundle(signed, _policy(keys["owner"]))
    assert verification.digests == {n: sha256_file(signed / n) for n in FILE_KINDS}
    opened = Bundle.open(signed, trust=_policy(keys["owner"]))
    assert {n: opened.files[n] for n in opened.files} == {n: verification.digests[n] for n in opened.files}


# ------------------------------------------------------------------------ tampering
@pytest.mark.parametrize("name", FILE_KINDS)
def test_one_byte_changed_in_any_kind_of_file_is_refused_naming_it(signed: Path, keys, name):
    flip_byte(signed / name)
    with pytest.raises(SignatureError, match=rf"does not match its signature \(changed: {name}\)"):
        edgesentry.load(signed, trusted_keys=[keys["owner"].public])


def test_an_added_file_is_refused_naming_it(signed: Path, keys):
    (signed / "engines" / "extra.plan").write_bytes(b"not signed")
    with pytest.raises(SignatureError, match=r"added: engines/extra.plan"):
        verify_bundle(signed, _policy(keys["owner"]))


def test_hidden_and_git_files_are_covered_too(signed: Path, keys):
    """The library skips .git* paths by default; a bundle signature does not."""
    (signed / ".gitignore").write_text("*\n")
    with pytest.raises(SignatureError, match=r"added: \.gitignore"):
        verify_bundle(signed, _policy(keys["owner"]))


def test_a_removed_file_is_refused_naming_it(signed: Path, keys):
    (signed / "model.fp16.onnx").unlink()
    with pytest.raises(SignatureError, match=r"missing: model.fp16.onnx"):
        verify_bundle(signed, _policy(keys["owner"]))


def test_a_symbolic_link_in_the_bundle_is_refused(signed: Path, keys, tmp_path):
    target = tmp_path / "elsewhere.bin"
    target.write_bytes((signed / "model.onnx").read_bytes())
    (signed / "model.onnx").unlink()
    (signed / "model.onnx").symlink_to(target)
    with pytest.raises(SignatureError, match=r"changed: model.onnx"):
        verify_bundle(signed, _policy(keys["owner"]))


def test_an_altered_signature_is_refused(signed: Path, keys):
    doc = json.loads((signed / SIGNATURE_NAME).read_text())
    sig = bytearray(base64.b64decode(doc["dsseEnvelope"]["signatures"][0]["sig"]))
    sig[-1] ^= 0x01
    doc["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    (signed / SIGNATURE_NAME).write_text(json.dumps(doc))
    with pytest.raises(SignatureError, match=r"signature does not verify with sha256:"):
        verify_bundle(signed, _policy(keys["owner"]))


def test_a_rewritten_statement_is_refused(signed: Path, keys):
    """Editing the signed file list (e.g. to vouch for a swapped file) breaks the signature."""
    doc = json.loads((signed / SIGNATURE_NAME).read_text())
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"] = statement["predicate"]["resources"][:-1]
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    (signed / SIGNATURE_NAME).write_text(json.dumps(doc))
    with pytest.raises(SignatureError, match=r"does not verify"):
        verify_bundle(signed, _policy(keys["owner"]))


def _statement(predicate: object) -> bytes:
    payload = base64.b64encode(json.dumps({"predicate": predicate}).encode()).decode()
    return json.dumps({"dsseEnvelope": {"payload": payload}}).encode()


@pytest.mark.parametrize("content", [
    b"", b"{}", b"not json", b"\xff\xfe", b"[]", b'{"dsseEnvelope": {"payload": "@@"}}', b"[" * 200_000,
    _statement([1]), _statement({"serialization": {"ignore_paths": [{"a": 1}]}, "resources": []}),
    _statement({"serialization": {}, "resources": [7]}),
])
def test_a_malformed_signature_is_one_clear_error(signed: Path, keys, content):
    (signed / SIGNATURE_NAME).write_bytes(content)
    with pytest.raises(SignatureError, match=r"is not an OpenSSF model signature"):
        verify_bundle(signed, _policy(keys["owner"]))


def test_skipped_paths_of_a_statement_are_never_looked_up_outside_the_bundle(signed: Path, keys):
    doc = json.loads((signed / SIGNATURE_NAME).read_text())
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    statement["predicate"]["serialization"]["ignore_paths"] = ["../../etc/passwd"]
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    (signed / SIGNATURE_NAME).write_text(json.dumps(doc))
    with pytest.raises(SignatureError, match=r"skipped path name '\.\./\.\./etc/passwd' has an empty, '\.' or '\.\.'"):
        verify_bundle(signed, _policy(keys["owner"]))


def test_an_oversized_signature_is_refused_before_reading(signed: Path, keys):
    (signed / SIGNATURE_NAME).write_bytes(b" " * (2 << 20))
    with pytest.raises(SignatureError, match=r"bundle signature"):
        verify_bundle(signed, _policy(keys["owner"]))


def test_a_signed_bundle_whose_meta_disagrees_with_its_files_is_refused(bundle: Path, keys):
    """A signature vouches for bytes; meta.json's own sha256s must still hold (a corrupt bundle signed
    by a tool that does not open it first)."""
    meta = json.loads((bundle / "meta.json").read_text())
    meta["files"]["model.onnx"] = "0" * 64
    (bundle / "meta.json").write_text(json.dumps(meta))
    sign_bundle(bundle, keys["owner"].private)  # sign_bundle itself does not open the bundle
    with pytest.raises(ChecksumError, match=r"model.onnx"):
        Bundle.open(bundle, trust=_policy(keys["owner"]))


# ---------------------------------------------------------------------------- interoperability
def test_signatures_interoperate_with_the_model_signing_library(bundle: Path, keys, tmp_path):
    """edgesentry's signature verifies with the library's own verifier; the library's default
    signature (which skips .git* paths) verifies with edgesentry while no such path exists."""
    from model_signing import signing, verifying

    sign_bundle(bundle, keys["owner"].private)
    verifier = verifying.Config().use_elliptic_key_verifier(public_key=keys["owner"].public)
    verifier.verify(bundle, bundle / SIGNATURE_NAME)

    theirs = tmp_path / "theirs.sig"
    signing.Config().use_elliptic_key_signer(private_key=keys["owner"].private).sign(bundle, theirs)
    v = verify_bundle(bundle, _policy(keys["owner"]), signature=theirs)
    assert SIGNATURE_NAME in v.digests  # the library's default signs everything present, ours included
    (bundle / ".gitattributes").write_text("* binary\n")
    with pytest.raises(SignatureError, match=r"leaves files of the bundle unsigned \(\['.gitattributes'\]\)"):
        verify_bundle(bundle, _policy(keys["owner"]), signature=theirs)


# --------------------------------------------------------------------------------- trust
def test_an_unsigned_bundle_is_refused_when_a_signature_is_required(bundle: Path, keys):
    with pytest.raises(SignatureError, match=r"is not signed \(bundle.sig is missing\).*edgesentry sign"):
        edgesentry.load(bundle, trusted_keys=[keys["owner"].public])


def test_a_signature_by_an_untrusted_key_is_refused(bundle: Path, keys):
    sign_bundle(bundle, keys["other"].private)
    fp = keys["other"].fingerprint[:16]
    with pytest.raises(SignatureError, match=rf"signed by sha256:{fp}, which is not among the 1 trusted key"):
        edgesentry.load(bundle, trusted_keys=[keys["owner"].public])


def test_several_trusted_keys_rotation(bundle: Path, keys):
    sign_bundle(bundle, keys["other"].private)
    v = verify_bundle(bundle, _policy(keys["owner"], keys["other"]))
    assert v.signer == keys["other"].fingerprint and v.key == keys["other"].public


@pytest.mark.parametrize("how", ["file", "fingerprint", "sha256:fingerprint"])
def test_a_revoked_key_is_refused_even_when_trusted(signed: Path, keys, how):
    owner = keys["owner"]
    entry = {"file": owner.public, "fingerprint": owner.fingerprint,
             "sha256:fingerprint": f"sha256:{owner.fingerprint}"}
    with pytest.raises(SignatureError, match=rf"revoked key sha256:{owner.fingerprint[:16]}"):
        edgesentry.load(signed, trusted_keys=[owner.public, keys["other"].public], revoked_keys=[entry[how]])


def test_trusted_keys_must_be_ec_public_keys(keys, signed):
    with pytest.raises(SignatureError, match=r"is a private key; give its public key"):
        TrustPolicy.from_keys([keys["owner"].private])
    with pytest.raises(SignatureError, match=r"elliptic-curve keys on P-256"):
        TrustPolicy.from_keys([keys["rsa"].public])
    with pytest.raises(SignatureError, match=r"does not exist"):
        TrustPolicy.from_keys([signed / "nope.pub"])
    with pytest.raises(ConfigError, match=r"trusted_keys=\.\.\. is empty"):
        edgesentry.load(signed, trusted_keys=[])
    with pytest.raises(ConfigError, match=r"revoked_keys=\.\.\. without trusted keys would verify nothing"):
        edgesentry.load(signed, revoked_keys=[keys["other"].public])
    with pytest.raises(ConfigError, match=r"require_signature=True needs trusted keys"):
        edgesentry.load(signed, require_signature=True)


def test_signing_needs_an_ec_private_key(bundle: Path, keys):
    with pytest.raises(SignatureError, match=r"not an elliptic-curve key"):
        sign_bundle(bundle, keys["rsa"].private)
    with pytest.raises(SignatureError, match=r"not a PEM private key"):
        sign_bundle(bundle, keys["owner"].public)
    assert not (bundle / SIGNATURE_NAME).exists()


def test_a_signature_outside_the_bundle(bundle: Path, keys, tmp_path):
    sig = tmp_path / "sigs" / "bundle.sig"
    sign_bundle(bundle, keys["owner"].private, signature=sig)
    assert sig.is_file() and not (bundle / SIGNATURE_NAME).exists()
    with pytest.raises(SignatureError, match=r"is not signed"):
        edgesentry.load(bundle, trusted_keys=[keys["owner"].public])
    det = edgesentry.load(bundle, trusted_keys=[keys["owner"].public], signature=sig)
    assert det.bundle.signature.signature == sig
    with pytest.raises(ConfigError, match=r"a signature inside the bundle must be"):
        sign_bundle(bundle, keys["owner"].private, signature=bundle / "other.sig")


# ---------------------------------------------------------------------------- defaults
def test_the_environment_sets_the_default_policy(signed: Path, bundle_copy_unsigned, keys, monkeypatch):
    monkeypatch.setenv("EDGESENTRY_TRUSTED_KEYS", str(keys["owner"].public))
    assert edgesentry.load(signed).bundle.signature.signer == keys["owner"].fingerprint
    with pytest.raises(SignatureError, match=r"not signed.*from \$EDGESENTRY_TRUSTED_KEYS"):
        edgesentry.load(bundle_copy_unsigned)
    monkeypatch.setenv("EDGESENTRY_REVOKED_KEYS", keys["owner"].fingerprint)
    with pytest.raises(SignatureError, match=r"revoked"):
        edgesentry.load(signed)


def test_a_config_file_sets_trusted_and_revoked_keys(signed: Path, keys, monkeypatch, tmp_path):
    shutil.copy(keys["owner"].public, tmp_path / "owner.pub")
    shutil.copy(keys["other"].public, tmp_path / "other.pub")
    config = tmp_path / "signing.json"
    config.write_text(json.dumps({"trusted_keys": ["owner.pub", "other.pub"], "revoked_keys": []}))
    monkeypatch.setenv("EDGESENTRY_SIGNING_CONFIG", str(config))
    policy = default_policy()
    assert {k.fingerprint for k in policy.trusted} == {keys["owner"].fingerprint, keys["other"].fingerprint}
    assert edgesentry.load(signed).bundle.signature is not None
    config.write_text(json.dumps({"trusted_keys": ["owner.pub"], "revoked_keys": ["owner.pub"]}))
    with pytest.raises(SignatureError, match=r"revoked"):
        edgesentry.load(signed)
    # the config's revocations hold even when keys are given explicitly
    with pytest.raises(SignatureError, match=r"revoked"):
        edgesentry.load(signed, trusted_keys=[keys["owner"].public])
    config.write_text(json.dumps({"trusted": ["owner.pub"]}))
    with pytest.raises(ConfigError, match=r"unknown keys \['trusted'\]"):
        default_policy()
    config.write_text("[1, 2")
    with pytest.raises(ConfigError, match=r"not valid JSON"):
        default_policy()


def test_no_policy_means_no_check(bundle: Path):
    assert default_policy() is None
    assert edgesentry.load(bundle).bundle.signature is None


# ---------------------------------------------------- verification before meta.json is parsed
HOSTILE = "HOSTILE-META-b7f3"


def _spy_on_parsers(monkeypatch) -> list[str]:
    """Record every JSON parse and every ``parse_meta`` call; a hostile meta.json must reach none."""
    import edgesentry.bundle as bundle_module

    seen: list[str] = []
    real_loads, real_parse_meta = json.loads, bundle_module.parse_meta

    def loads(data, *args, **kwargs):
        text = data.decode("utf-8", "replace") if isinstance(data, (bytes, bytearray)) else str(data)
        seen.append("json:" + ("hostile" if HOSTILE in text else "other"))
        return real_loads(data, *args, **kwargs)

    def parse_meta(data, *args, **kwargs):
        seen.append("parse_meta")
        return real_parse_meta(data, *args, **kwargs)

    monkeypatch.setattr(json, "loads", loads)
    monkeypatch.setattr(bundle_module, "parse_meta", parse_meta)
    return seen


def _make_hostile(bundle: Path) -> None:
    meta = json.loads((bundle / "meta.json").read_text())
    meta["extra"] = {"note": HOSTILE, "deep": [[[[1]]]]}
    (bundle / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("case", ["unsigned", "tampered after signing"])
def test_a_hostile_meta_json_never_reaches_the_parser(bundle: Path, keys, monkeypatch, case):
    if case == "tampered after signing":
        sign_bundle(bundle, keys["owner"].private)
    _make_hostile(bundle)
    seen = _spy_on_parsers(monkeypatch)
    with pytest.raises(SignatureError):
        edgesentry.load(bundle, trusted_keys=[keys["owner"].public])
    assert "parse_meta" not in seen and "json:hostile" not in seen, seen
    # control: without a required signature the same bundle is parsed, so the spies see it
    edgesentry.load(bundle)
    assert "parse_meta" in seen and "json:hostile" in seen


def test_a_signed_meta_json_is_parsed_after_verification(signed: Path, keys, monkeypatch):
    import edgesentry.signing as signing_module

    order: list[str] = []
    real_verify, real_parse = signing_module.verify_bundle, __import__("edgesentry.bundle").bundle.parse_meta
    monkeypatch.setattr("edgesentry.bundle.verify_bundle",
                        lambda *a, **k: order.append("verify") or real_verify(*a, **k))
    monkeypatch.setattr("edgesentry.bundle.parse_meta", lambda *a, **k: order.append("parse") or real_parse(*a, **k))
    edgesentry.load(signed, trusted_keys=[keys["owner"].public])
    assert order == ["verify", "parse"]


# --------------------------------------------------------------- changes make new versions
def test_changing_a_signed_bundle_in_place_removes_the_signature_with_a_warning(signed: Path, keys, caplog):
    det = edgesentry.load(signed, trusted_keys=[keys["owner"].public])
    det.threshold = 3.0
    with caplog.at_level(logging.WARNING, logger="edgesentry.bundle"):
        det.save(signed)  # in place, as `edgesentry calibrate` does
    assert not (signed / SIGNATURE_NAME).exists()
    assert "new, unsigned version" in caplog.text and "edgesentry sign" in caplog.text
    with pytest.raises(SignatureError, match=r"is not signed"):
        edgesentry.load(signed, trusted_keys=[keys["owner"].public])
    assert edgesentry.load(signed).threshold == 3.0


def test_a_saved_copy_of_a_signed_bundle_is_unsigned(signed: Path, keys, tmp_path, caplog):
    det = edgesentry.load(signed, trusted_keys=[keys["owner"].public])
    with caplog.at_level(logging.WARNING, logger="edgesentry.bundle"):
        det.save(tmp_path / "copy")
    assert not (tmp_path / "copy" / SIGNATURE_NAME).exists()
    assert "is a new, unsigned version of the signed bundle" in caplog.text
    assert verify_bundle(signed, _policy(keys["owner"])).signer == keys["owner"].fingerprint  # source untouched


def test_adding_a_file_to_a_signed_bundle_removes_the_signature(signed: Path):
    Bundle.open(signed).add_file("engines/model.sm90.fp16.plan", b"new plan")
    assert not (signed / SIGNATURE_NAME).exists()


def test_missing_model_signing_is_one_clear_message(signed: Path, keys, monkeypatch):
    import sys

    for name in [m for m in sys.modules if m == "model_signing" or m.startswith("model_signing.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "model_signing", None)
    with pytest.raises(SignatureError, match=r"need the model-signing package.*edgesentry\[signing\]"):
        verify_bundle(signed, _policy(keys["owner"]))


def test_signature_state_for_info(signed: Path, bundle_copy_unsigned, keys):
    assert signature_state(bundle_copy_unsigned, None)["state"] == "unsigned"
    unchecked = signature_state(signed, None)
    assert unchecked["state"] == "unchecked" and unchecked["signer"] == f"sha256:{keys['owner'].fingerprint[:16]}"
    assert signature_state(signed, _policy(keys["owner"]))["state"] == "verified"
    refused = signature_state(signed, _policy(keys["other"]))
    assert refused["state"] == "refused" and "not among" in refused["reason"]


def test_bundle_error_hierarchy():
    assert issubclass(SignatureError, BundleError) and edgesentry.SignatureError is SignatureError
