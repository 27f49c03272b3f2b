"""Every family bundle the export tests can build: made from ../shared/reference through each
family's public ``convert``, exported with ``export_bundle``, plus one detection input and
the call that runs it (used by the validate, lint, torch-free and Triton tests).

A family whose reference files are missing is skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest


@dataclass
class FamilyCase:
    name: str
    make: Callable[[Path, Path], Any]  # (shared, out) -> Bundle (converted, not exported)
    sample: Callable[[np.random.Generator, Any], dict[str, np.ndarray]]  # (rng, bundle) -> arrays
    # Source of the call run in the torch-free child: `det` and the arrays `x` are in scope.
    call: str = "det.predict(x['x'])"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference files not found: {path}")
    return path


def _fers(shared: Path, out: Path):
    import edgesentry

    return edgesentry.convert("fers", _need(shared / "reference/fers/weights/saved_models/50bands"), output=out)


def _isstad(shared: Path, out: Path):
    import edgesentry

    ref = shared / "reference/isstad"
    return edgesentry.convert(
        "isstad", _need(ref / "tiny_stage2_seed0.pt"), output=out, config=_need(ref / "tiny_stage2_config.json")
    )


def _mavd(shared: Path, out: Path):
    import edgesentry

    return edgesentry.convert("mavd", _need(shared / "reference/mavd/weights/saved_models/ap86.07"), output=out)


def _mdmf(shared: Path, out: Path):
    from edgesentry.detectors import mdmf

    return mdmf.convert(_need(shared / "reference/mdmf/heads_seed0_D256.npz"), output=out)


def _mdmf_sample(rng: np.random.Generator, bundle: Any) -> dict[str, np.ndarray]:
    cfg = bundle.config
    t, d = int(cfg.get("frames", 8)), int(cfg["model"]["dim"])
    return {
        "q": rng.standard_normal((2, t, d)).astype(np.float32),
        "s": rng.standard_normal((4, t, d)).astype(np.float32),
        "labels": np.array([0, 1, 0, 1]),
        "text": rng.standard_normal((2, d)).astype(np.float32),
    }


CASES = {
    "fers": FamilyCase("fers", _fers, lambda rng, b: {"x": (rng.random((12, 12, 50)) * 0.2 - 0.1).astype(np.float32)}),
    "isstad": FamilyCase("isstad", _isstad, lambda rng, b: {"x": rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)}),
    "mavd": FamilyCase(
        "mavd",
        _mavd,
        lambda rng, b: {
            "rgb": np.maximum(rng.standard_normal((2, 6, 1024)), 0).astype(np.float32),
            "flow": np.maximum(rng.standard_normal((2, 6, 1024)), 0).astype(np.float32),
            "audio": (0.5 * rng.standard_normal((1, 6, 128))).astype(np.float32),
        },
        call="det.predict({k: x[k] for k in ('rgb', 'flow', 'audio')})",
    ),
    "mdmf": FamilyCase(
        "mdmf", _mdmf, _mdmf_sample, call="det.classify_features(x['q'], x['s'], x['labels'], x['text'])"
    ),
}


def exported_bundle(name: str, shared: Path, out: Path):
    """Convert + export family ``name`` into ``out`` (skips when its reference is absent)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from edgesentry.bundle import Bundle
    from edgesentry.export.onnx import export_bundle

    bundle = CASES[name].make(shared, out)
    reports = export_bundle(bundle)
    assert all(reports.values()), {k: v.table() for k, v in reports.items() if v is not None}
    return Bundle.open(bundle.path), reports
