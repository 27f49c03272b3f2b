"""The line runtime and signed bundles: ``require_signature`` / ``trusted_keys`` in a line file."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgesentry.cli import main
from edgesentry.signing import sign_bundle
from tests.signing.conftest import flip_byte

pytest.importorskip("jsonschema")

from edgesentry.line import LineFileError, load_line_file  # noqa: E402
from tests.line.test_config import GOOD  # noqa: E402


def _line_file(tmp_path: Path, bundle: Path, *keys: str) -> Path:
    """GOOD with its detector's bundle at ``bundle`` and ``keys`` (TOML lines) added to the detector."""
    text = GOOD.replace('bundle = "bundle"', "\n".join([f'bundle = "{bundle}"', *keys]))
    path = tmp_path / "line.toml"
    path.write_text(text)
    return path


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("failed | edgesentry line"), err
    return lines[0]


def test_require_signature_refuses_an_unsigned_bundle_at_check_and_at_start(bundle, keys, tmp_path, capsys):
    path = _line_file(tmp_path, bundle, "require_signature = true", f'trusted_keys = ["{keys["owner"].public}"]')
    for action in ("check", "run"):
        assert main(["line", action, str(path)]) == 1
        line = _one_line(capsys.readouterr().err)
        assert line.startswith(f"edgesentry line: error: {path}:5: detectors.isstad.bundle: bundle {bundle} is not "
                               "signed"), line


def test_a_signed_bundle_passes_and_a_changed_one_is_refused_when_the_line_starts(signed, keys, tmp_path, capsys):
    from edgesentry.line.detectors import build_scorer

    path = _line_file(tmp_path, signed, "require_signature = true", 'trusted_keys = ["keys/owner.pub"]')
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "owner.pub").write_bytes(keys["owner"].public.read_bytes())  # relative to the file
    assert main(["line", "check", str(path)]) == 0, capsys.readouterr().err
    cfg = load_line_file(path)
    assert cfg.detectors["isstad"].trusted_keys == (str(tmp_path / "keys" / "owner.pub"),)
    flip_byte(signed / "model.onnx")  # after the check, before the start: the start verifies again
    with pytest.raises(LineFileError, match=r"detectors.isstad.bundle: bundle .* does not match its signature "
                                            r"\(changed: model.onnx\)"):
        build_scorer(cfg.detectors["isstad"], cfg)


def test_require_signature_needs_trusted_keys(bundle, tmp_path, capsys):
    path = _line_file(tmp_path, bundle, "require_signature = true")
    assert main(["line", "check", str(path)]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "line.toml:6: detectors.isstad.require_signature: needs trusted keys" in line


def test_untrusted_and_revoked_signers_are_refused(signed, keys, tmp_path, capsys):
    path = _line_file(tmp_path, signed, f'trusted_keys = ["{keys["other"].public}"]')
    assert main(["line", "check", str(path)]) == 1
    assert "which is not among the 1 trusted key" in _one_line(capsys.readouterr().err)
    path = _line_file(tmp_path, signed, f'trusted_keys = ["{keys["owner"].public}"]',
                      f'revoked_keys = ["sha256:{keys["owner"].fingerprint}"]')
    assert main(["line", "check", str(path)]) == 1
    assert "is signed by the revoked key" in _one_line(capsys.readouterr().err)


def test_the_environment_policy_applies_to_the_line(bundle, keys, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EDGESENTRY_TRUSTED_KEYS", str(keys["owner"].public))
    path = _line_file(tmp_path, bundle)
    assert main(["line", "check", str(path)]) == 1
    assert "is not signed" in _one_line(capsys.readouterr().err)
    sign_bundle(bundle, keys["owner"].private)
    assert main(["line", "check", str(path)]) == 0
