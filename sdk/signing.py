"""Signed bundles: who produced this model, and has it changed since? (OpenSSF model signing)

``meta.json`` lists a sha256 per file, which catches corruption but not tampering: whoever
edits a file can edit the hash beside it. A signature by a key its owners hold answers the
auditor's question. The format is the OpenSSF model signing one (``model-signing`` on PyPI,
imported lazily; ``pip install 'edgesentry[signing]'``): an in-toto statement listing the
sha256 of every file of the bundle directory, in a DSSE envelope signed with an elliptic-curve
key (P-256, P-384 or P-521), stored as a Sigstore bundle (JSON). Everything here is offline:
keys come from PEM files. The library's certificate and Sigstore (keyless, Fulcio/Rekor)
flows need a network and are not wired in.

    sign_bundle("isstad_bundle", "owner.pem")                     # -> isstad_bundle/bundle.sig
    policy = TrustPolicy.from_keys(["owner.pub", "backup.pub"], revoked=["old.pub"])
    verification = verify_bundle("isstad_bundle", policy)         # or SignatureError
    Bundle.open("isstad_bundle", trust=policy)                    # verified before meta.json is read

What is covered: every regular file under the bundle directory, except the signature itself
(``SIGNATURE_NAME``): ``meta.json``, weights, ONNX graphs, precision variants, TensorRT plans and
their sidecars. A changed byte, a missing file or an extra file (hidden ones included; the
library's default of skipping ``.git*`` paths is turned off) fails verification naming the file;
so does a symbolic link. The signature is checked *before* any other file of the bundle is
parsed: only its bytes are read (bounded) and hashed, so a hostile ``meta.json`` in an unsigned
or tampered bundle never reaches the JSON parser when a signature is required.

Trust: a ``TrustPolicy`` holds the trusted public keys (several, for rotation) and revoked ones
(public key files or sha256 fingerprints); a revoked key is refused even when also trusted. The
default policy comes from the environment: ``EDGESENTRY_SIGNING_CONFIG`` (a JSON file
``{"trusted_keys": [...], "revoked_keys": [...]}``, paths relative to the file),
``EDGESENTRY_TRUSTED_KEYS`` (key files separated by ``os.pathsep``; replaces the config's list)
and ``EDGESENTRY_REVOKED_KEYS`` (added to the config's list). A key's fingerprint is the sha256
of its PEM SubjectPublicKeyInfo, the key hint the format records.

Limits, stated: files are verified when the bundle is opened; a process that can write the
bundle directory afterwards can still swap a file before it is read (keep bundles read-only to
the serving account). A signature kept outside the bundle (``--signature PATH``) is not seen by
the verbs that change a bundle in place, so it breaks loudly (verification fails naming the
file) rather than being removed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesentry.errors import ConfigError, SignatureError, option
from edgesentry.io.paths import check_regular_file, check_relative_name, read_bytes_bounded, sha256_file

#: the signature inside a bundle (the verbs' default; never itself covered)
SIGNATURE_NAME = "bundle.sig"
SIGNATURE_MAX_BYTES = 1 << 20  # a signature of a bundle with thousands of files is ~100 KiB
KEY_MAX_BYTES = 64 << 10
CONFIG_MAX_BYTES = 1 << 20
ENV_CONFIG = "EDGESENTRY_SIGNING_CONFIG"
ENV_TRUSTED = "EDGESENTRY_TRUSTED_KEYS"
ENV_REVOKED = "EDGESENTRY_REVOKED_KEYS"
INSTALL_HINT = "pip install 'edgesentry[signing]' (model-signing 1.1 and pyopenssl)"
_CURVES = ("secp256r1", "secp384r1", "secp521r1")
_FINGERPRINT = re.compile(r"(?:sha256:)?([0-9a-f]{64})")


def _model_signing() -> tuple[Any, Any, Any]:
    """The ``model_signing`` modules (hashing, signing, verifying), imported on first use."""
    try:
        from model_signing import hashing, signing, verifying
    except ImportError as exc:
        raise SignatureError(f"bundle signatures need the model-signing package, which is not installed here "
                             f"({exc}); {INSTALL_HINT}") from None
    return hashing, signing, verifying


def _hashing_config(hashing: Any, ignore: Iterable[str] = ()) -> Any:
    """How a bundle is hashed: sha256 per file, no symbolic links, nothing skipped but ``ignore``
    (the library's default would also skip ``.git*`` files). Signing skips the signature; when
    verifying, the library adds what the signed statement skipped (checked by
    ``_check_serialization``)."""
    return (hashing.Config().use_file_serialization(hashing_algorithm="sha256", allow_symlinks=False)
            .set_ignored_paths(paths=list(ignore), ignore_git_paths=False))


# ------------------------------------------------------------------------------- keys
def short(fingerprint: str) -> str:
    """A fingerprint as messages show it: ``sha256:0123456789abcdef``."""
    return f"sha256:{fingerprint[:16]}"


def _public_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint_of(public_key: Any) -> str:
    """sha256 (hex) of a public key's PEM SubjectPublicKeyInfo: the key hint of the format."""
    return hashlib.sha256(_public_pem(public_key)).hexdigest()


def load_public_key(path: str | os.PathLike) -> Any:
    """An elliptic-curve public key from a PEM file.

    Raises:
        SignatureError: missing, too large, not a PEM public key (a private key is named as
            such), or not on P-256 / P-384 / P-521.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    what = f"public key {os.fspath(path)!r}"
    if not Path(path).exists():
        raise SignatureError(f"{what} does not exist")
    data = read_bytes_bounded(path, limit=KEY_MAX_BYTES, what=what, error=SignatureError)
    if b"PRIVATE KEY" in data:
        raise SignatureError(f"{what} is a private key; give its public key instead "
                             "(`openssl ec -in KEY.pem -pubout -out KEY.pub`)")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{what} is not a PEM public key ({str(exc)[:120]})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _CURVES:
        raise SignatureError(f"{what} is a {type(key).__name__.lstrip('_')}; bundle signatures use elliptic-curve "
                             "keys on P-256, P-384 or P-521")
    return key


def _load_private_key(path: str | os.PathLike, password: bytes | None) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    what = f"signing key {os.fspath(path)!r}"
    if not Path(path).exists():
        raise SignatureError(f"{what} does not exist")
    data = read_bytes_bounded(path, limit=KEY_MAX_BYTES, what=what, error=SignatureError)
    try:
        key = serialization.load_pem_private_key(data, password)
    except TypeError:
        raise SignatureError(f"{what} is encrypted; give its password file, or it is not encrypted and a "
                             "password was given") from None
    except ValueError as exc:
        raise SignatureError(f"{what} is not a PEM private key, or the password is wrong ({str(exc)[:120]})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in _CURVES:
        raise SignatureError(f"{what} is not an elliptic-curve key on P-256, P-384 or P-521 (make one with "
                             "`openssl ecparam -name prime256v1 -genkey -noout -out KEY.pem`)")
    return key


@dataclass(frozen=True)
class TrustedKey:
    path: Path
    fingerprint: str


@dataclass(frozen=True)
class TrustPolicy:
    """Which keys may sign the bundles a process loads.

    Attributes:
        trusted: public keys whose signatures are accepted (several: key rotation).
        revoked: fingerprints (sha256 hex) refused even when also trusted.
        source: where the policy came from, for messages.
    """

    trusted: tuple[TrustedKey, ...]
    revoked: frozenset[str] = field(default_factory=frozenset)
    source: str = "trusted_keys"

    @classmethod
    def from_keys(cls, trusted: Iterable[str | os.PathLike], revoked: Iterable[str | os.PathLike] = (), *,
                  source: str = "trusted_keys") -> TrustPolicy:
        """A policy from public key files and revoked keys (files or sha256 fingerprints).

        Raises:
            SignatureError: a key file is missing or not an EC public key.
        """
        keys = tuple(TrustedKey(Path(p), fingerprint_of(load_public_key(p))) for p in trusted)
        return cls(keys, frozenset(revoked_fingerprints(revoked)), source)

    def with_revoked(self, revoked: Iterable[str]) -> TrustPolicy:
        return TrustPolicy(self.trusted, self.revoked | frozenset(revoked), self.source)

    def describe(self) -> str:
        return f"{len(self.trusted)} trusted key{'s' * (len(self.trusted) != 1)} from {self.source}"


def revoked_fingerprints(entries: Iterable[str | os.PathLike]) -> list[str]:
    """Fingerprints of revoked keys given as ``sha256:HEX`` / ``HEX`` or as public key files."""
    out = []
    for entry in entries:
        text = os.fspath(entry)
        match = _FINGERPRINT.fullmatch(text.strip().lower())
        out.append(match.group(1) if match and not Path(text).exists() else fingerprint_of(load_public_key(text)))
    return out


def _config_list(cfg: Mapping[str, Any], key: str, where: str, base: Path) -> list[str]:
    value = cfg.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: {key!r} must be a list of key files; got {str(value)[:80]!r}")
    return [v if _FINGERPRINT.fullmatch(v.lower()) else os.fspath(base / v) for v in value]


def default_policy(env: Mapping[str, str] | None = None) -> TrustPolicy | None:
    """The trust policy of this process's environment, or ``None`` when none is configured.

    ``EDGESENTRY_SIGNING_CONFIG`` names a JSON file with ``trusted_keys`` and ``revoked_keys``
    (paths relative to the file; revoked entries may be sha256 fingerprints);
    ``EDGESENTRY_TRUSTED_KEYS`` (``os.pathsep``-separated key files) replaces its trusted list
    and ``EDGESENTRY_REVOKED_KEYS`` adds to its revoked list. A configured policy with no
    trusted key refuses every bundle (fail closed).

    Raises:
        ConfigError: the config file is missing, too large, not JSON or mistyped.
        SignatureError: a key file is missing or not an EC public key.
    """
    env = os.environ if env is None else env
    trusted: list[str] = []
    revoked: list[str] = []
    sources = []
    config = env.get(ENV_CONFIG)
    if config:
        path = Path(config)
        if not path.is_file():
            raise ConfigError(f"{ENV_CONFIG}={config!r} is not a file")
        try:
            cfg = json.loads(read_bytes_bounded(path, limit=CONFIG_MAX_BYTES, what="signing config",
                                                error=ConfigError))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(f"signing config {config!r} is not valid JSON ({str(exc)[:120]})") from None
        if not isinstance(cfg, dict):
            raise ConfigError(f"signing config {config!r} must hold a JSON object")
        unknown = sorted(set(cfg) - {"trusted_keys", "revoked_keys"})
        if unknown:
            raise ConfigError(f"signing config {config!r} has unknown keys {unknown}; expected trusted_keys, "
                              "revoked_keys")
        trusted = _config_list(cfg, "trusted_keys", config, path.parent)
        revoked = _config_list(cfg, "revoked_keys", config, path.parent)
        sources.append(config)
    if env.get(ENV_TRUSTED):
        trusted = [p for p in env[ENV_TRUSTED].split(os.pathsep) if p]
        sources.append(f"${ENV_TRUSTED}")
    if env.get(ENV_REVOKED):
        revoked += [p for p in env[ENV_REVOKED].split(os.pathsep) if p]
    if not sources:
        return None
    return TrustPolicy.from_keys(trusted, revoked, source=" + ".join(sources))


def resolve_policy(trusted_keys: Iterable[str | os.PathLike] | None = None,
                   revoked_keys: Iterable[str | os.PathLike] | None = None) -> TrustPolicy | None:
    """Explicit keys win over the environment's; the environment's revoked keys always apply.

    ``trusted_keys=None`` takes the default policy (``None`` when none is configured: no
    verification); an explicit empty list is a ``ConfigError`` (it would refuse everything).
    """
    base = default_policy()
    if trusted_keys is None:
        if revoked_keys is None:
            return base
        if base is None:
            raise ConfigError(f"{option('revoked_keys')} without trusted keys would verify nothing; give "
                              f"{option('trusted_keys')} too (or set {ENV_TRUSTED} / {ENV_CONFIG})")
        return base.with_revoked(revoked_fingerprints(revoked_keys))
    trusted_keys = list(trusted_keys)
    if not trusted_keys:
        raise ConfigError(f"{option('trusted_keys')} is empty, so no signature could be accepted; give the public "
                          "keys of the bundles' signers, or leave it out to load unsigned bundles")
    policy = TrustPolicy.from_keys(trusted_keys, revoked_keys or ())
    return policy.with_revoked(base.revoked) if base is not None else policy


# ------------------------------------------------------------------------- signatures
@dataclass(frozen=True)
class Verification:
    """A bundle whose signature verified.

    Attributes:
        bundle: the bundle directory.
        signature: the signature file.
        signer: fingerprint (sha256 hex) of the key that signed.
        key: the trusted key file that verified it.
        digests: bundle file name -> sha256 hex, as signed (every file, ``meta.json`` included).
    """

    bundle: Path
    signature: Path
    signer: str
    key: Path
    digests: Mapping[str, str]

    def line(self) -> str:
        n = len(self.digests)
        return f"signed by {short(self.signer)} ({self.key}), {n} file{'s' * (n != 1)} verified"


@dataclass(frozen=True)
class _Envelope:
    hint: str | None
    serialization: Mapping[str, Any]
    digests: dict[str, str]


def signature_path(bundle: str | os.PathLike, signature: str | os.PathLike | None = None) -> Path:
    return Path(signature) if signature is not None else Path(bundle) / SIGNATURE_NAME


def is_signed(bundle: str | os.PathLike) -> bool:
    """Whether the bundle carries a signature of its own (``SIGNATURE_NAME``); not verified."""
    return (Path(bundle) / SIGNATURE_NAME).is_file()


def _read_envelope(data: bytes, where: Path) -> _Envelope:
    """The key hint and the signed statement of a signature file (the statement is what the
    signature covers: it is trusted only once the signature verified over the same bytes)."""
    try:
        doc = json.loads(data.decode("utf-8"))
        hint = (doc.get("verificationMaterial") or {}).get("publicKey", {}).get("hint")
        statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"], validate=True))
        predicate = statement["predicate"]
        serialization = dict(predicate["serialization"])
        digests = {str(r["name"]): str(r["digest"]) for r in predicate["resources"]}
        ignore_paths = serialization.get("ignore_paths") or []
        if not isinstance(ignore_paths, list) or not all(isinstance(p, str) for p in ignore_paths):
            raise TypeError(f"ignore_paths must be a list of names; got {str(ignore_paths)[:80]}")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, RecursionError,
            binascii.Error) as exc:
        raise SignatureError(f"{where} is not an OpenSSF model signature ({type(exc).__name__}: "
                             f"{str(exc)[:120]}); sign the bundle again with `edgesentry sign`") from None
    return _Envelope(hint if isinstance(hint, str) else None, serialization, digests)


def _check_serialization(envelope: _Envelope, where: Path, root: Path) -> None:
    """The signed statement must hash every file with sha256 and skip nothing present but the
    signature (``model_signing sign`` lists ``.git*`` paths as skipped: fine while they are absent)."""
    s = envelope.serialization
    for name in s.get("ignore_paths") or ():  # names from outside: never looked up outside the bundle
        check_relative_name(name, what=f"{where}: skipped path", error=SignatureError)
    ignored = {p for p in s.get("ignore_paths") or () if p != SIGNATURE_NAME and os.path.lexists(root / p)}
    if s.get("method") != "files" or s.get("hash_type") != "sha256" or s.get("allow_symlinks"):
        raise SignatureError(f"{where} hashes the bundle by {s.get('method')}/{s.get('hash_type')}"
                             f"{' following symbolic links' if s.get('allow_symlinks') else ''}; edgesentry verifies "
                             "sha256 per file without links: sign it again with `edgesentry sign`")
    if ignored:
        raise SignatureError(f"{where} leaves files of the bundle unsigned ({sorted(ignored)[:5]}); every "
                             "file must be covered: sign it again with `edgesentry sign`")


def _bundle_files(root: Path, skipped: Iterable[str]) -> dict[str, Path]:
    """Every entry under ``root`` but ``skipped``, by relative POSIX name (links not followed)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if Path(dirpath, d).is_symlink()]:
            rel = Path(dirpath, name).relative_to(root).as_posix()
            if rel not in skipped:
                out[rel] = Path(dirpath, name)
    return out


def _mismatch(root: Path, signed: Mapping[str, str], skipped: Iterable[str]) -> SignatureError:
    """Which files differ from the signed statement, as one line naming them (failure path only:
    the files are hashed again here, the library's message does not name them plainly)."""
    present = _bundle_files(root, skipped)
    changed = sorted(n for n in set(present) & set(signed)
                     if present[n].is_symlink() or not present[n].is_file() or sha256_file(present[n]) != signed[n])
    added, missing = sorted(set(present) - set(signed)), sorted(set(signed) - set(present))
    parts = [f"{what}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
             for what, names in (("changed", changed), ("added", added), ("missing", missing)) if names]
    return SignatureError(f"bundle {root} does not match its signature ({'; '.join(parts) or 'files differ'}): "
                          "it was modified after signing; refused")


def verify_bundle(bundle: str | os.PathLike, policy: TrustPolicy, *,
                  signature: str | os.PathLike | None = None) -> Verification:
    """Verify a bundle directory against its signature and a trust policy.

    Only the signature file is parsed; every other file is only hashed, so this runs before
    ``meta.json`` is read.

    Args:
        bundle: the bundle directory.
        policy: trusted and revoked keys.
        signature: the signature file (default: ``bundle/bundle.sig``).

    Returns:
        The ``Verification`` (signer, key, the signed sha256 of every file).

    Raises:
        SignatureError: not signed; a malformed signature; a key that is revoked, not trusted
            or that did not make this signature; a file changed, added or missing (named).
    """
    root = Path(bundle)
    if not root.is_dir():
        raise SignatureError(f"expected a bundle directory; got {str(root)!r}")
    sig = signature_path(root, signature)
    if not sig.exists():
        raise SignatureError(f"bundle {root} is not signed ({sig.name} is missing) but a signature is required "
                             f"({policy.describe()}); sign it with `edgesentry sign {root} --key KEY.pem`")
    check_regular_file(sig, what="bundle signature", error=SignatureError)
    data = read_bytes_bounded(sig, limit=SIGNATURE_MAX_BYTES, what="bundle signature", error=SignatureError)
    envelope = _read_envelope(data, sig)
    if envelope.hint in policy.revoked:
        raise SignatureError(f"bundle {root} is signed by the revoked key {short(envelope.hint)}; refused")
    candidates = [k for k in policy.trusted if envelope.hint in (None, k.fingerprint)]
    if not candidates:
        signer = short(envelope.hint) if envelope.hint else "an unnamed key"
        raise SignatureError(f"bundle {root} is signed by {signer}, which is not among the {policy.describe()}")
    _check_serialization(envelope, sig, root)
    hashing, _, verifying = _model_signing()
    failure: SignatureError | None = None
    with tempfile.TemporaryDirectory(prefix="edgesentry-sig-") as tmp:
        # verify the very bytes parsed above, whatever happens to the file meanwhile
        copy = Path(tmp) / SIGNATURE_NAME
        copy.write_bytes(data)
        for key in candidates:
            try:
                verifying.Config().set_hashing_config(_hashing_config(hashing)).use_elliptic_key_verifier(
                    public_key=key.path).verify(root, copy)
            except Exception as exc:  # noqa: BLE001 - any failure inside the library means "not verified"
                skipped = set(envelope.serialization.get("ignore_paths") or ())
                failure = _failure(root, key, exc, envelope.digests, skipped)
                continue
            if key.fingerprint in policy.revoked:
                raise SignatureError(f"bundle {root} is signed by the revoked key {short(key.fingerprint)}; refused")
            return Verification(root, sig, key.fingerprint, key.path, envelope.digests)
    raise failure or SignatureError(f"bundle {root}: no trusted key verified {sig}")


def _failure(root: Path, key: TrustedKey, exc: Exception, signed: Mapping[str, str],
             skipped: Iterable[str]) -> SignatureError:
    text = str(exc)
    if "Signature mismatch" in text or "symbolic link" in text.lower() or "symlink" in text:
        return _mismatch(root, signed, skipped)
    if type(exc).__name__ == "InvalidSignature" or "Key mismatch" in text:
        return SignatureError(f"bundle {root}: the signature does not verify with {short(key.fingerprint)} "
                              f"({key.path}): the signature file was altered or made by another key")
    if isinstance(exc, OSError):
        return SignatureError(f"bundle {root} cannot be verified: {type(exc).__name__}: {text[:200]}")
    return SignatureError(f"bundle {root} does not verify: {type(exc).__name__}: {text[:200]}")


def sign_bundle(bundle: str | os.PathLike, key: str | os.PathLike, *, signature: str | os.PathLike | None = None,
                password: bytes | None = None) -> Verification:
    """Sign every file of a bundle directory with an EC private key (PEM); verify it back.

    The caller checks the bundle first (``Bundle.open``: its own sha256s) so that a corrupt
    bundle is not signed. The signature is written atomically; a signature inside the bundle
    must be ``SIGNATURE_NAME`` (any other name there would be a file it has to cover).

    Returns:
        The ``Verification`` of the new signature with the signing key's public half.

    Raises:
        SignatureError: the key is not an EC private key, the bundle holds a symbolic link ...
    """
    root = Path(bundle)
    sig = signature_path(root, signature)
    own = root / SIGNATURE_NAME
    if root.resolve() in sig.resolve().parents and sig.resolve() != own.resolve():
        raise ConfigError(f"a signature inside the bundle must be {own}; put {sig} outside {root}")
    private = _load_private_key(key, password)
    hashing, signing, _ = _model_signing()
    with tempfile.TemporaryDirectory(prefix="edgesentry-sign-") as tmp:
        pem = Path(tmp) / "key.pem"
        from cryptography.hazmat.primitives import serialization

        # the library reads the key from a path: hand it a private, decrypted copy that never leaves tmp
        fd = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        staged = Path(tmp) / SIGNATURE_NAME
        try:
            signing.Config().set_hashing_config(_hashing_config(hashing, [SIGNATURE_NAME])).use_elliptic_key_signer(
                private_key=pem).sign(root, staged)
        except Exception as exc:  # noqa: BLE001 - the library's failures are the user's bundle or key
            raise SignatureError(f"could not sign {root}: {type(exc).__name__}: {str(exc)[:200]}") from None
        public = Path(tmp) / "key.pub"
        public.write_bytes(_public_pem(private.public_key()))
        check = verify_bundle(root, TrustPolicy.from_keys([public], source=str(key)), signature=staged)
        sig.parent.mkdir(parents=True, exist_ok=True)
        tmp_sig = sig.with_name(f".{sig.name}.tmp")
        tmp_sig.write_bytes(staged.read_bytes())
        os.replace(tmp_sig, sig)
    return Verification(root, sig, check.signer, Path(key), check.digests)


def signature_state(bundle: str | os.PathLike, policy: TrustPolicy | None, *,
                    signature: str | os.PathLike | None = None) -> dict[str, Any]:
    """What ``info`` shows: ``state`` (``unsigned`` / ``verified`` / ``refused`` / ``unchecked``
    when no trusted key is configured), the signer's fingerprint as recorded, and why."""
    sig = signature_path(bundle, signature)
    if not sig.is_file():
        return {"state": "unsigned", "signature": None, "signer": None,
                "reason": f"no {sig.name}; sign with `edgesentry sign {bundle} --key KEY.pem`"}
    try:
        hint = _read_envelope(read_bytes_bounded(sig, limit=SIGNATURE_MAX_BYTES, what="bundle signature",
                                                 error=SignatureError), sig).hint
    except SignatureError as exc:
        return {"state": "refused", "signature": str(sig), "signer": None, "reason": str(exc)}
    out: dict[str, Any] = {"signature": str(sig), "signer": short(hint) if hint else None}
    if policy is None:
        return {**out, "state": "unchecked",
                "reason": f"no trusted keys given (--trusted-keys, ${ENV_TRUSTED} or ${ENV_CONFIG})"}
    try:
        verification = verify_bundle(bundle, policy, signature=signature)
    except SignatureError as exc:
        return {**out, "state": "refused", "reason": str(exc)}
    return {**out, "state": "verified", "key": str(verification.key), "files": len(verification.digests),
            "reason": None}
