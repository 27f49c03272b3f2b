"""Flag groups shared by verbs, defined once so they mean the same everywhere."""

from __future__ import annotations

import argparse
from typing import Any

from edgesentry.errors import ConfigError


def add_kernel_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kernels",
        default="auto",
        choices=["auto", "reference", "cpu", "triton", "cuda"],
        help="post-processing kernel tier (default: auto = fastest that runs here)",
    )


def add_backend_args(parser: argparse.ArgumentParser) -> None:
    """``--backend``: the choices are the detector backends this install can run."""
    from edgesentry.backends import available_backends

    runnable = available_backends()
    parser.add_argument(
        "--backend",
        default="auto",
        choices=["auto", *runnable],
        help="graph backend; this install can run: "
        + (", ".join(runnable) or "none (install onnxruntime, openvino or torch)")
        + " (default: auto = the faster of onnxruntime and torch, measured on this machine per input shape,"
        " when the bundle has both; else the one it has, onnxruntime before openvino before torch)",
    )


def add_trust_args(parser: argparse.ArgumentParser, *, signature: bool = True) -> None:
    """``--trusted-keys`` / ``--revoked-keys`` (and ``--signature``): which signers a bundle may have."""
    parser.add_argument("--trusted-keys", nargs="+", default=None, metavar="KEY.pub",
                        help="public keys (PEM, EC) whose signatures are accepted; a bundle must be signed by one "
                             "(default: $EDGESENTRY_TRUSTED_KEYS / $EDGESENTRY_SIGNING_CONFIG, else not checked)")
    parser.add_argument("--revoked-keys", nargs="+", default=None, metavar="KEY",
                        help="public keys or sha256 fingerprints refused even when trusted (added to "
                             "$EDGESENTRY_REVOKED_KEYS and the config's)")
    if signature:
        parser.add_argument("--signature", default=None, metavar="PATH",
                            help="the signature file (default: BUNDLE/bundle.sig)")


def trust_policy(args: argparse.Namespace) -> Any:
    """The ``TrustPolicy`` the flags (or the environment) ask for; ``None``: no signature needed."""
    from edgesentry.signing import resolve_policy

    return resolve_policy(args.trusted_keys, args.revoked_keys)


#: the one sentence on the threshold's scale, shared by every verb's help
THRESHOLD_SCALE = "on the score's scale: normalised to [0, 1] once calibrated (0.5 = calibrated), raw otherwise"


def add_threshold_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threshold", type=float, default=None,
                        help=f"score threshold for the label, {THRESHOLD_SCALE} (default: the bundle's)")


def parse_pair(text: str, name: str) -> tuple[int, int]:
    """``"3,9"`` -> ``(3, 9)``."""
    try:
        a, b = (int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{name} must be two integers 'A,B'; got {text!r}") from None
    return a, b


def parse_bands(text: str | None) -> int | list[int] | None:
    """``"100"`` -> first 100 bands; ``"0,5,9"`` or ``"10:50"`` -> explicit indices."""
    if text is None:
        return None
    try:
        if ":" in text:
            start, stop = (int(v) for v in text.split(":"))
            return list(range(start, stop))
        if "," in text:
            return [int(v) for v in text.split(",")]
        return int(text)
    except ValueError:
        raise ConfigError(f"--bands must be N, 'i,j,k' or 'start:stop'; got {text!r}") from None


def family_of_bundle(bundle: str, family: str, *, command: str) -> None:
    """Refuse a bundle of another family before loading it (``command``: ``"detect isstad"``)."""
    from edgesentry.bundle import Bundle
    from edgesentry.signing import default_policy

    # with signatures required, verified before meta.json is read (load verifies again)
    found = Bundle.open(bundle, verify=False, trust=default_policy()).family
    if found != family:
        verb = command.split()[0]
        hint = f" (try `edgesentry {verb} {found}`)" if " " in command else ""
        raise ConfigError(f"{bundle} is a {found!r} bundle; `edgesentry {command}` needs a {family!r} bundle{hint}")


def thresholds_of(det: Any) -> dict[str, Any]:
    """The thresholds a run used, on both scales (for summaries)."""
    return {"score_scale": det.score_scale, "threshold": det.threshold, "raw_threshold": det.raw_threshold,
            "pixel_threshold": det.effective_pixel_threshold}
