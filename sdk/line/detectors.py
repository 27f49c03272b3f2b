"""Building the line's detectors from the line file: the one place bundles are loaded.

A local detector's bundle goes through ``config.check_bundle`` (opened and hash-checked,
``BUNDLE_CHECKS``, signature verifiers when ``require_signature`` is set) and then
``edgesentry.load`` with the detector's ``backend`` / ``kernels`` / ``threshold``. A ``triton``
detector becomes a ``RemoteScorer``; nothing is contacted until the first frame.
"""

from __future__ import annotations

from typing import Any

from edgesentry.errors import ConfigError, EdgesentryError
from edgesentry.line.config import DetectorSpec, LineConfig, check_bundle
from edgesentry.line.scheduler import LocalScorer, RemoteScorer


def build_scorer(spec: DetectorSpec, cfg: LineConfig) -> LocalScorer | RemoteScorer:
    if spec.triton is not None:
        t = spec.triton
        return RemoteScorer(t["url"], t["model"], protocol=t.get("protocol", "http"), timeout_s=t.get("timeout_s", 5.0),
                            threshold=spec.threshold)
    bundle = check_bundle(spec, cfg)
    options: dict[str, Any] = {"kernels": spec.kernels}
    if spec.backend != "auto":
        options["backend"] = spec.backend
    if spec.threshold is not None:
        options["threshold"] = spec.threshold
    if spec.torch_threads is not None:
        try:
            import torch
        except ImportError:
            raise cfg.error(("detectors", spec.name, "torch_threads"), "needs torch (edgesentry[torch])") from None
        torch.set_num_threads(spec.torch_threads)
    from edgesentry.api import load

    try:
        return LocalScorer(load(bundle, **options))
    except EdgesentryError as exc:
        raise cfg.error(("detectors", spec.name), str(exc)) from None


def as_scorer(obj: Any) -> LocalScorer | RemoteScorer:
    """A scorer from what a caller passes in place of a line file's detector (a ``Detector`` or a scorer)."""
    if hasattr(obj, "score") and hasattr(obj, "remote"):
        return obj
    from edgesentry.detector import Detector

    if isinstance(obj, Detector):
        return LocalScorer(obj)
    raise ConfigError(f"a line detector must be an edgesentry Detector or a scorer; got {type(obj).__name__}")
