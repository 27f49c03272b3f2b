"""``edgesentry sign`` / ``verify`` / ``info BUNDLE`` and what ``calibrate`` does to a signed bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgesentry.cli import main
from edgesentry.signing import SIGNATURE_NAME
from tests.signing.conftest import FILE_KINDS, flip_byte


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_sign_then_verify(bundle: Path, keys, capsys):
    code, out, err = _run(capsys, "sign", bundle, "--key", keys["owner"].private)
    assert code == 0 and (bundle / SIGNATURE_NAME).is_file()
    assert f"with sha256:{keys['owner'].fingerprint[:16]}" in out and "checked: it verifies" in out
    assert err.splitlines()[-1].startswith("done | edgesentry sign")
    code, out, err = _run(capsys, "verify", bundle, "--trusted-keys", keys["other"].public, keys["owner"].public)
    assert code == 0 and "verified" in out and f"{len(FILE_KINDS)} files match" in out
    code, out, _ = _run(capsys, "verify", bundle, "--trusted-keys", keys["owner"].public, "--json")
    facts = json.loads(out)
    assert facts["signer"] == keys["owner"].fingerprint and "engines/model.sm89.fp16.plan" in facts["files"]


def test_verify_refusals_are_one_line(signed: Path, keys, capsys):
    flip_byte(signed / "model.onnx")
    code, out, err = _run(capsys, "verify", signed, "--trusted-keys", keys["owner"].public)
    lines = err.splitlines()
    assert code == 1 and len(lines) == 2 and "Traceback" not in err
    assert lines[0].startswith("edgesentry verify: error: bundle ") and "(changed: model.onnx)" in lines[0]
    assert lines[1].startswith("failed | edgesentry verify")
    code, _, err = _run(capsys, "verify", signed)
    assert code == 1 and "no trusted keys: pass --trusted-keys KEY.pub" in err
    code, _, err = _run(capsys, "verify", signed, "--trusted-keys", keys["owner"].public, "--revoked-keys",
                        keys["owner"].fingerprint)
    assert code == 1 and "revoked key" in err


def test_sign_refuses_a_corrupt_bundle(bundle: Path, keys, capsys):
    flip_byte(bundle / "weights.safetensors")
    code, _, err = _run(capsys, "sign", bundle, "--key", keys["owner"].private)
    assert code == 1 and "weights.safetensors" in err and not (bundle / SIGNATURE_NAME).exists()


def test_sign_with_an_encrypted_key(bundle: Path, keys, tmp_path, capsys):
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(keys["owner"].private.read_bytes(), None)
    encrypted = tmp_path / "enc.pem"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"s3cret")))
    code, _, err = _run(capsys, "sign", bundle, "--key", encrypted)
    assert code == 1 and "is encrypted" in err
    (tmp_path / "pw").write_text("s3cret\n")
    code, out, _ = _run(capsys, "sign", bundle, "--key", encrypted, "--password-file", tmp_path / "pw")
    assert code == 0 and keys["owner"].fingerprint[:16] in out


def test_info_shows_signer_and_state(signed: Path, bundle_copy_unsigned: Path, keys, capsys):
    short = f"sha256:{keys['owner'].fingerprint[:16]}"
    code, out, _ = _run(capsys, "info", signed, "--trusted-keys", keys["owner"].public)
    assert code == 0 and f"signature: verified by {short}" in out and "family rx" in out
    code, out, _ = _run(capsys, "info", signed)
    assert code == 0 and f"signature: unchecked by {short}" in out
    code, out, _ = _run(capsys, "info", bundle_copy_unsigned)
    assert code == 0 and "signature: unsigned" in out
    code, out, _ = _run(capsys, "info", signed, "--trusted-keys", keys["other"].public, "--json")
    facts = json.loads(out)
    assert code == 1 and facts["signature"]["state"] == "refused" and "family" not in facts  # meta.json not read


def test_calibrate_in_place_makes_a_new_unsigned_version_and_says_so(signed: Path, keys, tmp_path, capsys, caplog):
    rng = np.random.default_rng(3)
    for i in range(3):
        np.save(tmp_path / f"normal{i}.npy", rng.standard_normal((8, 8, 5)).astype(np.float32))
    code, out, err = _run(capsys, "calibrate", signed, tmp_path / "normal*.npy")
    assert code == 0, err
    assert json.loads(out)["signature"].startswith("removed: a new, unsigned version")
    # the warning goes to the log (stderr on the command line; pytest's log capture here)
    assert "new, unsigned version" in caplog.text and f"edgesentry sign {signed}" in caplog.text
    assert not (signed / SIGNATURE_NAME).exists()
    code, _, err = _run(capsys, "verify", signed, "--trusted-keys", keys["owner"].public)
    assert code == 1 and "is not signed" in err


def test_verbs_verify_under_the_environment_policy(signed: Path, bundle_copy_unsigned: Path, keys, tmp_path,
                                                     capsys, monkeypatch):
    monkeypatch.setenv("EDGESENTRY_TRUSTED_KEYS", str(keys["owner"].public))
    np.save(tmp_path / "normal.npy", np.random.default_rng(4).standard_normal((8, 8, 5)).astype(np.float32))
    code, _, err = _run(capsys, "calibrate", bundle_copy_unsigned, tmp_path / "normal.npy", "--dry-run")
    assert code == 1 and "is not signed" in err and "$EDGESENTRY_TRUSTED_KEYS" in err
    code, _, err = _run(capsys, "calibrate", signed, tmp_path / "normal.npy", "--dry-run")
    assert code == 0, err
    code, out, _ = _run(capsys, "verify", signed)
    assert code == 0 and "verified" in out
