"""Every family's bundle, its inputs and its normal samples, for the round-trip matrix.

``FAMILIES[name]`` says how to make the family's bundle from ``../shared/reference`` (through the
public ``convert``; rx is weight-free), how to draw inputs and normal samples (real files where
``../shared/data`` has them: hazelnut photos for isstad), and what a detector needs before it
predicts (mdmf: a gallery of enrolled classes). Templates are built once per session (converted,
and converted + exported); each test gets its own copy.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest


@dataclass
class Family:
    name: str
    make: Callable[[Path, Path], Any]  # (shared, out) -> Bundle
    inputs: Callable[[Path, Path], list[Any]]  # (shared, tmp) -> inputs predict takes
    normals: Callable[[Path, Path], list[Any]]  # (shared, tmp) -> normal samples for calibrate
    exportable: bool = True


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference files not found: {path}")
    return path


def _cubes(seed: int, n: int, bands: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(14, 13, bands)) * 100 + 500 for _ in range(n)]


def _mavd_inputs(seed: int, n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"rgb": np.maximum(rng.standard_normal((2, 6, 1024)), 0).astype(np.float32),
             "flow": np.maximum(rng.standard_normal((2, 6, 1024)), 0).astype(np.float32),
             "audio": (0.5 * rng.standard_normal((6, 128))).astype(np.float32)} for _ in range(n)]


def _mdmf_queries(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((8, 256)).astype(np.float32) for _ in range(n)]


def _hazelnut(shared: Path, part: str, n: int) -> list[str]:
    files = sorted(_need(shared / "data/hazelnut_toy" / part).glob("*.jpg"))[:n]
    return [str(f) for f in files]


def make_gallery(det: Any, path: Path, seed: int = 5) -> Path:
    """Two classes of random frame features with random text embeddings (a features-in bundle)."""
    rng = np.random.default_rng(seed)
    gallery = det.gallery()
    for label in ("drink", "wave"):
        shots = rng.standard_normal((2, 8, 256)).astype(np.float32)
        gallery.enroll(label, shots, prompt=rng.standard_normal(256).astype(np.float32))
    return gallery.save(path)


def _convert(name: str) -> Callable[[Path, Path], Any]:
    def make(shared: Path, out: Path) -> Any:
        import edgesentry

        ref = shared / "reference"
        if name == "rx":
            return edgesentry.convert("rx", output=out)
        if name == "fers":
            return edgesentry.convert("fers", _need(ref / "fers/weights/saved_models/50bands"), output=out)
        if name == "isstad":
            return edgesentry.convert("isstad", _need(ref / "isstad/tiny_stage2_seed0.pt"), output=out,
                                      config=_need(ref / "isstad/tiny_stage2_config.json"))
        if name == "mavd":
            return edgesentry.convert("mavd", _need(ref / "mavd/weights/saved_models/ap86.07"), output=out)
        return edgesentry.convert("mdmf", _need(ref / "mdmf/heads_seed0_D256.npz"), output=out)

    return make


FAMILIES = {
    "rx": Family("rx", _convert("rx"), lambda s, t: _cubes(1, 2, 6), lambda s, t: _cubes(2, 4, 6), exportable=False),
    "fers": Family("fers", _convert("fers"), lambda s, t: _cubes(1, 2, 52), lambda s, t: _cubes(2, 4, 52)),
    "isstad": Family("isstad", _convert("isstad"),
                     lambda s, t: _hazelnut(s, "test/colour", 1) + _hazelnut(s, "test/good", 1),
                     lambda s, t: _hazelnut(s, "train/good", 4)),
    "mavd": Family("mavd", _convert("mavd"), lambda s, t: _mavd_inputs(1, 2), lambda s, t: _mavd_inputs(2, 4)),
    "mdmf": Family("mdmf", _convert("mdmf"), lambda s, t: _mdmf_queries(1, 2), lambda s, t: _mdmf_queries(2, 4)),
}


@pytest.fixture(scope="session")
def templates(shared, tmp_path_factory):
    """name -> {"converted": path, "exported": path} built once (exported only where it exists)."""
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("roundtrip_templates")
    built: dict[str, dict[str, Path]] = {}

    def get(name: str, kind: str) -> Path:
        fam = FAMILIES[name]
        entry = built.setdefault(name, {})
        if "converted" not in entry:
            entry["converted"] = Path(fam.make(shared, root / f"{name}_converted").path)
        if kind == "exported" and "exported" not in entry:
            pytest.importorskip("onnxruntime")
            from edgesentry.bundle import Bundle
            from edgesentry.export.onnx import export_bundle

            shutil.copytree(entry["converted"], root / f"{name}_exported")
            export_bundle(Bundle.open(root / f"{name}_exported"))
            entry["exported"] = root / f"{name}_exported"
        return entry[kind]

    return get


@pytest.fixture
def bundle_of(templates, tmp_path):
    """``bundle_of(name, "converted" | "exported")`` -> a fresh copy of the template for this test."""

    def copy(name: str, kind: str = "converted") -> Path:
        dest = tmp_path / f"{name}_{kind}"
        shutil.copytree(templates(name, kind), dest)
        return dest

    return copy


def ready(det: Any, tmp_path: Path) -> Any:
    """A detector ready to predict (mdmf: the test's gallery of two enrolled classes, made by the
    first detector that asks, so every detector of a test scores against the same prototypes)."""
    if det.family == "mdmf":
        path = tmp_path / "gallery.npz"
        det.default_gallery = det.load_gallery(path if path.is_file() else make_gallery(det, path))
    return det
