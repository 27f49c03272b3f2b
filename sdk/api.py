"""Top-level entry points: ``load`` and ``convert``."""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from edgesentry.backends import runner_options
from edgesentry.bundle import Bundle
from edgesentry.detector import Detector
from edgesentry.detectors import FAMILIES, family_module
from edgesentry.errors import BundleError, ConfigError, option
from edgesentry.precision import Precision, select_precision
from edgesentry.signing import ENV_CONFIG, ENV_TRUSTED, TrustPolicy, resolve_policy, verify_bundle

Performance = Literal["latency", "throughput"]


def load(name_or_bundle: str | os.PathLike | Bundle, *, precision: Precision = "fp32",
         performance: Performance = "latency", trusted_keys: Iterable[str | os.PathLike] | None = None,
         revoked_keys: Iterable[str | os.PathLike] | None = None, signature: str | os.PathLike | None = None,
         require_signature: bool | None = None, **options: Any) -> Detector:
    """Build a detector from a family name or a bundle directory.

    Args:
        name_or_bundle: a weight-free family name (``"rx"``), or the path of a bundle made
            by ``edgesentry convert`` (or an opened ``Bundle``).
        **options: family options, e.g. ``mode="local", window=(3, 9)`` for RX; for bundles
            ``backend="auto"|"torch"|"onnxruntime"|"openvino"`` (what this install runs:
            ``edgesentry.backends.available_backends()``) and
            ``kernels="auto"|"reference"|"cpu"|"triton"|"cuda"`` (an explicit tier that cannot
            run here fails now), plus ``threshold=`` on the score's scale (see ``Detector``).
        precision: the graphs' precision (bundles with exported graphs): ``"fp32"``; ``"int8"`` /
            ``"fp16"`` (the graphs ``edgesentry quantize`` added); ``"bf16"`` (OpenVINO on a CPU
            with BF16); ``"auto"`` (what ``edgesentry tune`` decided for this machine; FP32 with a
            warning on another machine). See ``edgesentry.precision``.
        performance: OpenVINO's performance hint, ``"latency"`` or ``"throughput"``.

    A bundle's saved thresholds (``Detector.save``) apply unless ``threshold=`` /
    ``pixel_threshold=`` are given; a reduced precision uses its own (``edgesentry tune``).

    Signatures (``edgesentry.signing``): with ``trusted_keys`` (public key files), or a default
    policy in the environment (``EDGESENTRY_TRUSTED_KEYS``, ``EDGESENTRY_SIGNING_CONFIG``), a
    bundle must carry a signature by one of those keys, and none in ``revoked_keys`` (files or
    sha256 fingerprints, added to the environment's); it is verified before ``meta.json`` is
    parsed. ``signature`` names a signature kept outside the bundle. ``require_signature``:
    ``None`` = required exactly when trusted keys are given or configured; ``True`` = required
    (no trusted key is then an error); ``False`` = not checked, whatever the environment says
    (for a process re-reading a version it just wrote). An opened ``Bundle`` that was not opened
    with ``trust=`` is verified here, after the fact.

    Raises:
        ConfigError: unknown family or option (the message lists the valid ones); a precision the
            bundle has no graphs for (the message lists the precisions it has).
        BundleError: the path is not a valid bundle (missing, corrupt, tampered, wrong schema).
        SignatureError: a signature is required and the bundle is unsigned, changed since it was
            signed, or signed by a key that is not trusted or is revoked.
        BackendUnavailableError: the requested backend cannot run here.
        KernelUnavailableError: the requested kernel tier cannot run here.
    """
    policy = _policy(trusted_keys, revoked_keys, require_signature)
    if isinstance(name_or_bundle, Bundle):
        if policy is not None and name_or_bundle.signature is None:
            name_or_bundle.signature = verify_bundle(name_or_bundle.path, policy, signature=signature)
        return _from_bundle(name_or_bundle, precision, performance, options)
    target = os.fspath(name_or_bundle)
    if target in FAMILIES and not Path(target).exists():
        if trusted_keys is not None or signature is not None:
            raise ConfigError(f"{target!r} is a weight-free family, not a bundle: there is no signature to verify")
        if precision not in ("fp32", "auto"):
            raise ConfigError(f"family {target!r} without a bundle has no graphs to run in {precision}")
        return _call(family_module(target).build, target, **options)
    path = Path(target)
    if not path.exists():
        raise ConfigError(
            f"{target!r} is neither a family name ({', '.join(sorted(FAMILIES))}) nor an existing bundle directory"
        )
    return _from_bundle(Bundle.open(path, trust=policy, signature=signature), precision, performance, options)


def _policy(trusted_keys: Iterable[str | os.PathLike] | None, revoked_keys: Iterable[str | os.PathLike] | None,
            require: bool | None) -> TrustPolicy | None:
    if require is False:
        return None
    policy = resolve_policy(trusted_keys, revoked_keys)
    if require and policy is None:
        raise ConfigError(f"{option('require_signature', True)} needs trusted keys: pass {option('trusted_keys')} or "
                          f"set {ENV_TRUSTED} / {ENV_CONFIG}")
    return policy


def _from_bundle(bundle: Bundle, precision: str, performance: str, options: dict[str, Any]) -> Detector:
    """The family builder on the bundle (or its precision view), with the runners' options set."""
    if bundle.family not in FAMILIES:
        raise BundleError(f"bundle {bundle.path} is of unknown family {bundle.family!r}; expected one of "
                          f"{sorted(FAMILIES)}")
    if performance not in ("latency", "throughput"):
        raise ConfigError(f"performance must be 'latency' or 'throughput'; got {performance!r}")
    chosen = select_precision(bundle, precision, options.get("backend", "auto"))
    if chosen.backend != options.get("backend", "auto"):
        options = {**options, "backend": chosen.backend}
    with runner_options(openvino_hint=performance, **chosen.runner_options):
        det = _call(family_module(bundle.family).from_bundle, bundle.family, chosen.bundle, **options)
    det.precision = chosen.precision
    if det.bundle is None:
        det.bundle = chosen.bundle
    if "threshold" not in options and "pixel_threshold" not in options:
        det.restore_thresholds(chosen.bundle.meta.get("thresholds"))
    return det


def valid_options(builder: Any, family: str) -> list[str] | None:
    """The keyword options a family builder takes (its signature, plus the module's ``OPTIONS``
    where it forwards ``**overrides``)."""
    params = inspect.signature(builder).parameters.values()
    names = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "bundle"}
    if any(p.kind is p.VAR_KEYWORD for p in params):
        forwarded = getattr(family_module(family), "OPTIONS", None)
        if forwarded is None:
            return None  # a builder that takes anything (e.g. one that only says a bundle is needed)
        names |= set(forwarded)
    return sorted(names)


def _call(builder: Any, family: str, *args: Any, **options: Any) -> Detector:
    """Call a family builder; options it does not take are a ``ConfigError`` listing the valid ones."""
    valid = valid_options(builder, family)
    unknown = [] if valid is None else [k for k in options if k not in valid]
    if unknown:
        close = [m for k in unknown for m in difflib.get_close_matches(k, valid, n=1, cutoff=0.7)]
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise ConfigError(f"family {family!r} has no option {', '.join(repr(k) for k in unknown)}{hint}; "
                          f"valid options: {', '.join(valid)}")
    return builder(*args, **options)


def convert(family: str, *args: Any, **kwargs: Any) -> Bundle:
    """Convert trained weights into a bundle (Python twin of ``edgesentry convert FAMILY``).

    The arguments are the family's; see ``edgesentry.detectors.<family>.convert``.
    """
    module = family_module(family)
    if not hasattr(module, "convert"):
        raise ConfigError(f"family {family!r} has no converter")
    return module.convert(*args, **kwargs)
